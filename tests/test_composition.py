"""Composing the transforms into a user's own JAX trainer (docs/COMPOSING.md, issue 14).

Each pattern a user writes either works — the same parameters as the equivalent plain loop —
or raises the error that names the pattern to use instead: optax.inject_hyperparams on every
transform (also under jit, vmap over a seed axis, and with axis_name in a named vmap),
MultiSteps / apply_if_finite around and after agm, per-group optimisers, flax linen's
TrainState, flax NNX's Optimizer; every file in examples/ runs, in-process. Compiles are few
and small: the suite's time budget.
"""

import ast
import importlib.util
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from flax.training import train_state

from agm_jax import compat, modulation, shapley, transforms
from agm_jax.transforms import partition
from tests.conftest import ROOT, doc_block

MODS = ("audio", "visual")
K = 2
_rng = np.random.default_rng(0)
PARAMS = {"encoders_0": {"w": jnp.asarray(_rng.normal(size=(4, 3)), jnp.float32)},
          "encoders_1": {"w": jnp.asarray(_rng.normal(size=(3, 3)), jnp.float32)},
          "head": {"w": jnp.asarray(_rng.normal(size=(6, 2)), jnp.float32),
                   "b": jnp.zeros(2, jnp.float32)}}
AROUND = r"must wrap the base optimiser after agm: optax\.chain\(agm\(\.\.\.\), optax\."


def logits_fn(p, d):
  z = jnp.concatenate([jnp.tanh(d["audio"] @ p["encoders_0"]["w"]),
                       jnp.tanh(d["visual"] @ p["encoders_1"]["w"])], -1)
  return z @ p["head"]["w"] + p["head"]["b"]


@pytest.fixture(scope="module")
def batches():
  """Four mini-batches of ``shapley.per_modality_grads`` at PARAMS: dicts with the stacked
  gradients (leading axis k), ``mono_ce``, the joint gradient and per-modality statistics for
  the score-ratio / Greedy / G-Blending transforms."""
  @jax.jit
  def fn(x, y):
    grads, aux = shapley.per_modality_grads(logits_fn, PARAMS, x, y, MODS)
    return grads, aux["mono_ce"], jax.tree.map(lambda g: g.sum(0), grads), jax.tree.map(
        lambda g: jnp.concatenate([g, g.sum(0, keepdims=True)]), grads)

  rng = np.random.default_rng(1)
  out = []
  for _ in range(4):
    x = {"audio": rng.normal(size=(8, 4)).astype(np.float32),
         "visual": rng.normal(size=(8, 3)).astype(np.float32)}
    grads, mono_ce, joint, blend = fn(x, rng.integers(0, 2, 8))
    out.append(dict(stacked=grads, mono_ce=mono_ce, joint=joint, blend=blend,
                    scores=jnp.asarray(rng.uniform(1.0, 8.0, K), jnp.float32),
                    utilisation=jnp.asarray(rng.uniform(-0.2, 0.6, K), jnp.float32)))
  return out


def run(tx, updates, kwargs, params=PARAMS, update=None, linear=False):
  """The plain loop: ``tx.update`` then ``optax.apply_updates``; returns (params, state).
  ``linear``: jitted, with each stacked gradient handed over as the linear function
  ``kappa -> sum_m kappa[m] g[m]`` (built inside jit: a function is no jit argument)."""
  state = tx.init(params)
  update = update or tx.update
  if linear:
    update = jax.jit(lambda u, s, p, **kw: tx.update(
        lambda kappa: transforms.combine(u, kappa), s, p, **kw))
  for u, kw in zip(updates, kwargs):
    out, state = update(u, state, params, **kw)
    params = optax.apply_updates(params, out)
  return params, state


def assert_trees_close(a, b, atol=1e-6):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-6, atol=atol), a, b)


def stacked_and_ce(batches):
  return [b["stacked"] for b in batches], [{"mono_ce": b["mono_ce"]} for b in batches]


# --------------------------------------------------------------- optax.inject_hyperparams

INJECT_AGM = optax.inject_hyperparams(modulation.agm,
                                      static_args=("num_modalities", "reference", "axis_name"))


