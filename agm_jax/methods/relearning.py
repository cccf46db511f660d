"""Diagnosing and Re-learning (Wei, Li, Feng, Hu, "Diagnosing and Re-learning for Balanced
Multimodal Learning", ECCV 2024; authors' code GeWu-Lab/Diagnosing_Relearning_ECCV2024
``code/ours.py``, ``code/script/ours.sh``; BalanceBenchmark
``balancemm/trainer/ReLearning_trainer.py``).

Training is joint training (the cross-entropy of the fused logits). After every
``reinit_epoch``-th epoch (epochs ``reinit_epoch``, ``2 reinit_epoch``, … counted from 0, as
``epoch % reinit_epoch == 0 and epoch > 0``), at most ``reinit_num`` times, each encoder's
*learning state* is diagnosed and the encoder softly re-initialised:

* **Diagnosis.** The encoder's eval-mode features of the training split and of the held-out
  split (agm-jax's ``val``), each scaled per dimension to ``[-1, 1]`` (``MinMaxScaler``) and
  clustered by k-means into ``K`` clusters (``KMeans(n_clusters=K, random_state=0)``; we pass
  ``n_init=10``, the default of the scikit-learn the code was written for); the *purity* of a
  clustering is the fraction of examples whose label is the majority label of their cluster
  (:func:`purity`). A modality that fits the training data much better than it generalises
  has a large gap ``|purity_train - purity_val|``.
* **Re-learning.** ``w_m = tanh(lambda |purity_train - purity_val|)`` and every parameter of
  encoder m becomes ``w_m theta_init + (1 - w_m) theta`` (:func:`soft_reinit`), ``theta_init``
  the run's initial parameters. The optimiser state and the BatchNorm statistics are kept, as
  the code keeps them.

The initial encoder parameters, the number of re-initialisations done and the last weights
live in the optimiser state (:class:`RelearnState`), so a resumed run re-initialises exactly
as an uninterrupted one. The method's evaluation reports, as ``z``, the concatenated encoder
features (the late heads' ``z``), which the diagnosis splits per modality. Any fusion of a
separable model; any k >= 2. Config section ``relearning``: ``move_lambda`` (3),
``reinit_epoch``, ``reinit_num`` (3). The authors' values are 3, 20, 3 (``code/ours.py:53-56``
defaults and ``code/script/ours.sh`` for CREMA-D, which configs/cremad_agm.py uses;
BalanceBenchmark: 3, 15, 2). The library default ``reinit_epoch`` is 5 (configs/default.py):
its default run has 20 epochs (0 … 19), in which a period of 20 would never re-learn; 5
re-learns after epochs 5, 10 and 15. The state logs ``reinit_weight/<m>`` (the last weights).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import subsets
from agm_jax.methods import joint
from agm_jax.methods.base import Method, from_section, inputs_of, shapley_evaluate
from agm_jax.transforms import carry as carry_tx
from agm_jax.transforms import partition

KMEANS_SEED = 0       # the code's random_state
KMEANS_INITS = 10     # the n_init default of scikit-learn < 1.4


@dataclasses.dataclass(frozen=True)
class HParams:
  move_lambda: float
  reinit_epoch: int
  reinit_num: int

  def __post_init__(self):
    if self.move_lambda < 0:
      raise ValueError(f"move_lambda must be >= 0, got {self.move_lambda}")
    if self.reinit_epoch < 1:
      raise ValueError(f"reinit_epoch must be >= 1, got {self.reinit_epoch}")
    if self.reinit_num < 0:
      raise ValueError(f"reinit_num must be >= 0, got {self.reinit_num}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


class RelearnState(NamedTuple):
  init: dict               # the encoders' initial parameters ({"encoders_<m>": …})
  count: jax.Array         # () int32: re-initialisations done
  reinit_weight: jax.Array  # (k,) the last re-initialisation's w_m (0 before the first)


def make_tx(ctx, base):
  def init(params):
    encoders = {name: jax.tree.map(jnp.asarray, tree) for name, tree in params.items()
                if partition.modality_index((name,)) >= 0}
    return RelearnState(encoders, jnp.zeros((), jnp.int32), jnp.zeros((ctx.k,), jnp.float32))
  return carry_tx.with_carry(base, init, name="relearning")


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  out = joint.gradients(ctx, params, batch_stats, batch, rng, active, opt_state)
  state = carry_tx.get_carry(opt_state, RelearnState)
  return out._replace(tx_kwargs={**out.tx_kwargs, "carry": state})


def evaluate(ctx, params, batch_stats, batch):
  """:func:`base.shapley_evaluate` with ``z`` the concatenated eval-mode encoder features."""
  out = shapley_evaluate(ctx, params, batch_stats, batch)
  feats, _ = subsets.apply(ctx.model, params, batch_stats, inputs_of(batch), train=False,
                           method="encode")
  return out._replace(z=jnp.concatenate([f.astype(jnp.float32) for f in feats], -1))


def purity(labels: np.ndarray, clusters: np.ndarray) -> float:
  """The fraction of examples whose label is the most frequent label of their cluster."""
  labels, clusters = np.asarray(labels), np.asarray(clusters)
  agree = 0
  for c in np.unique(clusters):
    agree += np.bincount(labels[clusters == c]).max()
  return float(agree / len(labels))


def cluster_purity(features: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
  """Purity of the k-means clustering (``num_classes`` clusters) of ``features`` scaled per
  dimension to ``[-1, 1]``."""
  from sklearn.cluster import KMeans  # noqa: PLC0415 - scikit-learn only when a diagnosis runs
  from sklearn.preprocessing import MinMaxScaler  # noqa: PLC0415

  scaled = MinMaxScaler(feature_range=(-1, 1)).fit_transform(np.asarray(features, np.float64))
  clusters = KMeans(n_clusters=num_classes, random_state=KMEANS_SEED,
                    n_init=KMEANS_INITS).fit_predict(scaled)
  return purity(labels, clusters)


def reinit_weights(train_purity, val_purity, move_lambda: float) -> np.ndarray:
  """``w_m = tanh(lambda |purity_train - purity_val|)``."""
  gap = np.abs(np.asarray(train_purity) - np.asarray(val_purity))
  return np.tanh(move_lambda * gap).astype(np.float32)


def soft_reinit(params, init, weights) -> dict:
  """Encoder m's parameters ``w_m init + (1 - w_m) theta``; the rest unchanged."""
  def one(path, theta):
    m = partition.modality_index(path)
    if m < 0:
      return theta
    start = init[f"encoders_{m}"]
    for entry in path[1:]:
      start = start[partition.entry_name(entry)]
    w = weights[m]
    return (w * np.asarray(start) + (1.0 - w) * np.asarray(theta)).astype(np.asarray(theta).dtype)
  return jax.tree_util.tree_map_with_path(one, params)


