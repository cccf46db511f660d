"""Issue 22's schedule-level methods umt, reconboost and mla (agm_jax/methods/<name>.py).

Per method: its rules by hand (UMT's distillation and where its gradient goes, the teachers
frozen in the optimiser state; ReconBoost's schedule, boosting and consolidation losses and
the boosted learner's gradient; MLA's projector, alpha, projection, entropy fusion weights, the
tied head and the one-modality step), a 2-epoch run on the tiny default config, exact resume
after a kill (tests/test_seeds.py's trick), UMT with two vmapped seeds, and MLA on 1 vs 4
devices (pmap, in a subprocess).
"""

import dataclasses
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agm_jax import methods
from agm_jax.methods import mla, reconboost, umt
from agm_jax.methods.base import Copies
from agm_jax.train import loop
from agm_jax.transforms import carry as carry_tx
from tests.conftest import ROOT, device_env, read_lines, tiny_config

NAMES = ("umt", "reconboost", "mla")


def _config(name, **overrides):
  return tiny_config(method=name, num_epochs=2, **overrides)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  """One 2-epoch run per method: ``name -> (workdir, run, host state, summary)``."""
  root = tmp_path_factory.mktemp("sched_e")
  out = {}
  for name in NAMES:
    workdir = root / name
    run, state, summary = loop.fit(_config(name), str(workdir))
    out[name] = (workdir, run, state, summary)
  return out


# --------------------------------------------------------------------------- end to end


@pytest.mark.parametrize("name", NAMES)
def test_runs_on_the_default_config(runs, name):
  workdir, _, _, summary = runs[name]
  assert name in methods.NAMES
  lines = read_lines(workdir)
  assert {x["split"] for x in lines} == {"train", "val", "test"}
  assert summary["steps"] == 16 and 0.0 <= summary["final"]["acc"] <= 1.0
  assert all(np.isfinite(x["loss"]) for x in lines)
  assert {"acc/audio", "acc/visual"} <= set(summary["final"])


@pytest.mark.parametrize("name", NAMES)
def test_resume_after_a_kill_is_exact(runs, name, tmp_path):
  workdir = runs[name][0]
  work = tmp_path / name
  shutil.copytree(workdir, work)
  kept = sorted(int(x) for x in os.listdir(work / "checkpoints") if x.isdigit())
  assert kept == [10, 15, 16]
  for step in (15, 16):   # as if killed after step 14 (mid epoch 1)
    shutil.rmtree(work / "checkpoints" / str(step))
  loop.fit(_config(name), str(work))
  a, b = read_lines(workdir), read_lines(work)
  assert len(a) == len(b)
  for x, y in zip(a, b):
    x.pop("probe_s", None), y.pop("probe_s", None)
    assert x == y


def test_errors_before_training():
  with pytest.raises(ValueError, match="mla needs a linear late-fusion head"):
    loop.Run(_config("mla", **{"model.fusion": "maxout"}))
  with pytest.raises(ValueError, match="reconboost"):
    loop.Run(_config("reconboost", **{"model.fusion": "maxout"}))
  with pytest.raises(ValueError, match="umt.scaling must be >= 0"):
    loop.Run(_config("umt", **{"umt.scaling": -1.0}))
  with pytest.raises(ValueError, match="mla.fusion must be one of"):
    loop.Run(_config("mla", **{"mla.fusion": "max"}))


# --------------------------------------------------------------------------- umt


def test_umt_distillation_by_hand():
  f = (np.array([[1.0, 2.0], [0.0, -1.0]]), np.array([[3.0, 0.0, 1.0]]))
  t = (np.array([[0.0, 2.0], [1.0, 1.0]]), np.array([[1.0, 0.0, 0.0]]))
  want = (1 + 0 + 1 + 4) / 4 + (4 + 0 + 1) / 3
  assert float(umt.distillation(f, t)) == pytest.approx(want)


def _batch(run):
  return {k: jnp.asarray(v) for k, v in next(iter(run.train_batches(0))).items()}


