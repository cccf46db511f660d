"""Several optimiser steps per batch (``Method.substeps``) and PyTorch's rule for parameters
without a gradient (``transforms.untrained.skip_untrained``), with MLA's authors' schedule as
the user: every modality on every batch, one optimiser step each, the other encoders untouched.
Values by hand."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax.transforms import skip_untrained


def _tx():
  # SGD(lr, momentum 0.9, weight decay 0.1) with lr 1.0 for the first step, 0.5 after.
  schedule = optax.piecewise_constant_schedule(1.0, {1: 0.5})
  return skip_untrained(optax.chain(optax.add_decayed_weights(0.1),
                                    optax.sgd(schedule, momentum=0.9)))


def test_skip_untrained_by_hand():
  tx = _tx()
  # a, b: modality 0's and modality 1's parameters (transforms.partition).
  a, b = "encoders_0", "encoders_1"
  params = {a: jnp.float32(1.0), b: jnp.float32(2.0)}
  state = tx.init(params)
  g = {a: jnp.float32(1.0), b: jnp.float32(1.0)}
  # Step 1, both trained: d = g + 0.1 p; trace = d; update = -1.0 * trace.
  u, state = tx.update(g, state, params, trained=jnp.array([True, True]), advance=False)
  np.testing.assert_allclose([u[a], u[b]], [-1.1, -1.2], rtol=1e-6)
  params = optax.apply_updates(params, u)                       # a -0.1, b 0.8
  # advance=False: the schedule's count stayed at 0, so lr is still 1.0.
  # Step 2, only a trained: a's d = 1 + 0.1*(-0.1) = 0.99, trace 0.9*1.1 + 0.99 = 1.98.
  g2 = {a: jnp.float32(1.0), b: jnp.float32(0.0)}
  u, state2 = tx.update(g2, state, params, trained=jnp.array([True, False]), advance=True)
  np.testing.assert_allclose(u[a], -1.98, rtol=1e-6)
  assert float(u[b]) == 0.0
  traces = [s for s in jax.tree.leaves(state2, is_leaf=lambda s: isinstance(s, optax.TraceState))
            if isinstance(s, optax.TraceState)][0].trace
  np.testing.assert_allclose([traces[a], traces[b]], [1.98, 1.2], rtol=1e-6)  # b kept
  count = optax.tree_utils.tree_get(state2, "count")
  assert int(count) == 1                                        # advanced once
  # A zero gradient without the rule: momentum and weight decay move b (and the schedule's
  # count moved on at the first step: lr 0.5).
  plain = optax.chain(optax.add_decayed_weights(0.1),
                      optax.sgd(optax.piecewise_constant_schedule(1.0, {1: 0.5}), momentum=0.9))
  s = plain.init({a: jnp.float32(1.0), b: jnp.float32(2.0)})
  _, s = plain.update(g, s, {a: jnp.float32(1.0), b: jnp.float32(2.0)})
  u, _ = plain.update(g2, s, params)
  np.testing.assert_allclose(u[b], -0.5 * (0.9 * 1.2 + 0.1 * 0.8), rtol=1e-6)


def test_skip_untrained_without_keywords_is_inner_and_jits():
  tx = _tx()
  params = {"encoders_0": jnp.ones((2,)), "encoders_1": {"c": jnp.ones((3,))},
            "fusion": jnp.ones((2,))}
  g = jax.tree.map(jnp.ones_like, params)
  base = optax.chain(optax.add_decayed_weights(0.1),
                     optax.sgd(optax.piecewise_constant_schedule(1.0, {1: 0.5}), momentum=0.9))
  u1, _ = tx.update(g, tx.init(params), params)
  u2, _ = base.update(g, base.init(params), params)
  jax.tree.map(np.testing.assert_array_equal, u1, u2)
  step = jax.jit(lambda g, s, p, t: tx.update(g, s, p, trained=jnp.stack([t, ~t]), advance=t))
  u, _ = step(g, tx.init(params), params, jnp.bool_(True))   # traced flags
  assert float(jnp.abs(u["encoders_1"]["c"]).max()) == 0
  assert float(jnp.abs(u["encoders_0"]).min()) > 0
  assert float(jnp.abs(u["fusion"]).min()) > 0                # shared: always trained
  with pytest.raises(ValueError, match="parameters as a tree"):
    tx.update(jnp.ones(2), tx.init(jnp.ones(2)), jnp.ones(2), trained=jnp.array([True]))


# --------------------------------------------------------------------------- MLA, k steps a batch

def _images(n, seed):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, 3, n).astype(np.int32)
  return {"audio": (rng.standard_normal((n, 8, 8)) + labels[:, None, None]).astype(np.float32),
          "visual": rng.standard_normal((n, 8, 8, 3)).astype(np.float32), "label": labels}


@pytest.fixture(scope="module")
def resnet_runs():
  """MLA on BatchNorm encoders, one Run per (alternation, untrained) reading."""
  from agm_jax.train import loop  # noqa: PLC0415
  from data_pipelines.sources.base import ArrayDataset  # noqa: PLC0415
  from tests.conftest import tiny_config  # noqa: PLC0415
  data = ArrayDataset("images", ("audio", "visual"), 3,
                      {"train": _images(16, 0), "dep": _images(8, 1), "test": _images(8, 2)})
  out = {}
  for alternation, untrained in (("batch", "skip"), ("batch", "zero"), ("step", "skip")):
    c = tiny_config(method="mla", batch_size=8, **{"mla.alternation": alternation,
                                                    "mla.untrained": untrained})
    c.model.encoder_default = dict(type="resnet18", width=2, stage_sizes=(1,))
    c.optimizer.weight_decay = 0.01
    run = loop.Run(c, dataset=data)
    state = run.method.prepare(run.seed_ctx(0), run.init_state(), None)
    batch = {k: jnp.asarray(v) for k, v in next(iter(run.train_batches(0))).items()}
    out[alternation, untrained] = run, state, batch
  return out


def _manual(run, state, batch, n):
  """``n`` optimiser steps by hand: gradients, tx.update, apply; the states after each."""
  from agm_jax.methods import mla  # noqa: PLC0415
  keys = jax.random.split(jax.random.split(state.rng)[1], n) if n > 1 else \
      [jax.random.split(state.rng)[1]]
  p, bs, opt, after = state.params, state.batch_stats, state.opt_state, []
  for key in keys:
    out = mla.gradients(run.ctx, p, bs, batch, key, jnp.bool_(True), opt)
    u, opt = run.tx.update(out.updates, opt, p, **out.tx_kwargs)
    p, bs = optax.apply_updates(p, u), out.batch_stats
    after.append((p, bs, opt))
  return after


def _schedule_count(opt):
  found = [s for s in jax.tree.leaves(
      opt, is_leaf=lambda s: isinstance(s, optax.ScaleByScheduleState))
      if isinstance(s, optax.ScaleByScheduleState)]
  return int(found[0].count)


def _trace(opt, key):
  leaves = [s for s in jax.tree.leaves(opt, is_leaf=lambda s: isinstance(s, optax.TraceState))
            if isinstance(s, optax.TraceState)]
  return leaves[0].trace[key]


def test_mla_batch_takes_one_step_per_modality(resnet_runs):
  """Authors' schedule: substep 0 trains audio (the visual encoder, its momentum and its
  BatchNorm statistics untouched), substep 1 visual on the head substep 0 left; the schedule
  and ``state.step`` count the batch once; the jitted train step equals the steps by hand."""
  from agm_jax.methods import mla  # noqa: PLC0415
  from agm_jax.transforms import carry as carry_tx  # noqa: PLC0415
  run, state, batch = resnet_runs["batch", "skip"]
  (p0, bs0, opt0), (p1, bs1, opt1) = _manual(run, state, batch, 2)
  same = lambda a, b: jax.tree.map(np.testing.assert_array_equal, a, b)  # noqa: E731
  same(p0["encoders_1"], state.params["encoders_1"])
  same(bs0["encoders_1"], state.batch_stats["encoders_1"])
  same(_trace(opt0, "encoders_1"), _trace(state.opt_state, "encoders_1"))
  assert not np.allclose(bs0["encoders_0"]["stem_bn"]["mean"],
                         state.batch_stats["encoders_0"]["stem_bn"]["mean"])
  same(p1["encoders_0"], p0["encoders_0"])          # substep 1 leaves audio alone
  same(bs1["encoders_0"], bs0["encoders_0"])
  assert _schedule_count(opt0) == 0   # held until the last substep
  assert _schedule_count(opt1) == 1
  assert int(carry_tx.get_carry(opt1, mla.MLAState).count) == 2
  new, metrics = jax.jit(run.train_step)(state, batch, np.bool_(True))
  assert int(new.step) == 1
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               new.params, p1)
  np.testing.assert_array_equal(metrics["modality/audio"], 1.0)
  # Each encoder's statistics moved once, from the batch: as the one forward of a step-mode
  # step (whose encoders all run once at the initial parameters).
  srun, sstate, _ = resnet_runs["step", "skip"]
  stepped = _manual(srun, sstate, batch, 1)[0][1]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               bs1, stepped)


def test_mla_zero_gradient_reading_moves_the_other_encoder(resnet_runs):
  run, state, batch = resnet_runs["batch", "zero"]
  (p0, _, opt0), (_, _, opt1) = _manual(run, state, batch, 2)
  assert (_schedule_count(opt0), _schedule_count(opt1)) == (0, 1)   # batches, here too
  kernel = lambda p: p["encoders_1"]["stem_conv"]["kernel"]  # noqa: E731
  # Zero gradient, no momentum yet: weight decay alone, p - lr * wd * p.
  np.testing.assert_allclose(kernel(p0), kernel(state.params) * (1 - 0.05 * 0.01), rtol=1e-5)


def test_mla_step_reading_trains_one_modality_per_batch(resnet_runs):
  from agm_jax.methods import mla  # noqa: PLC0415
  from agm_jax.transforms import carry as carry_tx  # noqa: PLC0415
  run, state, batch = resnet_runs["step", "skip"]
  new, metrics = jax.jit(run.train_step)(state, batch, np.bool_(True))
  jax.tree.map(np.testing.assert_array_equal, new.params["encoders_1"],
               state.params["encoders_1"])
  assert int(carry_tx.get_carry(new.opt_state, mla.MLAState).count) == 1
  assert _schedule_count(new.opt_state) == 1
  np.testing.assert_array_equal([metrics["modality/audio"], metrics["modality/visual"]],
                                [1.0, 0.0])


def test_select_by_modality_shared_leaves():
  from agm_jax.transforms import partition  # noqa: PLC0415
  new = {"encoders_0": jnp.float32(1), "encoders_1": jnp.float32(2), "fusion": jnp.float32(3)}
  old = jax.tree.map(jnp.zeros_like, new)
  on = jnp.array([False, True])
  assert jax.tree.map(float, partition.select_by_modality(on, new, old)) == \
      {"encoders_0": 0.0, "encoders_1": 2.0, "fusion": 0.0}
  assert jax.tree.map(float, partition.select_by_modality(on, new, old, shared="new")) == \
      {"encoders_0": 0.0, "encoders_1": 2.0, "fusion": 3.0}
  with pytest.raises(ValueError, match="shared must be"):
    partition.select_by_modality(on, new, old, shared="both")
