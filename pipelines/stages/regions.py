"""The regions stage's Beam side: the source scan, the elements, the DoFns that read TSV chunks and region files, and the composite transforms that write region shards."""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import apache_beam as beam
from tqdm import tqdm


from pipelines.cli import progress_enabled
from pipelines.stage_guard import reason_kind
from schemas.manifest import DEAD_LETTER_NAME, dead_letter
from schemas.records import RegionRecord
from schemas.shards import REGION_PREFIX, encode_region, sample_key, shard_index, shard_name, write_shard
from pipelines.formats.readers import Rejected, is_blank, iter_lines, parse_butd_bytes, read_region_file
from pipelines.formats.region_formats import LXMERT_NUM_CLASSES
from ssga_io import fs


log = logging.getLogger("pipelines.regions")
STAGE = "regions"
# The pipeline's last step writes the merged shard summaries here (beside the shards, through Beam's
# FileSystems); the driver reads it back from the same URL, writes the manifest, and removes it.
SUMMARY_NAME = "_SHARD_SUMMARY.json"
DEAD = "dead_letter"
CHUNK_BYTES = 16 << 20  # TSV byte range read by one worker task


# ---------------------------------------------------------------------------------------------
# Elements flowing through the pipeline


@dataclass
class Sample:
    """A validated record, encoded as its tar members; ``order`` is its position in the source."""

    image_id: str
    order: tuple[int, ...]
    source: str
    members: dict[str, bytes]
    feature_dim: int
    has_cls: bool


@dataclass
class DeadLetter:
    order: tuple[int, ...]
    rejected: Rejected

    def as_json(self) -> dict[str, str]:
        r = self.rejected
        return dead_letter(STAGE, r.record_id, r.source, r.reason)


@dataclass
class TsvChunk:
    """Lines starting in bytes ``[start, end)`` of ``path`` (the ``file_index``-th TSV given); the
    first is line number ``first_line``."""

    file_index: int
    path: str
    start: int
    end: int
    first_line: int


class ReadTsvChunk(beam.DoFn):
    """A byte range of a TSV → ``(source position, "path:line", raw line)`` of its non-blank lines."""

    def process(self, chunk: TsvChunk) -> Iterator[tuple[tuple[int, int], str, bytes]]:
        for line_no, raw in iter_lines(chunk.path, chunk.start, chunk.end, chunk.first_line):
            if not is_blank(raw):
                yield (chunk.file_index, line_no), f"{chunk.path}:{line_no}", raw


def _check_dim(rec: RegionRecord, feature_dim: int | None) -> str | None:
    d = rec.features.shape[1]
    return None if feature_dim is None or d == feature_dim else f"features have dimension {d} but the stage expects {feature_dim}"


def _tag(item: RegionRecord | Rejected, order: tuple[int, ...], source: str, feature_dim: int | None):
    """Route a reader result: a sample to the main output, a rejection to the dead letter."""
    if isinstance(item, RegionRecord):
        reason = _check_dim(item, feature_dim)
        if reason is None:
            yield Sample(item.image_id, order, source, encode_region(item), int(item.features.shape[1]), item.cls_prob is not None)
            return
        item = Rejected(item.image_id, source, reason)
    yield beam.pvalue.TaggedOutput(DEAD, DeadLetter(order, item))


class ParseTsvLine(beam.DoFn):
    """``(position, source, raw line)`` → Sample, or a DeadLetter on the ``dead_letter`` output."""

    def __init__(self, lxmert: bool, inclusive: bool, feature_dim: int | None, num_classes: int = LXMERT_NUM_CLASSES):
        self.lxmert, self.inclusive, self.feature_dim, self.num_classes = lxmert, inclusive, feature_dim, num_classes

    def process(self, element: tuple[tuple[int, int], str, bytes]):
        order, source, raw = element
        yield from _tag(parse_butd_bytes(raw, source, self.lxmert, self.inclusive, self.num_classes), order, source, self.feature_dim)


class ReadRegionFile(beam.DoFn):
    """``(file index, path)`` of a per-image ``.npz``/``.npy`` → Sample, or a DeadLetter."""

    def __init__(self, allow_pickle: bool, inclusive: bool, feature_dim: int | None):
        self.allow_pickle, self.inclusive, self.feature_dim = allow_pickle, inclusive, feature_dim

    def process(self, element: tuple[int, str]):
        index, path = element
        yield from _tag(read_region_file(path, self.allow_pickle, self.inclusive), (index,), path, self.feature_dim)


