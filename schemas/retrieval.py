"""Retrieval shards: per image, the top-K sentences of the text corpus, streamed like label shards.

``retrieval-NNNNNN.tar`` holds, for each image of ``regions-NNNNNN.tar`` that was not dead-lettered,
a sample under the same key (sorted; written by :func:`schemas.shards.write_shard`, npy/json only):

- ``sentences.npy`` int64 [K]: the sentences' ids (line numbers in the sentences file, 1-based), best first
- ``sim.npy`` float32 [K]: their cosine similarity to the image's tag sentence
- ``json``: ``image_id``, ``tags`` (the tag list), ``texts`` (the K sentences), ``schema_version``,
  ``phrases``: per sentence, its spaCy noun phrases as ``[start, end)`` character spans
- ``tag_emb.npy`` float16 [n_tags, E]: each tag's all-MiniLM-L6-v2 embedding (μ-VLA links phrases by it)
- ``region_tag.npy`` int16 [N]: per region of the image, the index of its class name in ``tags`` (-1: none)
- ``phrase_emb.npy`` float16 [P, E]: the embeddings of all phrases, sentence by sentence in order

The last three (and ``phrases``) are what μ-VLA's region–noun-phrase objective needs; shards without
them decode with ``None`` there (the trainer then says to re-run the retrieval stage).
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
    phrases: list[list[list[int]]] | None = None  # per text: [[start, end], ...]
    tag_emb: np.ndarray | None = None  # float16 [n_tags, E]
    region_tag: np.ndarray | None = None  # int16 [N]
    phrase_emb: np.ndarray | None = None  # float16 [P, E]


def encode_retrieved(r: Retrieved) -> dict[str, bytes]:
    from schemas.shards import npy_bytes  # noqa: I001

    meta = {"schema_version": SCHEMA_VERSION, "image_id": r.image_id, "tags": r.tags, "texts": r.texts}
    out = {"sentences.npy": npy_bytes(np.asarray(r.sentence_ids, np.int64)), "sim.npy": npy_bytes(np.asarray(r.sims, np.float32))}
    if r.phrases is not None:
        meta["phrases"] = r.phrases
        out["tag_emb.npy"] = npy_bytes(np.asarray(r.tag_emb, np.float16))
        out["region_tag.npy"] = npy_bytes(np.asarray(r.region_tag, np.int16))
        out["phrase_emb.npy"] = npy_bytes(np.asarray(r.phrase_emb, np.float16))
    return {**out, "json": json_bytes(meta)}


def decode_retrieved(members: dict[str, bytes], where: str = "") -> Retrieved:
    missing = [e for e in ("sentences.npy", "sim.npy", "json") if e not in members]
    if missing:
        raise ShardError(f"{where}: sample lacks member(s) {missing}")
    meta = load_json(members["json"], f"{where}.json")
    r = Retrieved(meta["image_id"], list(meta["tags"]), load_npy(members["sentences.npy"], f"{where}.sentences.npy"),
                  load_npy(members["sim.npy"], f"{where}.sim.npy"), list(meta["texts"]))
    if not (len(r.sentence_ids) == len(r.sims) == len(r.texts)):
        raise ShardError(f"{where}: {len(r.sentence_ids)} sentence ids, {len(r.sims)} similarities and {len(r.texts)} texts")
    if "phrases" in meta:
        extra = [e for e in ("tag_emb.npy", "region_tag.npy", "phrase_emb.npy") if e not in members]
        if extra:
            raise ShardError(f"{where}: sample has phrases but lacks member(s) {extra}")
        r.phrases = [[[int(a), int(b)] for a, b in spans] for spans in meta["phrases"]]
        r.tag_emb = load_npy(members["tag_emb.npy"], f"{where}.tag_emb.npy")
        r.region_tag = load_npy(members["region_tag.npy"], f"{where}.region_tag.npy")
        r.phrase_emb = load_npy(members["phrase_emb.npy"], f"{where}.phrase_emb.npy")
        n_phr = sum(len(p) for p in r.phrases)
        if len(r.phrases) != len(r.texts) or len(r.phrase_emb) != n_phr or len(r.tag_emb) != len(r.tags):
            raise ShardError(f"{where}: {len(r.phrases)} phrase lists for {len(r.texts)} texts, {len(r.phrase_emb)} phrase embeddings "
                             f"for {n_phr} phrases, {len(r.tag_emb)} tag embeddings for {len(r.tags)} tags")
        for text, spans in zip(r.texts, r.phrases):
            if any(not 0 <= a < b <= len(text) for a, b in spans):
                raise ShardError(f"{where}: a phrase span {spans} lies outside its sentence {text!r}")
        if len(r.region_tag) and (r.region_tag.min() < -1 or r.region_tag.max() >= len(r.tags)):
            raise ShardError(f"{where}: region_tag indices outside -1..{len(r.tags) - 1}")
    return r


def iter_retrieved(path: str | os.PathLike) -> Iterator[tuple[str, Retrieved]]:
    for key, members in iter_shard(path):
        yield key, decode_retrieved(members, f"{path}:{key}")
