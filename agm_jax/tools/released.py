r"""The released AGM code's CREMA-D train steps (PyTorch), timed for comparison with agm-jax's.

Needs PyTorch and a clone of the released repository (lihong2303/AGM_ICCV2023): ``CODE_DIR``
is the folder holding its ``model/`` package (``model/CREMAD_net.py`` and ``model/utils/``).
Normally driven by ``python -m agm_jax.tools.bench --reference_dir=CODE_DIR``, which starts
this module as a separate process (PyTorch and JAX never share a process or its device memory)
and interleaves its steps with the JAX variants' round by round. Alone:

  python -m agm_jax.tools.released --code_dir=CODE_DIR --batch_size=16 --steps=10

prints one JSON line with the median seconds per step. With ``--serve`` it reads one command
per stdin line (``joint`` or ``agm``), runs one step of that variant and answers with its
seconds (a line ``ready`` first, once both models are built).

What a step is (the released ``run/CREMAD_main.py`` ``train`` with late fusion; this harness is
agm-jax's own code calling the released model classes):

* ``joint``: ``AVClassifier_Sum`` (the released late-fusion model of every non-AGM method), the
  cross-entropy of ``out``, backward, an SGD step (momentum 0.9, weight decay 1e-4, lr 1e-3);
* ``agm``: ``GradMod`` over ``AVClassifier`` with the concat head: the full pass in train
  mode and the three padded passes in eval mode, the Shapley responses ``out_a``, ``out_v``,
  their mean cross-entropies read to the host (``.item()``, as the released loop does), the
  coefficients ``exp(alpha·min(r* − r, 10))`` set with ``update_scale`` (the backward hooks
  scale the gradients), backward, the SGD step.

The released loop's per-example Python loops for its accuracy counters and scores are left out
(they add host time that grows with the batch), so these are lower bounds of its step times.
Inputs are random at CREMA-D's shapes: spectrogram ``(B, 1, 257, 188)``, one frame
``(B, 3, 1, 224, 224)``, 6 classes.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
from types import SimpleNamespace

from absl import app, flags

ALPHA = 1.0          # released utils/config.py default
EXPONENT_CLIP = 10.0  # released run/CREMAD_main.py: min(r* - r, 10)
NUM_CLASSES = 6


class Steps:
  """The two released models on one device, their optimisers and one random batch."""

  def __init__(self, code_dir: str, batch_size: int, device: str = ""):
    import torch  # noqa: PLC0415 - optional dependency, only here
    if not os.path.isdir(os.path.join(code_dir, "model")):
      raise FileNotFoundError(f"{code_dir} has no model/ folder (the released AGM code's)")
    sys.path.insert(0, os.path.abspath(code_dir))
    from model.CREMAD_net import AVClassifier_Sum, GradMod  # noqa: PLC0415 - the released code

    self.torch = torch
    self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(0)
    cfg = SimpleNamespace(mode="train", fusion_type="late_fusion", dataset="CREMAD",
                          fusion="concat")
    self.models = {"joint": AVClassifier_Sum(cfg).to(self.device),
                   "agm": GradMod(cfg).to(self.device)}
    self.optimizers = {k: torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9,
                                          weight_decay=1e-4) for k, m in self.models.items()}
    for m in self.models.values():
      m.train()
    self.spec = torch.randn(batch_size, 1, 257, 188, device=self.device)
    self.image = torch.randn(batch_size, 3, 1, 224, 224, device=self.device)
    self.label = torch.randint(0, NUM_CLASSES, (batch_size,), device=self.device)
    self.running = [0.0, 0.0]   # the released train_score_a / train_score_v
    self.iteration = 0

  def _sync(self):
    if self.device.type == "cuda":
      self.torch.cuda.synchronize()

  def joint(self):
    F = self.torch.nn.functional
    opt = self.optimizers["joint"]
    opt.zero_grad()
    _, _, out = self.models["joint"](self.spec, self.image)
    F.cross_entropy(out, self.label).backward()
    opt.step()

  def agm(self):
    F = self.torch.nn.functional
    model, opt = self.models["agm"], self.optimizers["agm"]
    opt.zero_grad()
    total, pad_visual, pad_audio, _, out = model(self.spec, self.image)
    out_a = 0.5 * (total - pad_audio + pad_visual)
    out_v = 0.5 * (total - pad_visual + pad_audio)
    score_a = F.cross_entropy(out_a, self.label).item()
    score_v = F.cross_entropy(out_v, self.label).item()
    self.iteration += 1
    i = self.iteration
    ref_a, ref_v = math.exp(self.running[1] - self.running[0]), math.exp(
        self.running[0] - self.running[1])
    coeff_a = math.exp(ALPHA * min(ref_a - math.exp(score_v - score_a), EXPONENT_CLIP))
    coeff_v = math.exp(ALPHA * min(ref_v - math.exp(score_a - score_v), EXPONENT_CLIP))
    self.running = [self.running[0] * (i - 1) / i + score_a / i,
                    self.running[1] * (i - 1) / i + score_v / i]
    model.update_scale(coeff_a, coeff_v)
    F.cross_entropy(out, self.label).backward()
    opt.step()

  def timed(self, name: str) -> float:
    self._sync()
    t0 = time.perf_counter()
    getattr(self, name)()
    self._sync()
    return time.perf_counter() - t0


VARIANTS = ("joint", "agm")


def serve(steps: Steps, stdin=sys.stdin, stdout=sys.stdout) -> None:
  """One step per command line (``joint``/``agm``), answered with its seconds; ``ready``
  first. An unknown command is answered ``error: …``; end of input ends it."""
  print("ready", file=stdout, flush=True)
  for line in stdin:
    name = line.strip()
    if not name:
      continue
    if name not in VARIANTS:
      print(f"error: unknown step {name!r}; valid: {', '.join(VARIANTS)}", file=stdout,
            flush=True)
      continue
    print(f"{steps.timed(name):.6f}", file=stdout, flush=True)


def define_flags() -> None:
  """The command line (defined only when run as a program: ``bench`` imports this module)."""
  flags.DEFINE_string("code_dir", None, "Folder holding the released model/ package.")
  flags.DEFINE_integer("batch_size", 16, "Batch size.")
  flags.DEFINE_integer("steps", 5, "Timed steps per variant (without --serve).")
  flags.DEFINE_integer("warmup", 3, "Untimed steps per variant first.")
  flags.DEFINE_string("device", "", "torch device (default: cuda if available).")
  flags.DEFINE_bool("serve", False, "Answer 'joint'/'agm' lines on stdin, one step each.")


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.code_dir:
    print("error: --code_dir is required (the folder holding the released model/ package)",
          file=sys.stderr)
    sys.exit(2)
  try:
    steps = Steps(f.code_dir, f.batch_size, f.device)
  except (ImportError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(2)
  if f.serve:
    serve(steps)
    return
  result = {"batch_size": f.batch_size, "device": str(steps.device),
            "torch": steps.torch.__version__}
  for name in VARIANTS:
    for _ in range(f.warmup):
      steps.timed(name)
  times = {name: [] for name in VARIANTS}
  for _ in range(f.steps):   # interleaved, as agm_jax.tools.bench
    for name in VARIANTS:
      times[name].append(steps.timed(name))
  for name in VARIANTS:
    result[f"released_{name}_step_s"] = float(f"{statistics.median(times[name]):.4g}")
  print(json.dumps(result))


if __name__ == "__main__":
  define_flags()
  app.run(main)
