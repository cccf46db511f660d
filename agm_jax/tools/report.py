"""Result tables and training curves from training workdirs (AGM paper Tables 1–3, Figure 2).

  python -m agm_jax.tools.report runs/cremad_joint_s* runs/cremad_agm_s* --out report/
  python -m agm_jax.tools.report WORKDIR [WORKDIR ...] [--out DIR] [--reference auto|none|CSV]

Each workdir is one training run (``config.json``, ``metrics.jsonl``, ``summary.json``, as
written by ``agm_jax.train.loop``). Runs are grouped over seeds by (dataset, fusion, method,
d form); for each group the final test metrics give one table row of
``mean ± std (n)``: accuracies in percent, the competition strength d^m as a fraction, the
standard deviation over seeds with ``ddof=1`` (a single seed prints ``mean (1)``), ``n`` the
number of seeds that logged that value. ``concept_acc/<m>`` in the summaries gives a
"concept" row per fusion. With ``--reference auto`` the numbers the papers report
(``agm_jax/reference/paper_results.csv``) are printed in "reported" rows under the matching
measured row; they are only shown, never used in place of a measurement. Missing values
print as "–".

Plots (PNG, matplotlib Agg) per dataset: test accuracy, mono-modal accuracies and competition
strengths over epochs (one line per method, mean over seeds with a min–max band), joint and
AGM side by side (the paper's Figure 2), AGM's kappa per modality over steps, and a t-SNE of
the test split's penultimate features (``features_test.npz``) coloured by class, one panel per
method. Runs that logged them add F1 and mAP columns (the CSV's ``f1`` column in the reported
rows) and a missing-modality table (``subset_acc/<subset>``, ``shapley_acc/<m>``,
``imbalance_gap``).

Reading is tolerant: a killed run's half-written last line, a missing summary.json, a missing
seed or missing competition values only drop what is missing (and are listed under "Notes").
A path that is not a workdir is a one-line error (exit code 2). This module does not import
JAX.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agm_jax import metrics as metrics_lib
from agm_jax import modalities as modality_lists
from agm_jax.train.writer import seed_dirs

REFERENCE_CSV = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                             "reference",
                             "paper_results.csv")

# config data.name -> the paper CSV's dataset name.
PAPER_DATASET = {"cremad": "crema-d", "avmnist": "av-mnist", "urfunny": "ur-funny",
                 "kinetics_sounds": "kinetics-sounds", "cmu_mosei": "cmu-mosei",
                 "mosei_tbje": "cmu-mosei", "ave": "ave",
                 "ucf101": "ucf-101", "vggsound": "vggsound"}
# config model.fusion -> the AGM tables' fusion class (the CSV also has exact fusion names).
PAPER_FUSION = {"sum": "late", "concat": "late", "film": "late", "mmtm": "late",
                "maxout": "early", "input_early": "early"}
# modality name -> suffix of the CSV's acc_* / d_* columns.
PAPER_COLUMN = {"audio": "a", "visual": "v", "text": "t"}
# Row order within a fusion block: the paper's, then anything else alphabetically.
METHOD_ORDER = ("unimodal", "joint", "gblending", "greedy", "greedy_util", "mses", "mslr",
                "ogm", "ogm_ge", "ogm_ge_ra", "opm", "opm_ogm", "agm_1", "agm_ge", "agm")
D_FORMS = {False: "eq. 13 (ridge residual ratio on test, AGM §3.2)",
           True: "whitened (trace(B⁺RᵀR)/K, the released code's form)"}
DASH = "–"


class ReportError(Exception):
  """A problem with the user's input, reported as one line (exit code 2)."""


@dataclasses.dataclass(frozen=True)
class Run:
  """One workdir, read: its identity, final test metrics and logged curves."""
  path: str
  dataset: str
  method: str
  fusion: str
  seed: Any
  modalities: tuple[str, ...]
  whitened: bool
  final: dict          # test metrics of the last epoch
  summary: dict        # summary.json ({} if absent)
  tests: dict          # epoch -> test line
  trains: tuple        # train lines, in file order
  notes: tuple         # what was missing or unreadable

  @property
  def key(self) -> tuple:
    """The seed-group this run belongs to."""
    return (self.dataset, self.fusion, self.method, self.whitened)


# ----------------------------------------------------------------------------- reading


def number(value) -> float:
  """A logged value as a float; NaN for anything missing or not a number."""
  if isinstance(value, bool) or value is None:
    return math.nan
  if isinstance(value, (int, float)):
    return float(value)
  if isinstance(value, str):
    try:
      return float(value)
    except ValueError:
      return math.nan
  return math.nan


def read_json(path: str) -> tuple[dict | None, str | None]:
  """A JSON object file: ``(dict, None)``, or ``(None, note)`` when absent or unreadable."""
  if not os.path.exists(path):
    return None, f"no {os.path.basename(path)}"
  try:
    with open(path) as f:
      data = json.load(f)
  except (OSError, ValueError) as e:
    return None, f"{os.path.basename(path)} unreadable ({type(e).__name__})"
  if not isinstance(data, dict):
    return None, f"{os.path.basename(path)} is not a JSON object"
  return data, None


