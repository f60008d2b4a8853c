"""A Beam filesystem with a URL scheme (``ssgatest://``) backed by a local directory, so tests can run the
label pipeline through the same code paths as ``gs://`` without a network."""
from __future__ import annotations

import os

from apache_beam.io.filesystem import FileMetadata, MatchResult
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

    def create(self, path, *args, **kwargs):
        os.makedirs(os.path.dirname(_local(path)), exist_ok=True)
        return super().create(_local(path), *args, **kwargs)

    def open(self, path, *args, **kwargs):
        return super().open(_local(path), *args, **kwargs)

    def exists(self, path):
        return super().exists(_local(path))

    def delete(self, paths):
        return super().delete([_local(p) for p in paths])

    def match(self, patterns, limits=None):
        results = super().match([_local(p) for p in patterns], limits)
        return [
            MatchResult(p, [FileMetadata(_url(m.path), m.size_in_bytes, m.last_updated_in_seconds) for m in r.metadata_list])
            for p, r in zip(patterns, results)
        ]
