"""File access that works on local paths and on any Beam filesystem (``gs://``, ``s3://``, ``hdfs://``).

Local paths keep POSIX semantics (atomic temp + rename); remote paths go through
``apache_beam.io.filesystems.FileSystems``, where an object becomes visible only once its writer
closes it, which gives the same "never half a file" guarantee. Everything the label stages read or
write goes through here, so one pipeline runs on a laptop and on Dataflow/Flink workers.
"""
from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import io
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from ssga_io import atomic


def _beam_fs():
    """Beam's ``FileSystems``, imported on first use so that local-only callers (the trainer) need not load Beam."""
    from apache_beam.io.filesystems import FileSystems

    return FileSystems


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    return posixpath.join(str(base), *parts) if is_remote(base) else os.path.join(str(base), *parts)


def dirname(path: str | os.PathLike) -> str:
    return posixpath.dirname(str(path)) if is_remote(path) else str(Path(path).resolve().parent)


def exists(path: str | os.PathLike) -> bool:
    return _beam_fs().exists(str(path)) if is_remote(path) else os.path.exists(path)


def read_bytes(path: str | os.PathLike) -> bytes:
    if not is_remote(path):
        return Path(path).read_bytes()
    with _beam_fs().open(str(path)) as f:
        return f.read()


def read_text(path: str | os.PathLike) -> str:
    return read_bytes(path).decode("utf-8")


@contextlib.contextmanager
def open_text(path: str | os.PathLike) -> Iterator[io.TextIOBase]:
    """Stream a text file line by line (no trailing-newline translation)."""
    if not is_remote(path):
        with open(path, encoding="utf-8", newline="") as f:
            yield f
    else:
        with _beam_fs().open(str(path)) as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8", newline="")


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a shell pattern in its last component."""
    if not is_remote(pattern):
        return sorted(str(p) for p in Path(os.path.dirname(pattern) or ".").glob(os.path.basename(pattern)))
    result = _beam_fs().match([pattern])[0]
    name = posixpath.basename(pattern)
    return sorted(m.path for m in result.metadata_list if fnmatch.fnmatch(posixpath.basename(m.path), name))


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Publish ``data`` at ``path`` all at once (readers never see a partial file)."""
    if is_remote(path):
        with _beam_fs().create(str(path)) as f:
            f.write(data)
        return
    atomic.write_bytes(path, data)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike) -> Iterator[str]:
    """A local path with the file's content: the file itself, or a temporary download of a remote one."""
    if not is_remote(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="ssga-") as d:
        local = os.path.join(d, posixpath.basename(str(path)))
        with _beam_fs().open(str(path)) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


def remove_tree(path: str | os.PathLike) -> None:
    if is_remote(path):
        matches = _beam_fs().match([join(path, "**")])[0].metadata_list
        if matches:
            _beam_fs().delete([m.path for m in matches])
    elif os.path.exists(path):
        shutil.rmtree(path)


def content_digest(path: str | os.PathLike) -> str:
    """Same value as ``schemas.manifest.files_digest([path])`` for one file, for local or remote paths."""
    h = hashlib.sha256()
    h.update(posixpath.basename(str(path)).encode("utf-8") + b"\0")
    if is_remote(path):
        with _beam_fs().open(str(path)) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def file_metadata(patterns: list[str]) -> list[tuple[str, int, float]]:
    """``(path, size, mtime)`` of every file matching ``patterns`` (paths or shell patterns), sorted by path.

    One ``FileSystems.match`` listing per pattern: a stat per file locally, one list call per prefix on
    ``gs://``/``s3://`` (where the time is the object's last update). No file content is read.
    """
    out: dict[str, tuple[int, float]] = {}
    for result in _beam_fs().match([str(p) for p in patterns]):
        for m in result.metadata_list:
            out[m.path] = (int(m.size_in_bytes), float(m.last_updated_in_seconds or 0.0))
    return [(p, *out[p]) for p in sorted(out)]


def metadata_digest(patterns: list[str], root: str = "") -> str:
    """Fingerprint of the files' names (relative to ``root``), sizes and modification times: O(files), not O(bytes)."""
    h = hashlib.sha256()
    for path, size, mtime in file_metadata(patterns):
        name = os.path.relpath(path, root) if root and not is_remote(path) else path.removeprefix(root)
        h.update(f"{name}\0{size}\0{mtime:.6f}\n".encode("utf-8"))
    return h.hexdigest()[:16]


def source_digest(path: str | os.PathLike, content: bool = False) -> str:
    """Fingerprint of a file or of a directory tree: metadata (default) or every byte (``content``)."""
    path = str(path)
    # Object stores have no directories: a prefix with objects under it is one.
    is_dir = os.path.isdir(path) if not is_remote(path) else bool(_beam_fs().match([join(path, "**")])[0].metadata_list)
    patterns = [join(path, "**")] if is_dir else [path]
    if not content:
        return metadata_digest(patterns, root=path if is_dir else os.path.dirname(path))
    h = hashlib.sha256()
    for p, _, _ in file_metadata(patterns):
        h.update(((os.path.relpath(p, path) if is_dir and not is_remote(p) else p.removeprefix(path)) + "\0").encode("utf-8"))
        h.update(content_digest(p).encode("ascii"))
    return h.hexdigest()[:16]
