"""What every training method plugs into the shared train step (docs/ARCHITECTURE.md).

A method is one file that builds a :class:`Method`. The trainer turns the method's config
section into typed hyper-parameters once (``method.hparams(config[method.name])``, outside
jit), builds a :class:`Context` (model, modalities, hyper-parameters, subset settings, the
collective axis), and then runs the same step for every method::

    out = method.gradients(ctx, params, batch_stats, batch, rng, active, opt_state)
    updates, opt_state = tx.update(out.updates, opt_state, params, **out.tx_kwargs)

``opt_state`` is the optimiser state before this step (OPM's drop probabilities and Greedy's
re-balancing mode live there). ``active`` says whether this epoch is inside the method's
modulation window (``hp.window``; always True for a method without one). ``out.updates`` is
a gradient pytree, or a linear function ``kappa -> gradients`` that a modulation transform at
the head of ``tx`` calls with its coefficients (one backward pass).

The shared pieces live here once: :func:`subset_step` (the 2**k passes and their pullback for
any cotangent), :func:`shapley_step` (AGM's Shapley form of it), :func:`train_metrics` (the
train-line scalars), :func:`shapley_evaluate` and :func:`from_section` (config section ->
typed hyper-parameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax import shapley, subsets
from agm_jax.models import fusion as fusion_lib


@dataclasses.dataclass(frozen=True)
class Window:
  """The epochs ``start_epoch … end_epoch`` (inclusive, from 0) in which a method modulates;
  outside them its coefficients are 1 (its running statistics still update)."""
  start_epoch: int
  end_epoch: int

  def __post_init__(self):
    if self.start_epoch < 0:
      raise ValueError(f"start_epoch must be >= 0, got {self.start_epoch}")
    if self.start_epoch > self.end_epoch:
      raise ValueError(f"start_epoch ({self.start_epoch}) must be <= end_epoch "
                       f"({self.end_epoch})")

  def active(self, epoch: int) -> bool:
    return self.start_epoch <= epoch <= self.end_epoch


_CONVERT = {"float": float, "int": int, "bool": bool, "str": str,
            "tuple[float, ...]": lambda v: tuple(float(x) for x in (v or ()))}


def one_of(name: str, value: Any, valid: Sequence[Any]) -> None:
  """A hyper-parameter's choice check: ``ValueError("<name> must be one of [...], got ...")``
  (``from_section`` prefixes the section)."""
  if value not in valid:
    raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")


def from_section(cls: type, section: Mapping[str, Any] | None) -> Any:
  """The frozen dataclass ``cls`` from a config section: each field read once and converted
  to its annotated type; a ``window: Window`` field reads ``start_epoch``/``end_epoch``.
  Every key of the section must be a field (a stale or misspelt key is an error) and every
  field must be in the section (the defaults live in ``configs/default.py`` only)."""
  section = dict(section or {})
  kwargs, used = {}, set()
  for field in dataclasses.fields(cls):
    if field.type in ("Window", Window):
      keys = ("start_epoch", "end_epoch")
      missing = [key for key in keys if key not in section]
      if missing:
        raise ValueError(f"{missing[0]} is missing from the config section")
      kwargs[field.name] = Window(*(int(section[key]) for key in keys))
      used.update(keys)
      continue
    if field.name not in section:
      raise ValueError(f"{field.name} is missing from the config section")
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    kwargs[field.name] = _CONVERT[kind if kind in _CONVERT else str(field.type)](
        section[field.name])
    used.add(field.name)
  unused = sorted(set(section) - used)
  if unused:
    raise ValueError(f"{unused[0]} is not a setting of this method; valid: "
                     f"{', '.join(sorted(used)) or '(none)'}")
  return cls(**kwargs)


@dataclasses.dataclass(frozen=True)
class NoHParams:
  """The hyper-parameters of a method that has none (an empty config section)."""


@dataclasses.dataclass(frozen=True)
class Context:
  """Everything static a step needs; no ConfigDict rides into the jitted step."""
  model: Any
  modalities: tuple[str, ...]           # the model's modalities, in subset-bit order
  hp: Any                               # the method's typed hyper-parameters
  subsets: subsets.Settings = subsets.Settings()
  axis_name: str | None = None          # the collective axis under pmap (None: sharding)
  seed: int = 0                         # the run's seed (noise keys in the optimiser state)
  mono_modalities: tuple[str, ...] | None = None   # eval's per-modality rows (default: all)
  num_classes: int = 0                  # the task's classes (0: not given)
  steps_per_epoch: int = 0              # the run's training steps per epoch (0: not given)
  # each encoder's feature width D_m, in modality order, for a separable model (the trainer
  # fills it in; () when not given): the shapes of state a method keeps per modality
  feature_dims: tuple[int, ...] = ()

  @property
  def k(self) -> int:
    return len(self.modalities)

  @property
  def mono(self) -> tuple[str, ...]:
    return self.modalities if self.mono_modalities is None else self.mono_modalities


class StepOutput(NamedTuple):
  updates: Any                     # gradients, or a linear function kappa -> gradients
  tx_kwargs: Mapping[str, Any]     # keyword arguments of tx.update (e.g. mono_ce, active)
  batch_stats: Any                 # BatchNorm statistics after the full-input pass
  metrics: Mapping[str, jax.Array]  # scalars: loss, acc, acc/<m>, mono_ce/<m>, …


class EvalOutput(NamedTuple):
  """Per-example quantities of one evaluation batch."""
  loss: jax.Array         # (B,)
  correct: jax.Array      # (B,)
  mono_ce: jax.Array      # (k, B)
  mono_correct: jax.Array  # (k, B)
  z: jax.Array            # (B, D) the feature before the last classifier layer
  logits: jax.Array       # (B, K)
  # (2**k, B) whether the model with only subset s present (the others zero-padded) is
  # right, in agm_jax.shapley's bit-mask order; None for a method that does not run them.
  subset_correct: jax.Array | None = None


def unimodal_ce(unimodal: jax.Array, labels: jax.Array) -> jax.Array:
  """``sum_m mean_i CE(u_m)_i``: the uni-modal heads' losses ``(k, B, K)``, one batch-mean
  cross-entropy per modality, summed (the auxiliary term of AMCo, MBSD, InfoReg, MMPareto)."""
  return shapley.cross_entropy(unimodal, labels[None]).mean(-1).sum()


def train_metrics(loss, logits, mono_ce, mono_acc, labels, modalities) -> dict[str, jax.Array]:
  """The train-line scalars every method logs: the training loss, the accuracy of the training
  logits, and each modality's mono-modal accuracy and cross-entropy (``(k,)`` arrays). For a
  regression task (float score labels) ``acc`` is Acc-2 (``shapley.example_correct``) and
  ``mono_ce/<m>`` the mono-modal L1."""
  out = {"loss": loss, "acc": shapley.example_correct(logits, labels).mean()}
  for i, m in enumerate(modalities):
    out[f"acc/{m}"] = mono_acc[i]
    out[f"mono_ce/{m}"] = mono_ce[i]
  return out


def shapley_metrics(v, loss, logits, labels, modalities) -> dict[str, jax.Array]:
  """:func:`train_metrics` with the mono-modal scalars of the Shapley responses of ``V``."""
  phi = shapley.responses(v)
  return train_metrics(loss, logits, shapley.mono_modal_ce(phi, labels),
                       shapley.mono_modal_accuracy(phi, labels), labels, modalities)


def inputs_of(batch: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in batch.items() if k != "label"}


def subsets_fn(ctx: Context, batch_stats, batch, rng, *, grad_masked: bool = True
               ) -> Callable[[Any], Any]:
  """``params -> (V, subsets.Forward)`` (``((V, aux_loss), Forward)`` for a model with its
  own auxiliary loss): the 2**k passes under the run's subset settings (``rng`` draws the noise
  pads and, through ``subsets.dropout_stream``, the dropout masks)."""
  dropout_key = subsets.dropout_stream(rng, ctx.axis_name)
  pad_key = subsets.device_key(rng, ctx.axis_name)   # each device's examples their own noise

  def fn(p):
    v, fwd = subsets.subset_forward(
        ctx.model, p, batch_stats, inputs_of(batch), ctx.modalities, subset_bn=ctx.subsets.bn,
        pad=ctx.subsets.pad, key=pad_key, grad_masked=grad_masked, fast=ctx.subsets.fast,
        dropout_key=dropout_key)
    # A model's own auxiliary loss joins the differentiated output: its gradient rides along
    # in every pullback (``shapley.subset_vjp``), unmodulated.
    return ((v, fwd.aux_loss) if fwd.aux_loss is not None else v), fwd
  return fn


def subset_step(ctx: Context, params, batch_stats, batch, rng):
  """``(V, pullback(cotangent) -> grads, subsets.Forward)``: the subset passes of a batch and
  their pullback for any ``(2**k, B, K)`` cotangent (G-Blending, Greedy)."""
  return shapley.subset_vjp(subsets_fn(ctx, batch_stats, batch, rng), params, has_aux=True)


def shapley_step(ctx: Context, params, batch_stats, batch, rng, *, grad_masked: bool,
                 p_floor: float = 0.0):
  """Forward over all subsets and the linear ``backward(kappa)`` (``shapley.shapley_vjp``;
  ``p_floor``: the floor on the label probability in ``mono_ce``)."""
  return shapley.shapley_vjp(subsets_fn(ctx, batch_stats, batch, rng, grad_masked=grad_masked),
                             params, batch["label"], has_aux=True, p_floor=p_floor)


def shapley_evaluate(ctx: Context, params, batch_stats, batch) -> EvalOutput:
  """Eval-mode logits, phi and z of a batch (all passes use the running statistics)."""
  v, fwd = subsets.subset_forward(ctx.model, params, batch_stats, inputs_of(batch),
                                  ctx.modalities, pad="zeros", fast=ctx.subsets.fast,
                                  train=False)
  labels = batch["label"]
  phi = shapley.responses(v)
  logits = v[-1].astype(jnp.float32)
  return EvalOutput(shapley.example_loss(logits, labels), shapley.example_correct(logits, labels),
                    shapley.example_loss(phi, labels[None]), shapley.example_correct(phi, labels),
                    fwd.z, logits, shapley.example_correct(v, labels))


def aux_metrics(fwd: subsets.Forward) -> dict[str, jax.Array]:
  """``{"aux_loss": …}`` when the model has its own auxiliary loss (PSP's AVPS loss), else {}."""
  return {} if fwd.aux_loss is None else {"aux_loss": fwd.aux_loss}


# The methods that train on a regression task (float score labels: ``shapley.example_loss``'s
# L1, ``shapley.example_correct``'s Acc-2): those whose every loss goes through the Shapley
# responses or the one model output. The others' losses (score ratios, uni-modal heads,
# re-balancing) are defined on class probabilities.
REGRESSION_METHODS = ("joint", "agm", "agm_1", "agm_ge", "unimodal")


def check_task(method: str, *, regression: bool) -> None:
  """The clear error for a method run on a regression task it does not support."""
  if regression and method not in REGRESSION_METHODS:
    raise ValueError(f"method {method!r} does not support a regression task (score labels); "
                     f"methods that do: {', '.join(REGRESSION_METHODS)}")


def check_late_fusion(model, method: str) -> None:
  """The clear error for a method that needs the late-fusion heads' uni-modal logits."""
  fusion = getattr(model, "fusion", None)
  if not getattr(fusion, "late", False):
    name = type(fusion).__name__ if fusion is not None else type(model).__name__
    raise ValueError(f"method {method!r} needs per-modality logits W_m z_m + b/k from a "
                     f"late-fusion head; {name} has none (supported fusions: "
                     f"{', '.join(fusion_lib.late_fusions())})")


def update_state(opt_state: Any, cls: type, fn: Callable[[Any], Any]) -> Any:
  """``opt_state`` with every ``cls`` instance ``s`` replaced by ``fn(s)``."""
  return jax.tree.map(lambda s: fn(s) if isinstance(s, cls) else s, opt_state,
                      is_leaf=lambda s: isinstance(s, cls))


def find_state(opt_state: Any, cls: type) -> Any:
  """The one ``cls`` instance inside a (chained) optimiser state."""
  found = [s for s in jax.tree.leaves(opt_state, is_leaf=lambda s: isinstance(s, cls))
           if isinstance(s, cls)]
  if len(found) != 1:
    raise ValueError(f"expected one {cls.__name__} in the optimiser state, found {len(found)}")
  return found[0]


def default_tx(ctx: Context, base: optax.GradientTransformation):
  del ctx
  return base


def all_modalities(hp, fusion: str, modalities: tuple[str, ...]):
  """``(model modalities, evaluated mono-modal rows)``: every modality of the data."""
  del hp, fusion
  return modalities, None


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method: see the module docstring.

  ``hparams(section) -> hp`` (typed, validated); ``gradients(ctx, params, batch_stats, batch,
  rng, active, opt_state) -> StepOutput``; ``make_tx(ctx, base) -> tx``;
  ``evaluate(ctx, params, batch_stats, batch) -> EvalOutput``;
  ``modalities(hp, fusion, data_modalities) -> (model_modalities, mono_modalities or None)``;
  ``epoch_end(ctx, state, epoch, evaluate) -> state`` after each epoch's evaluation, with
  ``evaluate(split) -> (metrics, z, logits)`` and ``evaluate.labels(split)`` (the split's
  labels in the same order) (method state that must survive a restart
  lives in the optimiser state, which is checkpointed); with ``trains_copies`` it is called
  with a further keyword ``copies`` (:class:`Copies`: train and evaluate copies of the state
  on the run's data, e.g. G-Blending's uni-modal copies); ``prepare(ctx, state, copies=…)
  -> state`` once before the first step of a fresh run (never on resume: what it builds, e.g.
  UMT's uni-modal teachers, must live in the returned state, which the loop checkpoints at
  step 0); ``logged_state``: per-modality fields of the optimiser state logged as
  ``<field>/<m>``; ``substeps(ctx) -> n``: optimiser steps per batch (default 1): the train
  step runs ``gradients`` and ``tx.update`` ``n`` times on the batch, each on the parameters,
  statistics and optimiser state the previous one left (MLA's one step per modality), and
  logs the mean of their metrics; ``state.step`` still counts batches.
  """
  name: str
  gradients: Callable[..., StepOutput]
  hparams: Callable[[Any], Any] = lambda section: from_section(NoHParams, section)
  make_tx: Callable[..., optax.GradientTransformation] = default_tx
  evaluate: Callable[..., EvalOutput] = shapley_evaluate
  modalities: Callable[..., tuple] = all_modalities
  requires_separable: bool = False
  logged_state: tuple[str, ...] = ()
  epoch_end: Callable[..., Any] | None = None
  trains_copies: bool = False
  prepare: Callable[..., Any] | None = None
  substeps: Callable[..., int] | None = None


class Copies(NamedTuple):
  """What the trainer lends an ``epoch_end`` hook of a method with ``trains_copies`` (and every
  ``prepare`` hook).

  ``train(state, gradients, epochs, *, first_epoch, fresh_optimizer=False) -> state``: a copy
  of the (host) train state trained for ``epochs`` epochs of the training data (the run's
  shuffles of epochs ``first_epoch, …``) by ``gradients`` (the signature of
  ``Method.gradients``) through the run's optimiser, from the state's optimiser state (or a
  fresh ``tx.init``); ``evaluate(state, evaluate_fn, split) -> metrics``: a state's metrics
  over a split by ``evaluate_fn`` (the signature of ``Method.evaluate``; ``metrics["loss"]``
  is the mean of its ``loss``). Pass the same function objects on every call: the steps
  compile once per function. ``num_epochs``: the run's epochs (no estimate is needed after
  the last). ``concept(modality, seed) -> params``: the final parameters of modality m's
  mono-modal concept of this run's settings with that seed (the competition probe's cached
  concept run, trained first if missing; ``agm_jax.train.competition.concept_params``); None
  where the trainer lends none.
  """
  train: Callable[..., Any]
  evaluate: Callable[..., Mapping[str, float]]
  num_epochs: int
  concept: Callable[..., Any] | None = None