def test_umt_teachers_are_trained_once_and_frozen(runs):
  _, run, state, _ = runs["umt"]
  final = carry_tx.get_carry(state.opt_state, umt.Teachers).encoders
  init = run.init_state()
  prepared = umt.prepare(run.seed_ctx(0), jax.device_get(init), _copies(run))
  teachers = carry_tx.get_carry(prepared.opt_state, umt.Teachers).encoders
  for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(teachers)):
    np.testing.assert_array_equal(a, b)   # trained in prepare, unchanged by 16 steps
  for i in range(2):
    key = umt.encoder_key(i)
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(teachers[key]),
                                                      jax.tree.leaves(init.params[key]))]
    assert any(moved)   # a trained teacher, not the initial encoder


def _copies(run):
  c = loop._Copies(run)
  return Copies(c.train, c.evaluate, run.config.num_epochs)


def test_umt_distillation_reaches_only_the_encoders(runs):
  _, run, state, _ = runs["umt"]
  batch, ctx = _batch(run), run.seed_ctx(0)
  args = (state.params, state.batch_stats, batch, jax.random.PRNGKey(0), True, state.opt_state)
  with_kd = umt.gradients(ctx, *args)
  without = umt.gradients(dataclasses.replace(ctx, hp=dataclasses.replace(ctx.hp, scaling=0.0)),
                          *args)
  diff = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), with_kd.updates, without.updates)
  assert max(jax.tree.leaves(diff["fusion"])) < 1e-7
  assert all(max(jax.tree.leaves(diff[umt.encoder_key(i)])) > 0 for i in range(2))
  assert float(with_kd.metrics["distill"]) > 0
  assert "carry" in with_kd.tx_kwargs


def test_umt_two_seeds(tmp_path):
  _, _, summary = loop.fit(tiny_config(method="umt", num_epochs=1, num_seeds=2), str(tmp_path))
  assert summary["num_seeds"] == 2
  assert summary["seeds"]["0"]["final"]["acc"] != summary["seeds"]["1"]["final"]["acc"] or \
      summary["seeds"]["0"]["final"]["loss"] != summary["seeds"]["1"]["final"]["loss"]


# --------------------------------------------------------------------------- reconboost


def test_reconboost_schedule_by_hand():
  # k = 3, 2 boosting epochs then 1 rectification epoch per stage.
  got = [tuple(int(x) for x in reconboost.schedule(e, 3, 2, 1)) for e in range(9)]
  assert got == [(0, 0, 1), (0, 0, 1), (0, 0, 0), (1, 1, 1), (1, 1, 1), (1, 1, 0),
                 (2, 2, 1), (2, 2, 1), (2, 2, 0)]


def test_reconboost_phase_ends_reset_the_optimiser(runs):
  assert [reconboost.new_phase(e, 2, 2, 1) for e in range(6)] == [False, True, True, False,
                                                                 True, True]
  _, _, state, _ = runs["reconboost"]   # epoch 1 (rectification) ended a phase
  inner = [s.inner for s in jax.tree.leaves(
      state.opt_state, is_leaf=lambda s: isinstance(s, carry_tx.CarryState))
      if isinstance(s, carry_tx.CarryState)]
  floats = [x for x in jax.tree.leaves(inner) if np.issubdtype(np.asarray(x).dtype, np.floating)]
  assert floats and all(not np.any(np.asarray(x)) for x in floats)
  ints = [x for x in jax.tree.leaves(inner) if np.issubdtype(np.asarray(x).dtype, np.integer)]
  assert any(int(np.max(x)) == 16 for x in ints)   # the step count carries on


def test_reconboost_losses_by_hand():
  u = np.array([[[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]],
                [[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]]])   # (k=2, B=2, K=3)
  y = np.array([0, 2])
  sm = lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)  # noqa: E731
  p, q = sm(u[0]), sm(u[1])   # learner 0 (boosted), the others' ensemble = u[1]
  t = np.eye(3)[y]
  want = (-5.0 * (t * np.log(p)).mean(-1) + 1.0 * (t * q * np.log(p)).mean(-1)).mean()
  got = reconboost.boosting_loss(jnp.asarray(u), jnp.asarray(y), 0, ce_weight=5.0,
                                 recon_weight=1.0)
  assert float(got) == pytest.approx(want, rel=1e-6)
  assert float(reconboost.consolidation_loss(jnp.asarray(u), 0, 1, grad=False)) == \
      pytest.approx(np.mean((p - q) ** 2), rel=1e-6)
  g = jax.grad(lambda x: reconboost.consolidation_loss(x, 0, 1, grad=False))(jnp.asarray(u))
  assert float(jnp.abs(g).max()) == 0.0   # the authors' code: detached
  g = jax.grad(lambda x: reconboost.consolidation_loss(x, 0, 1, grad=True))(jnp.asarray(u))
  assert float(jnp.abs(g[0]).max()) > 0 and float(jnp.abs(g[1]).max()) == 0.0


