"""μ-VLA's data: region shard k zipped with retrieval shard k → per image three views, batched together.

No caption is paired with its image. The retrieval stage (:mod:`pipelines.retrieval`) gave each image
its tag sentence (the detector class names of its regions) and the top-K sentences of an unpaired
text corpus, with their noun phrases and the MiniLM embeddings of phrases and tags. The chain::

    shard list (as the paired chain: seeded, split by node and worker)
      → zip_retrieval_shards  regions-k.tar with retrieval-k.tar by key (images the stage rejected are counted)
      → decode_unpaired       npy/json only, validated (the retrieval sample must carry phrases)
      → to_images             one item per image: regions, tags, the K sentences with phrases
      → pick_sentence         one of the K retrieved sentences per image and epoch (seeded by its key)
      → sentence_negatives    shuffle buffer; for ``itm_neg_prob`` swap in another image's sentence (ITM 0)
      → views                 region_tag / region_phrase / image_sentence examples (below)
      → unpaired_batches      each view collated as a paired batch is (trainer.data.batch.collate)

The views of one image:

- ``region_tag``: text = the tag sentence, MLM over it (BERT 80/10/10), regions masked as in the
  paired chain; targets: masked tags, the detector distribution (MRC) and the original features (MRFR).
- ``region_phrase``: text = the image's retrieved sentence; each noun phrase is linked to the region
  whose tag embedding is most similar to the phrase's (:func:`link_phrases_to_regions`), the linked
  regions' features are zeroed, and each linked phrase's tokens are the target of its region
  (``r2t_pos`` flat region index, ``r2t_tokens`` padded with IGNORE).
- ``image_sentence``: text = the retrieved sentence (or, for a negative, another image's), MLM on
  positives, ITM label.

Every draw is seeded by (seed, epoch, image key, view) or, for the buffer, by (seed, epoch, rank,
worker), so an epoch is a pure function of its inputs and the paired chain's resume holds unchanged.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch

from schemas.discovery import shard_dir
from schemas.records import region_problem
from schemas.retrieval import RETRIEVAL_PREFIX, decode_retrieved
from schemas.shards import REGION_PREFIX, ShardError, decode_region, iter_shard
from trainer.config import TrainConfig
from trainer.data.batch import collate
from trainer.data.examples import buffer_shuffle
from trainer.data.masking import IGNORE, mask_regions as pick_masked_regions, mask_tokens
from trainer.data.read import SkipCounter
from trainer.data.shard_set import example_rng
from trainer.data.text import tokenize_with_spans
from trainer.objectives.region_phrase import link_phrases_to_regions

VIEWS = ("region_tag", "region_phrase", "image_sentence")


def retrieval_shard_for(region_shard: str | Path, retrieval_dir: str | Path) -> Path:
    """``.../regions-000003.tar`` pairs with ``retrieval_dir/retrieval-000003.tar`` (same index)."""
    return Path(retrieval_dir) / Path(region_shard).name.replace(f"{REGION_PREFIX}-", f"{RETRIEVAL_PREFIX}-", 1)


def zip_retrieval_shards(shards: Iterable[str], retrieval_dir: str, skips: SkipCounter) -> Iterator[dict]:
    """Region shard k with retrieval shard k, joined by key. The retrieval stage writes a sample for
    every image it did not reject, so a region sample without one is counted (``images_without_retrieval``);
    a retrieval sample whose image is not in the region shard means the two do not belong together."""
    for rpath in shards:
        qpath = retrieval_shard_for(rpath, retrieval_dir)
        if not qpath.exists():
            skips.bad("missing_retrieval_shard", str(qpath), f"no retrieval shard for region shard {rpath}")
            continue
        try:
            retrieved = dict(iter_shard(qpath))  # one shard's samples: K sentences and a few embeddings each
            seen = set()
            for key, rmem in iter_shard(rpath):
                if key not in retrieved:
                    skips.note("images_without_retrieval")
                    continue
                seen.add(key)
                yield {"__key__": key, "rpath": str(rpath), "qpath": str(qpath), "region": rmem, "retrieved": retrieved[key]}
            stray = sorted(set(retrieved) - seen)
            if stray:
                skips.bad("key_mismatch", f"{qpath}:{stray[0]}", f"{len(stray)} retrieval sample(s) have no image in {rpath}; "
                          "the retrieval shards were made from other regions (re-run python -m pipelines.retrieval on these)")
        except ShardError as e:
            skips.bad("unreadable_shard", f"{rpath} + {qpath}", str(e))


def decode_unpaired(src: Iterable[dict], skips: SkipCounter) -> Iterator[dict]:
    for item in src:
        key = item["__key__"]
        rwhere, qwhere = f"{item['rpath']}:{key}", f"{item['qpath']}:{key}"
        try:
            region = decode_region(item["region"], rwhere)
            retrieved = decode_retrieved(item["retrieved"], qwhere)
        except (ShardError, KeyError, TypeError, ValueError) as e:
            skips.bad("bad_record", qwhere, f"undecodable sample: {e}")
            continue
        reason = region_problem(region) or (
            "the retrieval sample has no noun phrases or tag embeddings (made by an older retrieval stage); "
            "re-run python -m pipelines.retrieval" if retrieved.phrases is None
            else f"image_id {retrieved.image_id!r} differs from the region shard's {region.image_id!r}" if retrieved.image_id != region.image_id
            else f"region_tag has {len(retrieved.region_tag)} regions, the region shard {region.num_boxes}" if len(retrieved.region_tag) != region.num_boxes
            else "no retrieved sentence" if not retrieved.texts
            else "the regions have no class distribution (cls.npy): region–tag alignment needs it" if region.cls_prob is None
            else None
        )
        if reason:
            skips.bad("bad_record", qwhere if "retriev" in reason or "region_tag" in reason else rwhere, reason)
            continue
        yield {"__key__": key, "region": region, "retrieved": retrieved}


def to_images(src: Iterable[dict], max_regions: int) -> Iterator[dict]:
    """One item per image: its first ``max_regions`` regions, tags, and the K sentences with phrases."""
    for item in src:
        region, r = item["region"], item["retrieved"]
        n = min(region.num_boxes, max_regions)
        wh = np.array([region.image_w, region.image_h] * 2, dtype=np.float32)
        bounds = np.cumsum([0] + [len(p) for p in r.phrases])
        yield {
            "uid": item["__key__"],
            "image_id": region.image_id,
            "feat": region.features[:n],
            "boxes": np.clip(region.boxes[:n] / wh, 0.0, 1.0),
            "cls": region.cls_prob[:n],  # float16 as stored: collate converts the masked rows
            "tags": r.tags,
            "region_tag": r.region_tag[:n].astype(np.int64),
            "tag_emb": r.tag_emb.astype(np.float32),
            "texts": r.texts,
            "phrases": r.phrases,
            "phrase_emb": [r.phrase_emb[bounds[i]:bounds[i + 1]].astype(np.float32) for i in range(len(r.texts))],
        }


def pick_sentence(src: Iterable[dict], seed: int, epoch: int) -> Iterator[dict]:
    """One of the image's K retrieved sentences, uniformly, drawn per (image, epoch)."""
    for ex in src:
        k = int(example_rng(seed, epoch, ex["uid"], "sentence").integers(len(ex["texts"])))
        yield {**ex, "sentence": ex["texts"][k], "sentence_phrases": ex["phrases"][k], "sentence_phrase_emb": ex["phrase_emb"][k]}


