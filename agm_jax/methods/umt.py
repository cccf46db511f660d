"""UMT: Uni-Modal Teacher (Du, Teng, Li, Liu, Yuan, Wang, Yuan, Zhao, "On Uni-Modal Feature
Learning in Supervised Multi-Modal Learning", ICML 2023, Sec. 4 "Uni-Modal Teacher";
BalanceBenchmark ``balancemm/trainer/UMT_trainer.py``; the authors' code was not found).

First one uni-modal teacher per modality is trained; then the multimodal model is trained with
the fusion cross-entropy plus a feature distillation from each frozen teacher's encoder into
the same modality's encoder::

    L = CE(fused logits, y) + scaling * sum_m mean_{i,d} (f^m_i,d - t^m_i,d)^2

``f^m`` the student's encoder-m features (train mode, with gradient), ``t^m`` the teacher's
(no gradient); ``mean`` over the batch and the feature dimension (PyTorch's ``MSELoss``, as
BalanceBenchmark's trainer). The distillation runs inside the window
(``start_epoch``/``end_epoch``), outside it the loss is the plain CE. Any fusion of a separable
model (per-modality encoders), any k >= 2.

Teachers (``prepare``, once before the first step of a fresh run, through ``copies.train``):
teacher m is a copy of the initial model trained for ``teacher_epochs`` epochs (-1: the run's
``num_epochs``) from a fresh optimiser on modality m alone, the run's data order: for a late
fusion head its encoder m plus m's block of the last linear layer (``W_m f_m + b/k``: an
encoder and a linear classifier, AGM's mono-modal concept), for the other fusions the whole
architecture with every other modality's input replaced by zeros. Only the teachers' encoder
parameters are kept, in the optimiser state (:class:`Teachers`, a ``carry`` transform at the
head of ``tx``): checkpointed at step 0, so a resumed run never trains them again. The
teachers' forward runs BatchNorm on the batch's statistics (BalanceBenchmark's loaded teachers
are never switched to eval mode; the optimiser state cannot hold BatchNorm statistics, it is
built from the parameters only). Teacher cost: ``k * teacher_epochs`` extra epochs.

``teachers="concepts"`` reuses the competition probe's cached mono-modal concepts instead
(``copies.concept``; trained once into the concept cache if missing, then shared by every run
of the same settings, AGM's among them): a concept is exactly a uni-modal run of the run's
settings (late fusion: encoder m and one linear layer; other fusions: the whole model with the
other inputs zero-padded), trained for the run's ``num_epochs`` from its own initialisation
(so ``teacher_epochs`` must be -1); the competition section's ``concept_seed``/``concept_pad``
apply, and only ``concept_checkpoint="final"`` concepts keep their parameters.

Config section ``umt``: ``scaling`` (10: BalanceBenchmark's ``trainer_config.yaml``; the
paper's weight is not reproduced here), ``teacher_epochs``, ``teachers`` (``"train"``
default, ``"concepts"``), ``start_epoch``, ``end_epoch``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from agm_jax import shapley, subsets
from agm_jax.methods import branches
from agm_jax.methods.base import Method, StepOutput, Window, from_section, inputs_of, one_of
from agm_jax.transforms import carry as carry_tx


@dataclasses.dataclass(frozen=True)
class HParams:
  scaling: float
  teacher_epochs: int
  teachers: str
  window: Window

  def __post_init__(self):
    if self.scaling < 0:
      raise ValueError(f"scaling must be >= 0, got {self.scaling}")
    one_of("teachers", self.teachers, TEACHERS)
    if self.teachers == "concepts" and self.teacher_epochs != -1:
      raise ValueError("teachers 'concepts' are the cached concept runs, trained for the run's "
                       f"epochs: teacher_epochs must be -1, got {self.teacher_epochs}")
    if self.teacher_epochs < -1 or self.teacher_epochs == 0:
      raise ValueError(f"teacher_epochs must be >= 1 or -1 (the run's epochs), got "
                       f"{self.teacher_epochs}")


def hparams(section) -> HParams:
  return from_section(HParams, section)


TEACHERS = ("train", "concepts")


class Teachers(NamedTuple):
  """The teachers' encoders: ``{"encoders_<i>": teacher i's encoder-i parameters}``."""
  encoders: Any


def encoder_key(i: int) -> str:
  return f"encoders_{i}"


def _initial_teachers(k: int):
  def init(params):
    return Teachers({encoder_key(i): jax.tree.map(jnp.copy, params[encoder_key(i)])
                     for i in range(k)})
  return init


def make_tx(ctx, base):
  if ctx.k < 2:
    raise ValueError(f"umt needs at least 2 modalities, got {ctx.k}")
  return carry_tx.with_carry(base, _initial_teachers(ctx.k), name="umt")


def distillation(feats, teacher_feats) -> jax.Array:
  """``sum_m mean((f^m - t^m)^2)`` over the batch and feature axes (no gradient into t)."""
  return sum(jnp.mean(jnp.square(f.astype(jnp.float32) - jax.lax.stop_gradient(t)))
             for f, t in zip(feats, teacher_feats))


def teacher_features(ctx, params, batch_stats, batch, teachers: Teachers, rng) -> tuple:
  """Every teacher's encoder on its modality (train-mode BatchNorm on the batch, no update)."""
  p = dict(params)
  p.update(teachers.encoders)
  p = jax.lax.stop_gradient(p)
  dropout_key = subsets.dropout_stream(rng, ctx.axis_name)
  feats, _ = subsets.apply(ctx.model, p, batch_stats, inputs_of(batch), train=True,
                           method="encode", dropout_key=dropout_key)
  return tuple(jax.lax.stop_gradient(f).astype(jnp.float32) for f in feats)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  labels = batch["label"]
  teachers = carry_tx.get_carry(opt_state, Teachers)
  targets = teacher_features(ctx, params, batch_stats, batch, teachers,
                             jax.random.fold_in(rng, 1))
  weight = jnp.where(active, ctx.hp.scaling, 0.0)

  def objective(p, feats, fuse):
    logits, stats = fuse(feats)
    ce = shapley.cross_entropy(logits.astype(jnp.float32), labels).mean()
    distill = distillation(feats, targets)
    return ce + weight * distill, branches.Objective(logits, stats, True, (ce, distill))

  out = branches.feature_step(ctx, params, batch_stats, batch, rng, objective)
  ce, distill = out.extra
  metrics = dict(out.metrics, ce=ce, distill=distill)
  return StepOutput(out.grads, {"carry": teachers}, out.batch_stats, metrics)


