"""Held-out image-text matching: ITM loss and accuracy on positives, whole-caption swaps and same-image hard negatives.

    python -m trainer.eval_itm --regions R --labels L --ckpt RUN [--json OUT.json] [--group 64] [--seed 0]

``RUN`` is a pre-training run directory (its ``latest.json``) or one ``ckpt-NNNNNNNN`` directory; the
model's shape and tokenizer come from the checkpoint's config. ``R``/``L`` are region and label
shards of images the run did not train on.

Every held-out (image, caption) is scored three ways, so the three groups have (nearly) the same
size and the same captions: as it is (a positive), with another image's caption (a swap), and with
one attribute, object or relation changed to one the image's captions never name (a hard negative,
:mod:`trainer.data.hard_negatives`; skipped for the few captions that allow no edit). Swap
partners and the replacement words come from the ``group`` examples around it (its group and the
one before), as the training buffer's do; every draw is seeded by the example's key, so a report is a pure function of
(shards, checkpoint, seed, group). Reported per kind: the mean BCE of the ITM logit, the accuracy
at p = 0.5, and for hard negatives also, per kind of edit, how often the model scores the true
caption above its edit (``ranked``).
"""
from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from schemas.discovery import shard_dir
from schemas.shards import LABEL_PREFIX
from trainer.data.batch import batched
from trainer.data.examples import itm_kind, same_image_negative, swap_negative, tokenize
from trainer.data.hard_negatives import BufferVocab
from trainer.data.masking import IGNORE
from trainer.data.read import SkipCounter, decode_pairs, to_examples, zip_label_shards
from trainer.data.sampling import Pairs
from trainer.data.shard_set import example_rng, probe_shapes, region_shards
from trainer.data.text import load_tokenizer

log = logging.getLogger("trainer.eval_itm")
KINDS = ("positive", "swap", "hard")


def itm_eval_examples(src: Iterable[dict], group: int, seed: int, tokenizer, max_len: int) -> Iterator[dict]:
    """Each example as a positive, a swap and (when its caption allows an edit) a hard negative; no other targets."""
    it = iter(src)
    previous: list[dict] = []
    while chunk := list(itertools.islice(it, group)):
        # The group and the one before it: a short last group still has partners and words to draw from.
        pool = previous + chunk
        vocab = BufferVocab()
        for ex in pool:
            vocab.add(ex["text"], ex["spans"])
        previous = chunk
        for ex in chunk:
            rng = example_rng(seed, 0, ex["uid"], "itm_eval")
            made = [{**ex, "itm": 1.0}]
            others = [o for o in pool if o["image_id"] != ex["image_id"]]
            if others:
                made.append(swap_negative(ex, others[int(rng.integers(len(others)))]))
            hard = same_image_negative(ex, vocab, rng, tokenizer, max_len)
            if hard is not None:
                made.append(hard)
            for m in made:
                yield {**m, "mlm_labels": np.full_like(m["input_ids"], IGNORE), "region_masked": np.zeros(m["feat"].shape[0], dtype=bool),
                       "pairs": Pairs(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))}


def summarise(uids: list[str], logits: torch.Tensor, labels: torch.Tensor) -> dict[str, Any]:
    """Per kind: n, mean BCE loss, accuracy at 0.5; plus how often a positive outscores its own hard edit, per edit kind."""
    loss = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    right = (logits > 0).float() == labels
    kinds = [itm_kind(u) for u in uids]
    out: dict[str, Any] = {}
    for kind in KINDS:
        idx = [i for i, k in enumerate(kinds) if k == kind]
        out[kind] = {"n": len(idx), "loss": float(loss[idx].mean()) if idx else None, "accuracy": float(right[idx].float().mean()) if idx else None}
    pos = {u: float(logits[i]) for i, u in enumerate(uids) if kinds[i] == "positive"}
    ranked: dict[str, list[float]] = {}
    for i, u in enumerate(uids):
        if kinds[i] == "hard":
            base, _, edit = u.partition("|hard|")
            ranked.setdefault(edit, []).append(float(pos[base] > float(logits[i])))
    out["hard_ranked"] = {k: {"n": len(v), "rate": float(np.mean(v))} for k, v in sorted(ranked.items())}
    return out


@torch.no_grad()
def evaluate(regions: str, labels: str, ckpt: str, group: int = 64, seed: int = 0, batch_size: int = 64) -> dict[str, Any]:
    """The held-out ITM report (see the module docstring) of ``ckpt`` on these shards."""
    from trainer.tasks.finetune import load_pretrained, resolve_init

    if group < 2:
        raise ValueError(f"--group must be >= 2 (swap partners come from the group), got {group}")
    cfg, path = resolve_init(ckpt)
    tokenizer = load_tokenizer(cfg.tokenizer)
    feat_dim, num_classes = probe_shapes(regions)
    model = load_pretrained(cfg, path, feat_dim, num_classes, len(tokenizer)).eval()
    skips = SkipCounter("raise")
    src: Iterable[dict] = ({"url": s} for s in region_shards(regions))
    src = zip_label_shards(src, labels_dir=str(shard_dir(labels, LABEL_PREFIX)), skips=skips)
    src = to_examples(decode_pairs(src, skips), cfg.max_regions, skips)
    src = itm_eval_examples(tokenize(src, tokenizer, cfg.max_text_len, skips), group, seed, tokenizer, cfg.max_text_len)
    uids: list[str] = []
    logits, targets = [], []
    for batch in batched(src, batch_size, skips):
        if not batch["n"]:
            continue
        logits.append(model(batch)["itm_logit"].float())
        targets.append(batch["itm_label"])
        uids += batch["uids"]
    if not uids:
        raise ValueError(f"{regions} + {labels}: no captioned images to evaluate")
    report = summarise(uids, torch.cat(logits), torch.cat(targets))
    report["checkpoint"] = str(path)
    report["step"] = json.loads((Path(path) / "state.json").read_text()).get("step") if path else None
    report["itm_hard_neg_share"] = cfg.itm_hard_neg_share
    report["itm_mask_negatives"] = cfg.itm_mask_negatives
    return report


def format_report(r: dict[str, Any]) -> str:
    lines = [f"ITM on held-out pairs, {r['checkpoint']} (step {r['step']}, trained with itm_hard_neg_share={r['itm_hard_neg_share']}, "
             f"itm_mask_negatives={r['itm_mask_negatives']})",
             f"{'pairs':<10}{'n':>7}{'loss':>9}{'accuracy':>10}"]
    for kind in KINDS:
        k = r[kind]
        lines.append(f"{kind:<10}{k['n']:>7}" + (f"{k['loss']:>9.3f}{k['accuracy']:>10.3f}" if k["n"] else f"{'-':>9}{'-':>10}"))
    for edit, v in r["hard_ranked"].items():
        lines.append(f"true caption above its {edit} edit: {v['rate']:.3f} (n={v['n']})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    ap.add_argument("--regions", required=True, help="held-out region shards")
    ap.add_argument("--labels", required=True, help="their label shards")
    ap.add_argument("--ckpt", required=True, help="pre-training run directory (latest.json) or a ckpt-NNNNNNNN directory")
    ap.add_argument("--group", type=int, default=64, help="examples that share swap partners and replacement words (default 64)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--json", help="also write the report here")
    a = ap.parse_args(argv)
    try:
        torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
        report = evaluate(a.regions, a.labels, a.ckpt, a.group, a.seed, a.batch_size)
    except (ValueError, FileNotFoundError) as e:
        print(f"eval_itm: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_report(report))
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
