"""The jitted train and eval steps shared by every method (docs/ARCHITECTURE.md: one batch's
path through a train step). ``ctx`` and ``method`` are static: closed over, never traced."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from agm_jax import metrics as metrics_lib


def state_metrics(opt_state, names, modalities) -> dict[str, jax.Array]:
  """Per-modality fields of the optimiser state (e.g. AGM's kappa) as ``name/<m>``."""
  out = {}
  for name in names:
    value = optax.tree_utils.tree_get(opt_state, name)
    if value is not None:
      out.update({f"{name}/{m}": value[i] for i, m in enumerate(modalities)})
  return out


def _pmean_updates(updates, axis_name):
  """Averages gradients over the mapped axis (also a linear ``kappa -> grads`` function)."""
  if callable(updates):
    return lambda kappa: jax.lax.pmean(updates(kappa), axis_name)
  return jax.lax.pmean(updates, axis_name)


def flatten_positions(batch, weight=None):
  """A per-position task (labels ``(B, T)``, e.g. AVE's ten segments, with a model whose
  logits are ``(B·T, K)``): the labels flattened to ``(B·T,)`` and the eval ``weight`` repeated
  per position, so every method and metric sees one row per position. Other batches pass
  through unchanged."""
  label = batch["label"]
  if label.ndim <= 1:
    return batch, weight
  positions = label.size // label.shape[0]
  batch = dict(batch, label=label.reshape(-1))
  return batch, (None if weight is None else jnp.repeat(weight, positions))


def train_step(state, batch, active, *, ctx, method, tx, axis_name=None, preprocess=None):
  """One optimisation step; returns ``(new_state, metrics)`` (device scalars). Under ``pmap``
  (``axis_name``) gradients and metrics are averaged over the devices. ``preprocess``: the
  dataset's ``device_preprocess`` (e.g. uint8 frames to normalised floats), applied first.
  A method with ``substeps`` takes that many optimiser steps on the batch (one rng key each,
  split from the step's) and logs their metrics' mean."""
  rng, step_rng = jax.random.split(state.rng)
  batch = batch if preprocess is None else preprocess(batch)
  batch, _ = flatten_positions(batch)
  n = 1 if method.substeps is None else int(method.substeps(ctx))
  keys = [step_rng] if n == 1 else list(jax.random.split(step_rng, n))
  params, batch_stats, opt_state, each = state.params, state.batch_stats, state.opt_state, []
  for key in keys:
    out = method.gradients(ctx, params, batch_stats, batch, key, active, opt_state)
    grads = out.updates if axis_name is None else _pmean_updates(out.updates, axis_name)
    updates, opt_state = tx.update(grads, opt_state, params, **out.tx_kwargs)
    params, batch_stats = optax.apply_updates(params, updates), out.batch_stats
    each.append(dict(out.metrics, grad_norm=optax.tree.norm(updates)))
  metrics = each[0] if n == 1 else jax.tree.map(lambda *x: jnp.mean(jnp.stack(x)), *each)
  metrics.update(state_metrics(opt_state, method.logged_state, ctx.modalities))
  clipped = optax.tree_utils.tree_get(opt_state, "clipped")
  if clipped is not None:   # optimizer.conditional_clip: the fraction of steps it clipped
    metrics["clipped"] = clipped
  if axis_name is not None:
    metrics = jax.lax.pmean(metrics, axis_name)
  new_state = state.replace(step=state.step + 1, params=params, batch_stats=batch_stats,
                            opt_state=opt_state, rng=rng)
  return new_state, metrics


def eval_step(state, batch, weight, *, ctx, method, preprocess=None):
  """Weighted sums of one eval batch (``weight`` masks padding) and its features ``z``."""
  batch = batch if preprocess is None else preprocess(batch)
  batch, weight = flatten_positions(batch, weight)
  out = method.evaluate(ctx, state.params, state.batch_stats, batch)
  w = weight.astype(jnp.float32)
  sums = {"count": w.sum(), "loss": (out.loss * w).sum(), "acc": (out.correct * w).sum()}
  for i, m in enumerate(ctx.mono):
    sums[f"acc/{m}"] = (out.mono_correct[i] * w).sum()
    sums[f"mono_ce/{m}"] = (out.mono_ce[i] * w).sum()
  if out.subset_correct is not None:   # every subset, the empty one as "subset_acc/"
    for name, correct in zip(metrics_lib.subset_names(ctx.modalities), out.subset_correct):
      sums[f"subset_acc/{name}"] = (correct * w).sum()
  return sums, out.z, out.logits


def step_flops(step, *args) -> float | None:
  """FLOPs of one call of a jitted or pmapped ``step`` on ``args`` (arrays or
  ``jax.ShapeDtypeStruct``s), from XLA's cost analysis of the compiled computation
  (``step.lower(*args).compile().cost_analysis()``: a dict, or a list of one dict per
  computation in older JAX). It counts one device's program: under ``pmap``, or a sharded
  ``jit`` over several devices, multiply by the device count for the whole step. None when
  the backend reports no count."""
  cost = step.lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  flops = (cost or {}).get("flops")
  return float(flops) if flops is not None and flops >= 0 else None


def make_steps(ctx, method, tx, *, axis_name=None, preprocess=None):
  """``(train_step, eval_step)`` compiled once for the run; the train state is donated.
  With ``axis_name`` the train step is a ``pmap`` over the local devices; ``preprocess``: the
  dataset's ``device_preprocess``."""
  if axis_name is not None:
    train = jax.pmap(lambda s, b, a: train_step(s, b, a, ctx=ctx, method=method, tx=tx,
                                                axis_name=axis_name, preprocess=preprocess),
                     axis_name=axis_name, in_axes=(0, 0, None), donate_argnums=0)
  else:
    train = jax.jit(lambda s, b, a: train_step(s, b, a, ctx=ctx, method=method, tx=tx,
                                               preprocess=preprocess), donate_argnums=0)
  evaluate = jax.jit(lambda s, b, w: eval_step(s, b, w, ctx=ctx, method=method,
                                               preprocess=preprocess))
  return train, evaluate
