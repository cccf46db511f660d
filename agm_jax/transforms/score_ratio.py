"""Score-ratio modulation: OGM-GE (CVPR 2022), OGM-GE-RA (AGM Table 8), OGM and OPM (T-PAMI 2024).

Each step every modality m has a uni-modal logit (late fusion: ``W_m z_m + b/k``, the fusion
layer's block for m) and a *score*, the summed softmax probability of the true class::

    score_m = sum_i softmax(logits_m)[i, y_i]                               (ogm_scores)

**OGM-GE** (Peng et al., "Balanced Multimodal Learning via On-the-fly Gradient Modulation",
CVPR 2022; GeWu-Lab/OGM-GE_CVPR2022 ``main.py``). For k = 2, ``rho_v = score_v / score_a``,
``rho_a = 1 / rho_v``; the dominant modality (``rho > 1``; audio on a tie, as the released
``else`` branch) gets ``coeff = 1 - tanh(alpha * relu(rho))``, the other 1. For k > 2 we use
the ratio to the runner-up, ``rho^m = score_m / max_{j≠m} score_j``, which is the same for
k = 2 and again modulates only the arg-max modality. The coefficient scales the dominant
modality's *encoder* gradient; GE then adds ``N(0, std(g) + 1e-8)`` to every encoder kernel
(``transforms.ge.add_ge_noise``; std of the gradient before scaling, as the released code).
The T-PAMI 2024 paper's eq. 16 (Sec. 3.2.2) differs: ``h ~ N(0, Sigma / |B|)``, the
mini-batch sampling covariance of ``g``, not the spread of one tensor's entries; we follow
the code (both released codes).

Which leaves are scaled and get noise is ``scope`` (``transforms.partition.SCOPES``; the
released codes differ):

* ``"conv"``: the 4-D conv kernels of the modality's encoder, scaled and noised — the OGM-GE
  repository (``main.py``: ``'audio' in layer and len(parms.grad.size()) == 4``), and the
  released AGM code's AV-MNIST (``run/AVMNIST_main.py``, same test; its ``split('.')[1]``
  finds the encoder only under ``DataParallel``'s ``module.`` prefix, else nothing).
* ``"branch"``: every parameter of the modality's encoder and of its classifier block
  (``SumFusion``'s ``classifier_<i>``), scaled and noised — the released AGM code's CREMA-D
  (``run/CREMAD_main.py``: ``'audio_net' in layer or 'audio_cls' in layer``, its baseline
  model ``AVClassifier_Sum`` having ``audio_cls``/``visual_cls``). ``"encoder"``: the
  encoder's parameters only (the same on a concat head, which has no per-modality block).
* ``"mixed"`` (default, agm-jax's earlier reading): every encoder parameter scaled, GE noise
  on its ndim >= 2 leaves. Matches no released code.

**OGM-GE-RA** (AGM, Li et al. ICCV 2023, Table 8): the ratio is steered toward its running
average instead of 1: ``rho`` is replaced by ``rho / mean_{t'<t} rho`` (cumulative mean, 1
before the first step); a modality is modulated only if that normalised ratio is the largest
and >= 1. The source says only that much (the supplement's Sec. D and Table 8's caption, "toward
the running average"), and no code was released: the rule ``1 - tanh(alpha * relu(rho /
mean rho))`` is agm-jax's construction of that sentence.

**OGM** (Wei, Peng, Hu et al., "On-the-fly Modulation for Balanced Multimodal Learning",
T-PAMI 2024; released code GeWu-Lab/BML_TPAMI2024 ``code/main.py``), three coefficient forms
(``form``), each one function, all with ``rho^m = mean_{j≠m} score_m / score_j`` (eq. 6;
k = 2: ``score_1 / score_2`` and its inverse, as ``main.py`` l. 119–120):

* ``"paper"`` (eq. 11, z(x) = tanh(x − 1), floor 0): ``k^m = max(0, 1 − alpha·tanh(rho^m −
  1))`` for every modality with ``rho^m > 1``, else 1 (:func:`ogm_coefficients`);
* ``"code"`` (``main.py`` l. 138–148): only the dominant modality (arg-max of rho; the LAST
  on a tie, the released ``else`` branch modulating modality 2) gets ``1 − tanh(alpha·
  relu(rho))``, the others 1 — OGM-GE's expression: at most ``1 − tanh(alpha)``, the value
  at rho = 1, where the paper's form is 1 (:func:`ogm_code_coefficients`);
* ``"plus"`` (OGM*, paper Sec. 4.4.2, ``main.py --use_OGM_plus``, l. 128–136): the dominant
  modality keeps 1 and every other modality's gradient is multiplied by ``gain`` (4 in the
  released code, a constant; its commented-out variant is ``1 + tanh(alpha·relu(rho))``)
  (:func:`ogm_plus_coefficients`).

The released runs modulate the encoders' 4-D conv kernels (``scope="conv"``, l. 157/164) and
add GE noise to both encoders (``--modulation`` defaults to ``OGM_GE``, l. 36, 158–167).

**OPM** (same paper, Algorithm 1, eq. 8; ``code/models/Classifier.py`` ``calcu_q``): drop
probability ``q^m = min(1, q_base * (1 + lam * tanh(rho^m - 1)))`` if ``rho^m > 1`` else 0
(:func:`opm_drop_probabilities`). The transform keeps ``rho`` and ``q`` in its state; the
trainer's forward pass zeroes modality m's features for a Bernoulli(q^m) subset of the batch
(``agm_jax.methods.opm``), with q from the current step's scores (the released code) or the
previous step's (the paper's Fig. 2, ``drop_prob`` of this state). :func:`skip_empty_batches`
wraps the optimiser so that a batch in which no example kept a modality takes no step (the
released ``continue``, ``main.py`` l. 95–97).

Scores are ``pmean``-ed over ``axis_name`` (a sum over the local batch: ratios are
unaffected); the noise key lives in the state, so replicas draw the same noise.

    tx = optax.chain(ogm_ge(alpha=0.1, num_modalities=2), optax.sgd(1e-3, momentum=0.9))
    updates, opt_state = tx.update(grads, opt_state, params, scores=ogm_scores(uni, y))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax.shapley import check_num_modalities
from agm_jax.transforms.common import (
  batch_statistic,
  check_extra_args,
  check_value,
  require_extra_arg,
  running_mean,
)
from agm_jax.transforms.ge import add_ge_noise
from agm_jax.transforms.partition import check_scope, count_by_modality, scale_by_modality

REFERENCES = ("one", "running_mean")
FORMS = ("paper", "code", "plus")   # OGM's coefficient (T-PAMI 2024): module docstring
SCORES = "the (k,) summed true-class probabilities, ogm_scores(unimodal_logits, labels)"


def ogm_scores(unimodal_logits: jax.Array, labels: jax.Array) -> jax.Array:
  """``score_m = sum_i softmax(logits_m)[i, y_i]`` of ``(k, B, K)`` logits: shape ``(k,)``."""
  p = jax.nn.softmax(jnp.asarray(unimodal_logits, jnp.float32), axis=-1)
  picked = jnp.take_along_axis(p, labels[None, :, None].astype(jnp.int32), axis=-1)[..., 0]
  return picked.sum(-1)


def runner_up_ratios(scores: jax.Array) -> jax.Array:
  """``score_m / max_{j≠m} score_j`` (k = 2: ``score_a/score_v`` and its inverse)."""
  s = jnp.asarray(scores, jnp.float32)
  k = s.shape[-1]
  others = jnp.where(jnp.eye(k, dtype=bool), -jnp.inf, s[None, :]).max(-1)
  return s / others


def mean_ratios(scores: jax.Array) -> jax.Array:
  """``rho^m = mean_{j≠m} score_m / score_j`` (T-PAMI 2024)."""
  s = jnp.asarray(scores, jnp.float32)
  k = s.shape[-1]
  ratio = s[:, None] / s[None, :]
  return jnp.where(jnp.eye(k, dtype=bool), 0.0, ratio).sum(-1) / (k - 1)


def ogm_ge_coefficients(scores: jax.Array, *, alpha: float,
                        reference: jax.Array | None = None) -> jax.Array:
  """OGM-GE's ``(k,)`` coefficients: ``1 - tanh(alpha * relu(rho))`` for the dominant modality.

  ``rho = runner_up_ratios(scores) / reference`` (``reference`` = 1: OGM-GE; the running mean
  of the ratios: OGM-GE-RA). The modulated modality is the arg-max of ``rho`` (the first on a
  tie), and only if its ``rho >= 1`` (always true with reference 1). k = 2, scores (3, 1),
  alpha 0.5: ``(1 - tanh(1.5), 1)``.
  """
  rho = runner_up_ratios(scores)
  if reference is not None:
    rho = rho / jnp.asarray(reference, jnp.float32)
  k = rho.shape[-1]
  dom = jnp.argmax(rho)
  value = 1.0 - jnp.tanh(alpha * jax.nn.relu(rho[dom]))
  hit = (jnp.arange(k) == dom) & (rho[dom] >= 1.0)
  return jnp.where(hit, value, 1.0)


def ogm_coefficients(scores: jax.Array, *, alpha: float) -> jax.Array:
  """T-PAMI OGM, the paper's eq. 11: ``max(0, 1 - alpha * tanh(rho^m - 1))`` where
  ``rho^m > 1``, else 1. Scores (2, 1), alpha 0.8: ``(1 - 0.8 tanh(1), 1) = (0.3907, 1)``."""
  rho = mean_ratios(scores)
  return jnp.where(rho > 1.0, jnp.maximum(0.0, 1.0 - alpha * jnp.tanh(rho - 1.0)), 1.0)


def dominant_modality(rho: jax.Array) -> jax.Array:
  """The ``(k,)`` one-hot (bool) of the arg-max of ``rho``, the LAST one on a tie (released
  T-PAMI ``main.py``: ``if radio_1 > 1: … else:`` modulates modality 2 when the scores tie)."""
  k = rho.shape[-1]
  return jnp.arange(k) == k - 1 - jnp.argmax(rho[::-1])


def ogm_code_coefficients(scores: jax.Array, *, alpha: float) -> jax.Array:
  """T-PAMI OGM as released (``main.py``, ``use_OGM_plus`` off): the dominant modality gets
  ``1 - tanh(alpha * relu(rho))``, the others 1. Scores (2, 1), alpha 0.8:
  ``(1 - tanh(1.6), 1) = (0.0783, 1)``."""
  rho = mean_ratios(scores)
  return jnp.where(dominant_modality(rho), 1.0 - jnp.tanh(alpha * jax.nn.relu(rho)), 1.0)


def ogm_plus_coefficients(scores: jax.Array, *, gain: float) -> jax.Array:
  """OGM* (T-PAMI Sec. 4.4.2; ``main.py --use_OGM_plus``): the dominant modality 1, every
  other modality ``gain`` (released: 4). Scores (2, 1), gain 4: ``(1, 4)``."""
  return jnp.where(dominant_modality(mean_ratios(scores)), 1.0, gain)


def opm_drop_probabilities(rho: jax.Array, *, q_base: float, lam: float) -> jax.Array:
  """T-PAMI OPM: ``min(1, q_base * (1 + lam * tanh(rho^m - 1)))`` where ``rho^m > 1``, else 0."""
  rho = jnp.asarray(rho, jnp.float32)
  q = q_base * (1.0 + lam * jnp.tanh(rho - 1.0))
  return jnp.where(rho > 1.0, jnp.clip(q, 0.0, 1.0), 0.0)


class OGMState(NamedTuple):
  """State of :func:`ogm_ge` / :func:`ogm` (checkpoint it with the optimiser)."""
  coeff: jax.Array         # (k,) the coefficients of the last update (for logging)
  rho: jax.Array           # (k,) the last step's ratios
  running_rho: jax.Array   # (k,) cumulative mean of rho (OGM-GE-RA's reference)
  count: jax.Array         # int32 (): steps seen
  noise_key: jax.Array     # raw uint32 PRNG key for GE


def _check(alpha, k):
  k = check_num_modalities(k)
  check_value("alpha", alpha, lambda a: a >= 0, "must be >= 0")
  return k


def _check_selects(params, k: int, scope: str) -> None:
  """A scope other than the default must pick at least one leaf of every modality."""
  if params is None or scope == "mixed":
    return
  counts = count_by_modality(params, k, scope=scope)
  if min(counts) == 0:
    i = counts.index(0)
    raise ValueError(f"scope {scope!r} selects no parameter of modality {i} (encoders_{i}"
                     f"{' has no 4-D conv kernel' if scope == 'conv' else ''})")


def _score_modulation(k: int, ratios: Callable, coefficients: Callable, *, noise: bool,
                      seed: int, axis_name: str | None, scope: str
                      ) -> optax.GradientTransformationExtraArgs:
  check_scope(scope)

  def init_fn(params):
    _check_selects(params, k, scope)
    ones = jnp.ones((k,), jnp.float32)
    return OGMState(ones, ones, ones, jnp.zeros((), jnp.int32), jax.random.PRNGKey(seed))

  def update_fn(updates, state, params=None, *, scores=None, active=True, **extra_args):
    del params
    check_extra_args(extra_args, "ogm")
    require_extra_arg(scores, "scores", "ogm", SCORES)
    scores = batch_statistic(scores, k, "scores", axis_name)
    coeff = jnp.where(active, coefficients(scores, state), 1.0)
    out = scale_by_modality(updates, coeff, scope="encoder" if scope == "mixed" else scope)
    key, sub = jax.random.split(state.noise_key)
    if noise:
      out = add_ge_noise(out, sub, reference=updates, enabled=active, scope=scope)
    rho = ratios(scores)
    count = state.count + 1
    return out, OGMState(coeff, rho, running_mean(state.running_rho, rho, count), count, key)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def ogm_ge(alpha: float, *, num_modalities: int, noise: bool = True, reference: str = "one",
           seed: int = 0, axis_name: str | None = None, scope: str = "mixed"
           ) -> optax.GradientTransformationExtraArgs:
  """OGM-GE (CVPR 2022) as an optax transformation; see the module docstring.

  ``update(grads, state, params=None, *, scores, active=True)``: ``grads`` is the ordinary
  joint gradient; the dominant modality's leaves under ``scope`` (default: its encoder,
  ``encoders_<i>``, see ``transforms.partition``) are scaled by its coefficient and, with
  ``noise``, every modality's leaves under ``scope`` get GE noise (default: the encoder
  kernels). Outside the modulation window (``active=False``) the gradient passes unchanged.

  Args:
    alpha: modulation strength >= 0 (released default 0.1).
    num_modalities: k >= 2.
    noise: add GE noise (False: plain OGM of the CVPR paper).
    reference: "one" (OGM-GE) or "running_mean" (OGM-GE-RA, AGM Table 8).
    seed: the GE noise key.
    axis_name: a mapped axis to average ``scores`` over.
    scope: which leaves are scaled and noised: "mixed" (default), "conv", "encoder",
      "branch" (module docstring: which released code each is).
  """
  k = _check(alpha, num_modalities)
  if reference not in REFERENCES:
    raise ValueError(f"reference {reference!r} is unknown; valid: {list(REFERENCES)}")

  def coefficients(scores, state):
    ref = None
    if reference == "running_mean":
      ref = jnp.where(state.count > 0, state.running_rho, 1.0)
    return ogm_ge_coefficients(scores, alpha=alpha, reference=ref)

  return _score_modulation(k, runner_up_ratios, coefficients, noise=noise, seed=seed,
                           axis_name=axis_name, scope=scope)


def ogm(alpha: float, *, num_modalities: int, form: str = "paper", plus_gain: float = 4.0,
        noise: bool = True, seed: int = 0, axis_name: str | None = None, scope: str = "mixed"
        ) -> optax.GradientTransformationExtraArgs:
  """OGM (T-PAMI 2024) with GE noise; same interface as :func:`ogm_ge`.

  ``form`` picks the coefficient (module docstring): "paper" (eq. 11, every modality with
  ``rho^m > 1`` gets ``max(0, 1 - alpha tanh(rho^m - 1))``), "code" (the released ``main.py``:
  the dominant modality ``1 - tanh(alpha relu(rho))``), "plus" (OGM*: every non-dominant
  modality ``plus_gain``; ``alpha`` unused). An alpha tuned for one form does not carry over to
  another (the released 0.8 is the code form's).
  """
  k = _check(alpha, num_modalities)
  if form not in FORMS:
    raise ValueError(f"form {form!r} is unknown; valid: {list(FORMS)}")
  check_value("plus_gain", plus_gain, lambda g: g > 0, "must be > 0")
  coefficients = {
      "paper": lambda s, _: ogm_coefficients(s, alpha=alpha),
      "code": lambda s, _: ogm_code_coefficients(s, alpha=alpha),
      "plus": lambda s, _: ogm_plus_coefficients(s, gain=plus_gain),
  }[form]
  return _score_modulation(k, mean_ratios, coefficients, noise=noise, seed=seed,
                           axis_name=axis_name, scope=scope)


class OPMState(NamedTuple):
  rho: jax.Array        # (k,) the last step's mean ratios
  drop_prob: jax.Array  # (k,) q of the last step's rho (the next forward's with rho="previous")


def opm(q_base: float, lam: float, *, num_modalities: int,
        axis_name: str | None = None) -> optax.GradientTransformationExtraArgs:
  """OPM's (T-PAMI 2024) state as an optax transformation: gradients pass unchanged.

  ``update(grads, state, params=None, *, scores, active=True)`` stores
  ``rho = mean_ratios(scores)`` and ``drop_prob = opm_drop_probabilities(rho)`` (0 while not
  ``active``). With ``opm.rho="previous"`` the forward pass of the next step drops modality
  m's features with probability ``drop_prob[m]``; with ``"current"`` the forward pass computes
  the same q from its own scores and this state only logs it.
  """
  k = check_num_modalities(num_modalities)
  check_value("q_base", q_base, lambda q: 0.0 <= q <= 1.0, "must be in [0, 1]")
  check_value("lam", lam, lambda x: x >= 0, "must be >= 0")

  def init_fn(params):
    del params
    return OPMState(jnp.ones((k,), jnp.float32), jnp.zeros((k,), jnp.float32))

  def update_fn(updates, state, params=None, *, scores=None, active=True, **extra_args):
    del state, params
    check_extra_args(extra_args, "opm")
    require_extra_arg(scores, "scores", "opm", SCORES)
    scores = batch_statistic(scores, k, "scores", axis_name)
    rho = mean_ratios(scores)
    q = jnp.where(active, opm_drop_probabilities(rho, q_base=q_base, lam=lam), 0.0)
    return updates, OPMState(rho, q)

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)


class SkipState(NamedTuple):
  """State of :func:`skip_empty_batches`."""
  inner: optax.OptState
  skipped: jax.Array    # int32 (): steps skipped so far


KEPT = "the number of examples of the batch that kept at least one modality (OPM's drop)"


def skip_empty_batches(inner: optax.GradientTransformation, *, axis_name: str | None = None
                       ) -> optax.GradientTransformationExtraArgs:
  """``inner`` (OPM and the base optimiser) run only on a batch in which some example kept a
  modality: the released T-PAMI ``main.py`` skips ``optimizer.step()`` (``continue``) when OPM
  dropped every modality of every example.

  ``update(grads, state, params=None, *, kept, **extra_args)``: ``kept`` is the batch's count
  of examples with at least one modality left (summed over ``axis_name``). When it is 0 the
  updates are zeros and ``inner``'s whole state is returned unchanged — momentum, Adam's
  moments, weight decay (applied through the update) and the optimiser's step count, which
  drives its learning-rate schedule, so a schedule boundary moves one step later per skipped
  step — and ``skipped`` counts the step. The trainer's own step counter still advances.
  Otherwise ``inner.update(grads, state.inner, params, **extra_args)`` as is. Both branches
  are computed and selected with ``jnp.where`` (no ``lax.cond``: it composes with any inner).
  With OPM's own ``q`` no batch is ever empty (the modality with the lowest score has
  ``rho <= 1``, so ``q = 0``); the gate covers drop probabilities set otherwise.
  """
  inner = optax.with_extra_args_support(inner)

  def init_fn(params):
    # Copies: an inner state may hold one array in several fields (OGMState's ones), which a
    # train step that donates its state cannot take twice.
    state = jax.tree.map(lambda x: jnp.array(x, copy=True), inner.init(params))
    return SkipState(state, jnp.zeros((), jnp.int32))

  def update_fn(updates, state, params=None, *, kept=None, **extra_args):
    require_extra_arg(kept, "kept", "skip_empty_batches", KEPT)
    kept = jnp.asarray(kept, jnp.float32)
    if axis_name is not None:
      kept = jax.lax.psum(kept, axis_name)
    take = kept > 0
    new, inner_state = inner.update(updates, state.inner, params, **extra_args)
    new = jax.tree.map(lambda u: jnp.where(take, u, jnp.zeros_like(u)), new)
    inner_state = jax.tree.map(lambda n, o: jnp.where(take, n, o), inner_state, state.inner)
    return new, SkipState(inner_state, state.skipped + (~take).astype(jnp.int32))

  return optax.GradientTransformationExtraArgs(init_fn, update_fn)
