"""The one parser of modality lists (core; pure Python, no JAX).

Every caller that reads a modality list from a config, a command line or a data source goes
through :func:`parse` (and :func:`select` to check it against the data's modalities), so
"audio,visual", ``("audio", "visual")`` and ``["audio", " visual "]`` mean the same thing and
a duplicate or empty name is an error everywhere. The order is kept: it is the order of the
subset bits (``docs/ARCHITECTURE.md``, sign conventions).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def parse(spec: str | Iterable[str] | None) -> tuple[str, ...]:
  """``"audio, visual"`` or a sequence of names -> ``("audio", "visual")``.

  ``None`` or an empty string gives ``()`` (callers read that as "all of the data's").
  Raises ``ValueError`` on a duplicate or an empty name.
  """
  if spec is None:
    return ()
  parts = spec.split(",") if isinstance(spec, str) else list(spec)
  names = tuple(str(p).strip() for p in parts)
  if isinstance(spec, str) and not spec.strip():
    return ()
  if any(not n for n in names):
    raise ValueError(f"empty modality name in {spec!r}")
  seen = set()
  for n in names:
    if n in seen:
      raise ValueError(f"modality {n!r} is listed twice in {spec!r}")
    seen.add(n)
  return names


def select(spec: str | Iterable[str] | None, available: Sequence[str], *,
           where: str = "the data") -> tuple[str, ...]:
  """The parsed ``spec`` checked against ``available`` (all of them when ``spec`` is empty);
  ``where`` names the data in the error."""
  wanted = parse(spec) or tuple(available)
  missing = [m for m in wanted if m not in available]
  if missing:
    raise ValueError(f"modality {missing[0]!r} is not in {where}; it has {list(available)}")
  return wanted
