"""Streaming training data: region shard k zipped with label shard k → batches of (image, caption) examples.

The chain, top to bottom (each step a named generator function, as in open_clip's data.py)::

    shard list (shuffled by seed+epoch) → split_by_node → split_by_worker
      → zip_label_shards   pair regions-k.tar with labels-k.tar, check keys sample by sample
      → decode_pairs       npy/json only (schemas.shards, pickle-free), validate each record
      → to_examples        one example per (image, caption); images without captions are counted
      → tokenize           WordPiece; phrase character spans → token spans
      → itm_negatives      shuffle buffer; swap the caption with another image's for 50%
      → mask_text          MLM 15% (80/10/10)
      → mask_regions       15% of regions zeroed; target = detector class distribution
      → sample_pairs       hierarchical region-phrase sampling (trainer.data.sampling)
      → batched(collate)   padded tensors + masks, and the skip counts since the last batch

Memory is bounded by the shuffle buffer, never by the corpus. An epoch is a pure function of
(seed, epoch, world size, workers): shard order, buffer draws and every per-example draw are seeded,
and per-example draws are seeded by the example's key, so the data position (epoch, batches taken)
is all a checkpoint needs to resume exactly.

Bad input (a label shard whose keys do not match, a truncated tar, a record that breaks the
contract such as a phrase span outside its caption) either raises :class:`DataError` naming the
file, the record and the reason, or with ``bad_input="skip"`` is logged and counted; counts travel
to the training loop inside each batch (``batch["skips"]``).
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import logging
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from schemas.manifest import read_manifest

from schemas.records import labels_problem, region_problem
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, ShardError, decode_labels, decode_region, iter_shard
from schemas.discovery import list_shards, shard_dir
from trainer.config import TrainConfig
from trainer.data.masking import IGNORE, mask_regions as pick_masked_regions, mask_tokens
from trainer.data.sampling import SamplerConfig, sample_pairs as sample_example_pairs
from trainer.data.text import tokenize_with_spans

log = logging.getLogger(__name__)


class DataError(ValueError):
    """Training input breaks the shard contract; the message names the file, the record and why."""


class SkipCounter:
    """Raise on bad input, or (``policy="skip"``) log it and count it by kind.

    Each DataLoader worker holds its own copy; ``take()`` hands the counts since the last call to
    the batch being emitted, so the main process sees every worker's skips.
    """

    def __init__(self, policy: str = "raise"):
        if policy not in ("raise", "skip"):
            raise ValueError(f"bad_input policy must be 'raise' or 'skip', got {policy!r}")
        self.policy = policy
        self.counts: Counter[str] = Counter()

    def bad(self, kind: str, where: str, reason: str) -> None:
        if self.policy == "raise":
            raise DataError(f"{where}: {reason}")
        log.warning("skipping %s: %s: %s", kind, where, reason)
        self.counts[kind] += 1

    def note(self, kind: str, n: int = 1) -> None:
        """Count an expected drop that is not an error (e.g. an image without captions)."""
        self.counts[kind] += n

    def take(self) -> dict[str, int]:
        out = dict(self.counts)
        self.counts.clear()
        return out


# ---------------------------------------------------------------------------------------------
# Shards


def region_shards(regions_dir: str | Path) -> list[str]:
    """The region shards a user named (:func:`schemas.discovery.shard_dir`), in index order."""
    return list_shards(shard_dir(regions_dir, REGION_PREFIX), REGION_PREFIX)


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
            source = read_manifest(lm["regions"]) if Path(lm["regions"]).resolve() != Path(rdir).resolve() else None
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


def label_shard_for(region_shard: str | Path, labels_dir: str | Path) -> Path:
    """``.../regions-000003.tar`` pairs with ``labels_dir/labels-000003.tar`` (same index)."""
    name = Path(region_shard).name.replace(f"{REGION_PREFIX}-", f"{LABEL_PREFIX}-", 1)
    return Path(labels_dir) / name


def epoch_shards(shards: list[str], seed: int, epoch: int) -> list[str]:
    """The shard order of an epoch: a seeded permutation, identical on every rank."""
    rng = np.random.default_rng([seed, epoch, 0x5EED])
    return [shards[i] for i in rng.permutation(len(shards))]


def _seed_of(*parts: Any) -> int:
    return int(hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def example_rng(seed: int, epoch: int, uid: str, stage: str) -> np.random.Generator:
    """Per-example generator: independent of worker count and stream order."""
    return np.random.default_rng(_seed_of(seed, epoch, uid, stage))


# ---------------------------------------------------------------------------------------------
# Pipeline stages (generators over dicts)


def zip_label_shards(src: Iterable[dict], labels_dir: str, skips: SkipCounter) -> Iterator[dict]:
    """Read region shard k and label shard k in lockstep; keys must match position by position.

    A mismatch means every later label could belong to the wrong image, so with ``skip`` the rest
    of that shard pair is dropped (and counted), never zipped out of step.
    """
    for item in src:
        rpath = item["url"]
        lpath = label_shard_for(rpath, labels_dir)
        if not lpath.exists():
            skips.bad("missing_label_shard", str(lpath), f"no label shard for region shard {rpath}")
            continue
        try:
            pairs = itertools.zip_longest(iter_shard(rpath), iter_shard(lpath))
            for i, (r, lab) in enumerate(pairs):
                if r is None or lab is None:
                    short, other = (rpath, lpath) if r is None else (lpath, rpath)
                    skips.bad("key_mismatch", f"{short}", f"has fewer samples than {other} (ends before sample {i})")
                    break
                (rkey, rmem), (lkey, lmem) = r, lab
                if rkey != lkey:
                    skips.bad(
                        "key_mismatch",
                        f"{lpath}:{lkey}",
                        f"sample {i} has key {lkey!r} but {rpath} has {rkey!r} there; label and region shards are out of step",
                    )
                    break
                yield {"__key__": rkey, "rpath": rpath, "lpath": str(lpath), "region": rmem, "labels": lmem}
        except ShardError as e:
            skips.bad("unreadable_shard", f"{rpath} + {lpath}", str(e))


def decode_pairs(src: Iterable[dict], skips: SkipCounter) -> Iterator[dict]:
    """Decode npy/json members (pickle-free) and check each record against the contract."""
    for item in src:
        key = item["__key__"]
        rwhere, lwhere = f"{item['rpath']}:{key}", f"{item['lpath']}:{key}"
        try:
            region = decode_region(item["region"], rwhere)
            labels = decode_labels(item["labels"], lwhere)
        except (ShardError, KeyError, TypeError, ValueError) as e:  # missing field, wrong type, bad npy
            skips.bad("bad_record", f"{lwhere}", f"undecodable sample: {e}")
            continue
        reason = region_problem(region)
        if reason:
            skips.bad("bad_record", rwhere, reason)
            continue
        reason = labels_problem(labels) or (
            f"image_id {labels.image_id!r} differs from the region shard's {region.image_id!r}"
            if labels.image_id != region.image_id
            else f"labels have {labels.num_boxes} regions, the region shard {region.num_boxes}"
            if labels.num_boxes != region.num_boxes
            else None
        )
        if reason:
            skips.bad("bad_record", lwhere, reason)
            continue
        yield {"__key__": key, "region": region, "labels": labels}


def to_examples(src: Iterable[dict], max_regions: int, skips: SkipCounter) -> Iterator[dict]:
    """One example per (image, caption): the caption's phrase rows of the label matrices."""
    for item in src:
        region, labels = item["region"], item["labels"]
        if not labels.captions:
            skips.note("images_without_captions")
            continue
        n = min(region.num_boxes, max_regions)
        wh = np.array([region.image_w, region.image_h] * 2, dtype=np.float32)
        image = {
            "feat": region.features[:n],  # float16 as stored: half the bytes from worker to trainer
            "boxes": np.clip(region.boxes[:n] / wh, 0.0, 1.0),  # xyxy relative to the image
            "cls": None if region.cls_prob is None else region.cls_prob[:n].astype(np.float32),
            "image_id": region.image_id,
        }
        row = 0
        for cap in labels.captions:
            k = len(cap["phrases"])
            rows = slice(row, row + k)
            row += k
            yield {
                "uid": f"{item['__key__']}/{cap['caption_id']}",
                **image,
                "text": cap["text"],
                "spans": [(p["start"], p["end"]) for p in cap["phrases"]],
                "align": labels.align[rows, :n],
                "iou": labels.iou[rows, :n],
                "score": labels.score[rows, :n],
            }


