"""Greedy (Wu et al., ICML 2022) and its MMTM model: the gates, the bypass, the learning speeds
and the re-balancing schedule by hand, and a few jitted steps of the method."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from agm_jax import methods
from agm_jax.methods import greedy
from agm_jax.methods.base import Context
from agm_jax.models import build_model
from agm_jax.models.mmtm import MMTM
from agm_jax.transforms import greedy as greedy_tx
from tests.conftest import tiny_config

sig = lambda x: 1.0 / (1.0 + math.exp(-x))  # noqa: E731


def _mmtm_params():
  """channels (2, 2), ratio 4 -> joint width int(2*4/4) = 2: e = relu((s0[0], s1[0])),
  stream 0's gate sigmoid(e[1]) (from modality 1), stream 1's sigmoid(e[0])."""
  return {"squeeze": {"kernel": jnp.array([[1.0, 0], [0, 0], [0, 1], [0, 0]]),
                      "bias": jnp.zeros(2)},
          "excite_0": {"kernel": jnp.array([[0.0, 0], [1, 1]]), "bias": jnp.zeros(2)},
          "excite_1": {"kernel": jnp.array([[1.0, 1], [0, 0]]), "bias": jnp.zeros(2)}}


def test_mmtm_gates_bypass_and_curation_by_hand():
  module = MMTM((2, 2), ratio=4.0)
  s = (jnp.array([[1.0, 5.0]]), jnp.array([[2.0, 7.0]]))
  stats = module.init(jax.random.PRNGKey(0), s)["batch_stats"]
  assert stats["count"] == 0 and stats["gate_avg_0"].shape == (2,)
  v = {"params": _mmtm_params(), "batch_stats": stats}
  g0, g1 = module.apply(v, s)
  np.testing.assert_allclose(g0, [[sig(2), sig(2)]], rtol=1e-6)
  np.testing.assert_allclose(g1, [[sig(1), sig(1)]], rtol=1e-6)
  # bypass modality 0: its joint vector sees the stored squeeze of modality 1 (-3 -> relu 0).
  stored = (jnp.array([10.0, 0.0]), jnp.array([-3.0, 4.0]))
  g0, g1 = module.apply(v, s, stored=stored, bypass=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(g0, [[0.5, 0.5]], rtol=1e-6)
  np.testing.assert_allclose(g1, [[sig(1), sig(1)]], rtol=1e-6)
  g0, g1 = module.apply(v, s, stored=stored, bypass=jnp.array([0.0, 1.0]))
  np.testing.assert_allclose(g0, [[sig(2), sig(2)]], rtol=1e-6)
  np.testing.assert_allclose(g1, [[sig(10), sig(10)]], rtol=1e-6)
  # the MMTM paper's 2 * sigmoid
  g0, _ = MMTM((2, 2), ratio=4.0, gate_scale=2.0).apply(v, s)
  np.testing.assert_allclose(g0, [[2 * sig(2)] * 2], rtol=1e-6)
  # a train pass records the running average gate; curation then uses it for modality 0.
  _, mut = module.apply(v, s, update_average=True, mutable=["batch_stats"])
  np.testing.assert_allclose(mut["batch_stats"]["count"], 1.0)
  np.testing.assert_allclose(mut["batch_stats"]["gate_avg_0"], [sig(2)] * 2, rtol=1e-6)
  v = {"params": _mmtm_params(), "batch_stats": mut["batch_stats"]}
  other = (s[0], jnp.array([[0.0, 0.0]]))
  g0, g1 = module.apply(v, other, curation=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(g0, [[sig(2), sig(2)]], rtol=1e-6)    # the average, not 0.5
  np.testing.assert_allclose(g1, [[sig(1), sig(1)]], rtol=1e-6)


def test_curated_gate_carries_no_gradient():
  """A re-balancing pass replaces stream 0's gate by the running average just updated with
  this batch's gates; the released ``MMTM_mitigate`` detaches that average, so stream 0's
  excitation weights get no gradient from the curated pass."""
  module = MMTM((2, 2), ratio=4.0)
  s = (jnp.array([[1.0, 5.0], [0.5, 2.0]]), jnp.array([[2.0, 7.0], [1.0, 3.0]]))
  stats = module.init(jax.random.PRNGKey(0), s)["batch_stats"]

  def loss(params):
    (g0, g1), _ = module.apply({"params": params, "batch_stats": stats}, s,
                               curation=jnp.array([1.0, 0.0]), update_average=True,
                               mutable=["batch_stats"])
    return jnp.sum(g0 * jnp.arange(1.0, 3.0)) + jnp.sum(g1)

  grads = jax.grad(loss)(_mmtm_params())
  np.testing.assert_array_equal(grads["excite_0"]["kernel"], 0.0)
  np.testing.assert_array_equal(grads["excite_0"]["bias"], 0.0)
  assert float(jnp.abs(grads["excite_1"]["bias"]).sum()) > 0


def test_learning_speeds_by_hand():
  params = {"a": {"w": jnp.array([3.0, 4.0])}, "b": {"v": jnp.array([0.0, 2.0]),
                                                     "w": jnp.array([1.0, 0.0])}}
  grads = {"a": {"w": jnp.zeros(2)}, "b": {"v": jnp.array([0.0, 1.0]),
                                           "w": jnp.array([1.0, 1.0])}}
  groups = {"a": (0,), "b": (1,)}
  speeds = greedy_tx.learning_speeds(grads, params, lambda p: groups[p[0]])
  np.testing.assert_allclose(speeds, [0.0, (1 + 2) / (4 + 1)])     # a does not move: 0
  shared = lambda p: (1, 2) if p == ("b", "v") else groups[p[0]]  # noqa: E731
  speeds = greedy_tx.learning_speeds(grads, params, shared)
  np.testing.assert_allclose(speeds, [0.0, 0.6, 1 / 4])
  d, s = greedy_tx.conditional_speed_gap(jnp.array([10.0, 1.0]), jnp.array([2.0, 2.0]))
  np.testing.assert_allclose(s, [math.log10(5), math.log10(0.5)], rtol=1e-6)
  np.testing.assert_allclose(d, 1.0, rtol=1e-6)


def test_parameter_groups():
  assert greedy.parameter_groups(("encoders_1", "blocks_0_0", "Conv_0", "kernel")) == (1,)
  assert greedy.parameter_groups(("params", "classifier_0", "kernel")) == (0,)
  assert greedy.parameter_groups(("mmtm_2", "excite_1", "kernel")) == (3,)
  assert greedy.parameter_groups(("mmtm_2", "squeeze", "bias")) == (2, 3)


def test_curation_schedule_by_hand():
  step = jax.jit(lambda s, b, m, a: greedy_tx.curation_step(s, b, m, a, threshold=0.1,
                                                            window=2))
  s = greedy_tx.curation_init()
  one = jnp.ones(2)
  s = step(s, one, one, False)                                     # before start_epoch
  assert not s.curation and s.gap == 0
  s = step(s, jnp.array([9.0, 0.0]), one, True)   # bypass (10, 1), main (2, 2): d = 1 > 0.1
  np.testing.assert_allclose(s.gap, 1.0, rtol=1e-6)
  assert s.curation and s.caring == 0
  s = step(s, 100 * one, one, True)                                # re-balancing step 1
  assert s.curation and s.caring == 0
  np.testing.assert_allclose(s.bypass, [10.0, 1.0])               # not accumulated
  s = step(s, 100 * one, one, True)                                # re-balancing step 2
  assert not s.curation
  s = step(s, jnp.array([0.0, 9.0]), jnp.zeros(2), True)          # (10, 10), (2, 2): d = 0
  assert not s.curation and s.caring == 0
  s = step(s, jnp.array([0.0, 90.0]), jnp.zeros(2), True)         # (10, 100): d = -1
  np.testing.assert_allclose(s.gap, -1.0, rtol=1e-6)
  assert s.curation and s.caring == 1


def _config(**overrides):
  c = tiny_config(method="greedy", **{"model.fusion": "mmtm", **overrides})
  c.model.encoder_default = dict(type="resnet18", width=4, stage_sizes=(1, 1))
  c.model.fusion_options.mmtm_stages = (0, 1)
  return c


SPEC = {"audio": ((8, 8), jnp.float32), "visual": ((8, 8, 3), jnp.float32)}


def test_mmtm_model_and_greedy_steps():
  c = _config()
  model = build_model(c.model, ("audio", "visual"), 3, SPEC)
  batch = {"audio": jax.random.normal(jax.random.PRNGKey(1), (4, 8, 8)),
           "visual": jax.random.normal(jax.random.PRNGKey(2), (4, 8, 8, 3)),
           "label": jnp.array([0, 1, 2, 0])}
  inputs = {k: v for k, v in batch.items() if k != "label"}
  variables = model.init(jax.random.PRNGKey(0), inputs, False)
  logits, z = model.apply(variables, inputs, False)
  assert logits.shape == (4, 3) and z.shape == (4, 16)
  per, _ = model.apply(variables, inputs, None, False, method="branches")
  np.testing.assert_allclose(logits, per.mean(0), rtol=1e-6)
  assert set(variables["params"]) == {"encoders_0", "encoders_1", "mmtm_0", "mmtm_1",
                                      "classifier_0", "classifier_1"}
  # bypass with the pass's own squeezes changes nothing; with their batch means it changes
  # stream 0 (and, through stream 0's later squeezes, stream 1 after the second MMTM).
  _, _, seen = model.apply(variables, inputs, None, False, method="branches",
                           return_squeezes=True)
  assert [s.shape for s in seen[1]] == [(4, 8), (4, 8)]
  same, _ = model.apply(variables, inputs, None, False, method="branches", squeezes=seen,
                        bypass=jnp.array([1.0, 0.0]))
  np.testing.assert_allclose(same, per, rtol=1e-5, atol=1e-6)
  means = tuple(tuple(s.mean(0) for s in mm) for mm in seen)
  by, _ = model.apply(variables, inputs, None, False, method="branches", squeezes=means,
                      bypass=jnp.array([1.0, 0.0]))
  assert not np.allclose(by[0], per[0])

  c.greedy.threshold = 0.0
  method = methods.get("greedy")
  ctx = Context(model=model, modalities=("audio", "visual"), hp=methods.hparams(method, c))
  tx = methods.make_tx(method, ctx, optax.sgd(0.1), c)
  params, stats = variables["params"], variables["batch_stats"]
  opt = tx.init(params)

  @jax.jit
  def step(params, stats, opt):
    out = greedy.gradients(ctx, params, stats, batch, None, True, opt)
    updates, opt = tx.update(out.updates, opt, params, **out.tx_kwargs)
    return optax.apply_updates(params, updates), out.batch_stats, opt, out.metrics

  seen_rebalance = []
  for _ in range(3):
    params, stats, opt, metrics = step(params, stats, opt)
    assert np.isfinite(metrics["loss"])
    seen_rebalance.append(np.asarray(opt[0].rebalance))
  assert seen_rebalance[0].sum() == 1          # |d| > 0: the next steps re-balance
  np.testing.assert_allclose(stats["mmtm_1"]["count"], 3.0)
  ev = greedy.evaluate(ctx, params, stats, batch)
  assert ev.mono_ce.shape == (2, 4) and ev.logits.shape == (4, 3)


def test_greedy_and_mmtm_errors():
  c = tiny_config(method="greedy", **{"model.fusion": "mmtm"})
  with pytest.raises(ValueError, match="ResNet-18 streams"):
    build_model(c.model, ("audio", "visual"), 3, SPEC)
  c = tiny_config(method="greedy", **{"model.fusion": "sum"})
  model = build_model(c.model, ("audio", "visual"), 3, {"audio": ((8,), jnp.float32),
                                                         "visual": ((8,), jnp.float32)})
  method = methods.get("greedy")
  ctx = Context(model=model, modalities=("audio", "visual"), hp=methods.hparams(method, c))
  with pytest.raises(ValueError, match="greedy_util"):
    methods.make_tx(method, ctx, optax.sgd(0.1), c)


def test_rebalancing_unlocks_in_the_second_epoch():
  """The released Bias_Mitigation_Strong unlocks on ``on_epoch_begin(epoch)`` with
  ``epoch >= starting_epoch = 2``, its loop counting epochs from 1: the second epoch, which is
  agm-jax's epoch 1."""
  window = methods.window(methods.hparams(methods.get("greedy"), tiny_config(method="greedy")))
  assert [window.active(e) for e in range(3)] == [False, True, True]
