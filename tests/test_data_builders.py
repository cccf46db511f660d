"""Every builder end to end on a tiny fabricated raw layout; bad inputs; npz folders."""

import logging
import os
import pickle
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from scipy.io import wavfile

import data_pipelines
from data_pipelines.builders import audio, prepare, preprocess, registry, video
from data_pipelines.builders.common import LayoutError, SkipLog
from data_pipelines.fabricated import layouts

tfds.disable_progress_bar()

SPLITS = ("train", "val", "dep", "test")


def data_config(name, data_dir="", **fields):
  config = dict(name=name, data_dir=str(data_dir), manual_dir="", dir="", modalities="",
                synthetic=False, num_workers=0)
  config.update(fields)
  return ml_collections.ConfigDict(config)


def sizes(dataset):
  return {s: dataset.num_examples(s) for s in SPLITS}


def first_batch(dataset, split="train", batch_size=4):
  return next(dataset.batches(split, batch_size=batch_size))


def all_records(data_dir, name, split):
  builder = tfds.builder_from_directory(os.path.join(data_dir, name,
                                                    registry.get(name).version))
  source = builder.as_data_source()[split]
  return [source[i] for i in range(len(source))]


# ---------------------------------------------------------------------------------- CREMA-D

@pytest.fixture(scope="module")
def cremad(tmp_path_factory):
  root = tmp_path_factory.mktemp("cremad")
  train = [c for c, _ in layouts.cremad_clips("train", 20)]
  test = [c for c, _ in layouts.cremad_clips("test", 10)]
  layouts.write_cremad(str(root / "raw"), num_train=20, num_test=10,
                         corrupt_wav=[train[2]], no_frames=[train[5]], corrupt_jpg=[test[1]])
  prepare.prepare("cremad", str(root / "raw"), str(root / "tfds"), verbose=False)
  return {"root": root, "data_dir": str(root / "tfds"), "train": train, "test": test}


def test_cremad_splits_follow_the_agm_rule_and_skip_bad_clips(cremad):
  dataset = data_pipelines.load(data_config("cremad", cremad["data_dir"]))
  # train: first 18 of 20 minus a corrupt wav and an empty frame folder; test: first 9 of 10
  # minus a corrupt jpg; dep: train[18:20] + test[9:].
  assert sizes(dataset) == {"train": 16, "val": 3, "dep": 3, "test": 8}
  train, test = cremad["train"], cremad["test"]
  clip_ids = lambda split: [r["clip_id"].decode() for r in all_records(  # noqa: E731
      cremad["data_dir"], "cremad", split)]
  assert clip_ids("train") == [c for c in train[:18] if c not in (train[2], train[5])]
  assert clip_ids("dep") == train[18:] + test[9:]
  assert clip_ids("test") == [c for c in test[:9] if c != test[1]]
  meta = tfds.builder_from_directory(dataset.builder_dir).info.metadata
  assert len(meta["skipped_missing"]) == 6698 + 744 - 30
  assert sorted(meta["skipped_corrupt"]["train"]) == sorted([train[2], train[5]])
  assert meta["skipped_corrupt"]["test"] == [test[1]]


def test_cremad_shapes_dtypes_labels(cremad):
  dataset = data_pipelines.load(data_config("cremad", cremad["data_dir"]))
  assert dataset.modalities == ("audio", "visual") and dataset.num_classes == 6
  assert dataset.spec == {"audio": ((257, 188), np.float32),
                          "visual": ((1, 224, 224, 3), np.uint8)}
  for split in ("train", "test"):
    batch = first_batch(dataset, split)
    assert batch["audio"].shape == (4, 257, 188) and batch["audio"].dtype == np.float32
    assert batch["visual"].shape == (4, 1, 224, 224, 3) and batch["visual"].dtype == np.uint8
    assert batch["label"].dtype == np.int32
  labels = dict(layouts.cremad_clips("train", 20))
  classes = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
  for r in all_records(cremad["data_dir"], "cremad", "train"):
    assert classes[r["label"]] == labels[r["clip_id"].decode()]
    assert len(r["frames"]) == 3


