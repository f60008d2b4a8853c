"""The task-dataset generators' shared plumbing: atomic dataset writing with a manifest, and the common CLI."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from schemas.manifest import MANIFEST_NAME as MANIFEST, fingerprint
from ssga_io import atomic

CORPUS_KIND = "ssga-synthetic-corpus"


def refuse_foreign(out: Path, kind: str, what: str) -> None:
    """Raise ``FileExistsError`` unless ``out`` is absent, empty or a previous ``kind`` dataset (so a
    generator replaces only its own output, never a user's directory)."""
    if out.exists() and any(out.iterdir()):
        prev = out / MANIFEST
        if not prev.exists() or json.loads(prev.read_text()).get("kind") != kind:
            raise FileExistsError(f"{out} exists and is not {what}; refusing to replace it")


def write_dataset(out: str | os.PathLike, kind: str, files: dict[str, str], params: dict, counts: dict, notes: dict | None = None) -> dict[str, Any]:
    """Write ``files`` (relative path → text) and a manifest into ``out`` atomically, replacing only a
    previous dataset of the same ``kind``. Returns the manifest (top-level files' sha256 in ``files``)."""
    out = Path(out)
    refuse_foreign(out, kind, f"a {kind} directory")
    tmp = atomic.temp_name(out)  # a directory, renamed whole
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    digests = {}
    for name, text in sorted(files.items()):
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text, encoding="utf-8")
        if "/" not in name:
            digests[name] = hashlib.sha256(text.encode()).hexdigest()
    manifest = {"kind": kind, "fingerprint": fingerprint(params), **params, "counts": counts, **(notes or {}), "files": digests}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return manifest


def corpus_params(corpus: str) -> tuple[int, int]:
    """``(num_images, seed)`` of a synthetic corpus directory, from its manifest."""
    path = Path(corpus) / MANIFEST
    if not path.exists():
        raise ValueError(f"{corpus}: no {MANIFEST}; --corpus must be a directory written by python -m pipelines.synthetic")
    m = json.loads(path.read_text())
    if m.get("kind") != CORPUS_KIND:
        raise ValueError(f"{path}: not a synthetic corpus manifest (kind {m.get('kind')!r})")
    return int(m["num_images"]), int(m["seed"])


def cli(prog: str, description: str, generate: Callable[..., dict], extra: Callable[[argparse.ArgumentParser], None],
        argv: list[str] | None, summary: Callable[[dict], str] | None = None) -> None:  # fmt: skip
    """The generators' shared CLI: --out, --num-images, --seed, --corpus plus ``extra`` options passed
    to ``generate`` by name; prints ``summary(manifest)`` (default: the counts as JSON); a user's
    mistake is one line on stderr and exit status 2."""
    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("--out", required=True, help="output directory (replaced if it holds a previous dataset of this kind)")
    ap.add_argument("--num-images", type=int, help="images 0..N-1 of the corpus (default: the --corpus's)")
    ap.add_argument("--seed", type=int, help="the corpus's seed (default 0, or the --corpus's)")
    ap.add_argument("--corpus", default="", help="a synthetic corpus directory: take --num-images and --seed from its manifest")
    extra(ap)
    args = ap.parse_args(argv)
    try:
        num_images, seed = args.num_images, args.seed
        if args.corpus:
            c_num, c_seed = corpus_params(args.corpus)
            if (num_images is not None and num_images != c_num) or (seed is not None and seed != c_seed):
                raise ValueError(f"--num-images/--seed differ from the corpus's ({c_num} images, seed {c_seed}); drop them or --corpus")
            num_images, seed = c_num, c_seed
        if num_images is None:
            raise ValueError("give --num-images N (or --corpus DIR)")
        opts = {k: v for k, v in vars(args).items() if k not in ("out", "num_images", "seed", "corpus")}
        m = generate(args.out, num_images, 0 if seed is None else seed, **opts)
    except (ValueError, FileExistsError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    text = summary(m) if summary else json.dumps(m["counts"], sort_keys=True)
    print(f"wrote {text} to {args.out}")
