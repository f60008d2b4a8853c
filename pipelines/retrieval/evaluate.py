"""Recall@K of retrieval against known pairs (a captioned corpus whose pairing the stage never saw).

A caption counts as retrieved for its image when a sentence with its exact text is among the image's
top-K (identical texts are indistinguishable to any retriever). The random baseline is exact: K of S
sentences drawn uniformly hit one of ``c`` matching sentences with probability ``1 − C(S−c, K)/C(S, K)``.

    python -m pipelines.retrieval.evaluate --retrieval DIR --captions captions.tsv
"""
from __future__ import annotations

import argparse
import json
from collections import Counter, defaultdict
from math import comb

from pipelines.formats.captions import read_captions
from pipelines.retrieval.shards import RETRIEVAL_PREFIX, iter_retrieved
from schemas.manifest import read_manifest
from schemas.discovery import list_shards


def recall_at_k(retrieval_dir: str, captions_tsv: str, image_id: str = "stem") -> dict[str, float]:
    """``{"recall": per-(image, caption) recall@K, "random": its expectation under random retrieval, ...}``."""
    m = read_manifest(retrieval_dir)
    if m is None:
        raise FileNotFoundError(f"{retrieval_dir}: no complete retrieval stage (_MANIFEST.json)")
    k = int(m["params"]["top_k"])
    sentences = m["sentences"]["out"]
    truth: dict[str, list[str]] = defaultdict(list)
    for tag, c in read_captions(captions_tsv, image_id):
        if tag == "caption":
            truth[c.image_id].append(c.text.strip())
    retrieved = {r.image_id: set(r.texts) for p in list_shards(retrieval_dir, RETRIEVAL_PREFIX) for _, r in iter_retrieved(p)}
    # How often each text occurs in the indexed corpus: the corpus is the captions, shuffled.
    text_count = Counter(t for texts in truth.values() for t in texts)
    hits = pairs = 0
    expected = 0.0
    images = 0
    image_hits = 0
    for img, texts in truth.items():
        if img not in retrieved:
            continue
        images += 1
        got = [t in retrieved[img] for t in texts]
        hits += sum(got)
        image_hits += any(got)
        pairs += len(texts)
        for t in texts:
            c = text_count[t]
            expected += 1 - comb(sentences - c, k) / comb(sentences, k)
    return {"k": k, "images": images, "pairs": pairs, "sentences": sentences, "recall": hits / max(pairs, 1),
            "random": expected / max(pairs, 1), "image_hit_rate": image_hits / max(images, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.retrieval.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--retrieval", required=True)
    ap.add_argument("--captions", required=True)
    ap.add_argument("--image-id", default="stem", choices=("stem", "int"))
    args = ap.parse_args(argv)
    print(json.dumps(recall_at_k(args.retrieval, args.captions, args.image_id), indent=2))


if __name__ == "__main__":
    from pipelines.retrieval.evaluate import main as _main

    _main()
