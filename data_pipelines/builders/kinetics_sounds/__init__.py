"""Kinetics-Sounds (31 classes; audio spectrogram + video frames): the load-side definition.

Inputs: ``audio`` the stored filterbank (1024, 128) float32; ``visual`` (num_frames, 224, 224,
3) float32 frames, ImageNet-normalised, augmented in training. Splits: train / dep / test
(``val`` is ``dep``). The builder is ``kinetics_sounds_dataset_builder.Builder``.

The class list and the train / test split are the user's ``train.txt`` / ``test.txt`` (the
paper's 30 classes and split were never published; OGM-GE's 31-class lists are the documented
default). ``data_config`` fields: ``num_frames`` (3), ``frame_sampling`` ("segments": the
Kinetics-Sounds loaders' frames, ``images.select_frames``; "fixed": the same seed-999 frames
every time).
"""

from __future__ import annotations

from data_pipelines.builders import preprocess
from data_pipelines.builders.registry import DatasetDef

NUM_CLASSES = 31
FBANK_SHAPE = (1024, 128)

LAYOUT = """\
  RAW/                             Kinetics-Sounds as OGM-GE and BalanceBenchmark prepare it
                                   (clips from github.com/cvdfoundation/kinetics-dataset)
    train.txt, test.txt            one clip per line, its label index (0..30) as the last field,
                                   fields separated by commas or spaces (OGM-GE's
                                   data/KineticSound/my_train.txt: "clip,10,label")
    train_spec/<clip>.npy          log-mel filterbank (1024, 128), as OGM-GE's
    test_spec/<clip>.npy           data/KineticSound/process_audio.py writes it
    train-frames-1fps/<clip>/*.jpg frames at 1 fps (file names sort in time order)
    test-frames-1fps/<clip>/*.jpg"""


OPTIONS = dict(num_frames=3, frame_sampling="segments")
make_preprocess, synthetic_spec = preprocess.audio_frames(FBANK_SHAPE, **OPTIONS)


DEFINITION = DatasetDef(
    name="kinetics_sounds", modalities=("audio", "visual"), split_aliases={"val": "dep"},
    layout=LAYOUT,
    required=("train.txt", "test.txt", "train_spec", "test_spec", "train-frames-1fps",
              "test-frames-1fps"),
    make_preprocess=make_preprocess, synthetic_spec=synthetic_spec,
    num_classes=lambda data_config: NUM_CLASSES, options=OPTIONS)