def test_reconboost_boosts_one_learner_and_logs_it(runs):
  workdir, run, state, _ = runs["reconboost"]
  assert int(carry_tx.get_carry(state.opt_state, reconboost.ReconState).epoch) == 2
  train = [x for x in read_lines(workdir) if x["split"] == "train"]
  assert [(x["epoch"], x["learner/audio"], x["learner/visual"]) for x in train] == \
      [(0, 1.0, 0.0), (0, 1.0, 0.0), (1, 0.0, 0.0), (1, 0.0, 0.0)]   # boost audio, rectify
  init = run.init_state()   # schedule position 0: boosting the audio learner
  out = reconboost.gradients(run.seed_ctx(0), init.params, init.batch_stats, _batch(run),
                             jax.random.PRNGKey(0), True, init.opt_state)
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(out.updates["encoders_1"])) == 0
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(out.updates["encoders_0"])) > 0
  ones = jax.tree.map(jnp.ones_like, init.params)   # any gradient: the visual encoder stays
  updates, _ = run.tx.update(ones, init.opt_state, init.params, **out.tx_kwargs)
  assert max(float(jnp.abs(x).max()) for x in jax.tree.leaves(updates["encoders_1"])) == 0
  assert min(float(jnp.abs(x).min()) for x in jax.tree.leaves(updates["encoders_0"])) > 0
  assert min(float(jnp.abs(x).min()) for x in jax.tree.leaves(updates["fusion"])) > 0


# --------------------------------------------------------------------------- mla


def test_mla_projector_alpha_projection_by_hand():
  p = np.array([[2.0, 0.5], [0.5, 1.0]])
  r = np.array([1.0, -2.0])
  k = p @ r
  want = p - np.outer(k, k) / (0.05 + r @ k)
  got = mla.update_projector(jnp.asarray(p), jnp.asarray(r), 0.05, normalize=False)
  np.testing.assert_allclose(got, want, rtol=1e-6)
  got = mla.update_projector(jnp.asarray(p), jnp.asarray(r), 0.05, normalize=True)
  np.testing.assert_allclose(got, want / np.sqrt((want ** 2).sum()), rtol=1e-6)
  assert float(mla.owm_alpha(jnp.int32(5), jnp.int32(0))) == pytest.approx(0.1)
  assert float(mla.owm_alpha(jnp.int32(12), jnp.int32(8))) == pytest.approx(0.1 ** 1.5)
  g = np.array([[1.0, 0.0, 2.0], [3.0, 1.0, -1.0]])   # a (D=2, K=3) kernel gradient
  np.testing.assert_allclose(mla.project(jnp.asarray(g), jnp.asarray(p), "replace"), p @ g)
  np.testing.assert_allclose(mla.project(jnp.asarray(g), jnp.asarray(p), "add"), g + p @ g)


def test_mla_fusion_weights_by_hand():
  u = np.array([[[3.0, 0.0], [0.0, 0.0]],
                [[0.0, 0.0], [0.0, 4.0]]])   # (k=2, B=2, K=2)

  def entropy(x, axis):
    q = np.exp(x) / np.exp(x).sum(axis, keepdims=True)
    return -(q * np.log(q)).sum(axis)

  h = entropy(u, -1)   # (k, B)
  w = np.exp(h.max(0) - h) / np.exp(h.max(0) - h).sum(0)
  np.testing.assert_allclose(mla.fusion_weights(jnp.asarray(u), "entropy")[..., 0], w,
                             rtol=1e-6)
  hb = np.array([entropy(u[m], 0).sum() for m in range(2)])   # the authors' batch entropy
  wb = np.exp(hb.max() - hb) / np.exp(hb.max() - hb).sum()
  np.testing.assert_allclose(mla.fusion_weights(jnp.asarray(u), "entropy_batch")[..., 0],
                             np.repeat(wb[:, None], 2, 1), rtol=1e-6)
  np.testing.assert_allclose(mla.fusion_weights(jnp.asarray(u), "equal"), 0.5)