def read_jsonl(path: str) -> tuple[list[dict], list[str]]:
  """The JSON-object lines of ``path``; unparsable lines (a killed run's half-written last
  line) are skipped and noted."""
  if not os.path.exists(path):
    return [], [f"no {os.path.basename(path)}"]
  lines, bad = [], []
  with open(path, errors="replace") as f:
    for i, raw in enumerate(f, 1):
      if not raw.strip():
        continue
      try:
        obj = json.loads(raw)
      except ValueError:
        bad.append(i)
        continue
      if isinstance(obj, dict):
        lines.append(obj)
      else:
        bad.append(i)
  notes = [f"{os.path.basename(path)}: skipped unreadable line(s) {bad}"] if bad else []
  return lines, notes


def lookup(tree: Mapping, dotted: str, default=None):
  """``tree["a"]["b"]`` for ``"a.b"``; ``default`` if any level is missing."""
  node = tree
  for part in dotted.split("."):
    if not isinstance(node, Mapping) or part not in node:
      return default
    node = node[part]
  return node


def parse_modalities(value) -> tuple[str, ...]:
  """A workdir's ``data.modalities`` as a tuple (``modalities.parse``; () if unreadable)."""
  if not isinstance(value, (str, list, tuple)):
    return ()
  try:
    return modality_lists.parse(value)
  except ValueError:
    return ()


def lines_by_epoch(lines: Iterable[dict]) -> dict:
  """Test lines keyed by epoch (a later line for the same epoch wins)."""
  out = {}
  for line in lines:
    if line.get("split") == "test" and isinstance(line.get("epoch"), (int, float)):
      out[int(line["epoch"])] = line
  return out


def final_metrics(summary: Mapping, tests: Mapping) -> tuple[dict, str | None]:
  """The last epoch's test metrics and a note: ``summary["final"]``, unless metrics.jsonl
  has a later test epoch (a stale summary of a resumed run) or there is no summary; then the
  last test line."""
  final = summary.get("final") if isinstance(summary.get("final"), dict) else None
  last = max(tests) if tests else None
  if final is not None:
    epoch = number(final.get("epoch"))
    if last is None or not epoch < last:  # a NaN epoch trusts the summary
      return dict(final), None
    return dict(tests[last]), (f"summary.json ends at epoch {epoch:g} but metrics.jsonl at "
                               f"{last}; using the later")
  if last is not None:
    return dict(tests[last]), f"final metrics from the last test line (epoch {last})"
  return {}, "no test metrics"


def modalities_of(config_mods: Sequence[str], final: Mapping) -> tuple[str, ...]:
  """The config's modalities, else those named in the metric keys."""
  if config_mods:
    return tuple(config_mods)
  seen = []
  for k in final:
    if "/" in k and k.split("/", 1)[0] in ("acc", "competition", "mono_ce"):
      m = k.split("/", 1)[1]
      if m not in seen:
        seen.append(m)
  return tuple(seen)


def expand_workdirs(workdirs: Iterable[str]) -> list[str]:
  """Each multi-seed workdir (``config.num_seeds`` > 1) replaced by its per-seed directories,
  which read like separate runs of one seed each (``agm_jax.train.seeds``)."""
  out = []
  for w in workdirs:
    out += seed_dirs(w) or [w]
  return out


def load_run(path: str) -> Run:
  """Reads one workdir; :class:`ReportError` if ``path`` is not one."""
  if not os.path.isdir(path):
    raise ReportError(f"not a workdir (no such directory): {path}")
  files = [f for f in ("config.json", "metrics.jsonl", "summary.json")
           if os.path.exists(os.path.join(path, f))]
  if "config.json" not in files:
    raise ReportError(f"not a workdir (no config.json): {path}")
  config, note = read_json(os.path.join(path, "config.json"))
  if config is None:
    raise ReportError(f"not a workdir ({note}): {path}")
  lines, notes = read_jsonl(os.path.join(path, "metrics.jsonl"))
  summary, s_note = read_json(os.path.join(path, "summary.json"))
  summary = summary or {}
  if s_note:
    notes.append(s_note)
  tests = lines_by_epoch(lines)
  final, f_note = final_metrics(summary, tests)
  if f_note:
    notes.append(f_note)
  seed = lookup(config, "seed")
  if seed is None:
    notes.append("no seed in config.json")
  return Run(
      path=path,
      dataset=str(lookup(config, "data.name", "unknown")),
      method=str(lookup(config, "method", "unknown")),
      fusion=str(lookup(config, "model.fusion", "unknown")),
      seed=seed,
      modalities=modalities_of(parse_modalities(lookup(config, "data.modalities")), final),
      whitened=bool(lookup(config, "competition.whitened", False)),
      final=final, summary=summary, tests=tests,
      trains=tuple(line for line in lines if line.get("split") == "train"),
      notes=tuple(notes))


# ----------------------------------------------------------------------------- reference


