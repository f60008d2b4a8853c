"""Atomic publication of a file: write under a hidden temp name in the same directory, then rename.

A reader never sees a partial file; a crash leaves only a dot-file that the next writer overwrites.
"""
from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any, Iterator


def temp_name(path: str | os.PathLike) -> Path:
    """The hidden temp file next to ``path`` (per process, so concurrent writers never share one)."""
    p = Path(path)
    return p.with_name(f".{p.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """Yield a temp path to write ``path`` through; on success it is renamed over ``path``, on error removed."""
    final = Path(path)
    tmp = temp_name(final)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; creates the parent directory."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp:
        tmp.write_bytes(data)
    return final


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; creates the parent directory."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any, **dumps: Any) -> Path:
    """Write ``json.dumps(obj, **dumps)`` plus a newline to ``path`` atomically."""
    return write_text(path, json.dumps(obj, **dumps) + "\n")
