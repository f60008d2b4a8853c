"""Stage manifests, fingerprints and dead-letter records.

Every stage publishes into a directory named by its fingerprint and writes ``_MANIFEST.json`` last,
atomically. A directory without a manifest is incomplete and is redone; one with a manifest whose
fingerprint matches is skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

from schemas.records import SCHEMA_VERSION
from ssga_io import fs

MANIFEST_NAME = "_MANIFEST.json"
DEAD_LETTER_NAME = "_DEAD_LETTER.jsonl"
# ``<stage root>/CURRENT`` names (by fingerprint) the stage's current output ``<stage root>/<fp>/``;
# written after the output is complete, so it never points at a partial directory.
CURRENT_NAME = "CURRENT"


def fingerprint(*parts: Any) -> str:
    """sha256 (first 16 hex digits) of the canonical JSON of ``parts``: configs, upstream fingerprints."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def files_digest(paths: Iterable[str | os.PathLike]) -> str:
    """Content hash of files (e.g. a model's weights), independent of where they live (local paths or URLs)."""
    h = hashlib.sha256()
    for p in sorted(paths, key=lambda p: PurePosixPath(str(p)) if fs.is_remote(p) else Path(p)):
        h.update(fs.basename(p).encode("utf-8") + b"\0")
        with fs.open_read(p) as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def software_versions(packages: Iterable[str] = ("apache-beam", "numpy", "pyarrow", "spacy", "torch", "transformers")) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def dead_letter(stage: str, record_id: str, source: str, reason: str) -> dict[str, str]:
    """One dead-letter line: which record, from where, and why it was rejected."""
    return {"stage": stage, "record_id": str(record_id), "source": str(source), "reason": reason}


def write_manifest(directory: str | os.PathLike, manifest: dict[str, Any]) -> dict[str, Any]:
    """Atomically publish ``_MANIFEST.json`` (local path or Beam filesystem URL); adds schema version,
    software and time if absent. Returns the manifest as written."""
    body = {"schema_version": SCHEMA_VERSION, "software": software_versions(), **manifest}
    body.setdefault("created_unix", int(time.time()))
    text = json.dumps(body, indent=2, sort_keys=True) + "\n"
    fs.write_bytes(fs.join(directory, MANIFEST_NAME), text.encode("utf-8"))
    return json.loads(text)


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The stage's ``_MANIFEST.json`` (local path or Beam filesystem URL); None while it is incomplete."""
    path = fs.join(directory, MANIFEST_NAME)
    return json.loads(fs.read_text(path)) if fs.exists(path) else None


def is_complete(directory: str | os.PathLike, expected_fingerprint: str) -> bool:
    m = read_manifest(directory)
    return m is not None and m.get("fingerprint") == expected_fingerprint


def reconciles(counts: dict[str, int]) -> bool:
    """``in == out + rejected``: nothing was lost."""
    return counts.get("in", -1) == counts.get("out", 0) + counts.get("rejected", 0)
