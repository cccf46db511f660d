"""CREMA-D (6 emotions; audio spectrogram + video frames): the load-side definition.

Inputs: ``audio`` (257, 188) float32 log-magnitude STFT; ``visual`` (num_frames, 224, 224, 3)
float32 frames, ImageNet-normalised, augmented in training. Splits: train / dep / test as the
released AGM code (``val`` is ``dep``). The builder is ``cremad_dataset_builder.Builder``.

``data_config`` fields: ``num_frames`` (1), ``frame_sampling`` ("fixed": the AGM loader's
seed-999 frame; "segments": random frame per segment in training, middle frame in eval).
"""

from __future__ import annotations

from data_pipelines.builders import preprocess
from data_pipelines.builders.registry import DatasetDef

CLASSES = ("NEU", "HAP", "SAD", "FEA", "DIS", "ANG")
SPECTROGRAM_SHAPE = (257, 188)

LAYOUT = """\
  RAW/                          the CREMA-D release (github.com/CheyneyComputerScience/CREMA-D)
    AudioWAV/<clip>.wav         e.g. AudioWAV/1001_DFA_ANG_XX.wav  ("Audio/" is read too)
    Image-01-FPS/<clip>/*.jpg   frames at 1 fps, as OGM-GE's data/CREMAD/video_preprocessing.py
                                writes them (file names sort in time order)
    VideoFlash/<clip>.flv       optional: a clip without a frame folder is decoded from its
                                video at 1 fps (needs: pip install av)
  Clips come from the standard split shipped in data_pipelines/builders/cremad/splits/."""


OPTIONS = dict(num_frames=1, frame_sampling="fixed")
make_preprocess, synthetic_spec = preprocess.audio_frames(SPECTROGRAM_SHAPE, **OPTIONS)


DEFINITION = DatasetDef(
    name="cremad", modalities=("audio", "visual"), split_aliases={"val": "dep"},
    layout=LAYOUT, required=("AudioWAV|Audio", "Image-01-FPS|VideoFlash"),
    make_preprocess=make_preprocess, synthetic_spec=synthetic_spec,
    num_classes=lambda data_config: len(CLASSES), options=OPTIONS,
    version="1.1.0")   # 1.1.0: audio resampled with libsoxr HQ, as librosa.load (1.0.0: scipy)
