"""G-Blending: Gradient-Blending (Wang, Tran, Feiszli, "What Makes Training Multi-modal
Classification Networks Hard?", CVPR 2020), online (their Algorithm 2).

Loss ``w_fused * CE(fused logits) + sum_m w_m * CE(head_m)``: one head per modality plus the
fused one, weighted by ``w ∝ G / dO^2`` normalised to sum 1
(``transforms.epoch.gblend_weights``: ``dO`` the change of the held-out minus train loss,
``G`` the fall of the held-out loss, ``gblending.gain`` for a rise). The weights live in the
``blend`` transform's state (checkpointed); the gradient is ONE backward pass of the subset
passes with the cotangent of the weighted loss (``base.subset_step``). They are uniform,
``1/(k+1)``, until the first estimate. ``gblending.estimate`` picks how they are estimated:

* ``"unimodal_copies"`` (default; the paper's Algorithm 2, section 3.3): head m is the model
  with the other modalities absent (the masked pass ``V[{m}]``, padded as ``subsets.pad`` says),
  the fused head the full input. The paper's heads differ: it attaches a classifier of its own
  to each modality's branch (its multi-task late-fusion network); agm-jax has none and uses the
  masked pass, which adds no parameters but, with a sum head, also carries the absent
  modalities' blocks on their padded inputs, so head m's loss reaches their encoders too.
  GeWu-Lab BalanceBenchmark trains head m as the fusion layer's block ``W_m z_m + b/k`` and pads
  the absent inputs (as here) only for the estimate. At the end of every ``super_epoch``-th
  epoch (the ``N`` epochs just trained ran on the previous weights), for each head a copy of the
  current model and optimiser is trained on that head's loss alone for ``N`` epochs (the
  shuffles of the next ``N`` epochs); its train and dep (held-out) losses (eval mode) before and
  after give that head's ``dO`` and ``G``, and the weights hold for the next ``N`` epochs. Cost:
  ``(k+1) N`` extra epochs of training and ``2 (k+2)`` evaluations of train and dep per
  estimate; skipped after the run's last epoch. Unlike Algorithm 2, the first ``N`` epochs use
  uniform weights (the hook runs after an epoch, not before the first).
* ``"shapley_heads"`` (a cheaper stand-in, no extra training): head m is the Shapley
  mono-modal response ``phi^m`` of the joint model (AGM eq. 1-3); every ``super_epoch``
  epochs (from epoch 0) the train and dep losses of each head and the fused output of the
  model being trained are measured, and from two measurements ``N`` epochs apart the weights
  follow (``transforms.epoch.blend_epoch_update``).

``gblending.copy_optimizer``: ``"continue"`` (the copies start from the run's optimiser state:
momentum and the schedule's position, "train from checkpoint n") or ``"fresh"`` (a new
``tx.init``, as BalanceBenchmark's trainer resets its copies' optimiser; the schedule restarts).
BalanceBenchmark's other differences, not reproduced: its "before" losses are measured after
the first of the ``N`` copy epochs (``N = 1`` divides by zero), its train loss is the sum of
the running batch losses and its held-out loss a sum over batches.
Config section ``gblending``: ``super_epoch``, ``estimate``, ``gain``, ``copy_optimizer``.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from agm_jax import shapley, subsets
from agm_jax.methods.base import (
  EvalOutput,
  Method,
  StepOutput,
  aux_metrics,
  from_section,
  inputs_of,
  one_of,
  shapley_metrics,
  subset_step,
  update_state,
)
from agm_jax.transforms import epoch as epoch_tx

ESTIMATES = ("unimodal_copies", "shapley_heads")
COPY_OPTIMIZERS = ("continue", "fresh")


@dataclasses.dataclass(frozen=True)
class HParams:
  super_epoch: int
  estimate: str
  gain: str
  copy_optimizer: str

  def __post_init__(self):
    if self.super_epoch < 1:
      raise ValueError(f"super_epoch must be >= 1, got {self.super_epoch}")
    for name, valid in (("estimate", ESTIMATES), ("gain", epoch_tx.GAINS),
                        ("copy_optimizer", COPY_OPTIMIZERS)):
      one_of(name, getattr(self, name), valid)


def hparams(section) -> HParams:
  return from_section(HParams, section)


def make_tx(ctx, base):
  return optax.chain(epoch_tx.blend(ctx.k), base)


def head_rows(k: int) -> list[int]:
  """The rows of ``V`` that are the uni-modal copies' heads (only modality m present: row
  ``2**m``), then the fused one (the full input, row ``2**k - 1``)."""
  return [1 << m for m in range(k)] + [2**k - 1]


def _mean_ce(labels):
  return lambda z: shapley.cross_entropy(z.astype(jnp.float32), labels).mean()


def _copies_cotangent(v, labels, k):
  """``w -> (2**k, B, K)`` cotangent of ``sum_j w_j CE(V[row_j])`` (heads ``V[{m}]``, fused)."""
  rows = jnp.asarray(head_rows(k))
  dce = jax.vmap(jax.grad(_mean_ce(labels)))(v[rows].astype(jnp.float32))
  return lambda w: jnp.zeros(v.shape, jnp.float32).at[rows].add(w[:, None, None] * dce)


def _shapley_cotangent(v, labels, k):
  """``w -> (2**k, B, K)`` cotangent of ``sum_m w_m CE(phi^m) + w_fused CE(V[full])``."""
  phi = shapley.responses(v)
  dlogits = jax.grad(_mean_ce(labels))(v[-1])
  dphi = jax.grad(lambda f: shapley.mono_modal_ce(f, labels).sum())(phi)
  c = jnp.asarray(shapley.coefficients(k))
  full = jnp.zeros((2**k,), jnp.float32).at[-1].set(1.0)
  return lambda w: (jnp.einsum("m,ms,mbc->sbc", w[:k], c, dphi)
                    + w[k] * full[:, None, None] * dlogits)


def gradients(ctx, params, batch_stats, batch, rng, active, opt_state):
  del active, opt_state
  labels = batch["label"]
  v, pullback, aux = subset_step(ctx, params, batch_stats, batch, rng)
  cotangent = (_copies_cotangent if ctx.hp.estimate == "unimodal_copies"
               else _shapley_cotangent)(v, labels, ctx.k)
  logits = v[-1].astype(jnp.float32)
  loss = _mean_ce(labels)(logits)

  def backward(w):
    return pullback(cotangent(jnp.asarray(w, jnp.float32)))

  metrics = shapley_metrics(jax.lax.stop_gradient(v), loss, logits, labels, ctx.modalities)
  metrics.update(aux_metrics(aux))
  return StepOutput(backward, {}, aux.batch_stats, metrics)


@functools.cache
def copy_gradients(head: int):
  """``Method.gradients`` of the copy trained on head ``head``'s loss alone (its plain
  gradient, whatever weights the ``blend`` transform holds)."""
  def fn(ctx, params, batch_stats, batch, rng, active, opt_state):
    out = gradients(ctx, params, batch_stats, batch, rng, active, opt_state)
    grads = out.updates(jax.nn.one_hot(head, ctx.k + 1))
    return out._replace(updates=lambda w: grads)
  return fn


def heads_evaluate(ctx, params, batch_stats, batch) -> EvalOutput:
  """Eval-mode losses of the copies' heads: ``mono_ce[m]`` of ``V[{m}]``, ``loss`` of the
  fused output (``Method.evaluate``'s signature)."""
  v, fwd = subsets.subset_forward(ctx.model, params, batch_stats, inputs_of(batch),
                                  ctx.modalities, pad=ctx.subsets.pad, fast=ctx.subsets.fast,
                                  train=False, key=jax.random.PRNGKey(0))
  labels = batch["label"]
  heads = v[jnp.asarray(head_rows(ctx.k)[:-1])].astype(jnp.float32)
  logits = v[-1].astype(jnp.float32)
  return EvalOutput(shapley.cross_entropy(logits, labels), jnp.argmax(logits, -1) == labels,
                    shapley.cross_entropy(heads, labels[None]),
                    jnp.argmax(heads, -1) == labels, fwd.z, logits)


def head_losses(ctx, metrics) -> np.ndarray:
  """``(k+1,)`` losses from a metrics line: each modality's head, then the fused output."""
  return np.asarray([metrics[f"mono_ce/{m}"] for m in ctx.modalities] + [metrics["loss"]],
                    np.float32)


def copies_estimate(ctx, state, epoch, copies):
  """``(train, dep)`` losses ``(2, k+1)`` before and after: each head's copy trained for
  ``super_epoch`` epochs from ``state`` on that head's loss (the paper's Gradient_Blend)."""
  n = ctx.hp.super_epoch
  splits = ("train", "dep")
  before = [head_losses(ctx, copies.evaluate(state, heads_evaluate, s)) for s in splits]
  after = [np.zeros(ctx.k + 1, np.float32) for _ in splits]
  for head in range(ctx.k + 1):
    copy = copies.train(state, copy_gradients(head), n, first_epoch=epoch + 1,
                        fresh_optimizer=ctx.hp.copy_optimizer == "fresh")
    for i, s in enumerate(splits):
      after[i][head] = head_losses(ctx, copies.evaluate(copy, heads_evaluate, s))[head]
  return before, after


def epoch_end(ctx, state, epoch, evaluate, copies=None):
  hp = ctx.hp
  if hp.estimate == "shapley_heads":
    if epoch % hp.super_epoch:
      return state
    train, dep = (head_losses(ctx, evaluate(s)[0]) for s in ("train", "dep"))
    update = lambda s: epoch_tx.blend_epoch_update(s, train, dep, gain=hp.gain)  # noqa: E731
  else:
    if (epoch + 1) % hp.super_epoch or epoch + 1 >= copies.num_epochs:
      return state
    (t0, d0), (t1, d1) = copies_estimate(ctx, state, epoch, copies)
    update = lambda s: epoch_tx.blend_estimate(s, t0, d0, t1, d1, gain=hp.gain)  # noqa: E731
  return state.replace(opt_state=update_state(state.opt_state, epoch_tx.BlendState, update))


METHOD = Method(name="gblending", hparams=hparams, gradients=gradients, make_tx=make_tx,
                requires_separable=True, logged_state=("coeff",), epoch_end=epoch_end,
                trains_copies=True)