def drop_duplicate_ids(element: tuple[int, Iterable[Any]]) -> tuple[int, list[Sample], list[DeadLetter]]:
    """One shard's elements → (shard, samples with unique image ids, dead letters).

    The sample at the earliest source position wins, whatever order the runner delivered them in.
    """
    shard, items = element
    items = list(items)  # one shard: the bound on this stage's memory
    samples = sorted((x for x in items if isinstance(x, Sample)), key=lambda s: (s.image_id, s.order))
    dead = [x for x in items if isinstance(x, DeadLetter)]
    kept: dict[str, Sample] = {}
    for s in samples:
        first = kept.setdefault(s.image_id, s)
        if first is not s:
            dead.append(DeadLetter(s.order, Rejected(s.image_id, s.source, f"duplicate image_id (first at {first.source})")))
    return shard, list(kept.values()), dead


class WriteShard(beam.DoFn):
    """(shard, samples, dead letters) → ``regions-<shard>.tar`` (through Beam's FileSystems), and the
    shard's summary as the output element (counts and dead letters travel on in the pipeline).

    The shard is written atomically and fully determined by its inputs, so a retried bundle
    rewrites the same bytes.
    """

    def __init__(self, out_dir: str):
        self.out_dir = out_dir

    def process(self, element: tuple[int, list[Sample], list[DeadLetter]]) -> Iterator[dict[str, Any]]:
        shard, samples, dead = element
        keys: dict[str, Sample] = {}
        for s in samples:
            key = sample_key(s.image_id)
            if key in keys:  # two distinct ids with one tar key would be a sample_key bug: stop
                raise ValueError(f"image ids {keys[key].image_id!r} and {s.image_id!r} share tar key {key!r}")
            keys[key] = s
        name = shard_name(REGION_PREFIX, shard)
        path = fs.join(self.out_dir, name)
        write_shard(path, {k: s.members for k, s in keys.items()})
        yield {
            "shard": shard,
            "name": name,
            "samples": len(samples),
            "bytes": fs.size(path),
            "feature_dims": sorted({s.feature_dim for s in samples}),
            "with_cls_prob": sum(s.has_cls for s in samples),
            "dead_letter": [[list(d.order), d.as_json()] for d in sorted(dead, key=lambda d: (d.order, d.rejected.reason))],
        }


def publish_summary(summaries: list[dict[str, Any]], out_dir: str) -> int:
    """All shards' summaries → ``_DEAD_LETTER.jsonl`` (sorted by source position) and ``_SHARD_SUMMARY.json``
    (per-shard counts, dimensions, rejections by reason) at ``out_dir``; returns the number of shards.

    Runs once, on a worker, at the end of the pipeline: the driver never reads a worker's local disk.
    """
    summaries = sorted(summaries, key=lambda s: s["shard"])
    dead = [(tuple(order), d) for s in summaries for order, d in s["dead_letter"]]
    dead_json = [d for _, d in sorted(dead, key=lambda x: (x[0], x[1]["record_id"], x[1]["reason"]))]
    fs.write_bytes(fs.join(out_dir, DEAD_LETTER_NAME), "".join(json.dumps(d, sort_keys=True) + "\n" for d in dead_json).encode("utf-8"))
    merged = {
        "shards": [{k: v for k, v in s.items() if k != "dead_letter"} for s in summaries],
        "rejected": len(dead_json),
        "rejected_by_reason": dict(sorted(Counter(reason_kind(d["reason"]) for d in dead_json).items())),
    }
    fs.write_bytes(fs.join(out_dir, SUMMARY_NAME), (json.dumps(merged, sort_keys=True) + "\n").encode("utf-8"))
    return len(summaries)


# ---------------------------------------------------------------------------------------------
# Composite transforms


