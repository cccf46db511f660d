"""The workdir lock: one run per workdir at a time.

A run holds ``WORKDIR/.lock``, a JSON record of its host, pid, start time and a token. The
file is created whole under a temporary name and hard-linked to ``.lock`` (``os.link`` fails if
it exists, on local and network filesystems alike), so a reader never sees half a record.

A second run on the workdir stops at once with :class:`WorkdirBusy`, one line naming the
holder. A lock whose holder is gone is taken over with a warning: on the same host that is a
pid that no longer exists (``os.kill(pid, 0)`` raises ``ProcessLookupError``) or that now
belongs to another process (its start time in ``/proc`` differs from the recorded one). A
holder on another host cannot be checked from here: the run refuses and says which file to
delete. In a multi-process run process 0 holds the lock for the group and every process
stops when it cannot (``parallel.primary_flag``). The lock is released when the run ends,
also by an exception or a SIGTERM checkpoint (``guard.Preempted``); a SIGKILL leaves it for
the next run to take over.

``hold(..., wait=True)`` waits instead of stopping (the shared concept cache: a run that needs
a concept another run is training waits for it, then reads it). Within one process the lock
is re-entrant (a run that trains its concepts holds their directories' locks while the
concept runs, which take them again).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import socket
import sys
import time
import uuid

from agm_jax.train import parallel

LOCK_FILE = ".lock"
_HELD: dict[str, list] = {}   # lock path -> [depth, record] of the locks this process holds


class WorkdirBusy(RuntimeError):
  """Another live run holds the workdir (or its liveness cannot be checked)."""


def lock_path(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), LOCK_FILE)


def _process_start(pid: int) -> str | None:
  """The start time of ``pid`` in clock ticks since boot (``/proc/<pid>/stat`` field 22), or
  None where there is no ``/proc``."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[19]
  except (OSError, IndexError):
    return None


def _record() -> dict:
  return {"host": socket.gethostname(), "pid": os.getpid(), "started": time.time(),
          "process_start": _process_start(os.getpid()), "token": uuid.uuid4().hex,
          "argv": " ".join(sys.argv)[:500]}


def read(path: str) -> dict | None:
  """The holder's record; None if there is no lock file; ``{}`` if it is unreadable."""
  try:
    with open(path) as f:
      record = json.load(f)
  except FileNotFoundError:
    return None
  except (OSError, ValueError):
    return {}
  return record if isinstance(record, dict) and "pid" in record else {}


def alive(record: dict) -> bool | None:
  """Whether the holder still runs: True/False on this host, None on another host."""
  if record.get("host") != socket.gethostname():
    return None
  pid = int(record["pid"])
  if pid == os.getpid():   # this process, not holding it (a leftover of an earlier run here)
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:   # another user's live process
    pass
  started = _process_start(pid)
  recorded = record.get("process_start")
  return not (started and recorded and started != recorded)   # a reused pid: the holder died


def describe(record: dict) -> str:
  """``pid 12 on host h since 2026-01-01 10:00:00 UTC``."""
  when = datetime.datetime.fromtimestamp(float(record.get("started", 0)), datetime.timezone.utc)
  return (f"pid {record.get('pid')} on host {record.get('host')} since "
          f"{when:%Y-%m-%d %H:%M:%S} UTC")


def _create(path: str, record: dict) -> None:
  """Publishes ``record`` as ``path``; FileExistsError if a lock is there."""
  tmp = f"{path}.{record['host']}.{record['pid']}.{record['token'][:8]}"
  with open(tmp, "w") as f:
    json.dump(record, f)
    f.flush()
    os.fsync(f.fileno())
  try:
    os.link(tmp, path)
  finally:
    os.remove(tmp)


def _take_over(path: str, stale: dict) -> None:
  """Removes the stale lock ``path`` if it still holds ``stale`` (moved aside first, so of
  two processes taking over the same lock only one removes it)."""
  aside = f"{path}.stale.{uuid.uuid4().hex[:8]}"
  try:
    os.rename(path, aside)
  except FileNotFoundError:
    return
  if read(aside) != stale:   # another run took it over in between: put its lock back
    with contextlib.suppress(FileExistsError):
      os.link(aside, path)
  os.remove(aside)


def acquire(workdir: str, *, wait: bool = False, poll_s: float = 0.5) -> None:
  """Takes ``workdir``'s lock (see the module docstring); WorkdirBusy if a live run holds it
  and not ``wait``."""
  os.makedirs(workdir, exist_ok=True)
  path = lock_path(workdir)
  if path in _HELD:
    _HELD[path][0] += 1
    return
  record, announced = _record(), False
  while True:
    try:
      _create(path, record)
      _HELD[path] = [1, record]
      return
    except FileExistsError:
      pass
    holder = read(path)
    if holder is None:   # released meanwhile
      continue
    state = alive(holder) if holder else False
    if state is False:
      logging.warning("taking over the lock %s of a run that is gone (%s)", path,
                      describe(holder) if holder else "unreadable lock file")
      _take_over(path, holder)
      continue
    if not wait:
      if state is None:
        raise WorkdirBusy(f"workdir {os.path.dirname(path)} is in use by {describe(holder)}, "
                          f"which cannot be checked from host {socket.gethostname()}; if that "
                          f"run is gone, delete {path} and run again")
      raise WorkdirBusy(f"workdir {os.path.dirname(path)} is in use by {describe(holder)}; "
                        f"wait for it to end or use another --workdir (lock file {path})")
    if not announced:
      print(f"waiting for {describe(holder)}, which holds {path}", flush=True)
      announced = True
    time.sleep(poll_s)


def release(workdir: str) -> None:
  """Releases one hold of ``workdir``'s lock; the file goes with the last one (if it is still
  this process's)."""
  path = lock_path(workdir)
  if path not in _HELD:
    return
  _HELD[path][0] -= 1
  if _HELD[path][0] > 0:
    return
  _, record = _HELD.pop(path)
  if (read(path) or {}).get("token") == record["token"]:
    with contextlib.suppress(FileNotFoundError):
      os.remove(path)


@contextlib.contextmanager
def hold(workdir: str, *, wait: bool = False):
  """The lock of ``workdir`` for the duration of the block, held by process 0 for the whole
  group: every process raises WorkdirBusy when process 0 cannot take it."""
  primary = parallel.is_primary()
  error = None
  if primary:
    try:
      acquire(workdir, wait=wait)
    except WorkdirBusy as e:
      error = e
  if parallel.primary_flag(error is not None):
    raise error or WorkdirBusy(f"workdir {os.path.abspath(workdir)} is in use by another run "
                               f"(process 0 found the lock {lock_path(workdir)})")
  try:
    yield
  finally:
    if primary:
      release(workdir)
