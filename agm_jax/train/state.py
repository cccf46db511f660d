"""Train state and optimiser construction."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax.models import init as init_lib
from agm_jax.transforms import clip

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")


@flax.struct.dataclass
class TrainState:
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  rng: jax.Array       # raw uint32 key (checkpointable)


def learning_rate_schedule(opt_config, steps_per_epoch: int, num_epochs: int):
  """Per-step learning rate: constant, step decay at epoch milestones (PyTorch's
  MultiStepLR / StepLR), or cosine."""
  lr = float(opt_config.learning_rate)
  name = opt_config.schedule
  if name == "constant":
    return optax.constant_schedule(lr)
  if name == "step":
    milestones = opt_config.decay_epochs
    if isinstance(milestones, int):   # StepLR(step_size): every N epochs
      milestones = tuple(range(milestones, num_epochs, milestones))
    rate = float(opt_config.decay_rate)
    return optax.piecewise_constant_schedule(
        lr, {int(e) * steps_per_epoch: rate for e in milestones})
  if name == "cosine":
    return optax.cosine_decay_schedule(lr, max(1, steps_per_epoch * num_epochs))
  raise ValueError(f"unknown optimizer.schedule {name!r}; valid: {', '.join(SCHEDULES)}")


def conditional_clip_applies(opt_config, method: str) -> bool:
  """Whether ``optimizer.conditional_clip`` is on for ``method`` (never for the mono-modal
  concept, ``unimodal``: the released code's single-modality branch does not clip)."""
  cc = opt_config.conditional_clip
  if not float(cc.threshold) or method == "unimodal":
    return False
  names = [n.strip() for n in str(cc.methods).split(",") if n.strip()]
  return "*" in names or method in names


def base_optimizer(opt_config, steps_per_epoch: int, num_epochs: int, *, method: str = "",
                   output_layer: str = ""):
  """Optional global-norm clip, the released AGM code's conditional clip
  (``optimizer.conditional_clip``, watching ``output_layer``), L2 weight decay (added to the
  gradient, as PyTorch's SGD ``weight_decay``), then SGD with momentum or Adam."""
  schedule = learning_rate_schedule(opt_config, steps_per_epoch, num_epochs)
  name = opt_config.name
  parts = []
  if opt_config.grad_clip:
    parts.append(optax.clip_by_global_norm(float(opt_config.grad_clip)))
  if conditional_clip_applies(opt_config, method):
    cc = opt_config.conditional_clip
    parts.append(clip.clip_by_global_norm_if(float(cc.threshold), float(cc.max_norm),
                                             where=output_layer))
  wd = float(opt_config.weight_decay)
  if name == "sgd":
    if wd:
      parts.append(optax.add_decayed_weights(wd))
    parts.append(optax.sgd(schedule, momentum=float(opt_config.momentum) or None))
  elif name == "adam":
    if wd:
      parts.append(optax.add_decayed_weights(wd))
    parts.append(optax.adam(schedule, b1=float(opt_config.get("adam_b1", 0.9)),
                            b2=float(opt_config.get("adam_b2", 0.999)),
                            eps=float(opt_config.get("adam_eps", 1e-8))))
  elif name == "adamw":
    parts.append(optax.adamw(schedule, weight_decay=wd))
  else:
    raise ValueError(f"unknown optimizer.name {name!r}; valid: {', '.join(OPTIMIZERS)}")
  return optax.chain(*parts)


def example_inputs(spec, modalities, batch_size: int = 2):
  """Zero inputs of the dataset's shapes, for ``model.init``."""
  out = {}
  for key, (shape, dtype) in spec.items():
    base = key.split("_lengths")[0] if key.endswith("_lengths") else key
    if key in modalities or (key.endswith("_lengths") and base in modalities):
      dtype = np.dtype(dtype)
      fill = np.ones if key.endswith("_lengths") else np.zeros
      out[key] = jnp.asarray(fill((batch_size, *shape), dtype))
  return out


def feature_dims(model, spec, modalities, preprocess=None) -> tuple[int, ...]:
  """Each encoder's feature width of a separable model (traced with ``eval_shape``: nothing
  runs)."""
  inputs = example_inputs(spec, modalities)
  if preprocess is not None:
    inputs = preprocess(inputs)

  def encode(x):
    variables = model.init(jax.random.PRNGKey(0), x, False)
    return model.apply(variables, x, False, method="encode")

  return tuple(int(f.shape[-1]) for f in jax.eval_shape(encode, inputs))


# Folded into the seed's key for ``model.init``'s re-draw: leaves the init/step split as is.
REINIT_SALT = 0x1417


def distinct_buffers(tree):
  """``tree`` with every array leaf its own buffer: a transform's ``init`` may put one array in
  several fields (``z = zeros(k); State(z, z)``), which a train step that donates its state
  rejects ("donate the same buffer twice")."""
  return jax.tree.map(lambda x: jnp.array(x, copy=True) if isinstance(x, jax.Array) else x,
                      tree)


def set_embeddings(model, params, embeddings) -> Any:
  """``params`` with each token embedding replaced by the data's matrix (e.g. GloVe rows):
  ``embeddings`` ``{modality: (V, D) array}``, placed at ``model.embedding_paths[modality]``.
  ValueError if the model has no embedding for a modality or the shapes differ."""
  if not embeddings:
    return params
  paths = dict(getattr(model, "embedding_paths", {}))
  params = flax.core.unfreeze(params)
  for m, matrix in embeddings.items():
    if m not in paths:
      raise ValueError(f"the data provide word embeddings for {m!r} but the model has no token "
                       f"embedding for it (TBJE has one)")
    *parents, leaf = paths[m]
    node = params
    for name in parents:
      node = node[name]
    matrix = jnp.asarray(matrix, node[leaf].dtype)
    if matrix.shape != node[leaf].shape:
      raise ValueError(f"{m!r} embeddings have shape {tuple(matrix.shape)}; the model's "
                       f"embedding is {tuple(node[leaf].shape)} (vocabulary x embedding width)")
    node[leaf] = matrix
  return params


def create(model, tx, spec, modalities, seed: int, init: str = "flax",
           embeddings=None, preprocess=None) -> TrainState:
  """The initial state. ``init`` (config ``model.init``): the parameters' scheme, applied
  right after ``model.init`` (``agm_jax.models.init.reinit``; "flax" changes nothing);
  ``embeddings``: the data's word vectors (:func:`set_embeddings`), placed last;
  ``preprocess``: the dataset's device preprocessing (the model sees its output)."""
  init_rng, rng = jax.random.split(jax.random.PRNGKey(seed))
  inputs = example_inputs(spec, modalities)
  if preprocess is not None:
    inputs = preprocess(inputs)
  variables = jax.jit(lambda r, x: model.init(r, x, False))(init_rng, inputs)
  params = variables["params"]
  if init_lib.check_scheme(init) != "flax":
    reinit_rng = jax.random.fold_in(jax.random.PRNGKey(seed), REINIT_SALT)
    params = init_lib.reinit(params, reinit_rng, init)
  params = set_embeddings(model, params, embeddings)
  batch_stats = variables.get("batch_stats", {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=distinct_buffers(tx.init(params)), rng=rng)
