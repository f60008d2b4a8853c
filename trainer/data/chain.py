"""Streaming training data: region shard k zipped with label shard k → batches of (image, caption) examples.

The chain, top to bottom (each step a named generator function, as in open_clip's data.py)::

    shard list (shuffled by seed+epoch) → split_by_node → split_by_worker
      → zip_label_shards   pair regions-k.tar with labels-k.tar, check keys sample by sample
      → decode_pairs       npy/json only (schemas.shards, pickle-free), validate each record
      → to_examples        one example per (image, caption); images without captions are counted
      → tokenize           WordPiece; phrase character spans → token spans
      → itm_negatives      shuffle buffer; 50% negatives: another image's caption, or (itm_hard_neg_share
                           of them) this caption with one attribute/object/relation changed
      → mask_text          MLM 15% (80/10/10); negatives: no targets (inputs masked with itm_mask_negatives)
      → mask_regions       15% of regions zeroed; target = detector class distribution (same for negatives)
      → sample_pairs       hierarchical region-phrase sampling (trainer.data.sampling)
      → batched(collate)   padded tensors + masks, and the skip counts since the last batch

The steps live in :mod:`trainer.data.read` (zip, decode, examples), :mod:`trainer.data.examples`
(tokenize, negatives, masking, sampling) and :mod:`trainer.data.batch` (collate); which shards an epoch
reads is :mod:`trainer.data.shard_set`. This module composes them and streams (per epoch, or endless per worker).

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
import itertools
import logging
from typing import Iterable, Iterator

import torch

from schemas.shards import LABEL_PREFIX
from schemas.discovery import shard_dir
from trainer.config import TrainConfig
from trainer.data.batch import batched
from trainer.data.pack import Handover
from trainer.data.examples import itm_negatives, mask_regions, mask_text, sample_pairs, tokenize
from trainer.data.read import SkipCounter, decode_pairs, to_examples, zip_label_shards
from trainer.data.sampling import SamplerConfig
from trainer.data.shard_set import region_shards, worker_shards

log = logging.getLogger(__name__)
PREFETCH = 4  # batches each loader worker keeps ready


def sampler_config(cfg: TrainConfig) -> SamplerConfig:
    """The sampler's knobs are TrainConfig fields of the same names."""
    return SamplerConfig(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(SamplerConfig)})


def epoch_batches(cfg: TrainConfig, tokenizer, shards: list[str], epoch: int, rank: int = 0, worker: int = 0) -> Iterator[dict]:
    """The whole chain over one worker's shards of one epoch (μ-VLA: :mod:`trainer.data.unpaired`'s chain)."""
    if cfg.method == "mu_vla":
        from trainer.data.unpaired import unpaired_batches

        return unpaired_batches(cfg, tokenizer, shards, epoch, rank, worker)
    skips = SkipCounter(cfg.bad_input)
    special = set(tokenizer.all_special_ids)
    src: Iterable[dict] = ({"url": s} for s in shards)
    src = zip_label_shards(src, labels_dir=str(shard_dir(cfg.labels, LABEL_PREFIX)), skips=skips)
    src = decode_pairs(src, skips)
    src = to_examples(src, cfg.max_regions, skips)
    src = tokenize(src, tokenizer, cfg.max_text_len, skips)
    src = itm_negatives(src, cfg.shuffle_buffer, cfg.itm_neg_prob, cfg.seed, epoch, rank, worker,
                        cfg.itm_hard_neg_share, tokenizer, cfg.max_text_len, skips)
    src = mask_text(src, cfg.mlm_prob, tokenizer.mask_token_id, len(tokenizer), special, cfg.seed, epoch, cfg.itm_mask_negatives)
    src = mask_regions(src, cfg.region_mask_prob, cfg.seed, epoch, cfg.itm_mask_negatives)
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
        prefetch_factor=PREFETCH if cfg.num_workers > 0 else None,
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
        handover = Handover(PREFETCH + 2) if info else (lambda item: item)  # a worker process: one shared buffer a batch
        epoch, skip = self.positions[worker]
        while True:
            mine = worker_shards(self.shards, self.cfg.seed, epoch, self.rank, self.world, worker, workers)
            items = itertools.chain(epoch_batches(self.cfg, self.tokenizer, mine, epoch, self.rank, worker), [{"n": 0, "skips": {}, "end": True}])
            # Items before ``skip`` were trained on before the checkpoint: recompute (the buffer
            # and masks depend on them) but do not emit.
            for index, item in enumerate(items):
                if index >= skip:
                    yield handover({**item, "worker": worker, "epoch": epoch, "index": index})
            epoch, skip = epoch + 1, 0
