"""File access that works on local paths and on any Beam filesystem (``gs://``, ``s3://``, ``hdfs://``).

Local paths keep their fast path (plain ``open``, atomic temp + rename) and never import Beam; a path
with a scheme goes through ``apache_beam.io.filesystems.FileSystems`` (imported on first use), where a
write goes to a hidden temp object renamed into place, which gives the same "never half a file"
guarantee on every filesystem. Everything the pipelines read or write, and every shard the trainer
streams, goes through here, so one command runs on a laptop and on Dataflow/Flink workers with
``gs://`` paths. A scheme no installed filesystem handles is an :class:`UnsupportedURL` naming the URL
and what to install.
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
import uuid
from pathlib import Path
from typing import Iterator

from ssga_io import atomic


# Which pip extra brings Beam's filesystem for a scheme (the one-line error names it).
_EXTRAS = {"gs": "apache-beam[gcp]", "s3": "apache-beam[aws]", "azfs": "apache-beam[azure]", "hdfs": "apache-beam and the hdfs package (pip install hdfs)"}


class UnsupportedURL(ValueError):
    """A URL whose scheme no installed Beam filesystem handles."""


def scheme(path: str | os.PathLike) -> str:
    return str(path).split("://", 1)[0] if is_remote(path) else ""


def _install_hint(url: str) -> str:
    s = scheme(url)
    return _EXTRAS.get(s, f"the package that registers a Beam filesystem for {s}://")


def _beam_fs(path: str | os.PathLike | None = None):
    """Beam's ``FileSystems``, imported on first use so that local-only callers (the trainer) need not
    load Beam. With ``path``: checks first that some installed filesystem handles its scheme."""
    try:
        from apache_beam.io.filesystems import FileSystems
    except ImportError:
        raise UnsupportedURL(f"{path}: reading URLs needs Apache Beam's filesystems: pip install {_install_hint(str(path))}") from None
    if path is not None:
        try:
            FileSystems.get_filesystem(str(path))
        except ValueError:
            raise UnsupportedURL(f"{path}: no filesystem for {scheme(path)}:// is installed: pip install {_install_hint(str(path))}") from None
    return FileSystems


def is_remote(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def join(base: str | os.PathLike, *parts: str) -> str:
    return posixpath.join(str(base), *parts) if is_remote(base) else os.path.join(str(base), *parts)


def dirname(path: str | os.PathLike) -> str:
    return posixpath.dirname(str(path)) if is_remote(path) else str(Path(path).resolve().parent)


def basename(path: str | os.PathLike) -> str:
    return posixpath.basename(str(path).rstrip("/")) if is_remote(path) else os.path.basename(str(path))


def exists(path: str | os.PathLike) -> bool:
    return _beam_fs(path).exists(str(path)) if is_remote(path) else os.path.exists(path)


def isfile(path: str | os.PathLike) -> bool:
    """A file (local) or an object (remote) at exactly ``path``."""
    if not is_remote(path):
        return os.path.isfile(path)
    return _beam_fs(path).exists(str(path)) and not str(path).endswith("/")


def isdir(path: str | os.PathLike) -> bool:
    """A local directory, or a remote prefix with objects under it (object stores have no directories)."""
    if not is_remote(path):
        return os.path.isdir(path)
    return bool(_beam_fs(path).match([join(path, "**")])[0].metadata_list)


def size(path: str | os.PathLike) -> int:
    if not is_remote(path):
        return os.path.getsize(path)
    found = _beam_fs(path).match([str(path)])[0].metadata_list
    if not found:
        raise FileNotFoundError(f"{path}: no such file")
    return int(found[0].size_in_bytes)


@contextlib.contextmanager
def open_read(path: str | os.PathLike) -> Iterator[io.RawIOBase]:
    """A binary stream of the file, seekable (local files; Beam's gs/s3/hdfs readers), never decompressed."""
    if not is_remote(path):
        with open(path, "rb") as f:
            yield f
        return
    from apache_beam.io.filesystem import CompressionTypes

    with _beam_fs(path).open(str(path), compression_type=CompressionTypes.UNCOMPRESSED) as f:
        yield f


def read_bytes(path: str | os.PathLike) -> bytes:
    if not is_remote(path):
        return Path(path).read_bytes()
    with open_read(path) as f:
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
        with open_read(path) as raw:
            yield io.TextIOWrapper(raw, encoding="utf-8", newline="")


def glob(pattern: str) -> list[str]:
    """Sorted paths matching a shell pattern in its last component."""
    if not is_remote(pattern):
        return sorted(str(p) for p in Path(os.path.dirname(pattern) or ".").glob(os.path.basename(pattern)))
    result = _beam_fs(pattern).match([pattern])[0]
    name = posixpath.basename(pattern)
    return sorted(m.path for m in result.metadata_list if fnmatch.fnmatch(posixpath.basename(m.path), name))


def temp_path(path: str | os.PathLike) -> str:
    """A hidden name beside ``path``, unique across processes and machines (shard globs never match a dot-file)."""
    head, tail = (posixpath.split(str(path)) if is_remote(path) else os.path.split(str(path)))
    name = f".{tail}.tmp-{os.getpid()}-{uuid.uuid4().hex[:12]}"
    return posixpath.join(head, name) if is_remote(path) else os.path.join(head, name)


@contextlib.contextmanager
def open_write(path: str | os.PathLike, fsync: bool = False) -> Iterator[io.RawIOBase]:
    """A binary stream that publishes ``path`` when the block ends without error, all at once.

    Local: a temp file beside it, renamed over it. Remote: a temp object, then ``FileSystems.rename``
    (on object stores a server-side copy), so a reader never sees a partial file on any filesystem,
    including ones where an object is visible while it is written (HDFS). On error the temp is removed.
    The stream is write-only and may not support ``tell``/``seek``. ``fsync``: local files reach the disk
    before the rename (remote stores are durable once the object is closed).
    """
    if not is_remote(path):
        final = Path(path)
        final.parent.mkdir(parents=True, exist_ok=True)
        with atomic.atomic_path(final, fsync=fsync) as tmp:
            with open(tmp, "wb") as f:
                yield f
        return
    fsys = _beam_fs(path)
    tmp = temp_path(path)
    try:
        with fsys.create(tmp) as f:
            yield f
        try:
            fsys.rename([tmp], [str(path)])  # object stores copy over the old object: readers see old or new
        except Exception:
            if not fsys.exists(str(path)):
                raise
            fsys.delete([str(path)])  # HDFS renames only onto a free name
            fsys.rename([tmp], [str(path)])
    except BaseException:
        with contextlib.suppress(Exception):
            if fsys.exists(tmp):
                fsys.delete([tmp])
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Publish ``data`` at ``path`` all at once (readers never see a partial file)."""
    if not is_remote(path):
        atomic.write_bytes(path, data)
        return
    with open_write(path) as f:
        f.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def makedirs(path: str | os.PathLike) -> None:
    """Create a local directory; a no-op for a remote prefix (objects create their own)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)


