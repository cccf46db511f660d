"""The data of the AGM paper's Table 4: AVE's segment task (PSP) and CMU-MOSEI from TBJE's
pickles, built from fabricated raw files."""

import logging
import os

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

import data_pipelines
from data_pipelines.builders import prepare, text
from data_pipelines.builders.ave import avps_target
from data_pipelines.builders.ave.ave_dataset_builder import (
    annotation_segments,
    check_annotations,
    open_h5,
    read_annotations,
)
from data_pipelines.fabricated import layouts

tfds.disable_progress_bar()


def data_config(name, data_dir="", **fields):
  config = dict(name=name, data_dir=str(data_dir), manual_dir="", dir="", modalities="",
                synthetic=False, num_workers=0)
  config.update(fields)
  return ml_collections.ConfigDict(config)


def records(builder_dir, split):
  source = tfds.builder_from_directory(builder_dir).as_data_source()[split]
  return {r["id"].decode(): r for r in (source[i] for i in range(len(source)))}


# ------------------------------------------------------------------------------------- AVE

@pytest.fixture(scope="module")
def ave(tmp_path_factory):
  root = tmp_path_factory.mktemp("ave")
  os.makedirs(root / "raw")
  info = layouts.write_ave(str(root / "raw"), num_videos=16, annotations=True,
                           wrong_annotations=[1, 4])
  prepare.prepare("ave", str(root / "raw"), str(root / "tfds"), verbose=False)
  return {"root": root, "data_dir": str(root / "tfds"), **info}


def test_avps_target_hand_computed():
  labels = np.array([28, 28, 5, 3, 3, 28, 5, 28, 28, 28])
  np.testing.assert_allclose(avps_target(labels), [0, 0, 0, .5, .5, 0, 0, 0, 0, 0])
  np.testing.assert_allclose(avps_target(np.full(10, 28)), np.full(10, .1))
  assert avps_target(labels).dtype == np.float32


def test_ave_segment_task_is_the_default(ave):
  dataset = data_pipelines.load(data_config("ave", ave["data_dir"], visual_pool="none"))
  assert dataset.num_classes == 29
  assert dataset.spec == {"audio": ((10, 128), np.float32),
                          "visual": ((10, 7, 7, 512), np.float32),
                          "avps_target": ((10,), np.float32)}
  batch = next(dataset.batches("test", batch_size=3))
  assert batch["label"].dtype == np.int32 and batch["label"].shape == (3, 10)
  np.testing.assert_array_equal(batch["label"], ave["segments"][ave["orders"]["test"]])
  np.testing.assert_allclose(batch["avps_target"], [avps_target(y) for y in batch["label"]])
  np.testing.assert_allclose(np.unique(batch["avps_target"]), [0, .2])   # one 5-s event each
  video = data_pipelines.load(data_config("ave", ave["data_dir"], task="video"))
  assert video.num_classes == 28 and "avps_target" not in video.spec
  assert next(video.batches("test", batch_size=3))["label"].shape == (3,)
  # a shard slice with no examples keeps the label's per-segment axis
  assert dataset._empty_batch()["label"].shape == (0, 10)


def test_ave_unknown_task_names_both():
  with pytest.raises(ValueError, match="unknown ave task 'frame'; valid: segment, video"):
    data_pipelines.load(data_config("ave", synthetic=True, task="frame"))


def test_ave_official_annotations_cross_checked(ave, caplog):
  meta = tfds.builder_from_directory(os.path.join(ave["data_dir"], "ave", "1.0.0")).info.metadata
  assert meta["annotation_mismatches"] == 2
  assert meta["annotation_split_counts"] == {"train": 10, "val": 3, "test": 3}
  raw = str(ave["root"] / "raw")
  labels = open_h5(os.path.join(raw, "right_labels.h5"), "avadataset")
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    check_annotations(raw, labels, {"train": [0] * 9, "val": [0] * 3, "test": [0] * 3})
  assert "2 of 16 videos' segment labels" in caplog.text and "h5 labels are used" in caplog.text
  assert "trainSet.txt lists 10 videos, train_order.h5 holds 9" in caplog.text
  rows = read_annotations(os.path.join(raw, "Annotations.txt"))
  assert len(rows) == 16 and rows[0][1] == "vid0000"
  np.testing.assert_array_equal(annotation_segments(3, 2, 5), [28, 28, 3, 3, 3] + [28] * 5)


def test_ave_annotation_count_mismatch_and_bad_line(tmp_path, caplog):
  with open(tmp_path / "Annotations.txt", "w") as f:
    f.write("Category&VideoID&Quality&StartTime&EndTime\nBark&abc&good&0&10\n")
  labels = np.zeros((3, 10, 29))
  with caplog.at_level(logging.WARNING, logger="data_pipelines"):
    meta = check_annotations(str(tmp_path), labels, {})
  assert "lists 1 videos, the h5 files hold 3" in caplog.text
  assert "annotation_mismatches" not in meta
  with open(tmp_path / "Annotations.txt", "a") as f:
    f.write("Laughter&abd&good&0&10\n")
  with pytest.raises(ValueError, match=r"Annotations.txt:3: expected Category&VideoID"):
    read_annotations(str(tmp_path / "Annotations.txt"))