def load_reference(source: str) -> list[dict]:
  """The paper CSV's rows: ``source`` is ``"auto"`` (the shipped CSV), ``"none"`` or a path."""
  if source == "none":
    return []
  path = REFERENCE_CSV if source == "auto" else source
  if not os.path.exists(path):
    raise ReportError(f"reference CSV not found: {path}")
  with open(path, newline="") as f:
    return list(csv.DictReader(f))


def paper_dataset(name: str) -> str:
  """A config ``data.name`` as the CSV names it."""
  return PAPER_DATASET.get(name, name.replace("_", "-"))


def paper_fusions(fusion: str) -> tuple[str, ...]:
  """The CSV fusion names a config fusion matches: itself and its class (late / early)."""
  cls = PAPER_FUSION.get(fusion)
  return (fusion,) if cls is None else (fusion, cls)


def reported_rows(ref: Sequence[Mapping], dataset: str, fusion: str, method: str) -> list:
  """The CSV rows for (dataset, fusion, method): the fusion itself or its class (late /
  early), the exact fusion winning within a source (Kinetics-Sounds FiLM: Table 7's "film"
  row, not its "late" one). For ``method="concept"`` the ``concept_<m>`` rows merged into
  one row per (source, fusion)."""
  ds, fus = paper_dataset(dataset), paper_fusions(fusion)
  rows = [r for r in ref if r.get("dataset") == ds and r.get("fusion") in fus]
  exact = {r.get("source") for r in rows if r.get("fusion") == fusion}
  rows = [r for r in rows if r.get("fusion") == fusion or r.get("source") not in exact]
  if method != "concept":
    return [r for r in rows if r.get("method") == method]
  merged = {}
  for r in rows:
    if str(r.get("method", "")).startswith("concept_"):
      into = merged.setdefault((r["source"], r["fusion"]), dict(r, method="concept"))
      into.update({k: v for k, v in r.items() if v not in ("", None)
                   and k.startswith(("acc_", "d_"))})
  return list(merged.values())


# ----------------------------------------------------------------------------- table


def stats(values: Iterable[float]) -> tuple[float, float, int]:
  """``(mean, std with ddof=1, n)`` of the finite values; NaNs when there are none (std NaN
  for a single value)."""
  v = np.asarray([x for x in values if math.isfinite(x)], dtype=np.float64)
  if v.size == 0:
    return math.nan, math.nan, 0
  return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else math.nan, int(v.size)


def fmt_stat(values: Iterable[float], scale: float = 100.0, digits: int = 2) -> str:
  """``"mean ± std (n)"`` of ``values * scale``; ``"mean (1)"`` for one, "–" for none."""
  mean, std, n = stats(values)
  if n == 0:
    return DASH
  if n == 1:
    return f"{mean * scale:.{digits}f} (1)"
  return f"{mean * scale:.{digits}f} ± {std * scale:.{digits}f} ({n})"


def fmt_reported(value) -> str:
  """A CSV cell as printed in the paper, or "–"."""
  return DASH if value in (None, "") else str(value)


def short_names(modalities: Sequence[str]) -> dict:
  """Column suffixes: first letters (Acc_a, d_v) when they are unique, else full names."""
  firsts = [m[:1] for m in modalities]
  unique = len(set(firsts)) == len(firsts)
  return {m: (m[:1] if unique else m) for m in modalities}


def method_rank(method: str) -> tuple:
  """Sort key: the paper's order, then unknown methods alphabetically."""
  if method in METHOD_ORDER:
    return (METHOD_ORDER.index(method), "")
  return (len(METHOD_ORDER), method)


def union_modalities(runs: Iterable[Run]) -> tuple[str, ...]:
  """The modalities of ``runs`` in order of first appearance."""
  out = []
  for r in runs:
    out += [m for m in r.modalities if m not in out]
  return tuple(out)


def group_runs(runs: Iterable[Run]) -> dict:
  """Runs grouped over seeds by :attr:`Run.key`, in input order."""
  groups = {}
  for r in runs:
    groups.setdefault(r.key, []).append(r)
  return groups


def measured_cells(runs: Sequence[Run], modalities: Sequence[str],
                   extra: Sequence[str] = ()) -> list[str]:
  """Acc, the ``extra`` metrics (``f1``, ``mAP``; percent), Acc_m…, d_m… cells of a seed
  group, from the final test metrics."""
  def col(key, scale, digits):
    return fmt_stat([number(r.final.get(key)) for r in runs], scale, digits)
  return ([col("acc", 100, 2)] + [col(k, 100, 2) for k in extra]
          + [col(f"acc/{m}", 100, 2) for m in modalities]
          + [col(f"competition/{m}", 1, 4) for m in modalities])


# Whole-split metrics shown beside Acc when a run logged them: metric key -> (column, CSV column).
EXTRA_METRICS = {"f1": ("F1", "f1"), "mAP": ("mAP", "map")}


def extra_metrics(runs: Iterable[Run]) -> list[str]:
  """The :data:`EXTRA_METRICS` keys any of ``runs`` logged (older runs have none)."""
  runs = list(runs)
  return [k for k in EXTRA_METRICS if any(math.isfinite(number(r.final.get(k))) for r in runs)]


