"""Retrieval shards: per image, the top-K sentences of the text corpus, streamed like label shards.

``retrieval-NNNNNN.tar`` holds, for each image of ``regions-NNNNNN.tar`` that was not dead-lettered,
a sample under the same key (sorted; written by :func:`schemas.shards.write_shard`, npy/json only):

- ``sentences.npy`` int64 [K]: the sentences' ids (line numbers in the sentences file, 1-based), best first
- ``sim.npy`` float32 [K]: their cosine similarity to the image's tag sentence
- ``json``: ``image_id``, ``tags`` (the tag list), ``texts`` (the K sentences), ``schema_version``
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from schemas.records import SCHEMA_VERSION
from schemas.shards import ShardError, iter_shard, json_bytes, load_json, load_npy

RETRIEVAL_PREFIX = "retrieval"


@dataclass
class Retrieved:
    image_id: str
    tags: list[str]
    sentence_ids: np.ndarray  # int64 [K]
    sims: np.ndarray  # float32 [K]
    texts: list[str]


def encode_retrieved(r: Retrieved) -> dict[str, bytes]:
    from schemas.shards import npy_bytes

    return {
        "sentences.npy": npy_bytes(np.asarray(r.sentence_ids, np.int64)),
        "sim.npy": npy_bytes(np.asarray(r.sims, np.float32)),
        "json": json_bytes({"schema_version": SCHEMA_VERSION, "image_id": r.image_id, "tags": r.tags, "texts": r.texts}),
    }


def decode_retrieved(members: dict[str, bytes], where: str = "") -> Retrieved:
    missing = [e for e in ("sentences.npy", "sim.npy", "json") if e not in members]
    if missing:
        raise ShardError(f"{where}: sample lacks member(s) {missing}")
    meta = load_json(members["json"], f"{where}.json")
    r = Retrieved(meta["image_id"], list(meta["tags"]), load_npy(members["sentences.npy"], f"{where}.sentences.npy"),
                  load_npy(members["sim.npy"], f"{where}.sim.npy"), list(meta["texts"]))
    if not (len(r.sentence_ids) == len(r.sims) == len(r.texts)):
        raise ShardError(f"{where}: {len(r.sentence_ids)} sentence ids, {len(r.sims)} similarities and {len(r.texts)} texts")
    return r


def iter_retrieved(path: str | os.PathLike) -> Iterator[tuple[str, Retrieved]]:
    for key, members in iter_shard(path):
        yield key, decode_retrieved(members, f"{path}:{key}")
