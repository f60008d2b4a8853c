"""A Beam filesystem with a URL scheme (``ssgatest://``) backed by a local directory, so tests can run the
pipelines and the trainer through the same code paths as ``gs://`` without a network.

Importing this module registers the scheme with Beam (in this process and in any forked child). The
root directory is ``$SSGA_TEST_REMOTE_ROOT``, read on every call, so one test can point it at its tmp dir.
"""
from __future__ import annotations

import os
import shutil

from apache_beam.io.filesystem import BeamIOError, FileMetadata, MatchResult
from apache_beam.io.localfilesystem import LocalFileSystem

SCHEME = "ssgatest"
ROOT_ENV = "SSGA_TEST_REMOTE_ROOT"


def _local(url: str) -> str:
    if not url.startswith(f"{SCHEME}://"):  # LocalFileSystem's own helpers call back with local paths
        return url
    return os.path.join(os.environ[ROOT_ENV], url[len(SCHEME) + 3 :])


def _url(local: str) -> str:
    return f"{SCHEME}://" + os.path.relpath(local, os.environ[ROOT_ENV])


class FakeRemoteFileSystem(LocalFileSystem):
    @classmethod
    def scheme(cls):
        return SCHEME

    def join(self, basepath, *paths):
        return "/".join([basepath.rstrip("/"), *paths])

    def split(self, path):
        head, _, tail = path.rpartition("/")
        return head, tail

    def mkdirs(self, path):
        pass

    def create(self, path, *args, **kwargs):
        os.makedirs(os.path.dirname(_local(path)), exist_ok=True)
        return super().create(_local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(_local(path), *args, **kwargs)

    def exists(self, path):
        if path.startswith(f"{SCHEME}://"):
            return os.path.isfile(_local(path))  # as on an object store: a prefix is no object
        return super().exists(path)  # LocalFileSystem's listing asks about directories

    def size(self, path):
        return super().size(_local(path))

    def last_updated(self, path):
        return super().last_updated(_local(path))

    def checksum(self, path):
        return super().checksum(_local(path))

    def metadata(self, path):
        m = super().metadata(_local(path))
        return FileMetadata(path, m.size_in_bytes, m.last_updated_in_seconds)

    def copy(self, sources, destinations):
        for d in destinations:
            os.makedirs(os.path.dirname(_local(d)), exist_ok=True)
        return super().copy([_local(p) for p in sources], [_local(p) for p in destinations])

    def rename(self, sources, destinations):
        for d in destinations:
            os.makedirs(os.path.dirname(_local(d)), exist_ok=True)
        return super().rename([_local(p) for p in sources], [_local(p) for p in destinations])

    def delete(self, paths):
        # LocalFileSystem.delete lists through self.match, which answers with URLs: delete directly.
        missing = []
        for p in paths:
            local = _local(p)
            if os.path.isdir(local):
                shutil.rmtree(local)
            elif os.path.exists(local):
                os.remove(local)
            else:
                missing.append(p)
        if missing:
            raise BeamIOError("Delete operation failed", {p: FileNotFoundError(p) for p in missing})

    def match(self, patterns, limits=None):
        results = super().match([_local(p) for p in patterns], limits)
        return [
            MatchResult(p, [FileMetadata(_url(m.path), m.size_in_bytes, m.last_updated_in_seconds) for m in r.metadata_list])
            for p, r in zip(patterns, results)
        ]