def concept_values(runs: Iterable[Run], modality: str) -> list[float]:
  """``concept_acc/<m>`` of the runs, one per (seed, value): concepts are cached per seed
  and shared by every method, so the same concept is counted once."""
  seen = {}
  for r in runs:
    v = number(r.summary.get(f"concept_acc/{modality}"))
    if math.isfinite(v):
      seen.setdefault((r.seed, round(v, 12)) if r.seed is not None else (r.path,), v)
  return list(seen.values())


def reported_cells(row: Mapping, modalities: Sequence[str], concept: bool = False,
                   extra: Sequence[str] = ()) -> list:
  """A CSV row's Acc, ``extra`` (F1 from the ``f1`` column…), Acc_m…, d_m… cells (modalities
  outside the CSV's a/v/t: "–")."""
  def col(prefix, m):
    return fmt_reported(row.get(f"{prefix}_{PAPER_COLUMN[m]}")) if m in PAPER_COLUMN else DASH
  return ([DASH if concept else fmt_reported(row.get("acc"))]
          + [DASH if concept else fmt_reported(row.get(EXTRA_METRICS[k][1])) for k in extra]
          + [col("acc", m) for m in modalities] + [col("d", m) for m in modalities])


def seeds_text(runs: Sequence[Run]) -> str:
  """The seeds of a group, sorted ("?" for a run without one)."""
  known = sorted((r.seed for r in runs if r.seed is not None), key=str)
  return ", ".join([str(s) for s in known] + ["?"] * sum(r.seed is None for r in runs))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
  """A GitHub-flavoured Markdown table."""
  lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
  lines += ["| " + " | ".join(row) + " |" for row in rows]
  return "\n".join(lines)


# summary.json's "paper" statistic (config.paper_statistic) -> its column and what it is.
PAPER_STATISTICS = {
    "paper_max_test_acc": ("Max test Acc", "the highest test accuracy over all epochs"),
    "paper_max_val_acc": ("Max val Acc", "the highest validation accuracy over all epochs")}


def paper_statistic(runs: Iterable[Run]) -> str | None:
  """The name of the paper's statistic the runs logged (``summary["paper"]["name"]``), if
  they logged exactly one kind."""
  names = {r.summary.get("paper", {}).get("name") for r in runs} - {None}
  return names.pop() if len(names) == 1 and next(iter(names)) in PAPER_STATISTICS else None


def paper_cell(runs: Sequence[Run]) -> str:
  return fmt_stat([number(r.summary.get("paper", {}).get("value")) for r in runs], 100, 2)


def dataset_section(dataset: str, runs: Sequence[Run], ref: Sequence[Mapping]) -> str:
  """The heading, d-form note and table of one dataset. When the runs logged the paper's
  statistic (``config.paper_statistic``) a column shows it, and the reported rows put the
  paper's accuracy in that column, the one it compares with."""
  mods = union_modalities(runs)
  short = short_names(mods)
  extra = extra_metrics(runs)
  stat = paper_statistic(runs)
  header = (["Method", "Fusion", "Seeds", "Acc"] + [EXTRA_METRICS[k][0] for k in extra]
            + [f"Acc_{short[m]}" for m in mods] + [f"d_{short[m]}" for m in mods]
            + ([PAPER_STATISTICS[stat][0]] if stat else []))
  tail = (lambda cell: [cell]) if stat else (lambda cell: [])  # noqa: E731
  forms = sorted({r.whitened for r in runs})
  groups = group_runs(runs)
  rows = []
  for fusion in sorted({r.fusion for r in runs}):
    in_fusion = [r for r in runs if r.fusion == fusion]
    concepts = [concept_values(in_fusion, m) for m in mods]
    if any(concepts):
      seeds = ", ".join(sorted({"?" if r.seed is None else str(r.seed) for r in in_fusion
                                if any(f"concept_acc/{m}" in r.summary for m in mods)}))
      rows.append(["concept", fusion, seeds, DASH] + [DASH] * len(extra)
                  + [fmt_stat(v) for v in concepts] + [DASH] * len(mods) + tail(DASH))
      rows += [[f"↳ reported: {r['source']}", r["fusion"], DASH]
               + reported_cells(r, mods, concept=True, extra=extra) + tail(DASH)
               for r in reported_rows(ref, dataset, fusion, "concept")]
    keys = sorted((k for k in groups if k[1] == fusion), key=lambda k: (method_rank(k[2]), k[3]))
    for key in keys:
      label = key[2] + (" [whitened d]" if key[3] and len(forms) > 1 else "")
      rows.append([label, fusion, seeds_text(groups[key])]
                  + measured_cells(groups[key], mods, extra) + tail(paper_cell(groups[key])))
      for r in reported_rows(ref, dataset, fusion, key[2]):
        cells = reported_cells(r, mods, extra=extra)
        if stat:   # the paper's accuracy is its statistic: shown in that column only
          cells, moved = [DASH] + cells[1:], cells[0]
        rows.append([f"↳ reported: {r['source']}", r["fusion"], DASH] + cells
                    + tail(moved if stat else DASH))
  ds = paper_dataset(dataset)
  title = f"## {dataset}" + (f" ({ds})" if ds != dataset else "")
  form = "; ".join(D_FORMS[w] for w in forms)
  intro = (f"Final test metrics, mean ± std over seeds (n = seeds with the value). Acc in %, "
           f"d^m (competition strength, lower = weaker competition) as a fraction: {form}.")
  if stat:
    intro += (f" {PAPER_STATISTICS[stat][0]}: {PAPER_STATISTICS[stat][1]}, the statistic the "
              "paper reports for this dataset (as its released code computes it); the reported "
              "rows' accuracy is in that column, the one to compare it with. Acc stays the "
              "final epoch's (best-on-validation numbers are in each summary.json).")
  if extra:
    intro += (" F1: macro-F1; mAP: macro average precision of the softmax scores (classes "
              "absent from the test split skipped); both in %.")
  parts = [title, intro, markdown_table(header, rows)]
  missing = missing_modality_section(runs)
  return "\n\n".join(parts + ([missing] if missing else []))


