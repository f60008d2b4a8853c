"""Toy retrieval shards for the trainer's μ-VLA tests: what pipelines.retrieval writes, without MiniLM or spaCy.

For each image of the toy region shards: tags = its regions' class names (most confident first),
``region_tag`` = each region's tag index, tag embeddings = a fixed random unit vector per class name,
K sentences drawn from a pool of toy sentences about random objects (no pairing with the image, as in
μ-VLA), their noun phrases as character spans and each phrase's embedding = its object's vector plus
noise (so linking a phrase to the region of the same class is learnable and deterministic).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from schemas.discovery import list_shards
from schemas.retrieval import RETRIEVAL_PREFIX, Retrieved, encode_retrieved
from schemas.shards import REGION_PREFIX, decode_region, iter_shard, write_shard
from trainer.toydata import ADJECTIVES, OBJECTS

EMB = 24


def object_vectors(seed: int = 7) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=(len(OBJECTS), EMB))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def toy_sentence(rng: np.random.Generator) -> tuple[str, list[list[int]], list[int]]:
    a, b = OBJECTS[rng.integers(len(OBJECTS))], OBJECTS[rng.integers(len(OBJECTS))]
    p1, p2 = f"a {a}", f"the {ADJECTIVES[rng.integers(len(ADJECTIVES))]} {b}"
    text = f"{p1} beside {p2}"
    return text, [[0, len(p1)], [len(p1) + 8, len(text)]], [OBJECTS.index(a), OBJECTS.index(b)]


def write_retrieval(regions: Path, out: Path, k: int = 3, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    vec = object_vectors()
    out.mkdir(parents=True, exist_ok=True)
    for path in list_shards(str(regions), REGION_PREFIX):
        samples = {}
        for key, members in iter_shard(path):
            r = decode_region(members, key)
            cls = np.argmax(r.cls_prob[:, 1:], 1)  # 0-based object index
            conf = r.cls_prob[np.arange(len(cls)), cls + 1]
            tags: list[str] = []
            for i in np.argsort(-conf, kind="stable"):
                if OBJECTS[cls[i]] not in tags:
                    tags.append(OBJECTS[cls[i]])
            sents = [toy_sentence(rng) for _ in range(k)]
            phrase_emb = [vec[o] + 0.1 * rng.normal(size=EMB) for _, _, objs in sents for o in objs]
            sims = np.sort(rng.uniform(0.2, 0.9, k))[::-1]
            samples[key] = encode_retrieved(Retrieved(
                r.image_id, tags, np.arange(1, k + 1), sims.astype(np.float32), [s for s, _, _ in sents],
                phrases=[p for _, p, _ in sents], tag_emb=np.stack([vec[OBJECTS.index(t)] for t in tags]),
                region_tag=np.asarray([tags.index(OBJECTS[c]) for c in cls], np.int16), phrase_emb=np.stack(phrase_emb)))
        write_shard(out / Path(path).name.replace(REGION_PREFIX, RETRIEVAL_PREFIX, 1), samples)
    return out