def tokenize(src: Iterable[dict], tokenizer, max_len: int, skips: SkipCounter) -> Iterator[dict]:
    """WordPiece ids and token spans; phrases truncated away are dropped (and counted)."""
    for ex in src:
        ids, tspans = tokenize_with_spans(tokenizer, ex["text"], ex["spans"], max_len)
        keep = [i for i, s in enumerate(tspans) if s is not None]
        if len(keep) < len(tspans):
            skips.note("phrases_truncated", len(tspans) - len(keep))
        yield {
            **ex,
            "input_ids": ids,
            "phrase_spans": np.array([tspans[i] for i in keep], dtype=np.int64).reshape(-1, 2),
            "align": ex["align"][keep],
            "iou": ex["iou"][keep],
            "score": ex["score"][keep],
        }


_TEXT_FIELDS = ("text", "spans", "input_ids", "phrase_spans", "align", "iou", "score")


def itm_negatives(
    src: Iterable[dict], buffer_size: int, neg_prob: float, seed: int, epoch: int, rank: int = 0, worker: int = 0
) -> Iterator[dict]:
    """Shuffle through a buffer; for ``neg_prob`` of the examples swap in another image's caption.

    A swapped example is an image-text-matching negative (``itm = 0``) and carries no MLM, region
    or grounding targets, as in ViLBERT: its phrases describe a different image.
    """
    rng = np.random.default_rng([seed, epoch, rank, worker, 0x17])
    buf: list[dict] = []

    def emit(ex: dict) -> dict:
        others = [o for o in buf if o["image_id"] != ex["image_id"]]
        if others and rng.random() < neg_prob:
            other = others[rng.integers(len(others))]
            return {**ex, **{f: other[f] for f in _TEXT_FIELDS}, "uid": f"{ex['uid']}|neg|{other['uid']}", "itm": 0.0}
        return {**ex, "itm": 1.0}

    for ex in src:
        if len(buf) < buffer_size:
            buf.append(ex)
            continue
        i = int(rng.integers(len(buf)))
        out, buf[i] = buf[i], ex
        yield emit(out)
    while buf:
        out = buf.pop(int(rng.integers(len(buf))))
        yield emit(out)