def missing_modality_section(runs: Sequence[Run]) -> str | None:
  """The missing-modality table (the T-PAMI paper's Figure 6 as numbers): rows methods,
  columns the test accuracy of every non-empty modality subset with the others zero-padded
  (``subset_acc/<subset>``), then BalanceBenchmark's Shapley accuracy per modality and the
  strongest-weakest gap (``shapley_acc/<m>``, ``imbalance_gap``), mean ± std over seeds, in
  %. None when no run logged subset accuracies."""
  mods = union_modalities(runs)
  if len(mods) < 2:
    return None
  subsets = metrics_lib.subset_names(mods)[1:]
  keys = ([f"subset_acc/{n}" for n in subsets] + [f"shapley_acc/{m}" for m in mods]
          + ["imbalance_gap"])
  if not any(math.isfinite(number(r.final.get(k))) for r in runs for k in keys[:len(subsets)]):
    return None
  short = short_names(mods)
  header = (["Method", "Fusion", "Seeds"] + ["+".join(short[m] for m in n.split("+"))
                                             for n in subsets]
            + [f"φacc_{short[m]}" for m in mods] + ["gap"])
  rows = [[group_label(key, runs), key[1], seeds_text(members)]
          + [fmt_stat([number(r.final.get(k)) for r in members]) for k in keys]
          for key, members in ordered_groups(runs)]
  intro = ("### Missing modalities\n\nFinal test accuracy (%) of the trained model with only "
           "the named modalities present (the others zero-padded, as in training); the full "
           "set is Acc. φacc_m: BalanceBenchmark's Shapley value of modality m in the accuracy "
           "game (empty set included, so they sum to Acc minus the all-padded accuracy); gap: "
           "strongest minus weakest φacc.")
  return intro + "\n\n" + markdown_table(header, rows)


def group_notes(runs: Sequence[Run]) -> list[str]:
  """Per-run notes, and seed groups whose runs stopped at different epochs."""
  notes = [f"`{r.path}`: {n}" for r in runs for n in r.notes]
  for key, members in group_runs(runs).items():
    epochs = sorted({int(number(r.final.get("epoch"))) for r in members
                     if math.isfinite(number(r.final.get("epoch")))})
    if len(epochs) > 1:
      notes.append(f"{key[0]} {key[2]}/{key[1]}: runs end at different epochs {epochs}")
  return notes


def render_report(runs: Sequence[Run], ref: Sequence[Mapping],
                  plots: Sequence[str] = ()) -> str:
  """The whole Markdown report: one section per dataset, then plots and notes."""
  parts = ["# agm-jax results"]
  for dataset in dict.fromkeys(r.dataset for r in runs):
    parts.append(dataset_section(dataset, [r for r in runs if r.dataset == dataset], ref))
  if any("↳ reported" in p for p in parts):
    parts.append("Rows marked \"↳ reported\" are the numbers printed in the papers "
                 "(agm_jax/reference/paper_results.csv; source = table), shown for comparison "
                 "only.")
  if plots:
    parts.append("## Plots\n\n" + "\n".join(f"![{os.path.basename(p)}]({os.path.basename(p)})"
                                             for p in plots))
  notes = group_notes(runs)
  if notes:
    parts.append("## Notes\n\n" + "\n".join(f"- {n}" for n in notes))
  return "\n\n".join(parts) + "\n"


# ----------------------------------------------------------------------------- plots


def aggregate(series: Sequence[Mapping]) -> tuple[np.ndarray, ...]:
  """Per-run ``{x: y}`` curves -> ``(x, mean, min, max)`` over the runs that have a finite y
  at each x (a run that stopped early drops out of the later points)."""
  xs = sorted({x for s in series for x, y in s.items() if math.isfinite(y)})
  cols = [[s[x] for s in series if x in s and math.isfinite(s[x])] for x in xs]
  return (np.asarray(xs, dtype=float), np.asarray([np.mean(c) for c in cols]),
          np.asarray([np.min(c) for c in cols]), np.asarray([np.max(c) for c in cols]))