def test_mla_tied_head_and_one_modality_per_step(runs):
  _, run, state, _ = runs["mla"]
  kernel = np.asarray(state.params["fusion"]["classifier"]["kernel"])
  d = kernel.shape[0] // 2
  np.testing.assert_array_equal(kernel[:d], kernel[d:])   # still one shared head
  s = carry_tx.get_carry(state.opt_state, mla.MLAState)
  assert int(s.count) == 32 and int(s.epoch_len) == 8   # 2 epochs x 8 batches x 2 modalities
  assert not np.allclose(np.asarray(s.p), np.eye(d))
  init = mla.prepare(run.seed_ctx(0), run.init_state(), None)
  for count, trained, still in ((0, 0, 1), (1, 1, 0)):
    opt = carry_tx.replace_carry(init.opt_state, mla.MLAState,
                                 lambda c: c._replace(count=jnp.int32(count)))  # noqa: B023
    out = mla.gradients(run.seed_ctx(0), init.params, init.batch_stats, _batch(run),
                        jax.random.PRNGKey(0), True, opt)
    leaves = lambda i: jax.tree.leaves(out.updates[f"encoders_{i}"])  # noqa: E731, B023
    assert max(float(jnp.abs(x).max()) for x in leaves(still)) == 0
    assert max(float(jnp.abs(x).max()) for x in leaves(trained)) > 0
    g = np.asarray(out.updates["fusion"]["classifier"]["kernel"])
    np.testing.assert_array_equal(g[:d], g[d:])


MLA_SCRIPT = r"""
import json, sys
from agm_jax.train import loop
from tests.test_schedule_methods_e import _config
run, _, _ = loop.fit(_config("mla", **{"parallel.mode": "pmap"}), sys.argv[1] + "/pmap")
print("RESULT", json.dumps({"pmap": run.dp.num_devices}))
"""


def test_mla_one_vs_four_devices(runs, tmp_path):
  """pmap mode, where the projector's batch statistics are explicit collectives (in sharding
  mode the compiler partitions the one global program; test_parallel checks that mode)."""
  workdir = runs["mla"][0]
  out = subprocess.run([sys.executable, "-c", MLA_SCRIPT, str(tmp_path)], capture_output=True,
                       text=True, cwd=ROOT, env=device_env(4), timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  line = [x for x in out.stdout.splitlines() if x.startswith("RESULT")][-1]
  assert json.loads(line.split(" ", 1)[1]) == {"pmap": 4}
  one = read_lines(workdir)
  for mode in ("pmap",):
    four = read_lines(tmp_path / mode)
    assert len(four) == len(one)
    for a, b in zip(one, four):
      assert a.keys() == b.keys()
      for key, value in a.items():   # measured: differences <= 3e-7
        if isinstance(value, str):
          assert b[key] == value
        else:
          assert b[key] == pytest.approx(value, rel=1e-5, abs=1e-5), (mode, key)


def test_umt_teachers_from_the_cached_concepts(tmp_path):
  """teachers="concepts": each teacher is the cached concept run's encoder (trained once into
  the cache, then read back), and the run trains no copies."""
  from agm_jax.train import competition  # noqa: PLC0415 - only this test reads the cache
  c = tiny_config(method="umt", num_epochs=1, **{
      "umt.teachers": "concepts", "competition.cache_dir": str(tmp_path / "cache")})
  _, state, _ = loop.fit(c, str(tmp_path / "run"))
  run = loop.Run(c)
  teachers = carry_tx.get_carry(state.opt_state, umt.Teachers).encoders
  for i, m in enumerate(run.modalities):
    concept = competition.concept_params(c, m, run.dataset, fit=loop.fit, make_run=loop.Run)
    jax.tree.map(np.testing.assert_array_equal, teachers[f"encoders_{i}"],
                 concept["encoders_0"])
  with pytest.raises(ValueError, match="teacher_epochs must be -1"):
    loop.Run(_config("umt", **{"umt.teachers": "concepts", "umt.teacher_epochs": 2}))