def mask_text(src: Iterable[dict], prob: float, mask_id: int, vocab_size: int, special_ids: set[int], seed: int, epoch: int) -> Iterator[dict]:
    for ex in src:
        if ex["itm"] == 0.0:
            ids, labels = ex["input_ids"], np.full_like(ex["input_ids"], IGNORE)
        else:
            rng = example_rng(seed, epoch, ex["uid"], "mlm")
            ids, labels = mask_tokens(ex["input_ids"], rng, prob, mask_id, vocab_size, special_ids)
        yield {**ex, "input_ids": ids, "mlm_labels": labels}


def mask_regions(src: Iterable[dict], prob: float, seed: int, epoch: int) -> Iterator[dict]:
    """Zero the features of masked regions; only images with a class distribution get masked."""
    for ex in src:
        n = ex["feat"].shape[0]
        if ex["itm"] == 0.0 or ex["cls"] is None:
            masked = np.zeros(n, dtype=bool)
        else:
            masked = pick_masked_regions(n, example_rng(seed, epoch, ex["uid"], "mrc"), prob)
        feat = ex["feat"]
        if masked.any():
            feat = feat.copy()
            feat[masked] = 0.0
        yield {**ex, "feat": feat, "region_masked": masked}


def sample_pairs(src: Iterable[dict], cfg: SamplerConfig, seed: int, epoch: int) -> Iterator[dict]:
    for ex in src:
        if ex["itm"] == 0.0:
            pairs = sample_example_pairs(ex["align"][:0], ex["iou"][:0], ex["score"][:0], cfg, np.random.default_rng(0))
        else:
            pairs = sample_example_pairs(ex["align"], ex["iou"], ex["score"], cfg, example_rng(seed, epoch, ex["uid"], "pairs"))
        yield {**ex, "pairs": pairs}


