"""The jitted train and eval steps shared by every method."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def state_metrics(opt_state, names, modalities) -> dict[str, jax.Array]:
  """Per-modality fields of the optimiser state (e.g. AGM's kappa) as ``name/<m>``."""
  out = {}
  for name in names:
    value = optax.tree_utils.tree_get(opt_state, name)
    if value is not None:
      out.update({f"{name}/{m}": value[i] for i, m in enumerate(modalities)})
  return out


def train_step(state, batch, active, *, ctx, method, tx):
  """One optimisation step; returns ``(new_state, metrics)`` (device scalars)."""
  rng, step_rng = jax.random.split(state.rng)
  extra = {"opt_state": state.opt_state} if method.reads_opt_state else {}
  out = method.gradients(ctx, state.params, state.batch_stats, batch, step_rng, active, **extra)
  updates, opt_state = tx.update(out.updates, state.opt_state, state.params, **out.tx_kwargs)
  params = optax.apply_updates(state.params, updates)
  metrics = dict(out.metrics)
  metrics["grad_norm"] = optax.tree.norm(updates)
  metrics.update(state_metrics(opt_state, method.logged_state, ctx.modalities))
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=out.batch_stats,
                            opt_state=opt_state, rng=rng)
  return new_state, metrics


def eval_step(state, batch, weight, *, ctx, method):
  """Weighted sums of one eval batch (``weight`` masks padding) and its features ``z``."""
  out = method.evaluate(ctx, state.params, state.batch_stats, batch)
  w = weight.astype(jnp.float32)
  sums = {"count": w.sum(), "loss": (out.loss * w).sum(), "acc": (out.correct * w).sum()}
  for i, m in enumerate(method.mono_modalities(ctx)):
    sums[f"acc/{m}"] = (out.mono_correct[i] * w).sum()
    sums[f"mono_ce/{m}"] = (out.mono_ce[i] * w).sum()
  return sums, out.z, out.logits


def make_steps(ctx, method, tx):
  """``(train_step, eval_step)`` jitted once for the run; the train state is donated."""
  train = jax.jit(lambda s, b, a: train_step(s, b, a, ctx=ctx, method=method, tx=tx),
                  donate_argnums=0)
  evaluate = jax.jit(lambda s, b, w: eval_step(s, b, w, ctx=ctx, method=method))
  return train, evaluate