def test_ave_synthetic_segment_batches():
  dataset = data_pipelines.load(data_config("ave", synthetic=True, synthetic_examples=5))
  batch = next(dataset.batches("train", batch_size=4))
  assert batch["label"].shape == (4, 10) and batch["label"].dtype == np.int32
  assert 0 <= batch["label"].min() and batch["label"].max() <= 28
  np.testing.assert_allclose(batch["avps_target"], [avps_target(y) for y in batch["label"]])
  audio_only = data_pipelines.load(data_config("ave", synthetic=True, modalities="audio"))
  assert set(audio_only.spec) == {"audio", "avps_target"}


# ------------------------------------------------------------------------- CMU-MOSEI (TBJE)

@pytest.fixture(scope="module")
def mosei(tmp_path_factory):
  root = tmp_path_factory.mktemp("mosei_tbje")
  mels = layouts.write_mosei_tbje(str(root / "raw"))
  prepare.prepare("mosei_tbje", str(root / "raw"), str(root / "tfds"), verbose=False)
  return {"root": root, "data_dir": str(root / "tfds"), "mels": mels,
          "builder_dir": os.path.join(root / "tfds", "mosei_tbje", "1.0.0")}


EXPECTED_VOCAB = (["<pad>", "<unk>", "hello", "world", "its", "well known", "again", "and or"]
                  + [f"w{i}" for i in range(65)])


def test_clean_rule():
  assert [text.clean(w) for w in ("Hello,", "It's", "well-known", "and/or", "(a)*#:;")] == [
      "hello", "its", "well known", "and or", "a"]
  assert text.tokenize(["...", "#", "Wow!", "-"]) == ["wow", " "]   # only "" is dropped


def test_mosei_tbje_tokens_lengths_and_vocab(mosei):
  assert text.read_vocab(os.path.join(mosei["builder_dir"], "vocab.txt")) == EXPECTED_VOCAB
  train, test = records(mosei["builder_dir"], "train"), records(mosei["builder_dir"], "test")
  assert sorted(train) == ["vidA[0]", "vidA[1]", "vidB[0]"]     # "orphan[0]" lacks mels
  np.testing.assert_array_equal(train["vidA[0]"]["text"][:5], [2, 3, 4, 5, 0])
  np.testing.assert_array_equal(train["vidA[1]"]["text"][:4], [2, 6, 7, 0])  # "..." dropped
  assert train["vidA[1]"]["text_lengths"] == 3
  np.testing.assert_array_equal(train["vidB[0]"]["text"], np.arange(8, 68))  # 65 words -> 60
  assert train["vidB[0]"]["text_lengths"] == 60
  np.testing.assert_array_equal(test["t1"]["text"][:3], [2, 1, 0])            # "zebra" -> UNK
  np.testing.assert_array_equal(test["t2"]["text"][:2], [4, 0])               # "#" dropped
  assert (test["t1"]["text_lengths"], test["t2"]["text_lengths"]) == (2, 1)
  assert all(r["text"].dtype == np.int32 and r["text"].shape == (60,) for r in test.values())


def test_mosei_tbje_audio_cut_and_padded(mosei):
  train, test = records(mosei["builder_dir"], "train"), records(mosei["builder_dir"], "test")
  mels = mosei["mels"]
  np.testing.assert_array_equal(train["vidA[1]"]["audio"], mels["train"]["vidA[1]"][:60])
  assert train["vidA[1]"]["audio_lengths"] == 60 and test["t1"]["audio_lengths"] == 60
  np.testing.assert_array_equal(test["t2"]["audio"][:1], mels["test"]["t2"])
  assert test["t2"]["audio_lengths"] == 1 and not test["t2"]["audio"][1:].any()
  assert train["vidA[0]"]["audio"].shape == (60, 80) and train["vidA[0]"]["audio_lengths"] == 5


def test_mosei_tbje_binary_and_seven_class_labels(mosei):
  def labels(task, split):
    dataset = data_pipelines.load(data_config("mosei_tbje", mosei["data_dir"], task=task))
    batch = next(dataset.batches(split, batch_size=8))
    assert "sentiment" not in batch and "id" not in batch
    return batch["label"].tolist()
  # train (sorted keys): scores 1.5, 0.0, -2.5; val: -0.5; test: 2.0, -1.0
  assert labels("binary", "train") == [1, 1, 0] and labels("binary", "test") == [1, 0]
  assert labels("7class", "train") == [5, 3, 0] and labels("7class", "dep") == [2]
  assert labels("7class", "test") == [5, 2]
  with pytest.raises(ValueError, match="unknown mosei_tbje task 'emotion'; valid: binary"):
    data_pipelines.load(data_config("mosei_tbje", mosei["data_dir"], task="emotion"))


