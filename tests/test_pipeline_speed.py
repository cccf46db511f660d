"""The fast CREMA-D input path: frames decoded only as far as the crop needs (the same crops,
the same pixels where no reduction applies), uint8 from the loader and normalised on the
device, the loader benchmark's JSON lines and the end-to-end epoch benchmark."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from agm_jax.tools import epoch_bench
from configs import cremad_agm
from data_pipelines.builders import images, preprocess
from data_pipelines.fabricated.benchmark import fabricate_and_prepare
from tests.conftest import ROOT


def _jpeg(height, width, seed=0):
  rng = np.random.default_rng(seed)
  x = (np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3))
       + rng.normal(0, 20, (height, width, 3)))
  return images.encode_jpeg(x.clip(0, 255).astype(np.uint8))


@pytest.mark.parametrize("train", [True, False])
def test_frames_equal_the_full_decode_where_no_reduction_applies(train):
  data = _jpeg(360, 480)   # CREMA-D's 1-fps frames: no crop is 448 px high
  for seed in range(20):
    a, b = np.random.default_rng(seed), np.random.default_rng(seed)
    full = images.decode(data)
    expected = images.train_frame(full, a) if train else images.eval_frame(full)
    np.testing.assert_array_equal(images.frame(data, train=train, rng=b), expected)
    assert a.random() == b.random()   # the same draws, in the same order


def test_draft_reduction_keeps_the_crop_and_its_pixels_close():
  assert images.draft_reduction(480, 360) == 1
  assert images.draft_reduction(900, 460) == 2 and images.draft_reduction(1800, 1800) == 8
  data = _jpeg(960, 1280)
  diffs = []
  for seed in range(10):
    a, b = np.random.default_rng(seed), np.random.default_rng(seed)
    expected = images.eval_frame(images.decode(data)) if seed == 0 else images.train_frame(
        images.decode(data), a)
    got = images.frame(data, train=seed != 0, rng=b)
    diffs.append(np.abs(got.astype(float) - expected).mean())
    assert a.random() == b.random()
  assert max(diffs) < 3.0   # gray levels of 255 (the docstring's figure: the mean)


def test_device_normalisation_equals_the_host_one():
  rng = np.random.default_rng(0)
  batch = {"visual": rng.integers(0, 256, (2, 1, 8, 8, 3)).astype(np.uint8),
           "audio": rng.standard_normal((2, 4, 4)).astype(np.float32)}
  on_device = jax.jit(preprocess.FramesPreprocess.device)(batch)
  np.testing.assert_allclose(on_device["visual"], images.normalise(batch["visual"]), atol=1e-6)
  assert on_device["visual"].dtype == np.float32
  np.testing.assert_array_equal(on_device["audio"], batch["audio"])
  floats = {"visual": images.normalise(batch["visual"])}
  assert preprocess.FramesPreprocess.device(floats) is floats   # already model inputs


def test_loader_benchmark_prints_json_lines():
  proc = subprocess.run([sys.executable, "-m", "data_pipelines.benchmark", "--num_workers=0",
                         "--num_clips=4", "--batch_size=2", "--epochs=1", "--read_threads=1"],
                        cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  line = json.loads(proc.stdout.strip().splitlines()[-1])
  assert line["num_workers"] == 0 and line["read_threads"] == 1 and line["examples_per_s"] > 0


def test_epoch_benchmark_on_fabricated_clips(tmp_path):
  data_dir = fabricate_and_prepare(str(tmp_path), 8)
  config = cremad_agm.get_config()
  config.method = "joint"   # the tool's plumbing; joint's step is the cheapest at these shapes
  tiny = dict(type="resnet18", width=4, stage_sizes=(1, 1))   # full-size inputs, short trace
  config.model.encoders = dict(audio=tiny, visual=tiny)
  result = epoch_bench.epoch_benchmark(config, data_dir, batch_size=4, num_workers=0,
                                       step_repeats=1)
  assert result["steps"] == 2
  for key in ("loader_examples_per_s", "step_examples_per_s", "epoch_examples_per_s"):
    assert result[key] > 0
  assert 0 <= result["wait_fraction"] < 1 and result["epoch_over_steps"] > 0
