"""Competition strength end to end: concepts trained once and cached, d^m on test lines."""

import json
import os

import pytest

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