def sentence_negatives(src: Iterable[dict], buffer_size: int, neg_prob: float, seed: int, epoch: int, rank: int = 0, worker: int = 0) -> Iterator[dict]:
    """Shuffle through a buffer; for ``neg_prob`` of the images the image–sentence view gets another
    image's picked sentence (``itm = 0``), as :func:`trainer.data.examples.itm_negatives` does for captions."""
    rng = np.random.default_rng([seed, epoch, rank, worker, 0x4D55])
    buf: list[dict] = []

    def emit(ex: dict) -> dict:
        others = [o for o in buf if o["image_id"] != ex["image_id"] and o["sentence"] != ex["sentence"]]
        if others and rng.random() < neg_prob:
            return {**ex, "itm_text": others[rng.integers(len(others))]["sentence"], "itm": 0.0}
        return {**ex, "itm_text": ex["sentence"], "itm": 1.0}

    for out in buffer_shuffle(src, buf, buffer_size, rng):
        yield emit(out)


def _example(ex: dict, view: str, ids: np.ndarray, labels: np.ndarray, feat: np.ndarray, masked: np.ndarray, itm: float) -> dict:
    """A view as the paired collate expects it (no region-phrase pairs)."""
    return {"uid": f"{ex['uid']}/{view}", "input_ids": ids, "mlm_labels": labels, "feat": feat, "boxes": ex["boxes"], "cls": ex["cls"],
            "region_masked": masked, "itm": itm, "pairs": [], "phrase_spans": np.zeros((0, 2), np.int64)}


def _zeroed(feat: np.ndarray, masked: np.ndarray) -> np.ndarray:
    if not masked.any():
        return feat
    feat = feat.copy()
    feat[masked] = 0.0
    return feat


