"""MLA: Multimodal Learning with Alternating unimodal adaptation (Zhang, Yoon, Bansal, Yao,
"Multimodal Representation Learning by Alternating Unimodal Adaptation", CVPR 2024; authors'
code Cecile-hi/Multimodal-Learning-with-Alternating-Unimodal-Adaptation ``main.py``,
``utils/utils.py`` (``GSPlugin``); BalanceBenchmark ``balancemm/trainer/MLA_trainer.py``).

One modality per optimiser step through ONE head shared by all modalities: optimiser step
``t`` trains modality ``m = t mod k`` on ``CE(W f_m + b, y)`` (encoder m and the shared head).
``alternation="batch"`` (default; the authors' ``main.py`` and BalanceBenchmark): every batch
takes k optimiser steps (``Method.substeps``), one per modality in turn, the shared head as the
previous one left it; each encoder's BatchNorm statistics move once per batch (its own step),
and the learning-rate schedule counts batches. ``"step"``: one modality per batch (each
modality sees 1/k of the batches; the reading of this library before 2026-11-24).
``untrained="skip"`` (default): the modalities not trained by a step are left alone — no
update, no momentum, no weight decay (``transforms.untrained.skip_untrained``; PyTorch's step
skips parameters whose ``.grad`` is None); ``"zero"``: they get a zero gradient, so momentum
and weight decay still move them (optax's natural behaviour). Neither reproduces the authors'
code exactly: it pins ``torch==1.8.1`` (``requirements.txt``), whose ``optimizer.zero_grad()``
after each modality's step (``main.py:440``, ``:452``) zeroes the gradients in place (not to
None), and it deletes every ``.grad`` at the end of each batch (``main.py:468-470``). Within a
batch a modality trained earlier then has a zero gradient during the later modalities' steps
(SGD momentum 0.9 and weight decay 1e-4, ``main.py:749``, move it: ``"zero"``), while one not
yet trained has None and is skipped (``"skip"``); the audio encoder is moved by the visual
step, never the reverse (three modalities: audio by two later steps, visual by one).
The head is the late-fusion head's linear layer with its per-modality blocks tied into one:
``model.fusion`` "concat" (``W`` the kernel's block of every modality, one bias) or "sum" (every
``classifier_m`` the same Dense); every modality's features must have the same size.
``prepare`` ties them (the copies of modality 0's block), every step gives all copies the same
gradient, so they stay equal and the model's own forward is ``sum_m W f_m + b`` (concat).

Gradient modification of the shared head against forgetting (the paper's orthogonal weight
modification, from Zeng et al. 2019): a projector ``P`` (D x D, ``I`` at first), updated from
the mean ``r`` of this step's features (no gradient) by recursive least squares::

    k = P r;   P <- P - k k^T / (alpha + r^T k);   P <- P / ||P||_F   (``normalize``, both codes)
    grad_W <- grad_W P        (``projection="replace"``: the paper, the authors' GSPlugin)
    grad_W <- grad_W + grad_W P   (``"add"``: BalanceBenchmark's trainer)

(PyTorch's ``(K, D)`` weight; on Flax's ``(D, K)`` kernel this is ``P @ grad``), skipped at the
run's first step (the code's ``exp_count == 0``). The denominator here is the scalar
``alpha + r^T P r`` of recursive least squares, the update of the orthogonal weight
modification (Zeng et al.) the paper adopts. Both codes write it ``torch.mm(k, r)`` (authors'
``utils/utils.py:36``, BalanceBenchmark ``MLA_trainer.py:48``) with ``k`` a ``(D, 1)`` column and
``r`` a ``(1, D)`` row: an outer product, so their ``P`` loses ``k_i k_j / (alpha + k_i r_j)``
entry by entry (and is no longer symmetric; they apply ``grad P^T``). In the authors' code the
line never runs (the name match below); in BalanceBenchmark it does, so its projector differs
from this one. ``alpha = 0.1 ** (1 + j / n)`` with ``j`` the
step's batch index in its epoch and ``n`` the steps per epoch (the code's ``lamda``; from
``ctx.steps_per_epoch``; a context without it, e.g. a loop of your own, records ``n`` after the
first epoch and uses ``alpha = 0.1`` until then; with ``"batch"`` all k steps of a batch share
its ``j``, as in the authors' loop). The bias's gradient is not modified.
Note: the authors' GSPlugin matches the parameter name ``"module.weight"``, which the plain
``nn.Linear`` it is given (``fusion_module.fc_out``, ``main.py:437``) does not have, so their
released projection never runs; BalanceBenchmark matches ``"weight"``.

Test-time fusion (``Method.evaluate``): ``fused = sum_m lambda_m (W f_m + b)`` with
``lambda_m = exp(max_j H_j - H_m) / sum_j exp(max_j H_j - H_j)`` and ``H_m`` the entropy of
``softmax(W f_m + b)``: per example over the classes (``fusion="entropy"``, the paper), or, as
the authors' ``calculate_entropy``, one entropy per modality and eval batch of the softmax over
the batch axis (``"entropy_batch"``: results depend on the batch composition, including the
trainer's padding of the last eval batch); ``"equal"``: ``lambda_m = 1/k``. The authors'
README "MLA (fixed fusion)" command (no ``--dynamic``) fuses with fixed unequal weights instead:
``0.55 out_a + 0.45 out_v`` (``main.py:651`` with ``av_alpha`` from ``main(av_alpha = 0.55)``,
``:968``; the ``--av_alpha`` option, 0.5, is not what training-time evaluation reads), and
``0.35 out_a + 0.25 out_v + 0.4 out_t`` for three modalities (``main.py:649``, ``--a_alpha``,
``--v_alpha``, ``--t_alpha``, ``:56-58``); ``"equal"`` is not that reading. ``acc/<m>`` and
``mono_ce/<m>`` are those of ``W f_m + b`` (each modality through the shared head).

State (optimiser state, :class:`MLAState` in a ``carry`` transform): the optimiser-step count,
``P``, the steps (batches) per epoch once known, and which modalities the last batch trained
(logged as ``modality/<m>``: a one-hot with ``"step"``, all ones with ``"batch"``). Config
section ``mla``: ``alternation``, ``untrained``, ``projection``, ``normalize``, ``fusion``.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import shapley, subsets
from agm_jax.methods import branches
from agm_jax.methods.base import EvalOutput, Method, StepOutput, from_section, inputs_of, one_of
from agm_jax.models import fusion as fusion_lib
from agm_jax.transforms import carry as carry_tx
from agm_jax.transforms import partition
from agm_jax.transforms import untrained as untrained_tx

PROJECTIONS = ("replace", "add")
FUSIONS = ("entropy", "entropy_batch", "equal")
ALTERNATIONS = ("batch", "step")
UNTRAINED = ("skip", "zero")


@dataclasses.dataclass(frozen=True)
class HParams:
  projection: str
  normalize: bool
  fusion: str
  alternation: str = "batch"
  untrained: str = "skip"

  def __post_init__(self):
    for name, valid in (("alternation", ALTERNATIONS), ("untrained", UNTRAINED),
                        ("projection", PROJECTIONS), ("fusion", FUSIONS)):
      one_of(name, getattr(self, name), valid)


def hparams(section) -> HParams:
  return from_section(HParams, section)


class MLAState(NamedTuple):
  count: jax.Array        # () int32: optimiser steps taken
  p: jax.Array            # (D, D) the projector
  epoch_len: jax.Array    # () int32: steps per epoch (0: not known yet)
  modality: jax.Array     # (k,) the modalities the last batch trained (logged)


def _head_kind(model) -> str:
  fusion = getattr(model, "fusion", None)
  if isinstance(fusion, fusion_lib.ConcatFusion):
    return "concat"
  if isinstance(fusion, fusion_lib.SumFusion):
    return "sum"
  name = type(fusion).__name__ if fusion is not None else type(model).__name__
  raise ValueError(f"mla needs a linear late-fusion head to share (model.fusion 'concat' or "
                   f"'sum'); {name} is not one")


def shared_head(params, kind: str, k: int):
  """``(W (D, K), b (K,))``: modality 0's block of the head (every block once tied)."""
  fusion = params["fusion"]
  if kind == "sum":
    return fusion["classifier_0"]["kernel"], fusion["classifier_0"]["bias"]
  kernel = fusion["classifier"]["kernel"]
  return kernel[:kernel.shape[0] // k], fusion["classifier"]["bias"]


def tie_head(params, kind: str, k: int, w, b):
  """``params`` with every modality's block of the head set to ``(w, b)`` (also used to
  spread the shared gradient to every block)."""
  fusion = dict(params["fusion"])
  if kind == "sum":
    for i in range(k):
      fusion[f"classifier_{i}"] = {"kernel": w, "bias": b}
  else:
    fusion["classifier"] = {"kernel": jnp.concatenate([w] * k, 0), "bias": b}
  return dict(params, fusion=fusion)


def _feature_size(params, kind: str, k: int) -> int:
  fusion = params["fusion"]
  if kind == "sum":
    dims = {np.shape(fusion[f"classifier_{i}"]["kernel"])[0] for i in range(k)}
    if len(dims) != 1:
      raise ValueError(f"mla needs every modality's features of one size, got {sorted(dims)}")
    return dims.pop()
  rows = np.shape(fusion["classifier"]["kernel"])[0]
  if rows % k:
    raise ValueError(f"mla needs every modality's features of one size ({rows} rows over "
                     f"{k} modalities)")
  return rows // k


def make_tx(ctx, base):
  if ctx.k < 2:
    raise ValueError(f"mla needs at least 2 modalities, got {ctx.k}")
  kind, k = _head_kind(ctx.model), ctx.k
  if kind == "concat":
    dims = {getattr(e, "features", None) for e in ctx.model.encoders}
    if len(dims) > 1 and None not in dims:
      raise ValueError(f"mla needs every modality's features of one size, got {sorted(dims)}")

  def init(params):
    d = _feature_size(params, kind, k)
    return MLAState(jnp.zeros((), jnp.int32), jnp.eye(d, dtype=jnp.float32),
                    jnp.asarray(ctx.steps_per_epoch, jnp.int32), jnp.zeros((k,), jnp.float32))
  return carry_tx.with_carry(untrained_tx.skip_untrained(base), init, name="mla")


def substeps(ctx) -> int:
  """Optimiser steps per batch: k with ``alternation="batch"``, else 1."""
  return ctx.k if ctx.hp.alternation == "batch" else 1


def owm_alpha(count, epoch_len) -> jax.Array:
  """``0.1 ** (1 + j / n)``, ``j`` the batch index in the epoch, ``n`` the steps per epoch
  (``j / n = 0`` while ``n`` is unknown)."""
  n = jnp.maximum(epoch_len, 1)
  frac = jnp.where(epoch_len > 0, (count % n) / n, 0.0)
  return 0.1 ** (1.0 + frac)


def update_projector(p, r, alpha, *, normalize: bool):
  """One recursive-least-squares step of ``P`` with the mean feature ``r`` (D,), with the
  scalar denominator ``alpha + r^T P r`` (both codes: an outer product; module docstring)."""
  kv = p @ r
  p = p - jnp.outer(kv, kv) / (alpha + r @ kv)
  return p / jnp.linalg.norm(p) if normalize else p


def project(grad_kernel, p, projection: str):
  """The kernel gradient ``(D, K)`` modified by ``P`` (see the module docstring)."""
  projected = p @ grad_kernel
  return projected if projection == "replace" else grad_kernel + projected


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active
  hp, k, labels = ctx.hp, ctx.k, batch["label"]
  kind = _head_kind(ctx.model)
  state = carry_tx.get_carry(opt_state, MLAState)
  m = state.count % k
  per_batch = substeps(ctx)

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    w, b = shared_head(p, kind, k)
    f = jnp.stack(feats)[m]
    uni = (f @ w + b).astype(jnp.float32)
    loss = shapley.cross_entropy(uni, labels).mean()
    return loss, branches.Objective(logits, stats, True, f)

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  r = out.extra.astype(jnp.float32).mean(0)
  if ctx.axis_name is not None:
    r = jax.lax.pmean(r, ctx.axis_name)
  first = state.count == 0
  new_p = update_projector(state.p, r, owm_alpha(state.count // per_batch, state.epoch_len),
                           normalize=hp.normalize)
  new_p = jnp.where(first, state.p, new_p)
  gw, gb = shared_head(out.grads, kind, k)
  gw = jnp.where(first, gw, project(gw, new_p, hp.projection))
  grads = tie_head(out.grads, kind, k, gw, gb)
  this = jnp.arange(k) == m   # the modality this step trains
  logged = jnp.ones((k,), jnp.float32) if per_batch > 1 else this.astype(jnp.float32)
  carry = state._replace(count=state.count + 1, p=new_p, modality=logged)
  kwargs = {"carry": carry}
  if hp.untrained == "skip":   # the other encoders: no update, momentum or weight decay
    kwargs["trained"] = this
  stats = out.batch_stats
  if per_batch > 1:   # the schedule counts batches, each encoder's statistics move once a batch
    kwargs["advance"] = m == k - 1
    stats = partition.select_by_modality(this, stats, batch_stats, shared="new")
  return StepOutput(grads, kwargs, stats, dict(out.metrics))


def fusion_weights(logits, how: str) -> jax.Array:
  """``(k, B, 1)`` weights of the uni-modal logits ``(k, B, K)`` (module docstring)."""
  k = logits.shape[0]
  if how == "equal":
    return jnp.full(logits.shape[:2] + (1,), 1.0 / k)
  axis = -1 if how == "entropy" else 1
  logp = jax.nn.log_softmax(logits, axis=axis)
  h = -(jnp.exp(logp) * logp).sum(-1, keepdims=True)            # (k, B, 1)
  if how == "entropy_batch":
    h = h.sum(1, keepdims=True) * jnp.ones_like(h)                # one per modality
  return jax.nn.softmax(-h, axis=0)   # = exp(max H - H_m) / sum_j exp(max H - H_j)


def evaluate(ctx, params, batch_stats, batch) -> EvalOutput:
  kind, k, labels = _head_kind(ctx.model), ctx.k, batch["label"]
  feats, _ = subsets.apply(ctx.model, params, batch_stats, inputs_of(batch), train=False,
                           method="encode")
  w, b = shared_head(params, kind, k)
  uni = jnp.stack([(f @ w + b).astype(jnp.float32) for f in feats])   # (k, B, K)
  logits = (fusion_weights(uni, ctx.hp.fusion) * uni).sum(0)
  z = jnp.concatenate([f.astype(jnp.float32) for f in feats], -1)
  return EvalOutput(shapley.example_loss(logits, labels), shapley.example_correct(logits, labels),
                    shapley.example_loss(uni, labels[None]), shapley.example_correct(uni, labels),
                    z, logits)


def prepare(ctx, state, copies):
  """Ties every block of the head to modality 0's (the shared head)."""
  del copies
  kind = _head_kind(ctx.model)
  w, b = shared_head(state.params, kind, ctx.k)
  params = tie_head(state.params, kind, ctx.k, w, b)
  return state.replace(params=jax.tree.map(np.array, params))   # distinct buffers per block


def epoch_end(ctx, state, epoch, evaluate):
  """Records the steps per epoch (the ``alpha`` schedule) after the first epoch."""
  del ctx, evaluate
  n = int(np.asarray(state.step).reshape(-1)[0]) // (epoch + 1)
  opt_state = carry_tx.replace_carry(
      state.opt_state, MLAState,
      lambda s: s._replace(epoch_len=jnp.where(s.epoch_len > 0, s.epoch_len, n)
                           .astype(s.epoch_len.dtype)))
  return state.replace(opt_state=opt_state)


METHOD = Method(name="mla", hparams=hparams, gradients=gradients, make_tx=make_tx,
                evaluate=evaluate, requires_separable=True, logged_state=("modality",),
                epoch_end=epoch_end, prepare=prepare, substeps=substeps)
