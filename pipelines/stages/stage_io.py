"""Beam sources and sinks shared by the label stages: region shards in, Parquet shards, dead letters and
count summaries out. Every sink sorts before writing, so outputs do not depend on worker count.

The label graph carries records in :class:`~pipelines.stages.batch.Batch` es (hundreds of records per
element), not one record per element. The sinks here take single records and batches alike."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any, Callable

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ssga_io import fs
from pipelines.stages.batch import Batch
from pipelines.formats.captions import read_captions
from schemas.manifest import DEAD_LETTER_NAME
from schemas.discovery import indexed_shards
from schemas.shards import REGION_PREFIX, iter_regions, shard_index

COUNTS_NAME = "_COUNTS.json"
STATS_NAME = "_STATS.json"


def records(item: Any) -> list:
    """The records of an element: a :class:`Batch`'s items, or a ``(key, Batch)``'s, or the element itself."""
    if isinstance(item, Batch):
        return item
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], Batch):
        return item[1]
    return [item]


def by_block(items: list, num_blocks: int, image_id: Callable[[Any], str]) -> list[tuple[int, Batch]]:
    """``(block, Batch)`` per block present in ``items``; an image's block is its stable shard index, the same
    for every stage, so a block's records of every kind meet at one key (and its Parquet rows in one file)."""
    out: dict[int, Batch] = {}
    for x in items:
        out.setdefault(shard_index(image_id(x), num_blocks), Batch()).append(x)
    return sorted(out.items())


@dataclass
class RegionInfo:
    """What the label stages need of a region sample (features stay in the region shard)."""

    shard: int
    key: str
    image_id: str
    image_w: int
    image_h: int
    boxes: np.ndarray  # float32 [N, 4]
    classes: np.ndarray | None  # int [N]: argmax of cls_prob over non-background classes (1-based)
    class_conf: np.ndarray | None = None  # float32 [N]: the detector's probability of that class


def region_shards(directory: str | os.PathLike) -> list[tuple[int, str]]:
    """``[(shard index, path)]`` of a region shard directory (:func:`schemas.discovery.indexed_shards`)."""
    return indexed_shards(directory, REGION_PREFIX)


def read_region_shard(item: tuple[int, str]):
    index, path = item
    yield from _region_infos(index, iter_regions(path))  # streamed from the path or URL, one sample at a time


def _region_infos(index: int, records):
    for key, rec in records:
        classes = conf = None
        if rec.cls_prob is not None and rec.cls_prob.shape[1] > 1:
            prob = rec.cls_prob.astype(np.float32)
            classes = np.argmax(prob[:, 1:], axis=1) + 1  # class 0 is background
            conf = prob[np.arange(len(classes)), classes]
        yield rec.image_id, RegionInfo(index, key, rec.image_id, rec.image_w, rec.image_h, rec.boxes.astype(np.float32), classes, conf)


class ReadRegions(beam.PTransform):
    """Region shard directory → ``(image_id, RegionInfo)``, one shard per work item."""

    def __init__(self, directory: str):
        super().__init__()
        self.shards = region_shards(directory)

    def expand(self, p):
        return p | "Shards" >> beam.Create(self.shards) | "Spread" >> beam.Reshuffle() | "Read" >> beam.FlatMap(read_region_shard)


class ReadRegionBlocks(beam.PTransform):
    """Region shard directory → ``(block, Batch[RegionInfo])``: each shard read by one work item, its
    samples batched by image block (:func:`by_block`)."""

    def __init__(self, directory: str, num_blocks: int):
        super().__init__()
        self.shards, self.num_blocks = region_shards(directory), num_blocks

    def expand(self, p):
        n = self.num_blocks

        def read(item):
            return by_block([r for _, r in read_region_shard(item)], n, lambda r: r.image_id)

        return p | "Shards" >> beam.Create(self.shards) | "Spread" >> beam.Reshuffle() | "Read" >> beam.FlatMap(read)


def caption_batches(path: str, image_id: str, id_map: dict[str, str] | None, size: int):
    """``("caption", Batch[Caption])`` of ``size`` captions in file order, then ``("dead", Batch)`` of the bad rows."""
    batch, dead = Batch(), Batch()
    for tag, value in read_captions(path, image_id, id_map):
        if tag != "caption":
            dead.append(value)
            continue
        batch.append(value)
        if len(batch) == size:
            yield "caption", batch
            batch = Batch()
    if batch:
        yield "caption", batch
    if dead:
        yield "dead", dead


class ReadCaptions(beam.PTransform):
    """Captions TSV → ``Batch[Caption]`` of ``batch_size`` (main) and a ``Batch`` of dead letters (``dead``).

    The file is read in order by one worker (caption ids count rows per image in file order), then
    its batches are spread across workers.
    """

    def __init__(self, path: str, image_id: str = "stem", id_map: dict[str, str] | None = None, batch_size: int = 512):
        super().__init__()
        self.path, self.image_id, self.id_map, self.batch_size = path, image_id, id_map, batch_size

    def expand(self, p):
        def split(item):
            tag, value = item
            yield value if tag == "caption" else beam.pvalue.TaggedOutput("dead", value)

        rows = p | "File" >> beam.Create([self.path]) | "Rows" >> beam.FlatMap(caption_batches, self.image_id, self.id_map, self.batch_size)
        parts = rows | "Split" >> beam.FlatMap(split).with_outputs("dead", main="captions")
        return {"captions": parts.captions | "Spread" >> beam.Reshuffle(), "dead": parts.dead}