def collate(examples: list[dict]) -> dict[str, Any]:
    """Pad to the longest text, the most regions and the most pairs in the batch; masks say what is real."""
    b = len(examples)
    t = max(ex["input_ids"].size for ex in examples)
    r = max(ex["feat"].shape[0] for ex in examples)
    dims = {ex["feat"].shape[1] for ex in examples}
    if len(dims) > 1:
        raise DataError(f"feature widths differ within a batch: {sorted(dims)} (examples {[ex['uid'] for ex in examples]})")
    d = dims.pop()
    c = max((ex["cls"].shape[1] for ex in examples if ex["cls"] is not None), default=1)
    k = max(1, max(len(ex["pairs"]) for ex in examples))

    out = {
        "input_ids": torch.zeros(b, t, dtype=torch.long),
        "text_mask": torch.zeros(b, t, dtype=torch.bool),
        "mlm_labels": torch.full((b, t), IGNORE, dtype=torch.long),
        "feat": torch.zeros(b, r, d, dtype=torch.float16),
        "boxes": torch.zeros(b, r, 4),
        "region_mask": torch.zeros(b, r, dtype=torch.bool),
        "region_masked": torch.zeros(b, r, dtype=torch.bool),  # region-classification targets
        "cls_target": torch.zeros(b, r, c),  # dropped below: only the masked rows travel (mrc_target)
        "itm_label": torch.tensor([ex["itm"] for ex in examples], dtype=torch.float32),
        "pair_region": torch.zeros(b, k, dtype=torch.long),
        "pair_start": torch.zeros(b, k, dtype=torch.long),
        "pair_end": torch.ones(b, k, dtype=torch.long),  # padding pairs span token 0 (masked out)
        "pair_target": torch.zeros(b, k),
        "pair_mask": torch.zeros(b, k, dtype=torch.bool),
    }
    for i, ex in enumerate(examples):
        n, nr, np_ = ex["input_ids"].size, ex["feat"].shape[0], len(ex["pairs"])
        out["input_ids"][i, :n] = torch.from_numpy(ex["input_ids"])
        out["text_mask"][i, :n] = True
        out["mlm_labels"][i, :n] = torch.from_numpy(ex["mlm_labels"])
        out["feat"][i, :nr] = torch.from_numpy(ex["feat"])
        out["boxes"][i, :nr] = torch.from_numpy(ex["boxes"])
        out["region_mask"][i, :nr] = True
        if ex["cls"] is not None:
            if ex["cls"].shape[1] != c:
                raise DataError(f"{ex['uid']}: class distribution has {ex['cls'].shape[1]} classes, others in the batch {c}")
            out["region_masked"][i, :nr] = torch.from_numpy(ex["region_masked"])
            out["cls_target"][i, :nr] = torch.from_numpy(ex["cls"])
        if np_:
            p = ex["pairs"]
            spans = ex["phrase_spans"][p.phrase]
            out["pair_region"][i, :np_] = torch.from_numpy(p.region)
            out["pair_start"][i, :np_] = torch.from_numpy(spans[:, 0])
            out["pair_end"][i, :np_] = torch.from_numpy(spans[:, 1])
            out["pair_target"][i, :np_] = torch.from_numpy(p.target)
            out["pair_mask"][i, :np_] = True
    out["uids"] = [ex["uid"] for ex in examples]
    return add_targets(out)


def add_targets(batch: dict[str, Any]) -> dict[str, Any]:
    """Gather indices and targets of the masked positions, computed here on the host.

    ``mlm_pos``/``mrc_pos``: flat indices into [B*T] / [B*R]; ``mlm_target`` the token ids,
    ``mrc_target`` the detector distributions of the masked regions (replacing the dense
    ``cls_target``, ~7x fewer bytes to copy); ``pair_width`` the longest phrase span (a Python int).
    The model gathers by index, so a GPU step never waits on the size of a boolean selection.
    """
    mlm = batch["mlm_labels"].reshape(-1)
    batch["mlm_pos"] = torch.nonzero(mlm != IGNORE).reshape(-1)
    batch["mlm_target"] = mlm[batch["mlm_pos"]]
    batch["mrc_pos"] = torch.nonzero(batch["region_masked"].reshape(-1)).reshape(-1)
    cls = batch.pop("cls_target")
    batch["mrc_target"] = cls.reshape(-1, cls.shape[-1])[batch["mrc_pos"]]
    batch["pair_width"] = int((batch["pair_end"] - batch["pair_start"]).clamp(min=1).max()) if batch["pair_end"].numel() else 1
    return batch


def batched(src: Iterable[dict], batch_size: int, skips: SkipCounter) -> Iterator[dict]:
    """Collate ``batch_size`` examples at a time (the last batch may be short).

    Each batch carries the skip counts since the previous one; counts arising after the last
    example leave in a final empty batch (``n == 0``) so none are lost.
    """
    for chunk in iter(functools.partial(_take, iter(src), batch_size), []):
        yield {**collate(chunk), "n": len(chunk), "skips": skips.take()}
    rest = skips.take()
    if rest:
        yield {"n": 0, "skips": rest}


def _take(it: Iterator, n: int) -> list:
    return list(itertools.islice(it, n))


# ---------------------------------------------------------------------------------------------


