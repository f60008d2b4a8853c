"""Beam sources and sinks shared by the label stages: region shards in, Parquet shards, dead letters and
count summaries out. Every sink sorts before writing, so outputs do not depend on worker count."""
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
from pipelines.formats.captions import read_captions
from schemas.manifest import DEAD_LETTER_NAME
from schemas.discovery import indexed_shards
from schemas.shards import REGION_PREFIX, iter_regions, shard_index

COUNTS_NAME = "_COUNTS.json"
STATS_NAME = "_STATS.json"


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


class ReadCaptions(beam.PTransform):
    """Captions TSV → ``Caption`` (main) and dead letters (``dead``).

    The file is read in order by one worker (caption ids count rows per image in file order), then
    spread across workers.
    """

    def __init__(self, path: str, image_id: str = "stem", id_map: dict[str, str] | None = None):
        super().__init__()
        self.path, self.image_id, self.id_map = path, image_id, id_map

    def expand(self, p):
        def split(item):
            tag, value = item
            yield value if tag == "caption" else beam.pvalue.TaggedOutput("dead", value)

        rows = p | "File" >> beam.Create([self.path]) | "Rows" >> beam.FlatMap(read_captions, self.image_id, self.id_map)
        parts = rows | "Split" >> beam.FlatMap(split).with_outputs("dead", main="captions")
        return {"captions": parts.captions | "Spread" >> beam.Reshuffle(), "dead": parts.dead}


class WriteParquetShards(beam.PTransform):
    """Records → ``<dir>/<prefix>-NNNNNN.parquet``, image-hashed into ``num_shards`` files, rows sorted by id."""

    def __init__(self, directory: str, prefix: str, schema: pa.Schema, to_row: Callable[[Any], dict], num_shards: int):
        super().__init__()
        self.directory, self.prefix, self.schema, self.to_row, self.num_shards = directory, prefix, schema, to_row, num_shards

    def expand(self, records):
        n, to_row = self.num_shards, self.to_row

        def write(item):
            index, rows = item
            rows = sorted((to_row(r) for r in rows), key=lambda r: r["caption_id"])
            table = pa.Table.from_pylist(rows, schema=self.schema)
            buf = pa.BufferOutputStream()
            pq.write_table(table, buf)
            fs.write_bytes(fs.join(self.directory, f"{self.prefix}-{index:06d}.parquet"), buf.getvalue().to_pybytes())
            return len(rows)

        return (
            records
            | "ByShard" >> beam.Map(lambda r: (shard_index(r.image_id, n), r))
            | "Group" >> beam.GroupByKey()
            | "Write" >> beam.Map(write)
        )


def read_parquet_rows(path: str) -> list[dict]:
    """All rows of one Parquet file (local or remote), as dicts."""
    return pq.read_table(pa.BufferReader(fs.read_bytes(path))).to_pylist()


class ReadParquetRecords(beam.PTransform):
    """``<dir>/<prefix>-NNNNNN.parquet`` (written by :class:`WriteParquetShards`) → records, one file per work item."""

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
            | "Rows" >> beam.FlatMap(lambda path: [from_row(r) for r in read_parquet_rows(path)])
        )


class WriteDeadLetters(beam.PTransform):
    """Dead-letter dicts → ``<dir>/_DEAD_LETTER.jsonl``, sorted by (record id, reason)."""

    def __init__(self, directory: str):
        super().__init__()
        self.path = fs.join(directory, DEAD_LETTER_NAME)

    def expand(self, dead):
        path = self.path

        def write(items):
            items = sorted(items, key=lambda d: (d["record_id"], d["stage"], d["reason"]))
            fs.write_bytes(path, "".join(json.dumps(d, sort_keys=True) + "\n" for d in items).encode("utf-8"))
            return len(items)

        return dead | "All" >> beam.combiners.ToList() | "Write" >> beam.Map(write)


class WriteCounts(beam.PTransform):
    """``{name: PCollection}`` → ``<dir>/_COUNTS.json`` with the element count of each (0 when empty).

    One combine for all the names (each element counts as its PCollection's name), not a
    ``Count.Globally`` per name: the same file from a third of the transforms, which the runner
    plans, translates and schedules as stages of their own."""

    def __init__(self, directory: str):
        super().__init__()
        self.path = fs.join(directory, COUNTS_NAME)

    def expand(self, pcolls: dict):
        path, names = self.path, sorted(pcolls)
        tagged = [pcolls[name] | f"Name_{name}" >> beam.Map(lambda _, name=name: name) for name in names]

        def write(counts):
            fs.write_bytes(path, (json.dumps(dict(sorted(counts.items())), indent=2) + "\n").encode("utf-8"))

        return tagged | "Flatten" >> beam.Flatten() | "Count" >> beam.CombineGlobally(CountNames(names)) | "Write" >> beam.Map(write)


class CountNames(beam.CombineFn):
    """Names → ``{name: count}`` over ``names`` (0 for a name never seen)."""

    def __init__(self, names: list[str]):
        self.names = list(names)

    def create_accumulator(self):
        return dict.fromkeys(self.names, 0)

    def add_input(self, acc, name):
        acc[name] += 1
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