class WriteParquetShards(beam.PTransform):
    """Records (or ``Batch`` es of them) → ``<dir>/<prefix>-NNNNNN.parquet``, image-hashed into ``num_shards``
    files (:func:`by_block`), rows sorted by id."""

    def __init__(self, directory: str, prefix: str, schema: pa.Schema, to_row: Callable[[Any], dict], num_shards: int):
        super().__init__()
        self.directory, self.prefix, self.schema, self.to_row, self.num_shards = directory, prefix, schema, to_row, num_shards

    def expand(self, pcoll):
        n, to_row = self.num_shards, self.to_row

        def write(item):
            index, batches = item
            rows = sorted((to_row(r) for b in batches for r in b), key=lambda r: r["caption_id"])
            table = pa.Table.from_pylist(rows, schema=self.schema)
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            fs.write_bytes(fs.join(self.directory, f"{self.prefix}-{index:06d}.parquet"), buf.getvalue().to_pybytes())
            return len(rows)

        return (
            pcoll
            | "ByShard" >> beam.FlatMap(lambda x: by_block(records(x), n, lambda r: r.image_id))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.Map(write)
        )


def read_parquet_rows(path: str) -> list[dict]:
    """All rows of one Parquet file (local or remote), as dicts."""
    return pq.read_table(pa.BufferReader(fs.read_bytes(path))).to_pylist()


class ReadParquetRecords(beam.PTransform):
    """``<dir>/<prefix>-NNNNNN.parquet`` (written by :class:`WriteParquetShards`) → a ``Batch`` of records per file."""

    def __init__(self, directory: str, prefix: str, from_row: Callable[[dict], Any]):
        super().__init__()
        self.files = fs.glob(fs.join(directory, f"{prefix}-[0-9][0-9][0-9][0-9][0-9][0-9].parquet"))
        self.from_row = from_row

    def expand(self, p):
        from_row = self.from_row
        return (
            p
            | "Files" >> beam.Create(self.files)
            | "Spread" >> beam.Reshuffle()
            | "Rows" >> beam.Map(lambda path: Batch(from_row(r) for r in read_parquet_rows(path)))
        )


class WriteDeadLetters(beam.PTransform):
    """Dead-letter dicts (or ``Batch`` es of them) → ``<dir>/_DEAD_LETTER.jsonl``, sorted by (record id, reason)."""

    def __init__(self, directory: str):
        super().__init__()
        self.path = fs.join(directory, DEAD_LETTER_NAME)

    def expand(self, dead):
        path = self.path

        def write(items):
            items = sorted((d for x in items for d in records(x)), key=lambda d: (d["record_id"], d["stage"], d["reason"]))
            fs.write_bytes(path, "".join(json.dumps(d, sort_keys=True) + "\n" for d in items).encode("utf-8"))
            return len(items)

        return dead | "All" >> beam.combiners.ToList() | "Write" >> beam.Map(write)


class WriteCounts(beam.PTransform):
    """``{name: PCollection}`` → ``<dir>/_COUNTS.json`` with the record count of each (0 when empty): an
    element counts 1, a ``Batch`` (alone or keyed) its length (:func:`records`).

    One combine for all the names (each element counts as ``(name, records)``), not a
    ``Count.Globally`` per name: the same file from a third of the transforms, which the runner
    plans, translates and schedules as stages of their own."""

    def __init__(self, directory: str):
        super().__init__()
        self.path = fs.join(directory, COUNTS_NAME)

    def expand(self, pcolls: dict):
        path, names = self.path, sorted(pcolls)
        tagged = [pcolls[name] | f"Name_{name}" >> beam.Map(lambda x, name=name: (name, len(records(x)))) for name in names]

        def write(counts):
            fs.write_bytes(path, (json.dumps(dict(sorted(counts.items())), indent=2) + "\n").encode("utf-8"))

        return tagged | "Flatten" >> beam.Flatten() | "Count" >> beam.CombineGlobally(CountNames(names)) | "Write" >> beam.Map(write)


class CountNames(beam.CombineFn):
    """``(name, n)`` → ``{name: sum of n}`` over ``names`` (0 for a name never seen)."""

    def __init__(self, names: list[str]):
        self.names = list(names)

    def create_accumulator(self):
        return dict.fromkeys(self.names, 0)

    def add_input(self, acc, item):
        name, n = item
        acc[name] += n
        return acc

    def merge_accumulators(self, accs):
        out = self.create_accumulator()
        for a in accs:
            for k, v in a.items():
                out[k] += v
        return out

    def extract_output(self, acc):
        return acc


class SumStats(beam.CombineFn):
    """Sum nested dicts of numbers (counters and histograms)."""

    def create_accumulator(self):
        return {}

    def add_input(self, acc, stats):
        return merge_stats(acc, stats)

    def merge_accumulators(self, accs):
        out: dict = {}
        for a in accs:
            out = merge_stats(out, a)
        return out

    def extract_output(self, acc):
        return acc


def merge_stats(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = merge_stats(out.get(k, {}), v) if isinstance(v, dict) else out.get(k, 0) + v
    return out


def write_json(path: str | os.PathLike, obj: Any) -> None:
    fs.write_bytes(str(path), (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8"))
