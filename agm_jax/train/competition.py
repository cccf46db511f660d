"""Competition strength during training (AGM §3.2): mono-modal concepts and the per-epoch probe.

For each modality m a *concept* ``C^m`` is trained with the run's own settings on m alone
(``method=unimodal``: for late fusion m's encoder plus a linear head, otherwise the whole
architecture with the other modalities' inputs padded). Its logits on the dep and test splits
are cached under ``competition.cache_dir`` (default ``$AGM_JAX_CACHE`` or
``~/.cache/agm_jax/concepts``), keyed by everything that determines them (data, model,
optimiser, epochs, batch size, seed, modality, pad, checkpoint), and reused by every later run.
The ``competition`` keys that choose the concept:

- ``concept_seed``: -1 (default) trains it with the run's ``seed``; a seed >= 0 trains it with
  that one instead, so runs of several seeds can probe against the same concepts (supplement
  Table 5). It is the concept config's ``seed``, hence in the key.
- ``concept_pad``: "zeros" (default, the released code) or "normal": each element of every
  absent modality drawn i.i.d. from N(0, 1), fresh per training batch and from a fixed key at
  evaluation (supplement Table 6; ``unimodal.pad``). Late fusion has no absent modality (the
  concept is the encoder alone), so "normal" is an error there.
- ``concept_checkpoint``: "final" (default): the logits of the concept's last epoch; "best":
  those of the epoch with the best validation accuracy (the first of equals, as the loop's
  "best"), recorded by an epoch hook of the concept run (``BestEpoch``). The cached
  ``concept.npz`` records ``checkpoint`` and ``epoch``; the summary has
  ``concept_checkpoint`` and ``concept_epoch/<m>``.

Defaults leave the cache keys of runs made before these keys existed unchanged.

Each epoch the multimodal model's feature ``z`` on dep fits a ridge (``competition.l2``) to
each concept's dep logits, and ``d^m`` on test is logged as ``competition/<m>``
(eq. 13, or the released code's whitened form with ``competition.whitened``; see
``agm_jax/probe.py``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time

import jax
import numpy as np

import data_pipelines
from agm_jax import probe, shapley
from agm_jax.models import fusion as fusion_lib
from agm_jax.train import atomic, lock, parallel
from agm_jax.train.checkpoint import Checkpointer
from data_pipelines.sources.loader import LOADER_DEFAULTS

CACHE_VERSION = 1
# Fields of config.data a concept's key leaves out. The loader's settings never change a batch
# (num_workers, in every key made before the others were settings, stays in). The others
# joined every config's data section (with their readers' defaults) after keys were first
# made: at those defaults they mean what a section without them meant, so they are left out
# there and the keys made before them still hold.
_SPEED_ONLY = tuple(name for name in LOADER_DEFAULTS if name != "num_workers")
_DECLARED_LATER = ("split_roles", "synthetic_examples", "frame_sampling")
CHECKPOINTS = ("final", "best")


def cache_root(config) -> str:
  root = config.competition.cache_dir or os.environ.get("AGM_JAX_CACHE", "")
  return root or os.path.join(os.path.expanduser("~"), ".cache", "agm_jax", "concepts")


def check(config) -> None:
  """The ``competition`` keys that choose the concepts; ValueError naming the key."""
  comp = config.competition
  seed = comp.concept_seed
  if isinstance(seed, bool) or not isinstance(seed, int) or seed < -1:
    raise ValueError(f"competition.concept_seed must be -1 (the run's seed) or a seed >= 0, "
                     f"got {seed!r}")
  if comp.concept_pad not in shapley.PADS:
    raise ValueError(f"competition.concept_pad {comp.concept_pad!r} is not one of "
                     f"{list(shapley.PADS)}")
  if comp.concept_pad != "zeros" and fusion_lib.is_late(config.model.fusion):
    raise ValueError(f"competition.concept_pad {comp.concept_pad!r} needs an absent modality "
                     f"to pad; with late fusion ({config.model.fusion!r}) the concept is the "
                     "modality's encoder alone (use 'zeros')")
  if comp.concept_checkpoint not in CHECKPOINTS:
    raise ValueError(f"competition.concept_checkpoint {comp.concept_checkpoint!r} is not one "
                     f"of {list(CHECKPOINTS)}")


def concept_config(config, modality: str):
  """The run's config turned into modality m's concept run."""
  check(config)
  comp = config.competition
  c = copy.deepcopy(config)
  with c.unlocked():
    c.method = "unimodal"
    c.unimodal.modality = modality
    c.unimodal.pad = comp.concept_pad
    if comp.concept_seed >= 0:
      c.seed = int(comp.concept_seed)
    c.competition.enabled = False
    # What cannot change the concept is normalised, so runs that differ only there share it:
    # a late-fusion concept is modality m's encoder and one linear layer whatever the
    # multimodal head (sum or concat: the released code trains one mono-modal model per
    # modality for all of its late-fusion runs). The conditional clip never applies to a
    # concept; concept_key leaves it out.
    if fusion_lib.is_late(c.model.fusion):
      c.model.fusion = "concat"
  return c


def concept_key(config, modality: str) -> str:
  c = concept_config(config, modality)
  fields = {k: json.loads(c[k].to_json_best_effort()) if hasattr(c[k], "to_json_best_effort")
            else c[k] for k in ("data", "model", "optimizer", "unimodal", "num_epochs",
                                "batch_size", "seed")}
  del fields["optimizer"]["conditional_clip"]   # never applies to a concept (method unimodal)
  data, defaults = fields["data"], data_pipelines.config_fields(config.data.name)
  for name in _SPEED_ONLY:
    data.pop(name, None)
  for name in _DECLARED_LATER:
    if name in data and name in defaults and data[name] == defaults[name]:
      del data[name]
  if fields["unimodal"].get("pad") == "zeros":   # the defaults keep the keys made before them
    del fields["unimodal"]["pad"]
  checkpoint = config.competition.concept_checkpoint
  if checkpoint != "final":
    fields["checkpoint"] = checkpoint
  fields["version"] = CACHE_VERSION
  digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]
  suffix = "" if checkpoint == "final" else f"-{checkpoint}"
  return f"{config.data.name}-{c.model.fusion}-{modality}-s{c.seed}-{digest}{suffix}"


def _save(path: str, **arrays) -> None:
  """``np.savez`` under a temporary name of this writer's own, then renamed: a reader (another
  run sharing the cache) sees the old file or the new one, never half of one."""
  atomic.savez(path, **arrays)


class BestEpoch:
  """Epoch hook of a concept run: its dep/test logits at the epoch of best validation accuracy
  (strictly better, so the first of equals: the loop's "best"). The record is also kept in
  ``best.npz`` beside the run's checkpoints, so a resumed concept run carries on from it; a
  record from this epoch or a later one is stale (a restarted run) and is replaced."""

  def __init__(self, directory: str):
    self.path = os.path.join(directory, "best.npz")
    self.record = None
    if os.path.exists(self.path):
      with np.load(self.path) as f:
        self.record = {k: f[k] for k in f.files}

  def __call__(self, run, state, epoch, evals):
    val_acc = float(evals["val"][0]["acc"])
    better = (self.record is None or int(self.record["epoch"]) >= epoch
              or val_acc > float(self.record["val_acc"]))
    if parallel.primary_flag(better):   # every process evaluates dep together
      metrics, _, test = evals["test"]
      self.record = {"dep": run.evaluate(state, "dep")[2], "test": test,
                     "acc": metrics["acc"], "epoch": epoch, "val_acc": val_acc}
      if parallel.is_primary():
        _save(self.path, **self.record)
    return {}


def concept_outputs(config, modality: str, dataset, *, fit) -> dict:
  """Trains (or loads from the cache) modality m's concept with ``fit(config, workdir,
  dataset=..., epoch_hooks=...) -> (run, state, summary)`` (the trainer's ``loop.fit``, passed
  in so this module does not import the loop); returns its dep/test logits, test accuracy,
  and which checkpoint (``competition.concept_checkpoint``) and epoch they come from."""
  cc = concept_config(config, modality)
  directory = os.path.join(cache_root(config), concept_key(config, modality))
  outputs = os.path.join(directory, "concept.npz")
  # Process 0's cache decides; training is collective, process 0 writes, then all read. A run
  # that finds another one training the same concept (the concept directory's lock) waits for
  # it and reads what it wrote.
  if not parallel.primary_flag(os.path.exists(outputs)):
    with lock.hold(directory, wait=True):
      if not parallel.primary_flag(os.path.exists(outputs)):
        _train_concept(config, modality, dataset, fit=fit, directory=directory)
  if not os.path.exists(outputs):
    raise FileNotFoundError(f"process 0 cached the concept in {outputs}, which this process "
                            "cannot see: competition.cache_dir must be on a filesystem every "
                            "process shares")
  with np.load(outputs) as f:   # files cached before "checkpoint" existed are "final"
    return {"dep": f["dep"], "test": f["test"], "acc": float(f["acc"]), "cached": directory,
            "checkpoint": str(f["checkpoint"]) if "checkpoint" in f.files else "final",
            "epoch": int(f["epoch"]) if "epoch" in f.files else cc.num_epochs - 1}


def concept_params(config, modality: str, dataset, *, fit, make_run) -> dict:
  """Modality m's concept's final parameters (host arrays), trained first if the cache has
  none (as :func:`concept_outputs`): its last checkpoint restored into ``make_run(concept
  config, dataset=dataset)``'s state. Only ``concept_checkpoint="final"`` concepts keep the
  parameters (a "best" concept keeps its logits only)."""
  if config.competition.concept_checkpoint != "final":
    raise ValueError("the concepts' parameters are kept for competition.concept_checkpoint="
                     f"'final' only, not {config.competition.concept_checkpoint!r}")
  found = concept_outputs(config, modality, dataset, fit=fit)
  run = make_run(concept_config(config, modality), dataset=dataset)
  ckpt = Checkpointer(os.path.join(found["cached"], "checkpoints"))
  try:
    state, step = ckpt.restore(run.dp.replicate(run.init_state()))
  finally:
    ckpt.close()
  if step is None:
    raise FileNotFoundError(f"the concept run in {found['cached']} has no checkpoint; delete "
                            "the directory to train it again")
  return jax.tree.map(np.asarray, run.dp.host_state(state).params)


def _train_concept(config, modality: str, dataset, *, fit, directory: str) -> None:
  """Trains modality m's concept in ``directory`` and writes its ``concept.npz``."""
  cc = concept_config(config, modality)
  checkpoint = config.competition.concept_checkpoint
  outputs = os.path.join(directory, "concept.npz")
  if parallel.is_primary():
    print(f"Training the mono-modal concept of {modality!r} (seed {cc.seed}, pad "
          f"{cc.unimodal.pad}, {checkpoint} checkpoint; cached in {directory})", flush=True)
  best = BestEpoch(directory) if checkpoint == "best" else None
  run, state, _ = fit(cc, directory, dataset=dataset, epoch_hooks=(best,) if best else ())
  if best is None:
    dep, test = run.evaluate(state, "dep"), run.evaluate(state, "test")
    record = {"dep": dep[2], "test": test[2], "acc": test[0]["acc"],
              "epoch": cc.num_epochs - 1}
  else:
    record = best.record
    if parallel.primary_flag(record is None):
      raise RuntimeError(f"the concept run in {directory} has no best-epoch record "
                         "(best.npz); delete the directory to train it again")
  if parallel.is_primary():
    _save(outputs, checkpoint=checkpoint, **{k: record[k] for k in
                                             ("dep", "test", "acc", "epoch")})
  parallel.barrier(f"agm_jax:concept:{modality}")


class CompetitionProbe:
  """The per-epoch hook: ``competition/<m>`` on the test line; in the summary the concepts'
  test accuracies (``concept_acc/<m>``), the checkpoint they come from
  (``concept_checkpoint``, ``concept_epoch/<m>``) and the probe time (``probe_s``)."""

  def __init__(self, config, run, *, fit):
    self.config = config
    self.concepts = {m: concept_outputs(config, m, run.dataset, fit=fit)
                     for m in run.modalities}
    self.summary = {f"concept_acc/{m}": c["acc"] for m, c in self.concepts.items()}
    self.summary["concept_checkpoint"] = config.competition.concept_checkpoint
    self.summary.update({f"concept_epoch/{m}": c["epoch"] for m, c in self.concepts.items()})
    if parallel.is_primary():
      for m, c in self.concepts.items():
        print(f"Concept of {m!r}: {c['checkpoint']} checkpoint (epoch {c['epoch']}), test acc "
              f"{c['acc']:.4f}, from {c['cached']}", flush=True)
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