def test_cremad_audio_is_the_released_spectrogram(cremad):
  record = all_records(cremad["data_dir"], "cremad", "train")[0]
  path = os.path.join(cremad["root"], "raw", "AudioWAV", record["clip_id"].decode() + ".wav")
  samples, rate = audio.read_wav(path)
  np.testing.assert_allclose(record["audio"], audio.clip_spectrogram(samples, rate), atol=1e-5)


def test_stft_matches_a_direct_dft():
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, 3000)
  mag = audio.stft_magnitude(x, n_fft=64, hop=20)
  padded = np.pad(x, 32)
  window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(64) / 64)  # periodic Hann
  k = np.arange(33)[:, None]
  dft = np.exp(-2j * np.pi * k * np.arange(64)[None] / 64)
  expected = np.stack([np.abs(dft @ (padded[t * 20:t * 20 + 64] * window))
                       for t in range(1 + 3000 // 20)], axis=1)
  np.testing.assert_allclose(mag, expected, atol=1e-9)


def test_spectrogram_matches_librosa(tmp_path):
  """The released CREMA-D audio path with librosa (load at 22,050 Hz with its default soxr_hq
  resampler, tile, clip, stft) equals ours to float tolerance."""
  librosa = pytest.importorskip("librosa")
  rng = np.random.default_rng(0)
  path = str(tmp_path / "clip.wav")
  wavfile.write(path, 16000, (rng.standard_normal(32123) * 3000).astype(np.int16))
  ref, _ = librosa.load(path, sr=audio.SAMPLE_RATE)
  samples, rate = audio.read_wav(path)
  np.testing.assert_allclose(audio.resample(samples, rate), ref, atol=1e-6)
  x = np.clip(np.tile(ref, 3)[:audio.SAMPLE_RATE * 3], -1, 1)
  expected = np.log(np.abs(librosa.stft(x, n_fft=512, hop_length=353)) + 1e-7)
  np.testing.assert_allclose(audio.clip_spectrogram(samples, rate), expected, atol=1e-4)


def test_spectrogram_shape_for_short_and_long_clips():
  for seconds in (0.4, 2.5, 5.0):
    x = np.sin(np.arange(int(16000 * seconds)) / 7).astype(np.float32)
    spec = audio.clip_spectrogram(x, 16000)
    assert spec.shape == (257, 188) and spec.dtype == np.float32 and np.all(np.isfinite(spec))


def test_corrupt_input_warns_and_counts(caplog):
  log = SkipLog("demo")
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    log.skip("train", "clip_a", "unreadable wav")
  assert "clip_a" in caplog.text and "unreadable wav" in caplog.text
  assert log.corrupt_count("train") == 1 and log.corrupt_count() == 1


def test_cremad_frames_from_video_when_frames_are_missing(tmp_path):
  pytest.importorskip("av")
  clips = [c for c, _ in layouts.cremad_clips("train", 2)]
  layouts.write_cremad(str(tmp_path / "raw"), num_train=2, num_test=2, video_clips=clips[:1])
  prepare.prepare("cremad", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)
  records = {r["clip_id"].decode(): r for split in ("train", "dep", "test")
             for r in all_records(str(tmp_path / "tfds"), "cremad", split)}
  assert len(records[clips[0]]["frames"]) == 2  # a 2 s video at 10 fps -> frames 0 and 10
  assert len(records[clips[1]]["frames"]) == 3


def test_cremad_video_without_av_names_the_package(tmp_path, monkeypatch):
  clips = [c for c, _ in layouts.cremad_clips("train", 1)]
  layouts.write_cremad(str(tmp_path / "raw"), num_train=1, num_test=0)
  os.rename(tmp_path / "raw" / "Image-01-FPS", tmp_path / "raw" / "frames_elsewhere")
  os.makedirs(tmp_path / "raw" / "VideoFlash")
  (tmp_path / "raw" / "VideoFlash" / f"{clips[0]}.flv").write_bytes(b"flv")

  real_import = video.importlib.import_module

  def no_av(name, *args, **kwargs):
    if name == "av":
      raise ImportError("No module named 'av'")
    return real_import(name, *args, **kwargs)
  monkeypatch.setattr(video.importlib, "import_module", no_av)
  with pytest.raises(ImportError, match="pip install av"):
    prepare.prepare("cremad", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)


@pytest.mark.parametrize("state", ["unset", "missing", "empty", "wrong"])
def test_bad_manual_dir_names_layout_and_command(tmp_path, state):
  manual = {"unset": "", "missing": str(tmp_path / "nope"), "empty": str(tmp_path / "empty"),
            "wrong": str(tmp_path / "wrong")}[state]
  os.makedirs(tmp_path / "empty")
  os.makedirs(tmp_path / "wrong")
  (tmp_path / "wrong" / "readme.txt").write_text("not CREMA-D")
  with pytest.raises(LayoutError) as e:
    prepare.prepare("cremad", manual, str(tmp_path / "tfds"), verbose=False)
  message = str(e.value)
  assert "AudioWAV/<clip>.wav" in message and "Image-01-FPS" in message
  assert "python -m data_pipelines.builders.prepare --dataset=cremad" in message


def test_load_without_prepared_data_or_manual_dir_says_what_to_do(tmp_path):
  with pytest.raises(LayoutError, match="data_pipelines.builders.prepare --dataset=avmnist"):
    data_pipelines.load(data_config("avmnist", tmp_path / "tfds"))


# ---------------------------------------------------------------------------------- AV-MNIST

@pytest.fixture(scope="module")
def avmnist_raw(tmp_path_factory):
  root = tmp_path_factory.mktemp("avmnist")
  layouts.write_avmnist(str(root / "raw"), num_train=30, num_test=20, nan_rows=[1])
  return root


def test_avmnist_load_prepares_from_manual_dir(avmnist_raw):
  config = data_config("avmnist", avmnist_raw / "tfds", manual_dir=str(avmnist_raw / "raw"))
  dataset = data_pipelines.load(config)
  # AGM rule: train/test keep the first 27/18 (minus a NaN row); dep = 3 + 2 tails.
  assert sizes(dataset) == {"train": 26, "val": 5, "dep": 5, "test": 18}
  assert dataset.spec == {"audio": ((112, 112), np.float32), "image": ((28, 28), np.float32)}
  batch = first_batch(dataset)
  assert 0 <= batch["audio"].min() and batch["audio"].max() <= 1  # scaled by 1/255
  raw_image = np.load(avmnist_raw / "raw" / "image" / "test_data.npy")
  test_batch = first_batch(dataset, "test", 2)
  np.testing.assert_allclose(test_batch["image"], raw_image[:2].reshape(2, 28, 28) / 255,
                             rtol=1e-6)
  assert set(np.unique(test_batch["label"])) <= set(range(10))


def test_prepare_cli_prints_split_sizes(avmnist_raw, tmp_path):
  out = subprocess.run(
      [sys.executable, "-m", "data_pipelines.builders.prepare", "--dataset=avmnist",
       f"--manual_dir={avmnist_raw / 'raw'}", f"--data_dir={tmp_path}"],
      capture_output=True, text=True, check=True, timeout=120)
  assert "train 26" in out.stdout and "dep 5" in out.stdout and "test 18" in out.stdout
  assert "1 unusable" in out.stdout
  builder = tfds.builder_from_directory(str(tmp_path / "avmnist" / "1.0.0"))
  assert builder.info.splits["train"].num_examples == 26


def test_avmnist_mismatched_arrays_name_the_files(avmnist_raw, tmp_path):
  shutil.copytree(avmnist_raw / "raw", tmp_path / "raw")
  np.save(tmp_path / "raw" / "test_labels.npy", np.zeros(7, np.int64))
  with pytest.raises(ValueError, match=r"image/test_data.npy has 20 rows but test_labels.npy"):
    prepare.prepare("avmnist", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)
  (tmp_path / "raw" / "test_labels.npy").write_bytes(b"garbage")
  with pytest.raises(ValueError, match=r"test_labels.npy: not a readable .npy"):
    prepare.prepare("avmnist", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)


# --------------------------------------------------------------------------- Kinetics-Sounds

def test_kinetics_sounds(tmp_path):
  written = layouts.write_kinetics_sounds(str(tmp_path / "raw"), num_train=20, num_test=6,
                                            missing=2)
  prepare.prepare("kinetics_sounds", str(tmp_path / "raw"), str(tmp_path / "tfds"),
                  verbose=False)
  dataset = data_pipelines.load(data_config("kinetics_sounds", tmp_path / "tfds"))
  assert sizes(dataset) == {"train": 18, "val": 2, "dep": 2, "test": 6}
  assert dataset.num_classes == 31
  assert dataset.spec == {"audio": ((64, 16), np.float32),
                          "visual": ((3, 224, 224, 3), np.uint8)}
  ids = [r["clip_id"].decode() for r in all_records(str(tmp_path / "tfds"), "kinetics_sounds",
                                                    "dep")]
  assert ids == written["train"][18:]
  meta = tfds.builder_from_directory(dataset.builder_dir).info.metadata
  assert len(meta["skipped_missing"]) == 2
  labels = np.concatenate([b["label"] for b in dataset.batches("test", batch_size=4)])
  assert labels.min() >= 0 and labels.max() < 31


def test_kinetics_sounds_bad_label_names_file_and_line(tmp_path):
  layouts.write_kinetics_sounds(str(tmp_path / "raw"), num_train=3, num_test=2)
  with open(tmp_path / "raw" / "test.txt", "a") as f:
    f.write("some_clip,10,77\n")
  with pytest.raises(ValueError, match=r"test.txt line 3"):
    prepare.prepare("kinetics_sounds", str(tmp_path / "raw"), str(tmp_path / "tfds"),
                    verbose=False)


# ------------------------------------------------------------------------ UR-Funny, CMU-MOSEI

URFUNNY_DIMS = {"vision": 7, "audio": 5, "text": 6}


def test_urfunny_sequences_lengths_and_dropped_entries(tmp_path):
  data = layouts.write_affect(str(tmp_path / "raw" / "humor.pkl"), dims=URFUNNY_DIMS,
                                sizes=(12, 5, 6), length=8, empty_text_rows=[3])
  prepare.prepare("urfunny", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)
  dataset = data_pipelines.load(data_config("urfunny", tmp_path / "tfds"))
  assert sizes(dataset) == {"train": 11, "val": 5, "dep": 5, "test": 6}
  assert dataset.modalities == ("audio", "visual", "text")
  assert dataset.spec["text"] == ((8, 6), np.float32)
  assert dataset.spec["visual_lengths"] == ((), np.int32)
  batch = next(dataset.batches("test", batch_size=6))
  source = data["test"]
  for i in range(6):
    start = int(np.flatnonzero(np.any(source["text"][i] != 0, axis=1))[0])
    length = 8 - start
    assert batch["text_lengths"][i] == batch["audio_lengths"][i] == length
    expected_audio = np.nan_to_num(source["audio"][i][start:], neginf=0.0)
    np.testing.assert_array_equal(batch["audio"][i, :length], expected_audio)
    np.testing.assert_array_equal(batch["visual"][i, :length], source["vision"][i][start:])
    assert not np.any(batch["text"][i, length:])
  np.testing.assert_array_equal(batch["label"], (source["labels"][:, 0] >= 1).astype(np.int32))
  assert np.all(np.isfinite(batch["audio"]))
  # The released roles (configs/urfunny_agm.py): the probe fits on test, reporting on valid.
  released = data_pipelines.load(data_config("urfunny", tmp_path / "tfds",
                                             split_roles="dep=test,test=val"))
  assert sizes(released) == {"train": 11, "val": 5, "dep": 6, "test": 5}
  with pytest.raises(ValueError, match="data.split_roles entry 'train=test' must be ROLE=SPLIT"):
    data_pipelines.load(data_config("urfunny", tmp_path / "tfds", split_roles="train=test"))


def test_cmu_mosei_binary_and_seven_class_labels(tmp_path):
  data = layouts.write_affect(str(tmp_path / "raw" / "mosei_senti_data.pkl"),
                                dims={"vision": 4, "audio": 5, "text": 6}, sizes=(9, 4, 5),
                                sentiment=True)
  prepare.prepare("cmu_mosei", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)
  scores = data["train"]["labels"].reshape(-1)
  binary = data_pipelines.load(data_config("cmu_mosei", tmp_path / "tfds"))
  assert binary.num_classes == 2
  labels = next(binary.batches("train", batch_size=9))["label"]
  np.testing.assert_array_equal(labels, (scores >= 0).astype(np.int32))
  seven = data_pipelines.load(data_config("cmu_mosei", tmp_path / "tfds", task="7class"))
  assert seven.num_classes == 7
  labels = next(seven.batches("train", batch_size=9))["label"]
  assert labels[0] == 3  # a score of exactly 0
  np.testing.assert_array_equal(labels, [preprocess.sentiment_class7(s) for s in scores])
  with pytest.raises(ValueError, match="unknown cmu_mosei task"):
    data_pipelines.load(data_config("cmu_mosei", tmp_path / "tfds", task="regression"))


def test_affect_pickle_without_a_split_names_file_and_field(tmp_path):
  os.makedirs(tmp_path / "raw")
  with open(tmp_path / "raw" / "humor.pkl", "wb") as f:
    pickle.dump({"train": {}, "valid": {}, "test": {}}, f)
  with pytest.raises(ValueError, match=r"humor.pkl: split 'train' has no field 'audio'"):
    prepare.prepare("urfunny", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)


# ------------------------------------------------------------------------------------- AVE

def test_ave_video_labels_pooling_and_skips(tmp_path):
  os.makedirs(tmp_path / "raw")
  info = layouts.write_ave(str(tmp_path / "raw"), num_videos=16, no_event=[2], nan_rows=[3])
  prepare.prepare("ave", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)
  dataset = data_pipelines.load(data_config("ave", tmp_path / "tfds", task="video"))
  assert sizes(dataset) == {"train": 8, "val": 3, "dep": 3, "test": 3}
  assert dataset.num_classes == 28
  assert dataset.spec == {"audio": ((10, 128), np.float32), "visual": ((10, 512), np.float32)}
  batch = next(dataset.batches("test", batch_size=3))
  np.testing.assert_array_equal(batch["label"], [info["events"][i] for i in (13, 14, 15)])
  grid = data_pipelines.load(data_config("ave", tmp_path / "tfds", visual_pool="none",
                                         task="video"))
  grid_batch = next(grid.batches("test", batch_size=3))
  assert grid_batch["visual"].shape == (3, 10, 7, 7, 512)
  np.testing.assert_allclose(grid_batch["visual"].mean(axis=(2, 3)), batch["visual"], atol=1e-6)
  records = all_records(str(tmp_path / "tfds"), "ave", "test")
  assert records[0]["segment_labels"].shape == (10,)


# -------------------------------------------------------------------------- synthetic inputs

@pytest.mark.parametrize("name", registry.NAMES)
def test_synthetic_inputs_have_the_dataset_shapes(name):
  dataset = data_pipelines.load(data_config(name, synthetic=True, synthetic_examples=6))
  assert sizes(dataset) == {s: 6 for s in SPLITS}
  batch = first_batch(dataset, batch_size=4)
  for key, (shape, dtype) in dataset.spec.items():
    assert batch[key].shape == (4, *shape) and batch[key].dtype == dtype
    if key.endswith("_lengths"):
      length = dataset.spec[key[:-len("_lengths")]][0][0]
      assert 1 <= batch[key].min() and batch[key].max() <= length
  assert 0 <= batch["label"].min() and batch["label"].max() < dataset.num_classes
  companions = {"avps_target"}   # AVE's segment task
  assert set(dataset.modalities) == {k for k in dataset.spec
                                     if not k.endswith("_lengths") and k not in companions}


def test_synthetic_cremad_matches_the_real_spec(cremad):
  real = data_pipelines.load(data_config("cremad", cremad["data_dir"]))
  fake = data_pipelines.load(data_config("cremad", synthetic=True))
  assert {k: (tuple(s), np.dtype(d)) for k, (s, d) in fake.spec.items()} == real.spec
  assert fake.num_examples("train") == 64


@pytest.mark.parametrize("name", registry.NAMES)
def test_builder_docstring_states_the_layout_it_reads(name):
  definition = registry.get(name)
  module = sys.modules[definition.builder_class().__module__]
  assert definition.layout.strip() in module.__doc__


def test_unknown_dataset_lists_the_valid_names():
  with pytest.raises(ValueError, match="valid: synthetic, npz, cremad, avmnist"):
    data_pipelines.load(data_config("cifar"))


# ------------------------------------------------------------------------------------ npz

def write_npz_folder(root, n=(12, 5, 6), with_val=False, **overrides):
  rng = np.random.default_rng(0)
  os.makedirs(root, exist_ok=True)
  splits = ("train", "dep", "test") + (("val",) if with_val else ())
  for split, count in zip(splits, n + ((4,) if with_val else ())):
    arrays = {"a": rng.standard_normal((count, 3)), "b": rng.standard_normal((count, 5, 2)),
              "b_lengths": rng.integers(1, 6, count), "c": rng.integers(0, 9, (count, 4)),
              "label": rng.integers(0, 3, count)}
    arrays.update(overrides.get(split, {}))
    np.savez(os.path.join(root, f"{split}.npz"), **arrays)
  return root


def test_npz_folder_loads_and_selects_modalities(tmp_path):
  root = write_npz_folder(str(tmp_path), with_val=True)
  dataset = data_pipelines.load(data_config("npz", dir=root))
  assert dataset.modalities == ("a", "b", "c")
  assert {s: dataset.num_examples(s) for s in SPLITS} == {"train": 12, "val": 4, "dep": 5,
                                                           "test": 6}
  assert dataset.spec["a"] == ((3,), np.float32) and dataset.spec["c"] == ((4,), np.int32)
  assert dataset.spec["b_lengths"] == ((), np.int32)
  picked = data_pipelines.load(data_config("npz", dir=root, modalities="c,a", num_classes=5))
  assert picked.modalities == ("c", "a") and picked.num_classes == 5
  assert set(first_batch(picked)) == {"c", "a", "label"}
  no_val = data_pipelines.load(data_config("npz", dir=write_npz_folder(str(tmp_path / "nv"))))
  assert no_val.num_examples("val") == no_val.num_examples("dep") == 5
  fake = data_pipelines.load(data_config("npz", dir=root, synthetic=True, synthetic_examples=4))
  assert first_batch(fake)["b"].shape == (4, 5, 2)


@pytest.mark.parametrize("case, overrides, config, pattern", [
    ("nan", {"dep": {"a": np.full((5, 3), np.nan)}}, {}, r"dep.npz: field 'a' holds NaN or inf"),
    ("inf", {"test": {"b": np.full((6, 5, 2), np.inf)}}, {}, r"test.npz: field 'b' holds NaN"),
    ("label_high", {"test": {"label": np.array([0, 1, 2, 3, 0, 1])}}, {"num_classes": 3},
     r"test.npz: field 'label' value 3 \(example 3\) is outside 0..2"),
    ("label_negative", {"train": {"label": -np.ones(12, int)}}, {},
     r"train.npz: field 'label' value -1"),
    ("label_float", {"train": {"label": np.full(12, 0.5)}}, {},
     r"train.npz: field 'label' holds non-integer"),
    ("lengths", {"dep": {"b": np.zeros((4, 5, 2))}}, {},
     r"dep.npz: field 'b' has 4 rows but 'label' has 5"),
    ("missing_modality", {}, {"modalities": "a,z"},
     r"train.npz: no field 'z', which data.modalities requests"),
    ("shape", {"test": {"a": np.zeros((6, 4))}}, {},
     r"test.npz: field 'a' has per-example shape \(4,\)"),
    ("bad_companion", {"train": {"b_lengths": np.full(12, 9)}}, {},
     r"train.npz: field 'b_lengths' must be"),
])
def test_npz_bad_input_is_one_clear_value_error(tmp_path, case, overrides, config, pattern):
  del case
  root = write_npz_folder(str(tmp_path), **overrides)
  with pytest.raises(ValueError, match=pattern):
    data_pipelines.load(data_config("npz", dir=root, **config))


def test_npz_missing_file_is_named(tmp_path):
  root = write_npz_folder(str(tmp_path))
  os.remove(os.path.join(root, "dep.npz"))
  with pytest.raises(ValueError, match=r"dep.npz: file not found"):
    data_pipelines.load(data_config("npz", dir=root))
