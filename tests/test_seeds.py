"""Several seeds in one vmapped program (config.num_seeds, agm_jax/train/seeds.py): seed 0 of a
stacked run is the single run of seed 0, line for line; every seed has its own lines, summary,
probe and epoch-end rule; a stacked run resumes exactly; the report reads its seeds."""

import json
import os
import shutil

import jax
import numpy as np
import pytest

from agm_jax.tools import report
from agm_jax.train import loop, seeds, validate
from tests.conftest import read_lines, tiny_config


def _config(cache_dir, **overrides):
  c = tiny_config(method="agm", num_epochs=2, **overrides)
  c.competition.enabled = True   # the probe per seed, against seed 0's concepts
  c.competition.concept_seed = 0
  c.competition.cache_dir = str(cache_dir)
  return c


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  root = tmp_path_factory.mktemp("seeds")
  single = loop.fit(_config(root / "cache"), str(root / "single"))
  stacked = loop.fit(_config(root / "cache", num_seeds=2), str(root / "stacked"))
  return root, single, stacked


def _close(a, b):
  assert a.keys() == b.keys() - {"seed"}, a.keys() ^ b.keys()
  for k, v in a.items():
    if isinstance(v, float):
      assert b[k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    elif k != "probe_s":
      assert b[k] == v, k


def test_seed_zero_is_the_single_run(runs):
  root, _, _ = runs
  single = [x for x in read_lines(root / "single")]
  stacked = read_lines(root / "stacked" / "seed_0")
  assert len(single) == len(stacked) == 4 + 2 * 2   # 2 train + val + test lines per epoch
  for a, b in zip(single, stacked):
    assert b["seed"] == 0
    _close({k: v for k, v in a.items() if k != "probe_s"},
           {k: v for k, v in b.items() if k != "probe_s"})
  other = read_lines(root / "stacked" / "seed_1")
  assert {x["seed"] for x in other} == {1}
  assert "competition/audio" in other[-1] and other[-1]["split"] == "test"
  assert other[-1]["acc"] != stacked[-1]["acc"]   # its own initialisation and draws


def test_layout_and_summaries(runs):
  root, (_, _, single), (run, state, summary) = runs
  assert summary["num_seeds"] == 2 and sorted(summary["seeds"]) == ["0", "1"]
  assert summary["seeds"]["0"]["final"]["acc"] == pytest.approx(single["final"]["acc"])
  assert "concept_acc/audio" in summary["seeds"]["1"]
  for s in (0, 1):
    d = root / "stacked" / f"seed_{s}"
    with open(d / "config.json") as f:
      config = json.load(f)
    assert config["seed"] == s and config["num_seeds"] == 1 and config["seed_group"] == [0, 1]
    with open(d / "summary.json") as f:
      assert json.load(f)["steps"] == 16
    assert os.path.exists(d / loop.FEATURES_FILE)
  assert jax.tree.leaves(state)[0].shape[0] == 2
  # Seed 1's slice starts where a single run of seed 1 starts.
  one = loop.Run(seeds.seed_config(run.config, 1), dataset=run.dataset).init_state()
  for a, b in zip(jax.tree.leaves(seeds.take(run.init_state(), 1)), jax.tree.leaves(one)):
    np.testing.assert_array_equal(a, b)


def test_resume_mid_epoch_is_exact(runs):
  root, _, _ = runs
  work = root / "resumed"
  shutil.copytree(root / "stacked", work)
  kept = sorted(int(x) for x in os.listdir(work / "checkpoints") if x.isdigit())
  assert kept == [10, 15, 16]   # every 5 steps and each epoch's end, the last 3 kept
  for step in (15, 16):   # as if killed after step 14 (mid epoch 1, between two lines)
    shutil.rmtree(work / "checkpoints" / str(step))
  loop.fit(_config(root / "cache", num_seeds=2), str(work))
  for s in (0, 1):
    a = read_lines(root / "stacked" / f"seed_{s}")
    b = read_lines(work / f"seed_{s}")
    assert len(a) == len(b)
    for x, y in zip(a, b):
      x.pop("probe_s", None), y.pop("probe_s", None)
      assert x == y


def test_ended_seed_is_held(runs):
  _, _, (run, state, _) = runs
  batch = next(iter(run.train_batches(0)))
  before = jax.device_get(state)
  after, _ = run.train_step_masked(jax.tree.map(np.array, before), batch, np.bool_(True),
                                   np.array([True, False]))
  after = jax.device_get(after)
  assert int(after.step[0]) == int(before.step[0]) + 1
  for a, b in zip(jax.tree.leaves(seeds.take(after, 1)), jax.tree.leaves(seeds.take(before, 1))):
    np.testing.assert_array_equal(a, b)


def test_report_reads_each_seed(runs, tmp_path):
  root, _, _ = runs
  work = str(root / "stacked")
  assert report.expand_workdirs([work]) == [os.path.join(work, "seed_0"),
                                           os.path.join(work, "seed_1")]
  assert report.main([work, "--no-plots", "--out", str(tmp_path)]) == 0
  text = (tmp_path / "report.md").read_text()
  assert "(2)" in text and "0, 1" in text


def test_epoch_end_rule_per_seed(tmp_path):
  """MSLR's epoch-end rule runs on each seed's slice: seed 0 equals the single run."""
  c = tiny_config(method="mslr", num_epochs=2)
  loop.fit(c, str(tmp_path / "single"))
  c.num_seeds = 2
  loop.fit(c, str(tmp_path / "stacked"))
  for a, b in zip(read_lines(tmp_path / "single"), read_lines(tmp_path / "stacked" / "seed_0")):
    _close(a, b)


@pytest.mark.parametrize("override,message", [
    ({"num_seeds": 0}, "num_seeds must be an integer >= 1, got 0"),
    ({"num_seeds": 2, "parallel.mode": "pmap"}, "num_seeds 2 needs parallel.mode 'sharding'"),
])
def test_errors(override, message):
  with pytest.raises(ValueError, match=message):
    seeds.count(tiny_config(**override))


def test_over_seeds_programs_agree():
  """Every program maps the seed axis of the mapped arguments and shares the others: seed i of
  f(s, x) = s·x + 1 is s_i·x + 1, with the outputs' tree stacked."""
  f = lambda s, x: {"y": s["w"] * x + 1.0, "n": s["w"].sum()}
  s = {"w": np.array([[1.0, 2.0], [3.0, 4.0]])}   # 2 seeds
  x = np.array([10.0, 100.0])
  want = {"y": np.array([[11.0, 201.0], [31.0, 401.0]]), "n": np.array([3.0, 7.0])}
  for program in seeds.PROGRAMS:
    got = jax.jit(seeds.over_seeds(f, (0, None), program))(s, x)
    for k in want:
      np.testing.assert_allclose(got[k], want[k], err_msg=program)
  with pytest.raises(ValueError, match="program must be one of auto, vmap, unroll"):
    seeds.over_seeds(f, (0, None), "pmap")


def _convs(jaxpr):
  """(feature_group_count, batch_group_count) of each convolution in ``jaxpr``, nested ones
  included."""
  return [(e.params["feature_group_count"], e.params["batch_group_count"])
          for e in seeds.convolutions(jaxpr)]


def test_auto_unrolls_convolutions_on_cpu():
  """``auto`` on the CPU: a step that convolves (here inside a nested jit) is unrolled into
  ordinary convolutions; vmapped, its second layer (per-seed input and kernel) would be one
  grouped convolution. A step without convolutions is vmapped."""
  def conv(k, x):   # two "SAME" 3×3 layers sharing the kernel
    layer = lambda x: jax.lax.conv(x, k, (1, 1), "SAME")
    return jax.jit(lambda x: layer(layer(x)))(x).sum()
  # 3 seeds of a 1-in 1-out 3×3 kernel, seed i's all c = i+1; 2 images of 5×5 ones
  k = np.ones((3, 1, 1, 3, 3), np.float32) * np.arange(1, 4, dtype=np.float32)[:, None, None,
                                                                               None, None]
  x = np.ones((2, 1, 5, 5), np.float32)
  assert seeds.has_convolution(jax.make_jaxpr(conv)(k[0], x).jaxpr)
  assert not seeds.has_convolution(jax.make_jaxpr(lambda a: a * 2)(x).jaxpr)
  vmapped = _convs(jax.make_jaxpr(seeds.over_seeds(conv, (0, None), "vmap"))(k, x).jaxpr)
  assert vmapped == [(1, 1), (3, 1)]   # seeds folded into output maps, then grouped
  auto = _convs(jax.make_jaxpr(seeds.over_seeds(conv, (0, None), "auto"))(k, x).jaxpr)
  assert auto == ([(1, 1)] * 6 if jax.default_backend() == "cpu" else vmapped)
  assert seeds.auto_program(lambda a, x: a * x, (np.stack([x, x]), x), (0, None)) == "vmap"
  # Layer 1 at pixel p is c·n(p), n(p) its in-image neighbours (4 at the 4 corners, 6 at the
  # 12 other edge pixels, 9 at the 9 inside); layer 2 sums c·(layer 1) over those neighbours,
  # so its total is c²·Σ n² = c²·(4·16 + 12·36 + 9·81) = 1225·c², times 2 images.
  for program in seeds.PROGRAMS:
    np.testing.assert_allclose(jax.jit(seeds.over_seeds(conv, (0, None), program))(k, x),
                               [2450.0, 9800.0, 22050.0], err_msg=program)


def test_seed_program_is_checked_with_the_config():
  validate.validate_config(tiny_config(seed_program="unroll"))
  with pytest.raises(validate.ConfigError,
                     match="seed_program must be one of auto, vmap, unroll; got 'pmap'"):
    validate.validate_config(tiny_config(seed_program="pmap"))


def test_vmap_and_unroll_steps_agree(runs):
  """The run's stacked train and eval steps give the same values unrolled as vmapped, to float
  tolerance, from the same state and batch."""
  _, _, (run, _, _) = runs
  assert seeds.program(run.config) == "auto"
  state = run.init_state()
  batch = next(iter(run.train_batches(0)))
  out = {}
  for program in ("vmap", "unroll"):
    train, _, evaluate = seeds.make_seed_steps(run.ctx, run.method, run.tx,
                                               preprocess=run.preprocess, program=program)
    new, metrics = train(jax.tree.map(np.array, state), batch, np.bool_(True))
    weight = np.ones(jax.tree.leaves(batch)[0].shape[0], np.float32)
    out[program] = jax.device_get((new, metrics, evaluate(new, batch, weight)))
  for a, b in zip(jax.tree.leaves(out["vmap"]), jax.tree.leaves(out["unroll"])):
    np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64),
                               rtol=1e-5, atol=1e-6)