def test_vocab_file_round_trip(tmp_path):
  vocab = ["<pad>", "<unk>", "a b", " ", "é"]
  text.write_vocab(str(tmp_path / "v.txt"), vocab)
  assert text.read_vocab(str(tmp_path / "v.txt")) == vocab
  with pytest.raises(ValueError, match="line breaks"):
    text.write_vocab(str(tmp_path / "w.txt"), ["<pad>", "<unk>", "a\nb"])
  ids, length = text.token_ids(["a b", "zz"], {w: i for i, w in enumerate(vocab)}, 4)
  assert ids.tolist() == [2, 1, 0, 0] and length == 2


def test_glove_matrix_and_loaded_embeddings(mosei, tmp_path):
  glove = tmp_path / "glove.txt"
  glove.write_text("hello 1 2 3\nwell 4 5 6\nworld 0.5 0.5 0.5\n")
  vocab = ["<pad>", "<unk>", "hello", "zebra", "well known", "world"]
  matrix = text.glove_matrix(str(glove), vocab)
  assert matrix.dtype == np.float32 and matrix.shape == (6, 3)
  np.testing.assert_allclose(matrix, [[0, 0, 0], [0, 0, 0], [1, 2, 3], [0, 0, 0],
                                      [2, 2.5, 3], [.5, .5, .5]])
  dataset = data_pipelines.load(data_config("mosei_tbje", mosei["data_dir"],
                                            glove_path=str(glove)))
  assert dataset.vocab_sizes == {"text": len(EXPECTED_VOCAB)}
  assert dataset.embeddings["text"].shape == (len(EXPECTED_VOCAB), 3)
  np.testing.assert_allclose(dataset.embeddings["text"][2:4], [[1, 2, 3], [.5, .5, .5]])
  assert data_pipelines.load(data_config("mosei_tbje", mosei["data_dir"])).embeddings == {}
  (tmp_path / "bad.txt").write_text("hello 1 2 3\nworld 1 2\n")
  with pytest.raises(ValueError, match=r"bad.txt:2: 2 values; the first row has 3"):
    text.glove_matrix(str(tmp_path / "bad.txt"), vocab)
  (tmp_path / "long.txt").write_text("hello 1 2 3\nworld 1 2 3 4\n")
  with pytest.raises(ValueError, match=r"long.txt:2: 4 values; the first row has 3"):
    text.glove_matrix(str(tmp_path / "long.txt"), vocab)


def test_mosei_tbje_synthetic_batches():
  dataset = data_pipelines.load(data_config("mosei_tbje", synthetic=True, vocab_size=50,
                                            synthetic_examples=6))
  assert dataset.vocab_sizes == {"text": 50} and dataset.embeddings == {}
  assert dataset.modalities == ("text", "audio") and dataset.num_classes == 2
  batch = next(dataset.batches("train", batch_size=6))
  assert batch["text"].dtype == np.int32 and batch["audio"].shape == (6, 60, 80)
  for ids, n, audio, m in zip(batch["text"], batch["text_lengths"], batch["audio"],
                              batch["audio_lengths"]):
    assert 1 <= n <= 60 and 2 <= ids[:n].min() and ids[:n].max() < 50 and not ids[n:].any()
    assert audio[:m].all() and not audio[m:].any()
  text_only = data_pipelines.load(data_config("mosei_tbje", synthetic=True, modalities="text"))
  assert set(text_only.spec) == {"text", "text_lengths"}
  assert next(text_only.batches("test", batch_size=2))["text"].shape == (2, 60)


RELEASED_TOKENIZER = """
import en_vectors_web_lg   # never imported by the reader
def clean(w):
    return w
TRAIN_SET = ['vidB[0]', 'vidA[0]', 'ghost[0]']
VALID_SET = ['v1']
TEST_SET  = ['t2']
PRIVATE_SET = ['p1']
"""


def test_released_key_lists_read_and_applied(tmp_path, capsys):
  from data_pipelines.builders.mosei_tbje import keys  # noqa: PLC0415 - the module under test
  lists = keys.released_key_lists(RELEASED_TOKENIZER)
  assert lists == {"train": ["vidB[0]", "vidA[0]", "ghost[0]"], "val": ["v1"], "test": ["t2"]}
  with pytest.raises(ValueError, match="TEST_SET .the test keys. is not a list literal"):
    keys.released_key_lists("TRAIN_SET = []\nVALID_SET = []\n")
  layouts.write_mosei_tbje(str(tmp_path / "raw"))
  with open(tmp_path / "raw" / keys.KEY_LISTS_FILE, "w") as f:
    f.write(__import__("json").dumps(lists))
  prepare.prepare("mosei_tbje", str(tmp_path / "raw"), str(tmp_path / "tfds"), verbose=False)
  assert "mosei_tbje/train: 2 of the 3 listed keys" in capsys.readouterr().out
  dataset = data_pipelines.load(data_config("mosei_tbje", str(tmp_path / "tfds")))
  assert [dataset.num_examples(s) for s in ("train", "val", "test")] == [2, 1, 1]