@functools.cache
def teacher_gradients(index: int):
  """``Method.gradients`` of teacher ``index``: the cross-entropy of modality ``index``
  alone (see the module docstring); the carried teachers pass through unchanged."""
  def fn(ctx, params, batch_stats, batch, rng, active, opt_state):
    del active
    labels, inputs = batch["label"], inputs_of(batch)
    model = ctx.model
    late = getattr(getattr(model, "fusion", None), "late", False)
    dropout_key = subsets.dropout_stream(rng, ctx.axis_name)
    if not late:   # the whole architecture, every other modality's input zero
      absent = [m for j, m in enumerate(ctx.modalities) if j != index]
      pads = shapley.pads_for(inputs, absent, "zeros", None)
      inputs = {k: pads.get(k, v) for k, v in inputs.items()}

    def loss_fn(p):
      if late:
        feats, stats = subsets.apply(model, p, batch_stats, inputs, train=True,
                                     method="encode", update=True, dropout_key=dropout_key)
        logits = model.apply({"params": p}, tuple(feats), method="unimodal_logits")[index]
      else:
        (logits, _), stats = subsets.apply(model, p, batch_stats, inputs, train=True,
                                           update=True, dropout_key=dropout_key)
      logits = logits.astype(jnp.float32)
      return shapley.cross_entropy(logits, labels).mean(), (logits, stats)

    (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    acc = (jnp.argmax(logits, -1) == labels).mean()
    m = ctx.modalities[index]
    metrics = {"loss": loss, "acc": acc, f"acc/{m}": acc, f"mono_ce/{m}": loss}
    return StepOutput(grads, {"carry": carry_tx.get_carry(opt_state, Teachers)}, stats, metrics)
  return fn


def train_teachers(ctx, state, copies) -> Teachers:
  """Each modality's teacher trained from ``state`` (see the module docstring)."""
  epochs = copies.num_epochs if ctx.hp.teacher_epochs == -1 else ctx.hp.teacher_epochs
  encoders = {}
  for i in range(ctx.k):
    copy = copies.train(state, teacher_gradients(i), epochs, first_epoch=0,
                        fresh_optimizer=True)
    encoders[encoder_key(i)] = copy.params[encoder_key(i)]
  return Teachers(encoders)


def concept_teachers(ctx, state, copies) -> Teachers:
  """Each modality's teacher encoder from its cached mono-modal concept (``copies.concept``):
  a late-fusion concept is one encoder (``encoders_0``), another fusion's the whole model
  (``encoders_<i>``)."""
  if copies.concept is None:
    raise ValueError("umt.teachers 'concepts' needs the trainer's concept runs "
                     "(Copies.concept); this loop lends none")
  late = getattr(getattr(ctx.model, "fusion", None), "late", False)
  encoders = {}
  for i, m in enumerate(ctx.modalities):
    params = copies.concept(m, ctx.seed)
    teacher = params[encoder_key(0) if late else encoder_key(i)]
    student = state.params[encoder_key(i)]
    if jax.tree.structure(teacher) != jax.tree.structure(student) or any(
        np.shape(a) != np.shape(b) for a, b in zip(jax.tree.leaves(teacher),
                                                   jax.tree.leaves(student))):
      raise ValueError(f"the cached concept of {m!r} has another encoder than this model's; "
                       "use umt.teachers='train'")
    encoders[encoder_key(i)] = jax.tree.map(jnp.asarray, teacher)
  return Teachers(encoders)


def prepare(ctx, state, copies):
  if ctx.hp.teachers == "concepts":
    teachers = concept_teachers(ctx, state, copies)
  else:
    teachers = train_teachers(ctx, state, copies)
  opt_state = carry_tx.replace_carry(state.opt_state, Teachers, lambda _: teachers)
  return state.replace(opt_state=opt_state)


METHOD = Method(name="umt", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, prepare=prepare)