def test_inject_hyperparams_agm_under_jit_matches_plain(batches):
  """The issue's first row: TracerBoolConversionError before; now the same parameters.
  (AGM(1), reference="one", and every other transform: the parametrized test below.)"""
  updates, kwargs = stacked_and_ce(batches)
  sgd = optax.sgd(0.1, momentum=0.9)
  plain = optax.chain(modulation.agm(0.5, 3.0, num_modalities=K), sgd)
  injected = optax.chain(INJECT_AGM(alpha=0.5, clip=3.0, num_modalities=K), sgd)
  want, _ = run(plain, updates, kwargs)
  got, _ = run(injected, updates, kwargs, update=jax.jit(injected.update))
  assert_trees_close(got, want)


def test_inject_hyperparams_alpha_changed_between_steps_gives_the_new_kappa(batches):
  tx = INJECT_AGM(alpha=0.5, num_modalities=K)
  update = jax.jit(tx.update)
  state = tx.init(PARAMS)
  running = np.zeros(K, np.float32)
  for t, (b, alpha) in enumerate(zip(batches, [0.5, 2.0, 0.0, 1.25]), start=1):
    state.hyperparams["alpha"] = jnp.asarray(alpha, jnp.float32)
    _, state = update(b["stacked"], state, PARAMS, mono_ce=b["mono_ce"])
    want = modulation.agm_coefficients(b["mono_ce"], running, alpha=alpha, clip=10.0)
    np.testing.assert_allclose(state.inner_state.kappa, want, rtol=1e-6)
    running = running * (t - 1) / t + np.asarray(b["mono_ce"]) / t


def test_inject_hyperparams_alpha_schedule(batches):
  """A schedule is read at the step count before the update: alpha(0) = 0 gives kappa = 1."""
  tx = optax.inject_hyperparams(modulation.agm, static_args="num_modalities")(
      alpha=lambda count: 0.5 * count, num_modalities=K)
  state = tx.init(PARAMS)
  _, state = tx.update(batches[0]["stacked"], state, mono_ce=batches[0]["mono_ce"])
  np.testing.assert_array_equal(state.inner_state.kappa, np.ones(K))
  _, state = tx.update(batches[1]["stacked"], state, mono_ce=batches[1]["mono_ce"])
  want = modulation.agm_coefficients(batches[1]["mono_ce"], batches[0]["mono_ce"], alpha=0.5,
                                     clip=10.0)
  np.testing.assert_allclose(state.inner_state.kappa, want, rtol=1e-6)


def test_inject_hyperparams_errors():
  """Concrete values are still validated (the message starts with the argument's name);
  num_modalities sets shapes, so leaving it out of static_args says so."""
  with pytest.raises(ValueError, match=r"^alpha must be >= 0, got -1.0$"):
    INJECT_AGM(alpha=-1.0, num_modalities=K).init(PARAMS)
  with pytest.raises(TypeError, match=r"^num_modalities must be a Python int.*static_args"):
    optax.inject_hyperparams(modulation.agm)(alpha=0.5, num_modalities=K).init(PARAMS)


