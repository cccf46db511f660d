"""Competition strength during training (AGM §3.2): mono-modal concepts and the per-epoch probe.

For each modality m a *concept* ``C^m`` is trained with the run's own settings on m alone
(``method=unimodal``: for late fusion m's encoder plus a linear head, otherwise the whole
architecture with the other modalities zeroed). Its logits on the dep and test splits are
cached under ``competition.cache_dir`` (default ``$AGM_JAX_CACHE`` or
``~/.cache/agm_jax/concepts``), keyed by everything that determines them (data, model,
optimiser, epochs, batch size, seed, modality), and reused by every later run.

Each epoch the multimodal model's feature ``z`` on dep fits a ridge (``competition.l2``) to
each concept's dep logits, and ``d^m`` on test is logged as ``competition/<m>``
(eq. 13, or the released code's whitened form with ``competition.whitened``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time

import numpy as np

from agm_jax import probe
from agm_jax.train import parallel

CACHE_VERSION = 1


def cache_root(config) -> str:
  root = config.competition.cache_dir or os.environ.get("AGM_JAX_CACHE", "")
  return root or os.path.join(os.path.expanduser("~"), ".cache", "agm_jax", "concepts")


def concept_config(config, modality: str):
  """The run's config turned into modality m's concept run."""
  c = copy.deepcopy(config)
  with c.unlocked():
    c.method = "unimodal"
    c.unimodal.modality = modality
    c.competition.enabled = False
  return c


def concept_key(config, modality: str) -> str:
  c = concept_config(config, modality)
  fields = {k: json.loads(c[k].to_json_best_effort()) if hasattr(c[k], "to_json_best_effort")
            else c[k] for k in ("data", "model", "optimizer", "unimodal", "num_epochs",
                                "batch_size", "seed")}
  fields["version"] = CACHE_VERSION
  digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
  return f"{config.data.name}-{config.model.fusion}-{modality}-s{config.seed}-{digest}"


def concept_outputs(config, modality: str, dataset, *, fit) -> dict:
  """Trains (or loads from the cache) modality m's concept with ``fit(config, workdir,
  dataset=...) -> (run, state, summary)`` (the trainer's ``loop.fit``, passed in so this
  module does not import the loop); returns its dep/test logits and test accuracy."""
  directory = os.path.join(cache_root(config), concept_key(config, modality))
  outputs = os.path.join(directory, "concept.npz")
  # Process 0's cache decides; training is collective, process 0 writes, then all read.
  if not parallel.primary_flag(os.path.exists(outputs)):
    if parallel.is_primary():
      print(f"Training the mono-modal concept of {modality!r} (cached in {directory})",
            flush=True)
    run, state, _ = fit(concept_config(config, modality), directory, dataset=dataset)
    dep, test = run.evaluate(state, "dep"), run.evaluate(state, "test")
    if parallel.is_primary():
      tmp = outputs + ".tmp.npz"
      np.savez(tmp, dep=dep[2], test=test[2], acc=test[0]["acc"])
      os.replace(tmp, outputs)
    parallel.barrier(f"agm_jax:concept:{modality}")
  if not os.path.exists(outputs):
    raise FileNotFoundError(f"process 0 cached the concept in {outputs}, which this process "
                            "cannot see: competition.cache_dir must be on a filesystem every "
                            "process shares")
  with np.load(outputs) as f:
    return {"dep": f["dep"], "test": f["test"], "acc": float(f["acc"]), "cached": directory}


class CompetitionProbe:
  """The per-epoch hook: ``competition/<m>`` on the test line, concept accuracies in the
  summary, probe time in ``probe_s``."""

  def __init__(self, config, run, *, fit):
    self.config = config
    self.concepts = {m: concept_outputs(config, m, run.dataset, fit=fit)
                     for m in run.modalities}
    self.summary = {f"concept_acc/{m}": c["acc"] for m, c in self.concepts.items()}
    self.seconds = 0.0

  def __call__(self, run, state, epoch, evals):
    t0 = time.perf_counter()
    _, z_dep, _ = run.evaluate(state, "dep")
    z_test = evals["test"][1]
    out = {}
    for m, c in self.concepts.items():
      d = probe.competition_strength(z_dep, c["dep"], z_test, c["test"],
                                     l2=self.config.competition.l2,
                                     whitened=bool(self.config.competition.whitened))
      out[f"competition/{m}"] = float(d)
    seconds = time.perf_counter() - t0
    self.seconds += seconds
    self.summary["probe_s"] = round(self.seconds, 3)
    out["probe_s"] = seconds
    return out
