"""XLA:CPU settings for agm-jax's programs, added to ``XLA_FLAGS`` before JAX starts.

``CPU_DEFAULTS`` holds one flag: XLA:CPU (jaxlib 0.10) lowers large convolutions to YNNPACK
fusions by default, and for training-shaped convolutions these are slow. At CREMA-D's shapes
(ResNet-18, batch 16, 2-core AMD EPYC, jaxlib 0.10.2) the filter gradient of a 3x3
64-channel convolution took 232 ms through YNNPACK and 35 ms through XLA's own convolution.
Two runs of ``agm_jax.tools.bench`` (each 5 interleaved rounds, medians), without -> with the
flag: joint step 9.28 -> 4.76 s, AGM 7.45 -> 4.24 s, eval-BatchNorm AGM 15.5 -> 9.30 s, while
the released PyTorch joint step timed in the same rounds stayed at 4.06 / 3.95 s. Turning
off only the convolution fusion beat turning YNNPACK off altogether by 10% (joint 3.59 vs
3.97 s, interleaved): its reductions and dots help. Measured on that CPU only; on a GPU the
flag changes nothing.

The entry points (``launch.py``, ``agm_jax.tools.bench``, ``epoch_bench``, ``linear_probe``)
call :func:`use_cpu_defaults` first. In your own program call it before JAX's first
computation. ``AGM_JAX_XLA_DEFAULTS=0`` leaves ``XLA_FLAGS`` alone; a flag you set yourself
in ``XLA_FLAGS`` always wins. XLA aborts the process on a flag it does not know, so each flag
is first tried in a subprocess, once per jaxlib version (remembered under
``$XDG_CACHE_HOME/agm_jax``, about 2 s the first time).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import warnings

CPU_DEFAULTS = (
    "--xla_cpu_experimental_ynn_fusion_type=-LIBRARY_FUSION_TYPE_INDIVIDUAL_CONVOLUTION",
)
OFF = ("0", "off", "false", "no", "none")


def enabled() -> bool:
  """False when ``AGM_JAX_XLA_DEFAULTS`` switches ``CPU_DEFAULTS`` off."""
  return os.environ.get("AGM_JAX_XLA_DEFAULTS", "1").lower() not in OFF


def default_cache_dir() -> str:
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "agm_jax")


def accepted(flags, cache_dir: str | None = None) -> list[str]:
  """The subset of ``flags`` this jaxlib's XLA accepts: probed in a subprocess (XLA aborts on
  an unknown ``XLA_FLAGS`` entry), remembered per jaxlib version in ``cache_dir``."""
  try:
    version = importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return []
  memo = os.path.join(cache_dir, f"accepted_xla_flags-jaxlib-{version}.json") if cache_dir \
      else None
  known = {}
  if memo and os.path.exists(memo):
    try:
      with open(memo) as f:
        known = json.load(f)
    except (OSError, ValueError):   # a torn or unreadable memo: probe again
      known = {}

  def probe(group):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join(group))
    return subprocess.run([sys.executable, "-c", "import jax; jax.devices('cpu')"], env=env,
                          capture_output=True, timeout=300).returncode == 0

  unknown = [f for f in flags if f not in known]
  if unknown:
    if probe(unknown):
      known.update(dict.fromkeys(unknown, True))
    else:
      known.update({f: probe([f]) for f in unknown})
    if memo and any(known.values()):   # (nothing accepted: jax itself may be failing)
      try:
        os.makedirs(cache_dir, exist_ok=True)
        with open(memo + f".{os.getpid()}", "w") as f:
          json.dump(known, f)
        os.replace(memo + f".{os.getpid()}", memo)
      except OSError:   # a read-only home: probe again next time
        pass
  return [f for f in flags if known[f]]


def with_defaults(xla_flags: str, accepted=accepted, flags=CPU_DEFAULTS) -> str:
  """``xla_flags`` with each of ``flags`` that it does not already name and that ``accepted``
  keeps appended."""
  named = {f.split("=", 1)[0] for f in xla_flags.split()}
  wanted = [f for f in flags if f.split("=", 1)[0] not in named]
  return " ".join([xla_flags.strip(), *(accepted(wanted) if wanted else [])]).strip()


def _backends_exist() -> bool:
  try:
    from jax._src import xla_bridge  # noqa: PLC0415 - private; only to catch a late call
  except ImportError:
    return False
  return getattr(xla_bridge, "backends_are_initialized", lambda: False)()


def use_cpu_defaults() -> bool:
  """Adds ``CPU_DEFAULTS`` to ``os.environ["XLA_FLAGS"]`` (see the module docstring); True if
  anything was added. Once JAX's backends exist (XLA has read its flags) it only warns."""
  if not enabled():
    return False
  before = os.environ.get("XLA_FLAGS", "").strip()
  after = with_defaults(before, lambda flags: accepted(flags, default_cache_dir()))
  if after == before:   # already there (or not accepted): nothing to add
    return False
  if _backends_exist():
    warnings.warn("agm_jax.xla_flags.use_cpu_defaults() called after JAX started: its XLA "
                  "flags take no effect in this process", stacklevel=2)
    return False
  os.environ["XLA_FLAGS"] = after
  return True
