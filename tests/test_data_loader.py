"""The Grain loader: order, determinism, resumption, sharding, workers, augmentation."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_pipelines
from agm_jax import modalities
from data_pipelines.builders import images, prepare
from data_pipelines.fabricated import layouts
from data_pipelines.sources.base import epoch_order
from data_pipelines.sources.loader import BatchPlan, example_rng
from data_pipelines.sources.random_inputs import random_batch

tfds.disable_progress_bar()


def data_config(data_dir, **fields):
  config = dict(name="cremad", data_dir=str(data_dir), manual_dir="", modalities="",
                synthetic=False, num_workers=0)
  config.update(fields)
  return ml_collections.ConfigDict(config)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
  root = tmp_path_factory.mktemp("loader")
  layouts.write_cremad(str(root / "raw"), num_train=26, num_test=6, frames=4,
                         frame_size=(60, 80), seconds=1.0)
  prepare.prepare("cremad", str(root / "raw"), str(root / "tfds"), verbose=False)
  return root / "tfds"


@pytest.fixture(scope="module")
def dataset(data_dir):
  ds = data_pipelines.load(data_config(data_dir))
  yield ds
  ds.close()


def collect(dataset, split="train", **kwargs):
  kwargs.setdefault("batch_size", 4)
  return list(dataset.batches(split, **kwargs))


def assert_same(batches_a, batches_b):
  assert len(batches_a) == len(batches_b)
  for a, b in zip(batches_a, batches_b):
    assert a.keys() == b.keys()
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])


def stored_labels(dataset, split):
  source = dataset.source(split)
  return np.array([source[i]["label"] for i in range(len(source))])


def test_order_is_the_shared_epoch_order(dataset):
  n = dataset.num_examples("train")
  assert n == 23
  labels = np.concatenate([b["label"] for b in collect(dataset, seed=3, epoch=2, shuffle=True)])
  order = epoch_order(n, seed=3, epoch=2, shuffle=True)
  np.testing.assert_array_equal(labels, stored_labels(dataset, "train")[order])
  eval_labels = np.concatenate([b["label"] for b in collect(dataset, "test")])
  np.testing.assert_array_equal(eval_labels, stored_labels(dataset, "test"))


def test_same_seed_and_epoch_give_the_same_batches(dataset, data_dir):
  kwargs = dict(seed=1, epoch=4, shuffle=True, drop_remainder=True)
  first = collect(dataset, **kwargs)
  fresh = data_pipelines.load(data_config(data_dir))
  assert_same(first, collect(fresh, **kwargs))
  fresh.close()
  other = collect(dataset, seed=1, epoch=5, shuffle=True, drop_remainder=True)
  assert not np.array_equal(first[0]["visual"], other[0]["visual"])
  assert len(first) == 23 // 4 and all(len(b["label"]) == 4 for b in first)


def test_consecutive_epochs_reuse_the_pipeline_and_match_fresh_reads(dataset, data_dir):
  kwargs = dict(seed=0, shuffle=True, drop_remainder=True)
  continued = [collect(dataset, epoch=e, **kwargs) for e in range(3)]
  assert len(dataset._pipelines) >= 1  # the train pipeline stayed alive between epochs
  for e in range(3):
    fresh = data_pipelines.load(data_config(data_dir))
    assert_same(continued[e], collect(fresh, epoch=e, **kwargs))
    fresh.close()


def test_start_batch_resumes_exactly(dataset):
  kwargs = dict(seed=7, epoch=1, shuffle=True, drop_remainder=False)
  full = collect(dataset, **kwargs)
  assert [len(b["label"]) for b in full] == [4, 4, 4, 4, 4, 3]
  assert_same(collect(dataset, start_batch=2, **kwargs), full[2:])
  assert collect(dataset, start_batch=6, **kwargs) == []


def test_abandoned_pass_then_a_new_one(dataset):
  kwargs = dict(seed=2, epoch=0, shuffle=True)
  it = dataset.batches("train", batch_size=4, **kwargs)
  first = next(it)
  it.close()
  again = collect(dataset, **kwargs)
  assert_same([first], again[:1])


def test_interleaved_passes_do_not_share_a_pipeline(dataset):
  kwargs = dict(batch_size=4, seed=5, epoch=0, shuffle=True)
  a, b = dataset.batches("train", **kwargs), dataset.batches("train", **kwargs)
  pairs = list(zip(a, b))
  assert len(pairs) == 6
  for x, y in pairs:
    np.testing.assert_array_equal(x["visual"], y["visual"])


@pytest.mark.parametrize("shard_count", [2, 4])
def test_shards_partition_each_global_batch(dataset, shard_count):
  kwargs = dict(batch_size=8, seed=4, epoch=3, shuffle=True, drop_remainder=True)
  whole = collect(dataset, **kwargs)
  shards = [collect(dataset, shard_index=i, shard_count=shard_count, **kwargs)
            for i in range(shard_count)]
  for b, batch in enumerate(whole):
    for key in batch:
      np.testing.assert_array_equal(
          np.concatenate([shards[i][b][key] for i in range(shard_count)]), batch[key])
  with pytest.raises(ValueError, match="not divisible"):
    collect(dataset, batch_size=6, shard_count=4)


def test_short_last_batch_can_leave_a_shard_empty(dataset):
  kwargs = dict(batch_size=8, shard_count=4, drop_remainder=False)
  assert dataset.num_examples("test") == 5
  last = [collect(dataset, "test", shard_index=i, **kwargs)[-1] for i in range(4)]
  assert [len(b["label"]) for b in last] == [2, 2, 1, 0]
  assert last[3]["visual"].shape == (0, 1, 224, 224, 3)


def test_augmentation_is_per_example_not_per_batch(dataset):
  kwargs = dict(seed=9, epoch=1, shuffle=True, drop_remainder=False)
  small = np.concatenate([b["visual"] for b in collect(dataset, batch_size=2, **kwargs)])
  large = np.concatenate([b["visual"] for b in collect(dataset, batch_size=8, **kwargs)])
  np.testing.assert_array_equal(small, large)


def test_eval_frames_are_resized_not_augmented(dataset):
  source = dataset.source("test")
  record = source[0]
  frame = images.select_frames(len(record["frames"]), 1, "fixed", train=False)[0]
  expected = images.eval_frame(images.decode(record["frames"][frame]))
  batch = collect(dataset, "test", seed=11, epoch=3)[0]
  np.testing.assert_array_equal(batch["visual"][0, 0], expected)   # uint8 from the loader
  np.testing.assert_allclose(dataset.device_preprocess(batch)["visual"][0, 0],
                             images.normalise(expected), atol=1e-6)
  assert_same(collect(dataset, "test"), collect(dataset, "test", seed=5, epoch=9))
  train_view = collect(dataset, "test", augment=True, seed=5, epoch=9)[0]
  assert not np.allclose(train_view["visual"][0, 0], expected)


def test_train_frames_follow_the_example_generator(dataset):
  plan_rng = example_rng(13, 2, 5)
  record = dataset.source("train")[5]
  frame = images.select_frames(len(record["frames"]), 1, "fixed", train=True, rng=plan_rng)[0]
  expected = images.train_frame(images.decode(record["frames"][frame]), plan_rng)
  order = epoch_order(23, seed=13, epoch=2, shuffle=True)
  position = int(np.flatnonzero(order == 5)[0])
  batches = collect(dataset, batch_size=1, seed=13, epoch=2, shuffle=True)
  np.testing.assert_array_equal(batches[position]["visual"][0, 0], expected)


def test_worker_processes_give_the_same_batches(data_dir, dataset):
  kwargs = dict(seed=6, shuffle=True, drop_remainder=True, batch_size=4)
  workers = data_pipelines.load(data_config(data_dir, num_workers=1))
  try:
    for epoch in range(2):
      assert_same(collect(workers, epoch=epoch, **kwargs), collect(dataset, epoch=epoch, **kwargs))
    assert_same(collect(workers, "test"), collect(dataset, "test"))
  finally:
    workers.close()


def test_modality_selection(data_dir):
  audio_only = data_pipelines.load(data_config(data_dir, modalities="audio"))
  assert audio_only.modalities == ("audio",)
  assert set(collect(audio_only)[0]) == {"audio", "label"}
  assert set(audio_only.spec) == {"audio"}
  with pytest.raises(ValueError, match="modality 'text' is not in cremad"):
    data_pipelines.load(data_config(data_dir, modalities="audio,text"))


@pytest.mark.parametrize("field,value,minimum", [
    ("read_threads", 0, 1), ("num_workers", -1, 0), ("prefetch_batches", -1, 0),
    ("live_pipelines", -1, 0)])
def test_loader_counts_below_their_minimum_are_rejected(data_dir, field, value, minimum):
  # A negative worker count used to run the loader in this process without a word.
  with pytest.raises(ValueError, match=f"data.{field} must be >= {minimum}, got {value}"):
    data_pipelines.load(data_config(data_dir, **{field: value}))


def test_more_frames_and_segment_sampling(data_dir):
  ds = data_pipelines.load(data_config(data_dir, num_frames=2, frame_sampling="segments"))
  assert ds.spec["visual"] == ((2, 224, 224, 3), np.uint8)   # normalised on the device
  assert collect(ds, "test")[0]["visual"].shape == (4, 2, 224, 224, 3)


def test_unknown_split_is_named(dataset):
  with pytest.raises(ValueError, match="no split 'valid'; valid: train, val, dep, test"):
    collect(dataset, "valid")


# ---------------------------------------------------------------------------- pure helpers

def test_random_resized_crop_stays_inside_the_image():
  rng = np.random.default_rng(0)
  for width, height in ((480, 360), (50, 400), (400, 3)):
    for _ in range(50):
      left, top, w, h = images.random_resized_crop_box(width, height, rng)
      assert 0 <= left and left + w <= width and 0 < w
      assert 0 <= top and top + h <= height and 0 < h


def test_frame_selection():
  fixed = images.select_frames(5, 1, "fixed", train=True)
  np.testing.assert_array_equal(fixed, np.random.RandomState(999).choice(5, 1, replace=False))
  np.testing.assert_array_equal(images.select_frames(2, 3, "fixed", train=False), [0, 1, 0])
  # Kinetics-Sounds (1-based t = i*seg + max(seg//2, 1)): 10 frames -> frames 1, 4, 7 (0, 3,
  # 6); 20 frames -> seg 6: 3, 9, 15 (2, 8, 14); at most 6 frames: the first, k times.
  np.testing.assert_array_equal(images.select_frames(10, 3, "segments", train=False), [0, 3, 6])
  np.testing.assert_array_equal(images.select_frames(20, 3, "segments", train=False), [2, 8, 14])
  np.testing.assert_array_equal(images.select_frames(6, 3, "segments", train=True), [0, 0, 0])
  rng = np.random.default_rng(0)
  for _ in range(20):
    idx = images.select_frames(10, 3, "segments", train=True, rng=rng)
    assert all(3 * i <= j < 3 * i + 3 for i, j in enumerate(idx))
    assert max(images.select_frames(30, 3, "segments", train=True, rng=rng)) <= 8
  with pytest.raises(ValueError, match="unknown frame_sampling"):
    images.select_frames(10, 3, "middle", train=False)


def test_normalise_uses_imagenet_statistics():
  frame = np.full((2, 2, 3), 255, np.uint8)
  np.testing.assert_allclose(images.normalise(frame)[0, 0],
                             (1 - images.IMAGENET_MEAN) / images.IMAGENET_STD, rtol=1e-6)


def test_batch_plan_positions_round_trip():
  plan = BatchPlan(n=23, batch_size=4, seed=0, shuffle=True, drop_remainder=True,
                   shard_index=0, shard_count=1, augment=True)
  assert plan.num_batches == 5
  assert plan.locate(plan.position(7, 3)) == (7, 3)
  fixed = BatchPlan(n=23, batch_size=4, seed=0, shuffle=False, drop_remainder=False,
                    shard_index=0, shard_count=1, augment=False)
  assert fixed.same_batch(fixed.position(0, 0), fixed.position(5, 0))
  assert not plan.same_batch(plan.position(0, 0), plan.position(1, 0))


def test_random_batch_shapes_lengths_and_labels():
  """The one random-batch function (the benchmark's inputs and RandomDataset's examples)."""
  spec = {"text": ((7, 3), np.float32), "text_lengths": ((), np.int32),
          "ids": ((4,), np.int32)}
  batch = random_batch(spec, num_classes=5, batch_size=6, seed=1)
  assert batch["text"].shape == (6, 7, 3) and batch["text"].dtype == np.float32
  np.testing.assert_array_equal(batch["text_lengths"], 7)          # full length by default
  assert batch["ids"].dtype == np.int32 and batch["ids"].shape == (6, 4)
  assert batch["label"].dtype == np.int32 and set(batch["label"]) <= set(range(5))
  again = random_batch(spec, num_classes=5, batch_size=6, seed=1)
  for key in batch:
    np.testing.assert_array_equal(batch[key], again[key])
  one = random_batch(spec, num_classes=5, batch_size=None, seed=2, full_lengths=False)
  assert one["text"].shape == (7, 3) and 1 <= int(one["text_lengths"]) <= 7
  assert one["label"].shape == ()


def test_modality_lists_have_one_parser():
  """Every caller parses modality lists with agm_jax.modalities: the same answers and the same
  errors from a string or a sequence, through data_pipelines.load too."""
  assert modalities.parse("audio, visual") == ("audio", "visual")
  assert modalities.parse(["visual", "audio"]) == ("visual", "audio")
  assert modalities.parse("") == () and modalities.parse(None) == ()
  for bad, message in (("audio,audio", "listed twice"), ("audio,,visual", "empty modality"),
                       (["a", " "], "empty modality")):
    with pytest.raises(ValueError, match=message):
      modalities.parse(bad)
  assert modalities.select("", ("a", "b")) == ("a", "b")
  with pytest.raises(ValueError, match="modality 'c' is not in cremad; it has"):
    modalities.select("a,c", ("a", "b"), where="cremad")
  config = ml_collections.ConfigDict(dict(name="cremad", data_dir="", manual_dir="", dir="",
                                          modalities="visual,visual", synthetic=True,
                                          num_workers=0, synthetic_examples=4))
  with pytest.raises(ValueError, match="listed twice"):
    data_pipelines.load(config)
  config.modalities = "visual"
  assert data_pipelines.load(config).modalities == ("visual",)


def test_every_config_declares_what_its_dataset_reads():
  """Every optional ``data`` field a config's dataset reads (with the Grain loader's settings
  for a prepared dataset) is in the config with the reader's own default
  (``data_pipelines.config_fields``, which ``configs/default.py``'s ``data_config`` adds), so
  each can be set from the command line (``--config.data.read_threads=4``,
  ``--config.data.frame_sampling=segments``)."""
  from configs import default  # noqa: PLC0415
  from data_pipelines.builders import registry  # noqa: PLC0415
  from data_pipelines.sources import loader  # noqa: PLC0415
  from tests.conftest import experiment_configs  # noqa: PLC0415
  assert set(loader.LOADER_DEFAULTS) == {"num_workers", "read_threads", "prefetch_batches",
                                         "live_pipelines"}
  assert data_pipelines.config_fields("cremad") == {
      **loader.LOADER_DEFAULTS, "split_roles": "", "synthetic_examples": 64, "num_frames": 1,
      "frame_sampling": "fixed"}
  assert data_pipelines.config_fields("kinetics_sounds")["frame_sampling"] == "segments"
  assert data_pipelines.config_fields("synthetic") == {}
  assert data_pipelines.config_fields("npz") == {"synthetic_examples": 64}
  for name in registry.NAMES:   # a bare section holds the readers' defaults
    data = default.data_config(name, "")
    for field, value in data_pipelines.config_fields(name).items():
      assert data[field] == value, (name, field)
  for name, config in experiment_configs().items():
    data = config.data
    missing = set(data_pipelines.config_fields(data.name)) - set(data)
    assert not missing, (name, missing)
