"""The embedded default dataset: two modalities that compete the way CREMA-D's do.

The trainer's default (``configs/default.py`` reads ``DEFAULTS``). Generated in numpy from a
seed, no download. It models the situation in which AGM helps, one modality learned fast and
one learned slowly:

* ``audio`` is the *fast* modality: large input scale, so it is learned first; it points at
  the true class only with probability ``audio_reliability`` and otherwise at a random one,
  and every training example also carries its own random code, so the network can keep
  lowering its training loss by memorising the examples audio gets wrong (audio overfits,
  as CREMA-D's audio branch does).
* ``visual`` is the *slow* modality: more reliable (``visual_reliability``), but with a small
  input scale, so its gradients are small and joint training under-fits it — the single
  video frame of CREMA-D.

Test labels are the true classes. A balanced learner should lean on visual; joint training
leans on audio.
"""

from __future__ import annotations

import numpy as np

from data_pipelines.sources.base import ArrayDataset

DEFAULTS = dict(
    num_classes=6,
    num_train=3000,
    num_dep=600,
    num_test=1200,
    dim_audio=32,
    dim_visual=32,
    audio_scale=1.0,
    visual_scale=0.02,
    audio_reliability=0.6,
    visual_reliability=0.85,
    audio_noise=1.0,
    visual_noise=1.5,
    memo_dim=32,
)


def _modality(rng, means, classes, *, scale, noise, code):
  x = means[classes] + noise * rng.standard_normal((len(classes), means.shape[1]))
  if code is not None:
    x = np.concatenate([x, code], axis=1)
  return (scale * x).astype(np.float32)


def _corrupt(rng, labels, reliability, num_classes):
  keep = rng.random(len(labels)) < reliability
  return np.where(keep, labels, rng.integers(0, num_classes, len(labels)))


def make_synthetic(seed: int = 0, **overrides) -> ArrayDataset:
  """Builds the synthetic dataset; ``overrides`` change any of ``DEFAULTS``."""
  unknown = set(overrides) - set(DEFAULTS)
  if unknown:
    raise ValueError(f"unknown synthetic option(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
  p = {**DEFAULTS, **overrides}
  k = int(p["num_classes"])
  rng = np.random.default_rng([int(seed), 0xDA7A])
  mean_a = rng.standard_normal((k, p["dim_audio"])) * 1.0
  mean_v = rng.standard_normal((k, p["dim_visual"])) * 1.0
  arrays = {}
  for split, n in (("train", p["num_train"]), ("dep", p["num_dep"]), ("test", p["num_test"])):
    y = rng.integers(0, k, n)
    ca = _corrupt(rng, y, p["audio_reliability"], k)
    cv = _corrupt(rng, y, p["visual_reliability"], k)
    memo = rng.standard_normal((n, p["memo_dim"])) * 2.0 if p["memo_dim"] else None
    arrays[split] = {
        "audio": _modality(rng, mean_a, ca, scale=p["audio_scale"], noise=p["audio_noise"],
                           code=memo),
        "visual": _modality(rng, mean_v, cv, scale=p["visual_scale"], noise=p["visual_noise"],
                            code=None),
        "label": y.astype(np.int32),
    }
  return ArrayDataset(name="synthetic", modalities=("audio", "visual"), num_classes=k,
                      arrays=arrays)
