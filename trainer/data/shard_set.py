"""Which shards an epoch reads: the region shards a user named, their label shards, seeded order, the split over ranks and workers."""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from schemas.manifest import read_manifest
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, decode_region, iter_shard
from schemas.discovery import list_shards, shard_dir
from ssga_io import fs



def region_shards(regions_dir: str | Path) -> list[str]:
    """The region shards a user named (:func:`schemas.discovery.shard_dir`), in index order: local paths,
    or URLs of any Beam filesystem (``gs://``, ``s3://``…) when the user named one; shards stream from there."""
    return list_shards(shard_dir(regions_dir, REGION_PREFIX), REGION_PREFIX)


def probe_shapes(regions_dir: str) -> tuple[int, int]:
    """(feature width, detector classes) from the first sample of the first non-empty region shard.

    Empty shards are allowed (a small corpus over many shards has some); 1 class when the source
    has no class distribution.
    """
    shards = region_shards(regions_dir)
    for shard in shards:
        for key, members in iter_shard(shard):
            rec = decode_region(members, f"{shard}:{key}")
            return int(rec.features.shape[1]), int(rec.cls_prob.shape[1]) if rec.cls_prob is not None else 1
    raise ValueError(f"{regions_dir}: all {len(shards)} region shards are empty; re-run the regions stage on a non-empty source")


def stale_labels_problem(regions_dir: str | Path, labels_dir: str | Path) -> str | None:
    """Why the label shards were made from other regions than these, or None (also when unknown).

    Both directories must hold a stage manifest (``_MANIFEST.json``); without them nothing is said.
    The labels manifest records the region directory it read (``regions``), how many region
    samples it read (``images.in``) and how many shards it wrote (``num_shards``); a
    ``regions_fingerprint`` field, where a labels manifest has one, is compared directly. The
    labels are stale when the regions they recorded carry another fingerprint than these, or the
    sample or shard counts differ from this regions manifest's.
    """
    rdir, ldir = shard_dir(regions_dir, REGION_PREFIX), shard_dir(labels_dir, LABEL_PREFIX)
    rm, lm = read_manifest(rdir), read_manifest(ldir)
    if not rm or not lm or lm.get("stage") != "labels":
        return None
    fp = rm.get("fingerprint")
    claimed = lm.get("regions_fingerprint")
    if claimed is None and lm.get("regions"):
        try:
            source = read_manifest(lm["regions"]) if not _same_dir(lm["regions"], rdir) else None
        except (OSError, ValueError):  # another machine's path, or a remote URL: not readable here
            source = None
        claimed = source.get("fingerprint") if source else None
    reasons = []
    if claimed and fp and claimed != fp:
        reasons.append(f"they were made from regions {claimed} ({lm.get('regions', '?')}), these are {fp}")
    made_from = (lm.get("images") or {}).get("in")
    have = (rm.get("counts") or {}).get("out")
    if made_from is not None and have is not None and made_from != have:
        reasons.append(f"they were made from {made_from} region samples, these regions hold {have}")
    if lm.get("num_shards") is not None and rm.get("num_shards") is not None and lm["num_shards"] != rm["num_shards"]:
        reasons.append(f"{lm['num_shards']} label shards for {rm['num_shards']} region shards")
    if not reasons:
        return None
    return (f"labels {ldir} do not belong to regions {rdir}: {'; '.join(reasons)}. "
            "Re-run `make labels` (or pipelines.label_pipeline on these regions) to rebuild them.")


def _same_dir(a: str, b: str) -> bool:
    if fs.is_remote(a) or fs.is_remote(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def label_shard_for(region_shard: str | Path, labels_dir: str | Path) -> str:
    """``.../regions-000003.tar`` pairs with ``labels_dir/labels-000003.tar`` (same index; paths or URLs)."""
    name = fs.basename(region_shard).replace(f"{REGION_PREFIX}-", f"{LABEL_PREFIX}-", 1)
    return fs.join(str(labels_dir), name)


def epoch_shards(shards: list[str], seed: int, epoch: int) -> list[str]:
    """The shard order of an epoch: a seeded permutation, identical on every rank."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    return [shards[i] for i in rng.permutation(len(shards))]


def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def example_rng(seed: int, epoch: int, uid: str, stage: str) -> np.random.Generator:
    """Per-example generator: independent of worker count and stream order."""
    return np.random.default_rng(_seed_of(seed, epoch, uid, stage))


def shard_is_empty(path: str) -> bool:
    """True when a tar holds no sample (the regions stage writes such shards for a small corpus)."""
    samples = iter_shard(path)
    try:
        return next(samples, None) is None
    finally:
        samples.close()


def nonempty_region_shards(regions_dir: str | Path) -> list[str]:
    """The region shards that hold at least one sample; an empty shard has nothing to stream."""
    return [s for s in region_shards(regions_dir) if not shard_is_empty(s)]


def worker_shards(shards: list[str], seed: int, epoch: int, rank: int, world: int, worker: int, workers: int) -> list[str]:
    """The shards logical worker ``worker`` of rank ``rank`` reads in ``epoch`` (as wds.split_by_node/_by_worker)."""
    return epoch_shards(shards, seed, epoch)[rank::world][worker::workers]
