"""Competition strength end to end: concepts trained once and cached, d^m on test lines."""

import json
import os
import types

import jax
import numpy as np
import pytest

from agm_jax.methods import unimodal
from agm_jax.train import competition, loop
from tests.conftest import read_lines, tiny_config


@pytest.fixture()
def count_fits(monkeypatch):
  calls = []
  real = loop.fit

  def counting(config, *args, **kwargs):
    calls.append(config.method)
    return real(config, *args, **kwargs)

  monkeypatch.setattr(loop, "fit", counting)
  return calls


@pytest.mark.slow
def test_concepts_cached_and_competition_logged(tmp_path, count_fits):
  cache = str(tmp_path / "cache")
  c = tiny_config(method="agm", num_epochs=2, **{"competition.enabled": True,
                                                 "competition.cache_dir": cache})
  summary = loop.train_and_evaluate(c, str(tmp_path / "run1"))
  assert count_fits == ["agm", "unimodal", "unimodal"]   # the run, one concept per modality
  for m in ("audio", "visual"):
    assert 0 < summary[f"concept_acc/{m}"] <= 1
    assert 0 <= summary["final"][f"competition/{m}"] < 1.5
  tests = [line for line in read_lines(tmp_path / "run1") if line["split"] == "test"]
  assert len(tests) == 2 and all("competition/audio" in line for line in tests)
  assert len(os.listdir(cache)) == 2

  # A second run (another method, same data/model/seed) reuses both concepts.
  count_fits.clear()
  c2 = tiny_config(method="joint", num_epochs=2, **{"competition.enabled": True,
                                                    "competition.cache_dir": cache})
  summary2 = loop.train_and_evaluate(c2, str(tmp_path / "run2"))
  assert count_fits == ["joint"]
  assert summary2["concept_acc/audio"] == summary["concept_acc/audio"]
  # A different seed is a different concept.
  assert competition.concept_key(c, "audio") != competition.concept_key(
      tiny_config(seed=1), "audio")
  with open(tmp_path / "run2" / "summary.json") as f:
    assert "competition/visual" in json.load(f)["final"]


def test_whitened_form_selected_by_config(tmp_path):
  cache = str(tmp_path / "cache")
  base = {"competition.enabled": True, "competition.cache_dir": cache}
  plain = loop.train_and_evaluate(tiny_config(num_epochs=1, **base), str(tmp_path / "a"))
  white = loop.train_and_evaluate(
      tiny_config(num_epochs=1, **base, **{"competition.whitened": True}), str(tmp_path / "b"))
  assert plain["final"]["competition/audio"] != white["final"]["competition/audio"]


def test_concept_keys_and_checks():
  """concept_seed -1 is the run's seed (today's keys); another seed is the concept of a run
  with that seed; pad and checkpoint are in the key; bad values name their key."""
  key = lambda **kw: competition.concept_key(tiny_config(**kw), "audio")  # noqa: E731
  maxout = {"model.fusion": "maxout"}
  assert key(seed=2) == key(seed=2, **{"competition.concept_seed": 2})
  assert key(seed=0, **{"competition.concept_seed": 5}) == key(seed=5)
  assert "-s5-" in key(seed=0, **{"competition.concept_seed": 5})
  assert key(**maxout) != key(**maxout, **{"competition.concept_pad": "normal"})
  assert key().endswith("-best") is False
  # the loader's settings change how fast batches come, not which: the same concept
  assert key() == key(**{"data.read_threads": 7, "data.prefetch_batches": 5,
                         "data.live_pipelines": 1})
  assert key(**{"competition.concept_checkpoint": "best"}).endswith("-best")
  cc = competition.concept_config(tiny_config(**maxout, **{"competition.concept_pad": "normal"}),
                                  "visual")
  assert (cc.method, cc.unimodal.modality, cc.unimodal.pad) == ("unimodal", "visual", "normal")
  for bad, match in (({"competition.concept_pad": "normal"}, "late fusion"),
                     ({"competition.concept_pad": "ones"}, "concept_pad"),
                     ({"competition.concept_seed": -2}, "concept_seed"),
                     ({"competition.concept_checkpoint": "last"}, "concept_checkpoint")):
    with pytest.raises(ValueError, match=match):
      competition.concept_config(tiny_config(**bad), "audio")


def test_unimodal_normal_pad():
  """The absent modality becomes N(0, 1) noise drawn from the key; the kept one is untouched."""
  batch = {"audio": np.ones((64, 32), np.float32), "visual": np.ones((64, 8), np.float32),
           "label": np.zeros(64, np.int32)}
  ctx = lambda pad: types.SimpleNamespace(  # noqa: E731
      hp=unimodal.HParams("audio", pad), modalities=("audio", "visual"), axis_name=None)
  k0, k1 = jax.random.PRNGKey(0), jax.random.PRNGKey(1)
  zeros = unimodal._inputs(ctx("zeros"), batch, k0)
  assert not np.asarray(zeros["visual"]).any() and np.asarray(zeros["audio"]).all()
  a, b = unimodal._inputs(ctx("normal"), batch, k0), unimodal._inputs(ctx("normal"), batch, k1)
  np.testing.assert_array_equal(a["audio"], batch["audio"])
  np.testing.assert_array_equal(a["visual"], unimodal._inputs(ctx("normal"), batch, k0)["visual"])
  assert not np.allclose(a["visual"], b["visual"])
  assert abs(float(np.mean(a["visual"]))) < 0.1 and abs(float(np.std(a["visual"])) - 1) < 0.1
  with pytest.raises(ValueError, match="late fusion"):
    unimodal.modalities(unimodal.HParams("audio", "normal"), "concat", ("audio", "visual"))
  with pytest.raises(ValueError, match="unimodal.pad"):
    unimodal.HParams("audio", "ones")