def epoch_curve(run: Run, key: str) -> dict:
  """``{epoch: value}`` of one test metric."""
  return {e: number(line.get(key)) for e, line in run.tests.items()}


def step_curve(run: Run, key: str) -> dict:
  """``{step: value}`` of one train metric (e.g. ``kappa/audio``)."""
  return {int(number(line.get("step"))): number(line.get(key)) for line in run.trains
          if math.isfinite(number(line.get("step")))}


def is_agm(method: str) -> bool:
  """AGM and its variants (agm_1, agm_ge)."""
  return method == "agm" or method.startswith("agm_")


def method_color(method: str, index: int) -> str:
  """Fixed colours for joint (grey) and AGM (red); the tab10 cycle otherwise."""
  fixed = {"joint": "tab:gray", "agm": "tab:red", "agm_1": "tab:orange", "agm_ge": "tab:brown"}
  cycle = ["tab:blue", "tab:green", "tab:purple", "tab:olive", "tab:cyan", "tab:pink"]
  return fixed.get(method, cycle[index % len(cycle)])


def draw_band(ax, series: Sequence[Mapping], label: str, color: str) -> bool:
  """Mean line with a min–max band; False (nothing drawn) if there are no values."""
  x, mean, lo, hi = aggregate(series)
  if x.size == 0:
    return False
  ax.plot(x, mean, color=color, label=label, marker="o" if x.size < 15 else None, ms=3)
  if len(series) > 1:
    ax.fill_between(x, lo, hi, color=color, alpha=0.2, linewidth=0)
  return True


def metric_title(key: str) -> str:
  """Subplot titles: test accuracy, mono-modal accuracy, competition strength."""
  if key == "acc":
    return "test accuracy"
  kind, m = key.split("/", 1)
  return {"acc": f"mono-modal acc ({m})", "competition": f"competition d ({m})",
          "kappa": f"kappa ({m})"}.get(kind, key)


def pyplot():
  """matplotlib.pyplot on the Agg backend (imported only when plotting)."""
  import matplotlib  # noqa: PLC0415
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # noqa: PLC0415
  return plt


def epoch_axis(ax) -> None:
  """Labels the x axis "epoch", with integer ticks."""
  from matplotlib.ticker import MaxNLocator  # noqa: PLC0415
  ax.xaxis.set_major_locator(MaxNLocator(integer=True))
  ax.set_xlabel("epoch")


def save_figure(fig, path: str) -> str:
  """Writes ``fig`` to ``path`` (110 dpi), closes it and returns the path."""
  fig.savefig(path, dpi=110)
  pyplot().close(fig)
  return path


def fixed_layout(fig, top_in: float, hspace: float = 0.5) -> None:
  """Margins in inches (``tight_layout`` costs as much as drawing the figure); ``top_in``
  leaves room for the title and legend."""
  w, h = fig.get_size_inches()
  fig.subplots_adjust(left=0.7 / w, right=1 - 0.2 / w, bottom=0.55 / h, top=1 - top_in / h,
                      wspace=0.3, hspace=hspace)


def safe_name(text: str) -> str:
  """A file-name-safe version of ``text``."""
  return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def ordered_groups(runs: Sequence[Run]) -> list:
  """Seed groups sorted by fusion, then the paper's method order."""
  groups = group_runs(runs)
  return [(k, groups[k]) for k in sorted(groups, key=lambda k: (k[1], method_rank(k[2]), k[3]))]


def group_label(key: tuple, runs: Sequence[Run]) -> str:
  """A legend label: the method, with the fusion when the dataset has several."""
  fusions = {r.fusion for r in runs}
  return key[2] + (f" ({key[1]})" if len(fusions) > 1 else "") + (" [whitened]" if key[3] else "")


def plot_curves(dataset: str, runs: Sequence[Run], out: str) -> str | None:
  """acc, acc/<m> and competition/<m> on test over epochs, one subplot per metric, one line
  per method (mean over seeds, min–max band). Returns the PNG path, or None if no test
  metrics were logged."""
  mods = union_modalities(runs)
  keys = (["acc"] + [f"acc/{m}" for m in mods] + [f"competition/{m}" for m in mods])
  keys = [k for k in keys
          if any(math.isfinite(v) for r in runs for v in epoch_curve(r, k).values())]
  if not keys:
    return None
  plt = pyplot()
  ncols = min(len(keys), 1 + len(mods))
  nrows = math.ceil(len(keys) / ncols)
  fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3.2 * nrows), squeeze=False)
  for ax, key in zip(axes.flat, keys):
    for i, (gkey, members) in enumerate(ordered_groups(runs)):
      draw_band(ax, [epoch_curve(r, key) for r in members], group_label(gkey, runs),
                method_color(gkey[2], i))
    ax.set_title(metric_title(key), fontsize=10)
    epoch_axis(ax)
    ax.grid(alpha=0.3)
  for ax in axes.flat[len(keys):]:
    ax.set_visible(False)
  handles, labels = axes.flat[0].get_legend_handles_labels()
  fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), frameon=False,
             bbox_to_anchor=(0.5, 1 - 0.3 / fig.get_size_inches()[1]), fontsize=9)
  fig.suptitle(f"{dataset}: test metrics (mean over seeds, band = min–max)", fontsize=11,
               y=1 - 0.08 / fig.get_size_inches()[1], va="top")
  fixed_layout(fig, top_in=0.85)
  return save_figure(fig, os.path.join(out, f"{safe_name(dataset)}_curves.png"))