def _split(z: np.ndarray, dims) -> list[np.ndarray]:
  ends = np.cumsum(dims)
  return [z[:, e - d:e] for d, e in zip(dims, ends)]


def epoch_end(ctx, state, epoch, evaluate):
  hp = ctx.hp
  relearn = carry_tx.get_carry(state.opt_state, RelearnState)
  if not (epoch % hp.reinit_epoch == 0 and epoch > 0 and int(relearn.count) < hp.reinit_num):
    return state
  purities = {}
  for split in ("train", "val"):
    z, labels = evaluate(split)[1], evaluate.labels(split)
    feats = _split(np.asarray(z), ctx.feature_dims)
    purities[split] = [cluster_purity(f, labels, ctx.num_classes) for f in feats]
  weights = reinit_weights(purities["train"], purities["val"], hp.move_lambda)
  params = soft_reinit(jax.tree.map(np.asarray, state.params), relearn.init, weights)
  opt_state = carry_tx.replace_carry(
      state.opt_state, RelearnState,
      lambda s: s._replace(count=s.count + 1, reinit_weight=jnp.asarray(weights)))
  return state.replace(params=params, opt_state=opt_state)


METHOD = Method(name="relearning", hparams=hparams, gradients=gradients, make_tx=make_tx,
                evaluate=evaluate, requires_separable=True, logged_state=("reinit_weight",),
                epoch_end=epoch_end)