# One case per transform family: (factory, hyper-parameters, static_args, input, keywords).
# num_modalities (and MSLR's window) set array shapes, so they are static. The score-ratio
# cases run without GE noise, and ge_noise runs in the named-vmap test below: jax.random's
# draws are slow to compile on CPU.
CASES = {
    "agm": (modulation.agm, dict(alpha=0.5, clip=3.0, num_modalities=K), "num_modalities",
            "stacked", ("mono_ce",)),
    "agm_1": (modulation.agm, dict(alpha=0.5, num_modalities=K, reference="one"),
              "num_modalities", "stacked", ("mono_ce",)),
    "ogm_ge": (transforms.ogm_ge, dict(alpha=0.3, num_modalities=K, noise=False),
               "num_modalities", "joint", ("scores",)),
    "ogm_ge_ra": (transforms.ogm_ge, dict(alpha=0.3, num_modalities=K, noise=False,
                                          reference="running_mean"),
                  "num_modalities", "joint", ("scores",)),
    "ogm": (transforms.ogm, dict(alpha=0.3, num_modalities=K, noise=False), "num_modalities",
            "joint", ("scores",)),
    "opm": (transforms.opm, dict(q_base=0.3, lam=0.5, num_modalities=K), "num_modalities",
            "joint", ("scores",)),
    "mslr": (transforms.mslr, dict(init_coefficients=(0.9, 1.1), window=2), "window", "joint",
             ()),
    "mses": (transforms.mses, dict(inner=optax.sgd(0.1), num_modalities=K), "num_modalities",
             "joint", ()),
    "blend": (transforms.blend, dict(num_modalities=K), "num_modalities", "blend", ()),
    "greedy": (transforms.greedy_schedule,
               dict(threshold=0.05, window=2, ema=0.5, num_modalities=K), "num_modalities",
               "joint", ("utilisation",)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_transform_under_inject_hyperparams_jit_and_a_vmapped_seed_axis(batches, name):
  """Two steps of each transform, injected and under ``jit(vmap(…))`` over a seed axis of two
  runs with different batches, equal the plain transform run by run (one compiled program)."""
  factory, hp, static, field, keys = CASES[name]
  plain = factory(**hp)
  injected = optax.inject_hyperparams(factory, static_args=static)(**hp)

  def two_steps(tx, updates, extras):
    state, outs = tx.init(PARAMS), []
    for u, kw in zip(updates, extras):
      out, state = tx.update(u, state, PARAMS, **kw)
      outs.append(out)
    return outs, state

  def inputs(run_batches):
    return ([b[field] for b in run_batches], [{k: b[k] for k in keys} for b in run_batches])

  runs = [inputs(batches[:2]), inputs(batches[2:])]     # seed 0 and seed 1
  stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *runs)

  @jax.jit
  def both():
    want = [two_steps(plain, *r)[0] for r in runs]
    got = jax.vmap(lambda u, e: two_steps(injected, u, e))(*stacked)
    return want, got

  want, (got, state) = both()
  for seed in range(2):
    assert_trees_close(jax.tree.map(lambda x, s=seed: x[s], got), want[seed])
  assert {k for k, v in hp.items() if type(v) in (int, float) and k not in static} <= set(
      state.hyperparams)


def test_axis_name_inside_a_named_vmap(batches):
  """The transforms with ``axis_name`` (injected, chained, then ge_noise) inside a vmap with a
  named axis of two 'devices' (the collectives of pmap/shard_map) equal the plain chain fed
  the devices' mean statistics. tests/test_parallel.py runs agm under a real 4-device pmap."""
  def chain(axis_name):
    inject = lambda f: optax.inject_hyperparams(f, static_args="num_modalities")
    return optax.chain(
        inject(modulation.agm)(alpha=0.5, num_modalities=K, axis_name=axis_name),
        inject(transforms.ogm_ge)(alpha=0.3, num_modalities=K, noise=False, axis_name=axis_name),
        inject(transforms.opm)(q_base=0.3, lam=0.5, num_modalities=K, axis_name=axis_name),
        inject(transforms.greedy_schedule)(threshold=0.05, window=2, ema=0.5, num_modalities=K,
                                           axis_name=axis_name),
        optax.inject_hyperparams(modulation.ge_noise)(seed=3))

  tx, plain = chain("d"), chain(None)
  step = lambda t, g, kw: t.update(g, t.init(PARAMS), PARAMS, **kw)
  keys = ("mono_ce", "scores", "utilisation")
  grads = [b["stacked"] for b in batches[:2]]
  stats = [{k: b[k] for k in keys} for b in batches[:2]]
  stack = lambda trees: jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

  @jax.jit
  def both():
    mean = jax.tree.map(lambda *xs: sum(xs) / len(xs), *stats)
    want = [step(plain, g, mean) for g in grads]
    return want, jax.vmap(lambda g, kw: step(tx, g, kw), axis_name="d")(stack(grads),
                                                                        stack(stats))

  want, got = both()
  for i in range(2):
    assert_trees_close(jax.tree.map(lambda x, i=i: x[i], got), want[i], atol=1e-5)


# --------------------------------------------------------------- wrappers around / after agm

AGM_SGD = lambda: optax.chain(modulation.agm(0.5, num_modalities=K), optax.sgd(0.1))


@pytest.mark.parametrize("wrapper", ["MultiSteps", "apply_if_finite"])
def test_a_wrapper_around_agm_raises_the_error_naming_the_pattern(batches, wrapper):
  """The issue's rows 2 and 3: a TypeError deep inside optax before; now agm's ValueError at
  trace time (under jit here; the same eagerly), naming the composition that works."""
  wrap = {"MultiSteps": lambda inner: optax.MultiSteps(inner, every_k_schedule=2),
          "apply_if_finite": lambda inner: optax.apply_if_finite(inner, 3)}[wrapper]
  tx = wrap(AGM_SGD())
  update = jax.jit(tx.update)
  with pytest.raises(ValueError, match=r"^agm expects per-modality gradients \(leading axis "
                     r"k=2\) or a linear function kappa -> grads; .*" + AROUND + wrapper):
    update(batches[0]["stacked"], tx.init(PARAMS), PARAMS, mono_ce=batches[0]["mono_ce"])


def test_updates_without_the_modality_axis_raise(batches):
  tx = modulation.agm(0.5, num_modalities=K)
  joint = batches[0]["joint"]
  with pytest.raises(ValueError, match="got updates shaped like the parameters.*" + AROUND):
    tx.update(joint, tx.init(PARAMS), PARAMS, mono_ce=batches[0]["mono_ce"])
  with pytest.raises(ValueError, match=r"got a leaf \['encoders_0'\]\['w'\] of shape \(4, 3\)"):
    tx.update(joint, tx.init(PARAMS), mono_ce=batches[0]["mono_ce"])
  blend = optax.MultiSteps(optax.chain(transforms.blend(K), optax.sgd(0.1)), 2)
  with pytest.raises(ValueError, match=r"^blend expects per-loss gradients \(leading axis "
                     r"k\+1=3.*after blend: optax\.chain\(blend\(\.\.\.\), optax\.MultiSteps"):
    blend.update(batches[0]["blend"], blend.init(PARAMS), PARAMS)


def test_multisteps_after_agm_matches_the_plain_accumulation_loop(batches):
  """kappa per mini-batch (its running mean advanced per mini-batch); the base optimiser steps
  on the mean of two kappa-weighted gradients. The linear-function form gives the same."""
  updates, kwargs = stacked_and_ce(batches)
  sgd = optax.sgd(0.1, momentum=0.9)
  tx = optax.chain(modulation.agm(0.5, num_modalities=K), optax.MultiSteps(sgd, 2))
  got, state = run(tx, updates, kwargs, update=jax.jit(tx.update))
  assert int(state[1].gradient_step) == 2

  agm, params = modulation.agm(0.5, num_modalities=K), PARAMS
  agm_state, sgd_state = agm.init(params), sgd.init(params)
  combined = []
  for u, kw in zip(updates, kwargs):
    g, agm_state = agm.update(u, agm_state, params, **kw)
    combined.append(g)
    if len(combined) == 2:
      mean = jax.tree.map(lambda a, b: (a + b) / 2, *combined)
      step, sgd_state = sgd.update(mean, sgd_state, params)
      params, combined = optax.apply_updates(params, step), []
  assert_trees_close(got, params)

  again, _ = run(tx, updates, kwargs, linear=True)
  assert_trees_close(again, params)


def test_apply_if_finite_after_agm_skips_a_nan_mini_batch_without_a_trace(batches):
  """A mini-batch with NaN gradients and NaN mono_ce: the base optimiser skips it and agm's
  running mean ignores it, so the parameters are those of the loop without that batch."""
  updates, kwargs = stacked_and_ce(batches)
  nan_grads = jax.tree.map(lambda g: jnp.full_like(g, jnp.nan), updates[0])
  tx = optax.chain(modulation.agm(0.5, num_modalities=K),
                   optax.apply_if_finite(optax.sgd(0.1, momentum=0.9), 3))
  update = jax.jit(tx.update)
  got, state = run(tx, updates[:2] + [nan_grads] + updates[2:],
                   kwargs[:2] + [{"mono_ce": jnp.full(K, jnp.nan)}] + kwargs[2:], update=update)
  want, want_state = run(tx, updates, kwargs, update=update)
  assert int(state[1].total_notfinite) == 1
  assert int(state[0].count) == 4
  assert_trees_close(got, want)
  assert_trees_close(state[0].running_ce, want_state[0].running_ce)


def test_per_group_base_optimisers_after_agm_match_the_per_group_loop(batches):
  """optax.multi_transform and optax.masked after agm: adam for the encoders, sgd for the
  head, on the kappa-weighted gradient."""
  updates, kwargs = stacked_and_ce(batches)
  labels = lambda p: jax.tree_util.tree_map_with_path(
      lambda path, _: "head" if partition.modality_index(path) == partition.SHARED
      else "encoders", p)
  is_enc = lambda p: jax.tree.map(lambda lab: lab == "encoders", labels(p))
  is_head = lambda p: jax.tree.map(lambda lab: lab == "head", labels(p))
  adam, sgd = optax.adam(1e-2), optax.sgd(0.1, momentum=0.9)
  multi, _ = run(optax.chain(modulation.agm(0.5, num_modalities=K),
                             optax.multi_transform({"encoders": adam, "head": sgd}, labels)),
                 updates, kwargs)
  masked, _ = run(optax.chain(modulation.agm(0.5, num_modalities=K), optax.masked(adam, is_enc),
                              optax.masked(sgd, is_head)), updates, kwargs)

  agm, params = modulation.agm(0.5, num_modalities=K), dict(PARAMS)
  agm_state = agm.init(params)
  enc = {k: v for k, v in params.items() if k != "head"}
  enc_state, head_state = adam.init(enc), sgd.init(params["head"])
  for u, kw in zip(updates, kwargs):
    g, agm_state = agm.update(u, agm_state, params, **kw)
    enc_step, enc_state = adam.update({k: g[k] for k in enc}, enc_state)
    head_step, head_state = sgd.update(g["head"], head_state)
    params = optax.apply_updates(params, {**enc_step, "head": head_step})
  assert_trees_close(multi, params)
  assert_trees_close(masked, params)


# --------------------------------------------------------------- flax linen TrainState, NNX


class StateWithStats(compat.ModulatedTrainState):
  batch_stats: Any = None


def test_flax_train_state_drops_mono_ce_with_an_error_naming_the_fix(batches):
  state = train_state.TrainState.create(apply_fn=None, params=PARAMS, tx=AGM_SGD())
  with pytest.raises(TypeError, match=r"^agm\.update\(\) needs the keyword argument mono_ce=.*"
                     r"agm_jax\.compat\.ModulatedTrainState"):
    state.apply_gradients(grads=batches[0]["stacked"], mono_ce=batches[0]["mono_ce"])


def test_modulated_train_state_matches_the_plain_loop(batches):
  updates, kwargs = stacked_and_ce(batches)
  want, want_opt = run(AGM_SGD(), updates, kwargs)
  state = StateWithStats.create(apply_fn=None, params=PARAMS, tx=AGM_SGD(), batch_stats=0)
  plain = train_state.TrainState.create(apply_fn=None, params=PARAMS, tx=AGM_SGD())
  for t, (u, kw) in enumerate(zip(updates, kwargs), start=1):
    state = state.apply_gradients(grads=u, batch_stats=t, **kw)
    plain = compat.apply_modulated_gradients(plain, grads=u, **kw)
  assert int(state.step) == len(updates) and state.batch_stats == len(updates)
  assert_trees_close(state.params, want)
  assert_trees_close(state.opt_state, want_opt)
  assert_trees_close(plain.params, want)
  with pytest.raises(TypeError, match="unknown keyword argument.*'mono_cee'"):
    state.apply_gradients(grads=updates[0], mono_cee=kwargs[0]["mono_ce"])


class _Group(nnx.Module):
  def __init__(self, arrays):
    for name, value in arrays.items():
      setattr(self, name, nnx.Param(value))


class _NNXModel(nnx.Module):
  """PARAMS as an NNX module (the same nesting, so its state is PARAMS)."""

  def __init__(self, params):
    for name, group in params.items():
      setattr(self, name, _Group(group))


def test_nnx_optimizer_forwards_mono_ce_and_matches_the_plain_loop(batches):
  """``nnx.Optimizer(model, chain(agm, sgd), wrt=nnx.Param).update(model, grads, mono_ce=…)``
  with the stacked gradients as an ``nnx.State`` (the full split/merge path runs in
  examples/flax_nnx.py)."""
  updates, kwargs = stacked_and_ce(batches)
  want, _ = run(AGM_SGD(), updates, kwargs)
  model = _NNXModel(PARAMS)
  optimizer = nnx.Optimizer(model, AGM_SGD(), wrt=nnx.Param)
  for u, kw in zip(updates, kwargs):
    grads = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(grads, u)
    optimizer.update(model, grads, **kw)
  assert_trees_close(nnx.to_pure_dict(nnx.state(model, nnx.Param)), want)


# --------------------------------------------------------------- examples/

EXAMPLES = ("optax_loop", "optax_wrappers", "flax_linen_trainstate", "flax_nnx", "equinox_loop")


def load_example(name):
  """Imports examples/<name>.py in-process (no subprocess: compiled functions are shared)."""
  if name == "equinox_loop":
    pytest.importorskip("equinox")
  if os.path.join(ROOT, "examples") not in sys.path:   # as `python examples/<name>.py` runs
    sys.path.insert(0, os.path.join(ROOT, "examples"))  # it: tiny_problem.py beside it
  spec = importlib.util.spec_from_file_location(f"examples_{name}",
                                                os.path.join(ROOT, "examples", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def assert_learns(losses, kappa=None):
  assert np.isfinite(losses[0]) and losses[-1] < 0.8 * losses[0], losses
  if kappa is not None:
    assert np.shape(kappa) == (K,) and np.all(np.isfinite(kappa)) and np.all(kappa > 0)


PUBLIC = ("agm_jax.modulation", "agm_jax.shapley", "agm_jax.transforms", "agm_jax.compat")


def test_every_example_is_tested_and_uses_only_the_public_library():
  files = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "examples")) if f.endswith(".py"))
  assert files == sorted(EXAMPLES + ("tiny_problem",))   # the examples and their shared problem
  for name in EXAMPLES + ("tiny_problem",):
    with open(os.path.join(ROOT, "examples", f"{name}.py")) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      if isinstance(node, ast.ImportFrom):
        names = [node.module] if node.module != "agm_jax" else [
            f"agm_jax.{alias.name}" for alias in node.names]
      elif isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
      else:
        continue
      for module in names:
        assert not module.startswith(("configs", "data_pipelines")), (name, module)
        if module.startswith("agm_jax"):
          assert module.startswith(PUBLIC), f"examples/{name}.py imports {module}"


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_runs(name):
  out = load_example(name).main()
  if name != "optax_wrappers":
    assert_learns(out["losses"], out["kappa"])
    return
  # One NaN mini-batch: skipped by apply_if_finite, before MultiSteps accumulates it.
  losses = out["losses"]
  assert out["skipped"] == 1 and np.isnan(losses).sum() == 1
  assert out["gradient_steps"] == (len(losses) - 1) // 2
  assert_learns([x for x in losses if np.isfinite(x)], out["kappa"])
  assert 0.4 < out["alpha"] < 0.5     # the warm-up schedule's value at the last step