def joint_agm_pairs(runs: Sequence[Run]) -> list:
  """(fusion, joint runs, AGM runs) for every fusion where both logged test metrics (AGM
  preferred over its variants)."""
  pairs = []
  for fusion in sorted({r.fusion for r in runs}):
    joint = [r for r in runs if r.fusion == fusion and r.method == "joint" and r.tests]
    agms = [r for r in runs if r.fusion == fusion and is_agm(r.method) and r.tests]
    if joint and agms:
      best = "agm" if any(r.method == "agm" for r in agms) else sorted(r.method for r in agms)[0]
      pairs.append((fusion, joint, [r for r in agms if r.method == best]))
  return pairs


def plot_joint_vs_agm(dataset: str, fusion: str, joint: Sequence[Run], agm: Sequence[Run],
                      out: str) -> str:
  """The paper's Figure 2: joint (left) and AGM (right) side by side; top row the test and
  mono-modal accuracies, bottom row the competition strength per modality, over epochs."""
  mods = union_modalities(list(joint) + list(agm))
  plt = pyplot()
  fig, axes = plt.subplots(2, 2, figsize=(9, 6.4), sharex=True, sharey="row", squeeze=False)
  colors = {m: c for m, c in zip(mods, ["tab:blue", "tab:orange", "tab:green", "tab:purple",
                                        "tab:cyan", "tab:olive"])}
  for col, members in enumerate((joint, agm)):
    top, bottom = axes[0, col], axes[1, col]
    draw_band(top, [epoch_curve(r, "acc") for r in members], "multimodal", "black")
    drawn = False
    for m in mods:
      color = colors.get(m, "tab:gray")
      draw_band(top, [epoch_curve(r, f"acc/{m}") for r in members], f"{m} (mono-modal)", color)
      drawn |= draw_band(bottom, [epoch_curve(r, f"competition/{m}") for r in members], m, color)
    if not drawn:
      bottom.text(0.5, 0.5, "competition not logged", ha="center", va="center", color="gray",
                  transform=bottom.transAxes)
    top.set_title(f"{members[0].method} ({len(members)} seed{'s' * (len(members) > 1)})",
                  fontsize=10)
    epoch_axis(bottom)
    for ax in (top, bottom):
      ax.grid(alpha=0.3)
  axes[0, 0].set_ylabel("test accuracy")
  axes[1, 0].set_ylabel("competition strength d")
  axes[0, 1].legend(fontsize=8, loc="best")
  if axes[1, 0].lines or axes[1, 1].lines:
    (axes[1, 1] if axes[1, 1].lines else axes[1, 0]).legend(fontsize=8, loc="best")
  fig.suptitle(f"{dataset}, {fusion} fusion: joint training vs AGM", fontsize=11)
  fixed_layout(fig, top_in=0.65, hspace=0.15)
  name = f"{safe_name(dataset)}_{safe_name(fusion)}_joint_vs_agm.png"
  return save_figure(fig, os.path.join(out, name))


