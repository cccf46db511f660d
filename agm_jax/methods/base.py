"""What every training method plugs into the shared train step.

A method is one file that builds a :class:`Method`: how it turns a batch into gradient
updates (``gradients``), how it wraps the base optimiser (``make_tx``), and optionally how it
evaluates. The train step is the same for every method::

    out = method.gradients(ctx, params, batch_stats, batch, rng, active)
    updates, opt_state = tx.update(out.updates, opt_state, params, **out.tx_kwargs)

``out.updates`` is a gradient pytree, or a linear function ``kappa -> gradients`` that a
modulation transform at the head of ``tx`` calls with its coefficients (one backward pass).
A method whose forward pass depends on its own optimiser state (OPM's drop probabilities,
Greedy's re-balancing mode) sets ``reads_opt_state`` and gets ``opt_state=`` (the state
before this step) as a keyword argument of ``gradients``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax

from agm_jax import shapley
from agm_jax.train import forward


@dataclasses.dataclass(frozen=True)
class Context:
  """Everything static a step needs: the model and the method's settings."""
  model: Any
  modalities: tuple[str, ...]
  config: Any                      # the run's ConfigDict (read-only inside the step)
  subset_bn: str = "eval"
  pad: str = "zeros"
  fast: bool | None = None

  @property
  def k(self) -> int:
    return len(self.modalities)


class StepOutput(NamedTuple):
  updates: Any                     # gradients, or a linear function kappa -> gradients
  tx_kwargs: Mapping[str, Any]     # extra arguments for tx.update (e.g. mono_ce, active)
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


def mono_metrics(fwd: shapley.ShapleyForward, labels, modalities) -> dict[str, jax.Array]:
  """The train-line scalars every multimodal method logs."""
  out = {"loss": fwd.loss, "acc": (jnp.argmax(fwd.logits, -1) == labels).mean()}
  for i, m in enumerate(modalities):
    out[f"acc/{m}"] = fwd.mono_acc[i]
    out[f"mono_ce/{m}"] = fwd.mono_ce[i]
  return out


def inputs_of(batch: Mapping[str, Any]) -> dict[str, Any]:
  return {k: v for k, v in batch.items() if k != "label"}


def shapley_step(ctx: Context, params, batch_stats, batch, rng, *, grad_masked: bool,
                 subset_bn: str | None = None, model_fn: Callable | None = None):
  """Forward over all subsets and the linear ``backward(kappa)`` (``shapley.shapley_vjp``)."""
  subsets = model_fn or (lambda p: forward.subset_forward(
      ctx.model, p, batch_stats, inputs_of(batch), ctx.modalities,
      subset_bn=subset_bn or ctx.subset_bn, pad=ctx.pad, key=rng, grad_masked=grad_masked,
      fast=ctx.fast))
  return shapley.shapley_vjp(subsets, params, batch["label"], has_aux=True)


def shapley_evaluate(ctx: Context, params, batch_stats, batch) -> EvalOutput:
  """Eval-mode logits, phi and z of a batch (all passes use the running statistics)."""
  v, fwd = forward.subset_forward(ctx.model, params, batch_stats, inputs_of(batch),
                                  ctx.modalities, pad="zeros", fast=ctx.fast, train=False)
  labels = batch["label"]
  phi = shapley.responses(v)
  logits = v[-1].astype(jnp.float32)
  return EvalOutput(shapley.cross_entropy(logits, labels), jnp.argmax(logits, -1) == labels,
                    shapley.cross_entropy(phi, labels[None]), jnp.argmax(phi, -1) == labels,
                    fwd.z, logits)


def default_tx(config, base: optax.GradientTransformation, k: int):
  del config, k
  return base


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method: see the module docstring."""
  name: str
  gradients: Callable[..., StepOutput]
  make_tx: Callable[..., optax.GradientTransformation] = default_tx
  evaluate: Callable[..., EvalOutput] = shapley_evaluate
  model_modalities: Callable[[Any, tuple[str, ...]], tuple[str, ...]] = lambda c, m: m
  requires_separable: bool = False
  mono_modalities: Callable[[Context], tuple[str, ...]] = lambda ctx: ctx.modalities
  logged_state: tuple[str, ...] = ()   # per-modality fields of the optimiser state to log
  # Called after each epoch's evaluation: ``epoch_end(run, state, epoch, evals) -> state``
  # (``evals[split] = (metrics, z, logits)`` for val and test). Method state that must
  # survive a restart lives in the optimiser state (it is checkpointed with it).
  epoch_end: Callable[..., Any] | None = None
  reads_opt_state: bool = False        # gradients(..., opt_state=...) (see the module docstring)