class ReadTsvRegions(beam.PTransform):
    """TSV byte ranges → samples (main) and dead letters (``dead_letter``)."""

    def __init__(self, scan: SourceScan, lxmert: bool, inclusive: bool, feature_dim: int | None, num_classes: int = LXMERT_NUM_CLASSES):
        super().__init__()
        self.scan, self.lxmert, self.inclusive, self.feature_dim, self.num_classes = scan, lxmert, inclusive, feature_dim, num_classes

    def expand(self, pbegin):
        return (
            pbegin
            | "ListByteRanges" >> beam.Create(self.scan.chunks)
            | "SpreadRanges" >> beam.Reshuffle()
            | "ReadLines" >> beam.ParDo(ReadTsvChunk())
            | "ParseAndValidate" >> beam.ParDo(ParseTsvLine(self.lxmert, self.inclusive, self.feature_dim, self.num_classes)).with_outputs(DEAD, main="samples")
        )


class ReadRegionFiles(beam.PTransform):
    """Per-image region files → samples (main) and dead letters (``dead_letter``)."""

    def __init__(self, scan: SourceScan, allow_pickle: bool, inclusive: bool, feature_dim: int | None):
        super().__init__()
        self.scan, self.allow_pickle, self.inclusive, self.feature_dim = scan, allow_pickle, inclusive, feature_dim

    def expand(self, pbegin):
        return (
            pbegin
            | "ListFiles" >> beam.Create(list(enumerate(self.scan.files)))
            | "SpreadFiles" >> beam.Reshuffle()
            | "ReadAndValidate" >> beam.ParDo(ReadRegionFile(self.allow_pickle, self.inclusive, self.feature_dim)).with_outputs(DEAD, main="samples")
        )


class WriteRegionShards(beam.PTransform):
    """(samples, dead letters) → one shard per index in ``[0, num_shards)``, empty ones included, then
    the dead letter and the merged summary (:func:`publish_summary`)."""

    def __init__(self, out_dir: str, num_shards: int):
        super().__init__()
        self.out_dir, self.num_shards = out_dir, num_shards

    def expand(self, inputs):
        samples, dead = inputs
        n = self.num_shards
        keyed_samples = samples | "KeyByShard" >> beam.Map(lambda s: (shard_index(s.image_id, n), s))
        # Dead letters travel with the shard of their record id, so each shard reports its own.
        keyed_dead = dead | "KeyDeadLetterByShard" >> beam.Map(lambda d: (shard_index(d.rejected.record_id, n), d))
        every_shard = samples.pipeline | "EveryShardIndex" >> beam.Create([(k, None) for k in range(n)])
        return (
            (keyed_samples, keyed_dead, every_shard)
            | "Merge" >> beam.Flatten()
            | "GroupByShard" >> beam.GroupByKey()
            | "DropDuplicateIds" >> beam.Map(drop_duplicate_ids)
            | "WriteShard" >> beam.ParDo(WriteShard(self.out_dir))
            | "AllSummaries" >> beam.combiners.ToList()
            | "WriteSummary" >> beam.Map(publish_summary, self.out_dir)
        )


# ---------------------------------------------------------------------------------------------
# Driver


@dataclass
class SourceScan:
    """What the driver learns in its own pass over the source, before the pipeline runs."""

    kind: str  # butd_tsv | lxmert_tsv | npz_dir | npy_dir
    path: str  # the directory, or the TSV file(s) joined by ", "
    digest: str
    records_in: int
    blank_lines: int = 0
    chunks: list[TsvChunk] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def scan_tsv(path: str | os.PathLike, chunk_bytes: int = CHUNK_BYTES, file_index: int = 0) -> tuple[str, int, int, list[TsvChunk]]:
    """One pass over a TSV (local path or URL): content digest, records (non-blank lines), blank lines, byte ranges."""
    h = hashlib.sha256()
    records = blanks = 0
    chunks: list[TsvChunk] = []
    start, start_line, pos = 0, 1, 0
    size = fs.size(path)
    progress = tqdm(total=size, unit="B", unit_scale=True, desc=f"scan {fs.basename(path)}", disable=size < (256 << 20) or not progress_enabled())
    for line_no, raw in iter_lines(path):
        progress.update(len(raw))
        h.update(raw)
        if is_blank(raw):
            blanks += 1
        else:
            records += 1
        pos += len(raw)
        if pos - start >= chunk_bytes:
            chunks.append(TsvChunk(file_index, str(path), start, pos, start_line))
            start, start_line = pos, line_no + 1
    progress.close()
    if pos > start:
        chunks.append(TsvChunk(file_index, str(path), start, pos, start_line))
    return h.hexdigest()[:16], records, blanks, chunks