def views(src: Iterable[dict], cfg: TrainConfig, tokenizer, epoch: int) -> Iterator[dict]:
    """Each image → ``{view: example}`` (plus ``mrfr`` original features and ``r2t`` region/token targets)."""
    special = set(tokenizer.all_special_ids)
    mask_id, vocab = tokenizer.mask_token_id, len(tokenizer)
    for ex in src:
        n = ex["feat"].shape[0]
        # region–tag
        tag_ids, _ = tokenize_with_spans(tokenizer, " ".join(ex["tags"]), [], cfg.max_text_len)
        ids, labels = mask_tokens(tag_ids, example_rng(cfg.seed, epoch, ex["uid"], "tag_mlm"), cfg.mlm_prob, mask_id, vocab, special)
        masked = pick_masked_regions(n, example_rng(cfg.seed, epoch, ex["uid"], "tag_mrc"), cfg.region_mask_prob)
        region_tag = _example(ex, "region_tag", ids, labels, _zeroed(ex["feat"], masked), masked, 1.0)
        region_tag["mrfr"] = ex["feat"][masked].astype(np.float32)
        # region–phrase: each phrase linked to the region whose tag embedding is most similar
        sent_ids, tspans = tokenize_with_spans(tokenizer, ex["sentence"], [tuple(p) for p in ex["sentence_phrases"]], cfg.max_text_len)
        r2t: list[tuple[int, np.ndarray]] = []
        has_tag = ex["region_tag"] >= 0
        if len(tspans) and has_tag.any():
            tag_emb = np.where(has_tag[:, None], ex["tag_emb"][ex["region_tag"].clip(min=0)], 0.0)
            link, _ = link_phrases_to_regions(torch.from_numpy(ex["sentence_phrase_emb"])[None], torch.from_numpy(tag_emb)[None],
                                              torch.from_numpy(has_tag)[None])
            for j, span in enumerate(tspans):
                if span is not None and int(link[0, j]) >= 0:
                    r2t.append((int(link[0, j]), sent_ids[span[0]:span[1]]))
        linked = np.zeros(n, dtype=bool)
        linked[[reg for reg, _ in r2t]] = True
        none = np.full_like(sent_ids, IGNORE)
        region_phrase = _example(ex, "region_phrase", sent_ids, none, _zeroed(ex["feat"], linked), np.zeros(n, dtype=bool), 1.0)
        region_phrase["r2t"] = r2t
        # image–sentence: ITM (+ MLM on positives)
        itm_ids, _ = tokenize_with_spans(tokenizer, ex["itm_text"], [], cfg.max_text_len)
        if ex["itm"] == 1.0:
            ids, labels = mask_tokens(itm_ids, example_rng(cfg.seed, epoch, ex["uid"], "itm_mlm"), cfg.mlm_prob, mask_id, vocab, special)
        else:
            ids, labels = itm_ids, np.full_like(itm_ids, IGNORE)
        image_sentence = _example(ex, "image_sentence", ids, labels, ex["feat"], np.zeros(n, dtype=bool), ex["itm"])
        yield {"region_tag": region_tag, "region_phrase": region_phrase, "image_sentence": image_sentence}


def collate_views(items: list[dict]) -> dict[str, Any]:
    """Each view collated as a paired batch, plus ``mrfr_target`` [Rm, D] (region–tag: the original
    features of the masked regions, in ``mrc_pos`` order) and ``r2t_pos`` [P] / ``r2t_tokens`` [P, L]
    (region–phrase: the flat index of each linked region and its phrase's token ids, IGNORE-padded)."""
    out: dict[str, Any] = {"mu_vla": True}
    for view in VIEWS:
        out[view] = collate([it[view] for it in items])
    rt = out["region_tag"]
    d = rt["feat"].shape[-1]
    out["region_tag"]["mrfr_target"] = torch.from_numpy(np.concatenate([it["region_tag"]["mrfr"] for it in items]).reshape(-1, d))
    assert len(rt["mrfr_target"]) == len(rt["mrc_pos"])  # both in (example, region) order
    r = out["region_phrase"]["feat"].shape[1]
    links = [(i * r + reg, toks) for i, it in enumerate(items) for reg, toks in it["region_phrase"]["r2t"]]
    width = max((len(t) for _, t in links), default=1)
    tokens = torch.full((len(links), width), IGNORE, dtype=torch.long)
    for j, (_, t) in enumerate(links):
        tokens[j, : len(t)] = torch.from_numpy(np.asarray(t, np.int64))
    out["region_phrase"]["r2t_pos"] = torch.tensor([p for p, _ in links], dtype=torch.long)
    out["region_phrase"]["r2t_tokens"] = tokens
    return out


def unpaired_batches(cfg: TrainConfig, tokenizer, shards: list[str], epoch: int, rank: int = 0, worker: int = 0) -> Iterator[dict]:
    """The whole μ-VLA chain over one worker's shards of one epoch (the paired chain's ``epoch_batches``)."""
    skips = SkipCounter(cfg.bad_input)
    src: Iterable[dict] = zip_retrieval_shards(shards, str(shard_dir(cfg.retrieval, RETRIEVAL_PREFIX)), skips)
    src = decode_unpaired(src, skips)
    src = to_images(src, cfg.max_regions)
    src = pick_sentence(src, cfg.seed, epoch)
    src = sentence_negatives(src, cfg.shuffle_buffer, cfg.itm_neg_prob, cfg.seed, epoch, rank, worker)
    it = iter(views(src, cfg, tokenizer, epoch))
    while True:
        chunk = [x for _, x in zip(range(cfg.batch_size), it)]
        if not chunk:
            break
        yield {**collate_views(chunk), "n": len(chunk), "skips": skips.take()}
    rest = skips.take()
    if rest:
        yield {"n": 0, "skips": rest}