def test_readme_own_loop_snippet_runs():
  """README's "AGM in your own JAX loop" block, run as written on the examples' tiny problem
  (its ``params`` and ``logits_fn``): the loss falls (slowly: the snippet's learning rate is
  1e-3), and κ is in the optimiser state."""
  problem = load_example("tiny_problem")
  namespace = {"params": problem.init_params(), "logits_fn": problem.logits_fn}
  exec(compile(doc_block("README.md", "## AGM in your own JAX loop"), "README.md", "exec"),
       namespace)
  params, opt_state, losses = namespace["params"], namespace["opt_state"], []
  for x, y in problem.batches(*problem.make_data(), steps=30, batch_size=32):
    params, opt_state, loss = namespace["step"](params, opt_state, x, y)
    losses.append(float(loss))
  assert np.all(np.isfinite(losses)) and np.mean(losses[-5:]) < 0.95 * np.mean(losses[:5])
  kappa = optax.tree_utils.tree_get(opt_state, "kappa")
  assert np.shape(kappa) == (K,) and np.all(np.isfinite(kappa)) and np.all(kappa > 0)


def test_composing_patterns_snippet_runs():
  """docs/COMPOSING.md's all-wrappers block, run as written (its ``steps`` and ``labels`` from
  examples/optax_wrappers.py): two mini-batches make one base step, κ is in the state."""
  wrappers, problem = load_example("optax_wrappers"), load_example("tiny_problem")
  namespace = {"optax": optax, "modulation": modulation, "steps": 4,
               "labels": wrappers.encoder_or_head}
  exec(compile(doc_block(os.path.join("docs", "COMPOSING.md"), "## Patterns"),
               "docs/COMPOSING.md", "exec"), namespace)
  tx, params = namespace["tx"], problem.init_params()
  opt_state = tx.init(params)
  x, y = next(problem.batches(*problem.make_data(), steps=1, batch_size=32))
  grads, aux = shapley.per_modality_grads(problem.logits_fn, params, x, y, problem.MODS)
  largest = []
  for _ in range(2):
    updates, opt_state = tx.update(grads, opt_state, params, mono_ce=aux["mono_ce"])
    largest.append(max(float(np.abs(u).max()) for u in jax.tree.leaves(updates)))
  assert largest[0] == 0 and largest[1] > 0     # MultiSteps(…, 2): the second one steps
  kappa = optax.tree_utils.tree_get(opt_state, "kappa")
  assert np.shape(kappa) == (K,) and np.all(np.isfinite(kappa))
