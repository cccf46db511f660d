"""Writes a kill cannot leave half done, and one-line errors for a full disk or an unwritable
workdir.

A file is written under a temporary name unique to the writer (host, pid, a random suffix) in
the target's folder, flushed to disk, then renamed over the target (``os.replace``, atomic on
POSIX filesystems): a reader sees the old file or the new one, never a mix, and two writers
racing on one name each publish a complete file. A failed write (``ENOSPC``, ``EACCES``,
``EROFS``…) becomes a :class:`StorageError`: one line saying what could not be written and
that the last complete files are intact.
"""

from __future__ import annotations

import errno
import io
import os
import socket
import uuid

import numpy as np


class StorageError(OSError):
  """A write failed for lack of space or permission; the message is one line for the user."""

  def __init__(self, message: str, errno_: int | None = None):
    super().__init__(message)
    self.errno = errno_


def find_os_error(e: BaseException) -> OSError | None:
  """The first ``OSError`` in ``e``'s chain (``__cause__`` / ``__context__``), or None."""
  seen = set()
  while e is not None and id(e) not in seen:
    if isinstance(e, OSError):
      return e
    seen.add(id(e))
    e = e.__cause__ or e.__context__
  return None


def describe(e: OSError) -> str:
  """``"No space left on device (ENOSPC)"``, or the error's own text."""
  name = errno.errorcode.get(e.errno or -1)
  text = os.strerror(e.errno) if e.errno else (str(e) or type(e).__name__)
  return f"{text} ({name})" if name else text


def storage_error(what: str, e: OSError, advice: str) -> StorageError:
  """One line: ``cannot write <what>: <reason>; <advice>``."""
  return StorageError(f"cannot write {what}: {describe(e)}; {advice}", e.errno)


def _temporary(path: str) -> str:
  folder, name = os.path.split(os.path.abspath(path))
  tag = f"{socket.gethostname()}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
  return os.path.join(folder, f".{name}.{tag}.tmp")


def write_bytes(path: str, data: bytes) -> None:
  """Writes ``data`` to ``path`` atomically (see the module docstring); the temporary file is
  removed if the write fails, and the error is re-raised."""
  tmp = _temporary(path)
  try:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise


def write_text(path: str, text: str) -> None:
  write_bytes(path, text.encode())


def savez(path: str, **arrays) -> None:
  """``np.savez(path, **arrays)``, atomically."""
  buffer = io.BytesIO()
  np.savez(buffer, **arrays)
  write_bytes(path, buffer.getvalue())