def remove(path: str | os.PathLike) -> None:
    """Remove one file if it exists."""
    if is_remote(path):
        if _beam_fs(path).exists(str(path)):
            _beam_fs(path).delete([str(path)])
    else:
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)


@contextlib.contextmanager
def local_copy(path: str | os.PathLike) -> Iterator[str]:
    """A local path with the file's content: the file itself, or a temporary download of a remote one."""
    if not is_remote(path):
        yield str(path)
        return
    with tempfile.TemporaryDirectory(prefix="ssga-") as d:
        local = os.path.join(d, posixpath.basename(str(path)))
        with open_read(path) as src, open(local, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        yield local


def remove_tree(path: str | os.PathLike) -> None:
    if is_remote(path):
        matches = _beam_fs(path).match([join(path, "**")])[0].metadata_list
        if matches:
            _beam_fs(path).delete([m.path for m in matches])
    elif os.path.exists(path):
        shutil.rmtree(path)


def content_digest(path: str | os.PathLike) -> str:
    """Same value as ``schemas.manifest.files_digest([path])`` for one file, for local or remote paths."""
    h = hashlib.sha256()
    h.update(posixpath.basename(str(path)).encode("utf-8") + b"\0")
    with open_read(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def file_metadata(patterns: list[str]) -> list[tuple[str, int, float]]:
    """``(path, size, mtime)`` of every file matching ``patterns`` (paths or shell patterns), sorted by path.

    One ``FileSystems.match`` listing per pattern: a stat per file locally, one list call per prefix on
    ``gs://``/``s3://`` (where the time is the object's last update). No file content is read.
    """
    out: dict[str, tuple[int, float]] = {}
    patterns = [str(p) for p in patterns]
    for result in _beam_fs(next((p for p in patterns if is_remote(p)), None)).match(patterns):
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
    is_dir = isdir(path)
    patterns = [join(path, "**")] if is_dir else [path]
    if not content:
        return metadata_digest(patterns, root=path if is_dir else os.path.dirname(path))
    h = hashlib.sha256()
    for p, _, _ in file_metadata(patterns):
        h.update(((os.path.relpath(p, path) if is_dir and not is_remote(p) else p.removeprefix(path)) + "\0").encode("utf-8"))
        h.update(content_digest(p).encode("ascii"))
    return h.hexdigest()[:16]