def test_best_epoch_hook(tmp_path):
  """Strictly better validation accuracy wins (the first of equals), the record survives a
  restart (best.npz), and a record from the current epoch or later (a restarted run) is
  replaced."""
  run = types.SimpleNamespace(evaluate=lambda state, split: ({}, None, np.full((2, 3), state)))
  evals = lambda acc, e: {"val": ({"acc": acc}, None, None),  # noqa: E731
                          "test": ({"acc": e / 10}, None, np.full((2, 3), -e))}
  hook = competition.BestEpoch(str(tmp_path))
  for epoch, acc in enumerate((0.5, 0.7, 0.7, 0.6)):
    assert hook(run, epoch, epoch, evals(acc, epoch)) == {}
  assert int(hook.record["epoch"]) == 1 and float(hook.record["acc"]) == 0.1
  resumed = competition.BestEpoch(str(tmp_path))
  np.testing.assert_array_equal(resumed.record["dep"], np.full((2, 3), 1))
  resumed(run, 4, 4, evals(0.7, 4))
  assert int(resumed.record["epoch"]) == 1
  restarted = competition.BestEpoch(str(tmp_path))
  restarted(run, 0, 0, evals(0.1, 0))
  assert int(restarted.record["epoch"]) == 0


@pytest.mark.slow
def test_best_checkpoint_seed_and_pad(tmp_path, count_fits):
  """concept_checkpoint="best": the cached logits are those of the concept run's best epoch
  (its own summary's best_epoch and best test accuracy); the summary says so."""
  cache = tmp_path / "cache"
  c = tiny_config(method="joint", num_epochs=2, **{
      "model.fusion": "maxout", "competition.enabled": True, "competition.cache_dir": str(cache),
      "competition.concept_seed": 1, "competition.concept_pad": "normal",
      "competition.concept_checkpoint": "best"})
  summary = loop.train_and_evaluate(c, str(tmp_path / "run"))
  assert count_fits == ["joint", "unimodal", "unimodal"]
  assert summary["concept_checkpoint"] == "best"
  for m in ("audio", "visual"):
    directory = cache / competition.concept_key(c, m)
    assert "-s1-" in directory.name
    with open(directory / "summary.json") as f:
      concept = json.load(f)
    with open(directory / "config.json") as f:
      assert json.load(f)["unimodal"]["pad"] == "normal"
    with np.load(directory / "concept.npz") as f:
      assert str(f["checkpoint"]) == "best"
      assert int(f["epoch"]) == concept["best_epoch"] == summary[f"concept_epoch/{m}"]
      assert float(f["acc"]) == pytest.approx(concept["best"]["acc"])


# Each experiment config's audio (text) concept key, as the concept caches on users' disks hold
# them: a change to a config's data, model, optimiser or schedule, or to concept_key itself,
# that moves a key retrains every cached concept; it shows here first. (An intended change
# bumps competition.CACHE_VERSION and this table.)
CONCEPT_KEYS = {
    "ave_agm": "ave-concat-audio-s0-9f391991bd0df7f0",
    "ave_psp": "ave-psp-audio-s999-e01fedce0291e202",
    "avmnist_agm": "avmnist-concat-audio-s999-33c536d2c576dad6",
    "avmnist_early": "avmnist-maxout-audio-s999-7cc8d3a92531cd45",
    "cremad_agm": "cremad-concat-audio-s999-e3010b37cb18a885",
    "cremad_early": "cremad-maxout-audio-s999-195345784bfb203c",
    "cremad_joint": "cremad-concat-audio-s999-e3010b37cb18a885",
    "default": "synthetic-concat-audio-s0-51660f3c7f5b4f01",
    "ks_agm": "kinetics_sounds-concat-audio-s999-5e19a7089f988557",
    "ks_film": "kinetics_sounds-film-audio-s999-7bfed958e192ba0a",
    "mosei_agm": "cmu_mosei-concat-text-s999-b937fa4a1dcbcab7",
    "mosei_tbje": "mosei_tbje-tbje-text-s999-fa6c05acca0b08d8",
    "npz_mlp": "npz-concat-audio-s0-98966e201a704f74",
    "tpami_cremad": "cremad-concat-audio-s0-9da73e124cc1c02f",
    "tpami_ks": "kinetics_sounds-concat-audio-s0-ad0565bb6b82216c",
    "urfunny_agm": "urfunny-concat-audio-s999-c1de95365516588f",
    "urfunny_early": "urfunny-maxout-audio-s999-1b51c8094c408a29",
}


def test_concept_keys_of_the_configs_hold():
  from agm_jax.train import per_method  # noqa: PLC0415
  from tests.conftest import experiment_configs  # noqa: PLC0415
  assert competition.CACHE_VERSION == 1
  configs = experiment_configs()
  assert set(configs) == set(CONCEPT_KEYS)   # a new config is pinned too
  keys = {}
  for name, c in configs.items():
    first = c.data.modalities.split(",")[0] or "audio"
    keys[name] = competition.concept_key(per_method.resolve(c), first)
  assert keys == CONCEPT_KEYS
