"""Sample-level modality valuation and re-sampling (Wei, Feng, Wang, Hu, "Enhancing Multimodal
Cooperation via Sample-level Modality Valuation", CVPR 2024, arXiv 2309.06255; the authors'
``code/sample_level.py``, ``code/modality_level.py``, ``code/datasets/dataloader.py``;
BalanceBenchmark ``balancemm/trainer/Sample_trainer.py``, ``evaluation/modalitys.py``
``Calculate_Shapley_Sample``, ``datasets/__init__.py`` ``create_dataset_sample_level`` /
``create_dataset_modality_level``).

**Valuation.** Example i's contribution of modality m is the Shapley value of the benefit of
the modality subsets: ``phi_i^m = sum_{S without m} w(|S|) (v_i(S + m) - v_i(S))``, ``w(n) =
n! (k-n-1)! / k!``, ``v_i({}) = 0``, where ``correct_i(S)`` says whether the model with only
the modalities of S present (the others padded: agm-jax's 2**k subset passes) predicts
``y_i`` (``shapley.coefficients``; :func:`sample_contributions`). The benefit (option
``variant``):

* ``"authors"`` (default): ``v_i(S) = |S| correct_i(S)`` -- the authors' code scores the full
  pair 2 and each single modality 1 when right, so a fully cooperative example gives every
  modality 1, the "ideal" value behind ``gap = 1 - phi`` and the thresholds below;
* ``"toolkit"``: ``v_i(S) = correct_i(S)`` (BalanceBenchmark).

**Re-sampling** (option ``level``). Both codes rebuild the training set after every epoch from
the warm-up on, adding copies of examples in which only the low-contribution modality is
present (the others zeroed):

* ``level="sample"``: example i gets ``c_i^m`` copies with only modality m present: 3 when
  ``phi_i^m < -0.1``, 2 when ``-0.1 < phi_i^m < 0.4``, 1 when ``0.4 < phi_i^m < u``, none
  otherwise (:func:`sample_copies`). ``u`` is 1 in the authors' code at HEAD
  (``code/datasets/dataloader.py:156``, ``:172``, since commit d08ff20) and in the toolkit;
  the file as first committed (077648e) had 0.9. The two give the same copies wherever no
  ``phi`` lies in ``[0.9, 1)``: always at k = 2 (Shapley values of an integer benefit are
  multiples of 1/2; the authors': -0.5, 0, 0.5, 1, 1.5) and k = 3 (multiples of 1/6, none
  between 5/6 and 1); from k = 4 (multiples of 1/12: 11/12) they can differ;
* ``level="modality"``: from the mean contributions ``phi^m`` over a ``part_ratio`` draw of the
  training examples, ``gap_m = 1 - phi^m`` and ``d = alpha (2/3) sum_{m<n} |gap_m - gap_n| /
  (k - 1)`` (authors; at k = 2 their ``alpha (2/3) |gap_a - gap_v|``): ``d N`` random examples
  get one copy with only the modality of the largest gap present. The toolkit sums over
  ordered pairs (twice the authors' d at k = 2; it never reads its configured ``alpha``, here
  ``alpha`` scales both) and gives each drawn example one copy per modality m, keeping the
  modalities whose gap is at least ``gap_m`` (:func:`modality_copies`).

**In-step.** agm-jax's loader keeps one data order per epoch (shared by every method and by the
vmapped seeds), so the copies are trained in-step: each copy of example i with subset S present
is the subset pass V[S] the step computes anyway, weighted by its count ``W[S, i]``::

    L = (sum_i CE(V[full]_i) + sum_{S,i} W[S, i] CE(V[S]_i)) / (B + sum W)

(the denominator summed over devices), the expected loss of an epoch over the enlarged set.
A copy here is the masked pass V[S]: each absent modality's INPUT is replaced by its pad
(zeros) and its encoder run on it, in eval mode under ``subsets.bn="eval"`` (the default),
with the present modalities' eval-mode features. BalanceBenchmark zeroes the input too
(``models/avclassify_model.py:267-269`` when valuing, ``datasets/__init__.py:68-105`` for the
copies, which run in train mode with the batch). The authors' code instead zeroes the absent
modality's FEATURES after the encoder (``code/models/models.py:62-68`` for the training copies,
in train mode with the rest of the batch; ``exec_drop`` ``:74-83`` when valuing). So here
``enc_m(0)``, not 0, stands for an absent modality (its head term, e.g. ``W_m enc_m(0)``, is in
every copy's logits), and the absent encoder gets gradient from the copies through
``enc_m(0)``; in the authors' code the zeroed rows give it none (their BatchNorm statistics
include the copies' full inputs).
``level="sample"`` values each example when it is trained (train mode, current parameters)
where both codes value the whole set once per epoch in eval mode (the toolkit's
``Calculate_Shapley_Sample`` never clears its cache, so every batch reuses the first batch's
subset predictions; here each batch has its own); ``level="modality"`` uses
the previous epoch's mean ``phi^m`` over a Bernoulli(``part_ratio``) draw of its examples,
kept in the optimiser state (:class:`SampleState`; before the first epoch ends the running
mean so far), ``W[S, i]`` the expected copies ``d`` of every example. Inside the window only;
outside it the plain cross-entropy (the contributions still accumulate). Any fusion, any
k >= 2. The window's start differs between the codes (epochs counted from 0 in both): the
authors' ``--warmup 5`` (``code/sample_level.py:44``, ``code/modality_level.py:50``) trains
epochs 0-4 plain and values after epoch 4, so epoch 5 is the first re-sampled
(``sample_level.py:321-331``: ``start_epoch=5`` here); BalanceBenchmark's
``modulation_starts: 1`` (``configs/trainer_config.yaml``; ``Sample_trainer.py:78`` trains
epoch 0 plain) makes epoch 1 the first (``start_epoch=1``, the default here).

Config section ``sample``: ``level`` (``"modality"``: BalanceBenchmark's configured method),
``variant``, ``alpha`` (1: the authors' default; the toolkit configures 0.5 and never reads
it), ``part_ratio`` (0.2), ``start_epoch`` (1: the toolkit's; the authors' 5, above),
``end_epoch``. The train lines log ``phi/<m>`` (the batch's mean contribution),
``contribution/<m>`` (the last finished epoch's mean; 0 before the first epoch ends),
``copies`` (extra copies per example) and ``resampled_loss``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import shapley
from agm_jax.methods.base import (
  Method,
  StepOutput,
  Window,
  aux_metrics,
  from_section,
  one_of,
  shapley_metrics,
  subset_step,
)
from agm_jax.transforms import carry as carry_tx

LEVELS = ("sample", "modality")
VARIANTS = ("authors", "toolkit")
# The copy thresholds: (upper bound of the open interval, copies), lowest first (the authors'
# code at HEAD and the toolkit alike; the module docstring on the earlier 0.9).
THRESHOLDS = ((-0.1, 3), (0.4, 2), (1.0, 1))


@dataclasses.dataclass(frozen=True)
class HParams:
  level: str
  variant: str
  alpha: float
  part_ratio: float
  window: Window

  def __post_init__(self):
    one_of("level", self.level, LEVELS)
    one_of("variant", self.variant, VARIANTS)
    if self.alpha < 0:
      raise ValueError(f"alpha must be >= 0, got {self.alpha}")
    if not 0.0 < self.part_ratio <= 1.0:
      raise ValueError(f"part_ratio must be in (0, 1], got {self.part_ratio}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


class SampleState(NamedTuple):
  sums: jax.Array          # (k,) this epoch's summed contributions of the drawn examples
  count: jax.Array         # () this epoch's drawn examples
  contribution: jax.Array  # (k,) the last finished epoch's mean contribution phi^m
  ready: jax.Array         # () bool: whether ``contribution`` holds an epoch's estimate


def init_state(k: int) -> SampleState:
  return SampleState(jnp.zeros((k,), jnp.float32), jnp.zeros((), jnp.float32),
                     jnp.zeros((k,), jnp.float32), jnp.zeros((), bool))


def make_tx(ctx, base):
  state = init_state(ctx.k)
  return carry_tx.with_carry(base, lambda params: state, name="sample")


def subset_sizes(k: int) -> np.ndarray:
  """``(2**k,)`` the number of modalities in each subset row."""
  return shapley.subset_masks(k).sum(-1).astype(np.float32)


def sample_contributions(v: jax.Array, labels: jax.Array, variant: str) -> jax.Array:
  """``(k, B)`` per-example Shapley values of the benefit of the subset logits ``v``
  ``(2**k, B, K)`` (``variant``: ``|S| correct`` or ``correct``; the empty subset is 0)."""
  k = v.shape[0].bit_length() - 1
  benefit = (jnp.argmax(v, -1) == labels[None]).astype(jnp.float32)     # (2**k, B)
  if variant == "authors":
    benefit = benefit * jnp.asarray(subset_sizes(k))[:, None]
  return jnp.asarray(shapley.coefficients(k)) @ benefit


def sample_copies(phi: jax.Array) -> jax.Array:
  """``(k, B)`` copies per modality and example (open intervals, as both codes)."""
  out = jnp.zeros(phi.shape, jnp.float32)
  lower = -jnp.inf
  for upper, n in THRESHOLDS:
    out = jnp.where((phi > lower) & (phi < upper), float(n), out)
    lower = upper
  return out


def single_rows(k: int) -> np.ndarray:
  """The subset rows with one modality present, in modality order."""
  return np.asarray([1 << m for m in range(k)])


def modality_copies(contribution: jax.Array, alpha: float, variant: str) -> jax.Array:
  """``(2**k,)`` expected copies per example of each subset from the mean contributions
  ``(k,)``: ``gap = 1 - phi^m``, ``d = alpha (2/3) sum_{pairs} |gap_m - gap_n| / (k - 1)``
  (unordered pairs, all ``d`` on the largest gap's modality alone: authors; ordered pairs,
  ``d`` on each modality m's subset ``{n: gap_n >= gap_m}``: toolkit)."""
  k = contribution.shape[0]
  gap = 1.0 - contribution
  pairs = jnp.abs(gap[:, None] - gap[None, :]).sum()        # ordered pairs
  if variant == "authors":
    pairs = pairs / 2.0
  d = alpha * pairs / (k - 1) * 2.0 / 3.0
  if variant == "authors":
    rows = jnp.asarray(single_rows(k))
    return jnp.zeros((2 ** k,), jnp.float32).at[rows[jnp.argmax(gap)]].add(d)
  bits = jnp.asarray(1 << np.arange(k))
  keep = gap[None, :] >= gap[:, None]                         # (m, n): n kept in m's copy
  rows = (keep * bits[None, :]).sum(-1)
  return jnp.zeros((2 ** k,), jnp.float32).at[rows].add(d)


def loss(v: jax.Array, labels: jax.Array, weights: jax.Array, axis_name=None) -> jax.Array:
  """``(sum_i CE(V[full]_i) + sum_{S,i} W[S,i] CE(V[S]_i)) / (B + sum W)``, ``weights``
  ``(2**k, B)``; under ``axis_name`` the denominator is the devices' total over their number,
  so that the mean over devices is the one-device loss."""
  ce = shapley.cross_entropy(v.astype(jnp.float32), labels[None])           # (2**k, B)
  numerator = ce[-1].sum() + (weights * ce).sum()
  denominator = labels.shape[0] + weights.sum()
  if axis_name is not None:
    denominator = jax.lax.pmean(denominator, axis_name)
  return numerator / denominator


def accumulate(state: SampleState, phi: jax.Array, draw: jax.Array, axis_name=None
               ) -> SampleState:
  """``state`` with the drawn examples' (``draw`` (B,) bool) contributions added."""
  sums = (phi * draw[None]).sum(-1)
  count = draw.sum().astype(jnp.float32)
  if axis_name is not None:
    sums, count = jax.lax.psum((sums, count), axis_name)
  return state._replace(sums=state.sums + sums, count=state.count + count)


def draw_examples(key, part_ratio: float, b: int, axis_name=None) -> jax.Array:
  """``(b,)`` bool: a Bernoulli(``part_ratio``) draw of the batch's examples; under ``pmap``
  each device's slice of the draw over the whole batch (the key is replicated), so that the
  draw is the one-device draw."""
  if axis_name is None:
    return jax.random.bernoulli(key, part_ratio, (b,))
  devices = jax.lax.axis_size(axis_name)
  full = jax.random.bernoulli(key, part_ratio, (devices * b,))
  return jax.lax.dynamic_slice(full, (jax.lax.axis_index(axis_name) * b,), (b,))


def estimate(state: SampleState) -> jax.Array:
  """The contributions a step uses: the last epoch's, or before the first epoch ended the
  running mean so far."""
  running = state.sums / jnp.maximum(state.count, 1.0)
  return jnp.where(state.ready, state.contribution, running)


def epoch_update(state: SampleState) -> SampleState:
  """The end of an epoch: its mean contribution becomes the estimate (kept when no example
  was drawn), the sums reset."""
  seen = state.count > 0
  mean = state.sums / jnp.maximum(state.count, 1.0)
  return SampleState(jnp.zeros_like(state.sums), jnp.zeros_like(state.count),
                     jnp.where(seen, mean, state.contribution), state.ready | seen)


def copy_weights(hp: HParams, phi: jax.Array, state: SampleState) -> jax.Array:
  """``(2**k, B)`` the extra copies of each subset pass of each example."""
  k, b = phi.shape
  if hp.level == "sample":
    rows = jnp.asarray(single_rows(k))
    return jnp.zeros((2 ** k, b), jnp.float32).at[rows].set(sample_copies(phi))
  per_subset = modality_copies(estimate(state), hp.alpha, hp.variant)
  return jnp.broadcast_to(per_subset[:, None], (2 ** k, b))


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  hp, labels = ctx.hp, batch["label"]
  state = carry_tx.get_carry(opt_state, SampleState)
  draw_key, pass_key = jax.random.split(rng)
  v, pullback, aux = subset_step(ctx, params, batch_stats, batch, pass_key)
  v0 = jax.lax.stop_gradient(v)
  phi = sample_contributions(v0, labels, hp.variant)
  draw = draw_examples(draw_key, hp.part_ratio, labels.shape[0], ctx.axis_name)
  new = accumulate(state, phi, draw, ctx.axis_name)
  weights = jnp.where(active, copy_weights(hp, phi, new), 0.0)
  value, cotangent = jax.value_and_grad(lambda x: loss(x, labels, weights, ctx.axis_name))(
      v.astype(jnp.float32))
  grads = pullback(cotangent.astype(v.dtype))
  logits = v0[-1].astype(jnp.float32)
  metrics = shapley_metrics(v0, shapley.cross_entropy(logits, labels).mean(), logits, labels,
                            ctx.modalities)
  metrics["copies"] = weights.sum(0).mean()
  for i, m in enumerate(ctx.modalities):
    metrics[f"phi/{m}"] = phi[i].mean()
  metrics.update(aux_metrics(aux))
  metrics["resampled_loss"] = value
  return StepOutput(grads, {"carry": new}, aux.batch_stats, metrics)


def epoch_end(ctx, state, epoch, evaluate):
  del ctx, epoch, evaluate
  return state.replace(opt_state=carry_tx.replace_carry(state.opt_state, SampleState,
                                                        epoch_update))


METHOD = Method(name="sample", hparams=hparams, gradients=gradients, make_tx=make_tx,
                logged_state=("contribution",), epoch_end=epoch_end)
