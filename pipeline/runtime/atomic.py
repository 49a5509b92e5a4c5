"""Atomic writes: a temp file in the same folder, flushed and fsynced, then os.replace.

A crash (or a full disk) never leaves a half-written file under the final name;
an existing file is kept until the new one is complete. A process killed mid-write leaves its
hidden temp file (`.NAME.partial-` and eight random characters); `remove_temp_files` clears
them when a stage opens.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

from pipeline.errors import PhfaError


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temp path beside `path`; on success fsync it and move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{_PARTIAL}", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; outputs follow the umask like any file
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno == errno.ENOSPC:
            raise PhfaError(f"disk full while writing {path}; the previous version (if any) is untouched") from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


_PARTIAL = ".partial-"


def remove_temp_files(folder: str | Path) -> int:
    """Delete the temp files of writes that never completed under `folder` (call it only while
    no other process writes there); returns how many."""
    n = 0
    for p in Path(folder).rglob(f".*{_PARTIAL}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