def sampler_config(cfg: TrainConfig) -> SamplerConfig:
    """The sampler's knobs are TrainConfig fields of the same names."""
    return SamplerConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SamplerConfig)})


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


def epoch_batches(cfg: TrainConfig, tokenizer, shards: list[str], epoch: int, rank: int = 0, worker: int = 0) -> Iterator[dict]:
    """The whole chain over one worker's shards of one epoch."""
    skips = SkipCounter(cfg.bad_input)
    special = set(tokenizer.all_special_ids)
    src: Iterable[dict] = ({"url": s} for s in shards)
    src = zip_label_shards(src, labels_dir=str(shard_dir(cfg.labels, LABEL_PREFIX)), skips=skips)
    src = decode_pairs(src, skips)
    src = to_examples(src, cfg.max_regions, skips)
    src = tokenize(src, tokenizer, cfg.max_text_len, skips)
    src = itm_negatives(src, cfg.shuffle_buffer, cfg.itm_neg_prob, cfg.seed, epoch, rank, worker)
    src = mask_text(src, cfg.mlm_prob, tokenizer.mask_token_id, len(tokenizer), special, cfg.seed, epoch)
    src = mask_regions(src, cfg.region_mask_prob, cfg.seed, epoch)
    src = sample_pairs(src, sampler_config(cfg), cfg.seed, epoch)
    return batched(src, cfg.batch_size, skips)


def _rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


class OneEpoch(torch.utils.data.IterableDataset):
    """One epoch of this rank's shards, split over the DataLoader workers (each worker is one logical worker)."""

    def __init__(self, cfg: TrainConfig, tokenizer, epoch: int):
        self.cfg, self.tokenizer, self.epoch = cfg, tokenizer, epoch
        self.shards = region_shards(cfg.regions)
        self.rank, self.world = _rank_world()

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        mine = worker_shards(self.shards, self.cfg.seed, self.epoch, self.rank, self.world, worker, workers)
        return epoch_batches(self.cfg, self.tokenizer, mine, self.epoch, self.rank, worker)


def make_loader(cfg: TrainConfig, tokenizer, epoch: int) -> torch.utils.data.DataLoader:
    """One epoch's batches (for evaluation and tests); training uses :class:`EndlessStreams`.

    Batches come out of the workers already collated (``batch_size=None``), in a fixed worker order.
    """
    return torch.utils.data.DataLoader(
        OneEpoch(cfg, tokenizer, epoch), batch_size=None, num_workers=cfg.num_workers,
        prefetch_factor=4 if cfg.num_workers > 0 else None,
    )


class EndlessStreams(torch.utils.data.IterableDataset):
    """Every logical worker streams its shards epoch after epoch, without end.

    The DataLoader starts its workers once and never again (no re-spawn at epoch boundaries), and
    no rank ever runs out of batches, so ranks need no per-step agreement. Each item is tagged
    with its logical worker, epoch and index in that worker's epoch, and every worker epoch ends
    with a marker (``n == 0, "end": True``), so the consumer knows each worker's position.

    With ``batch_size=None`` the DataLoader yields from physical workers 0, 1, ..., W-1 in turn; a
    resumed loader starts again at physical 0, so physical worker ``p`` plays logical worker
    ``(p + offset) % W`` with ``offset`` the logical worker whose turn came next at the checkpoint.
    Resume then continues every logical worker at its (epoch, index) in the original order.
    """

    def __init__(self, cfg: TrainConfig, tokenizer, shards: list[str], rank: int, world: int,
                 positions: list[list[int]], offset: int):
        self.cfg, self.tokenizer, self.shards = cfg, tokenizer, shards
        self.rank, self.world = rank, world
        self.positions, self.offset = positions, offset

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers = len(self.positions)
        worker = ((info.id if info else 0) + self.offset) % workers
        epoch, skip = self.positions[worker]
        while True:
            mine = worker_shards(self.shards, self.cfg.seed, epoch, self.rank, self.world, worker, workers)
            items = itertools.chain(epoch_batches(self.cfg, self.tokenizer, mine, epoch, self.rank, worker), [{"n": 0, "skips": {}, "end": True}])
            # Items before ``skip`` were trained on before the checkpoint: recompute (the buffer
            # and masks depend on them) but do not emit.
            for index, item in enumerate(items):
                if index >= skip:
                    yield {**item, "worker": worker, "epoch": epoch, "index": index}
            epoch, skip = epoch + 1, 0