def plot_kappa(dataset: str, runs: Sequence[Run], out: str) -> str | None:
  """AGM's kappa per modality over training steps, one line per AGM-like method (mean over
  seeds, min–max band); None if no run logged kappa."""
  runs = [r for r in runs if is_agm(r.method)]
  mods = [m for m in union_modalities(runs)
          if any(math.isfinite(v) for r in runs for v in step_curve(r, f"kappa/{m}").values())]
  if not mods:
    return None
  plt = pyplot()
  fig, axes = plt.subplots(1, len(mods), figsize=(4 * len(mods), 3.2), squeeze=False)
  for ax, m in zip(axes.flat, mods):
    for i, (gkey, members) in enumerate(ordered_groups(runs)):
      draw_band(ax, [step_curve(r, f"kappa/{m}") for r in members], group_label(gkey, runs),
                method_color(gkey[2], i))
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_title(metric_title(f"kappa/{m}"), fontsize=10)
    ax.set_xlabel("step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
  fig.suptitle(f"{dataset}: AGM modulation coefficient kappa (train)", fontsize=11)
  fixed_layout(fig, top_in=0.5)
  return save_figure(fig, os.path.join(out, f"{safe_name(dataset)}_kappa.png"))


FEATURES_FILE = "features_test.npz"   # written by agm_jax.train.loop at the end of a run
TSNE_MAX_ROWS = 1500                   # rows embedded per panel (t-SNE is quadratic)


def read_features(run: Run, max_rows: int = TSNE_MAX_ROWS):
  """``(z, labels)`` of a run's test-split features, at most ``max_rows`` rows (seed 0);
  None when the run has no readable features file."""
  path = os.path.join(run.path, FEATURES_FILE)
  try:
    with np.load(path) as f:
      z, labels = np.asarray(f["z"], np.float64), np.asarray(f["labels"]).reshape(-1)
  except (OSError, KeyError, ValueError):
    return None
  if z.ndim != 2 or len(z) != len(labels) or len(z) < 5:
    return None
  if len(z) > max_rows:
    rows = np.sort(np.random.default_rng(0).choice(len(z), max_rows, replace=False))
    z, labels = z[rows], labels[rows]
  return z, labels


def plot_tsne(dataset: str, runs: Sequence[Run], out: str) -> str | None:
  """t-SNE (scikit-learn's ``TSNE``, PCA initialisation, seed 0) of the penultimate features
  of the test split, coloured by class: one panel per method and fusion (its first seed with
  a features file). None when no run saved features."""
  from sklearn.manifold import TSNE  # noqa: PLC0415 - slow import, only when plotting
  panels = []
  for key, members in ordered_groups(runs):
    for r in sorted(members, key=lambda r: str(r.seed)):
      feats = read_features(r)
      if feats is not None:
        panels.append((f"{group_label(key, runs)}, seed {r.seed}", feats))
        break
  if not panels:
    return None
  plt = pyplot()
  fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.8), squeeze=False)
  for ax, (title, (z, labels)) in zip(axes.flat, panels):
    emb = TSNE(n_components=2, perplexity=min(30.0, (len(z) - 1) / 3), init="pca",
               random_state=0).fit_transform(z)
    classes = np.unique(labels)
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    for i, c in enumerate(classes):
      pts = emb[labels == c]
      ax.scatter(pts[:, 0], pts[:, 1], s=5, color=cmap(i % cmap.N), label=str(c), alpha=0.8,
                 linewidths=0)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
  handles, labels = axes.flat[0].get_legend_handles_labels()
  if len(labels) <= 20:
    fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 10), frameon=False,
               title="class", fontsize=8, title_fontsize=8, markerscale=2,
               bbox_to_anchor=(0.5, 1 - 0.3 / fig.get_size_inches()[1]))
  fig.suptitle(f"{dataset}: t-SNE of the test features before the last layer", fontsize=11,
               y=1 - 0.05 / fig.get_size_inches()[1], va="top")
  fixed_layout(fig, top_in=1.0)
  return save_figure(fig, os.path.join(out, f"{safe_name(dataset)}_tsne.png"))


def make_plots(runs: Sequence[Run], out: str) -> list[str]:
  """Every plot for every dataset; returns the written paths."""
  paths = []
  for dataset in dict.fromkeys(r.dataset for r in runs):
    ds_runs = [r for r in runs if r.dataset == dataset]
    paths.append(plot_curves(dataset, ds_runs, out))
    paths += [plot_joint_vs_agm(dataset, f, j, a, out) for f, j, a in joint_agm_pairs(ds_runs)]
    paths.append(plot_kappa(dataset, ds_runs, out))
    paths.append(plot_tsne(dataset, ds_runs, out))
  return [p for p in paths if p]


# ----------------------------------------------------------------------------- CLI


def default_out(workdirs: Sequence[str]) -> str:
  """The workdirs' common parent, or the current directory when that is the root or not
  writable."""
  parents = [os.path.dirname(os.path.abspath(w).rstrip(os.sep)) for w in workdirs]
  try:
    common = os.path.commonpath(parents)
  except ValueError:  # different drives
    return os.getcwd()
  if common == os.path.dirname(common) or not os.access(common, os.W_OK):
    return os.getcwd()
  return common


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
  """The command line (``argv=None``: ``sys.argv``)."""
  parser = argparse.ArgumentParser(
      prog="python -m agm_jax.tools.report",
      description="Markdown result table (AGM Tables 1-3) and training-curve plots (Figure 2) "
                  "from training workdirs.")
  parser.add_argument("workdirs", nargs="+", metavar="WORKDIR",
                      help="run directories (config.json, metrics.jsonl, summary.json)")
  parser.add_argument("--out", default=None,
                      help="output directory (default: the workdirs' common parent, or .)")
  parser.add_argument("--reference", default="auto",
                      help="'auto' (the shipped paper CSV), 'none', or a CSV path")
  parser.add_argument("--no-plots", action="store_true", help="write the table only")
  return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
  """CLI entry point; returns the exit code (2 for bad input, with a one-line message)."""
  args = parse_args(argv)
  try:
    runs = [load_run(w) for w in expand_workdirs(args.workdirs)]
    ref = load_reference(args.reference)
    out = args.out or default_out(args.workdirs)
    os.makedirs(out, exist_ok=True)
  except (ReportError, OSError) as e:
    print(f"agm_jax.report: error: {e}", file=sys.stderr)
    return 2
  plots = [] if args.no_plots else make_plots(runs, out)
  text = render_report(runs, ref, plots)
  path = os.path.join(out, "report.md")
  with open(path, "w") as f:
    f.write(text)
  print(text)
  print(f"wrote {path}")
  for p in plots:
    print(f"wrote {p}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
