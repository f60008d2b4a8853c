"""Fine-tune a pre-trained encoder for VCR (Q→A, QA→R, Q→AR) and score it against the majority position.

    python -m trainer.finetune_vcr --vcr DIR --regions REGIONS --pretrained RUN_OR_CKPT --out OUT \\
        [--train-split train] [--eval-split val] [--steps 1000] [--images DIR/vcr1images] [--no-links]

``DIR`` holds VCR's ``train.jsonl`` / ``val.jsonl`` (:mod:`trainer.tasks.vcr.reader`) and, as VCR
ships them, the ``metadata_fn`` files under ``vcr1images/`` (``--images``); ``REGIONS`` the region
shards of its images, joined by ``img_fn``'s stem (``--image-id`` / ``--id-map``).

Each question gives two 4-way examples: Q→A (question [SEP] answer choice) and QA→R (question and
the correct answer [SEP] rationale choice), object references written as their names. Every
(context, choice) pair is encoded with the image by the pre-training encoder and scored by
:class:`~trainer.tasks.vcr.head.VCRHead`; cross-entropy over the four. One model learns both modes
(as ViLBERT's VCR task); training is the shared engine (:func:`trainer.tasks.finetune.fit`).

Object references are VL-BERT's linked-region words: the tag word's WordPiece tokens get their
region's input embedding added (``links``, :class:`~trainer.models.single_stream.SingleStreamEncoder`),
each object matched to a region of the shard by metadata-box IoU ≥ 0.5 (:mod:`trainer.tasks.vcr.links`;
``results.json`` reports the share of objects matched). ``--no-links``, or a dual-stream encoder
(which refuses links), keeps the tag words alone.

Writes ``OUT/predictions.json`` (``{annot_id: {"answer": i, "rationale": j}}``) and ``OUT/results.json``:
Q→A, QA→R and Q→AR (percent) beside the majority position's, and the loss curve.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import KW_ONLY, asdict, dataclass
from pathlib import Path
from typing import Any


from ssga_io import atomic
from trainer.data.text import load_tokenizer
from trainer.tasks.command import RunSettings, add_run_args, add_task_io_args, cli_main, fit_task, results_head, start_run, write_results
from trainer.tasks.finetune import predict, train_subset
from trainer.tasks.regions import read_regions
from trainer.tasks.vcr.baseline import majority_predictions
from trainer.tasks.vcr.data import check_images, collate_choices, make_examples, matched_objects, read_question_metadata
from trainer.tasks.vcr.join import JOIN_KEYS, join_region_dir
from trainer.tasks.vcr.metric import evaluate
from trainer.tasks.vcr.model import build_vcr_model, choice_loss
from trainer.tasks.vcr.reader import SPLITS, VCRError, read_split, split_path
from trainer.tasks.vcr.text import MODES

log = logging.getLogger("trainer.finetune_vcr")


@dataclass
class VCRConfig(RunSettings):
    vcr: str  # directory of train.jsonl / val.jsonl
    regions: str
    out: str
    _: KW_ONLY
    pretrained: str = "none"  # a pre-training run dir (latest.json), a ckpt-NNNNNNNN dir, or "none"
    train_split: str = "train"
    eval_split: str = "val"
    steps: int = 1000
    batch_size: int = 16  # 64 encodings a step
    images: str = ""  # the metadata_fn root; "": VCR/vcr1images
    links: bool = True  # linked-region word embeddings (single-stream encoders only)


def run_vcr(cfg: VCRConfig) -> dict[str, Any]:
    """Load, fine-tune on the train split (both modes), evaluate on the eval split; writes OUT/{predictions,results}.json."""
    start = time.perf_counter()
    if cfg.eval_split == "test":
        raise VCRError("--eval-split test: VCR's test labels are not released; evaluate on val")
    device, pcfg, ckpt = start_run(cfg, cfg.pretrained, JOIN_KEYS)
    train_all, eval_q = read_split(cfg.vcr, cfg.train_split), read_split(cfg.vcr, cfg.eval_split)
    region_of, key = join_region_dir({e.img_fn for e in train_all + eval_q}, cfg.regions, cfg.image_id, cfg.id_map, "VCR image")
    for split, qs in ((cfg.train_split, train_all), (cfg.eval_split, eval_q)):
        check_images(qs, region_of, str(split_path(cfg.vcr, split)), key)
    train_q = [train_all[i] for i in train_subset(len(train_all), cfg.train_fraction, cfg.seed)]
    regions = read_regions(cfg.regions, cfg.max_regions or pcfg.max_regions, {region_of[e.image_stem] for e in train_q + eval_q})
    tokenizer = load_tokenizer(pcfg.tokenizer)
    use_links = cfg.links and pcfg.model == "single"
    if cfg.links and not use_links:
        log.info("dual-stream encoder: object references are tag words only (linked-region embeddings need the single-stream encoder)")
    meta = read_question_metadata(train_q + eval_q, cfg.images or Path(cfg.vcr) / "vcr1images") if use_links else None
    matched = matched_objects(train_q + eval_q, meta, regions, region_of) if meta is not None else None
    train_ex = [ex for mode in MODES for ex in make_examples(train_q, regions, region_of, tokenizer, pcfg.max_text_len, mode, meta)]
    log.info("%d train questions (fraction %g of %d) × %s, %d to evaluate, join key %s, init %s, links %s",
             len(train_q), cfg.train_fraction, len(train_all), MODES, len(eval_q), key, ckpt or "random",
             "off" if matched is None else f"on ({matched:.1%} of objects matched a region)")

    model, out, losses = fit_task(cfg, regions, lambda feat_dim, num_classes: build_vcr_model(
        pcfg, ckpt, feat_dim, num_classes, len(tokenizer), cfg.head_dropout), train_ex, collate_choices, choice_loss, device, "finetune vcr")
    chosen = {mode: {e.annot_id: int(p) for e, p in zip(eval_q, predict(model, make_examples(eval_q, regions, region_of, tokenizer,
                                                                                           pcfg.max_text_len, mode, meta), collate_choices, device))}
              for mode in MODES}
    scores = evaluate(chosen["answer"], chosen["rationale"], eval_q)
    base = evaluate(*majority_predictions(train_q, eval_q), eval_q)
    results: dict[str, Any] = {
        **results_head(cfg, pcfg, ckpt, losses),
        "join_key": key,
        "links": use_links,
        "objects_matched_to_regions": matched,
        "train_questions": len(train_q),
        "train_questions_available": len(train_all),
        "eval_split": cfg.eval_split,
        "accuracy": asdict(scores),
        "baselines": {"majority_position": asdict(base)},
        "losses": losses,
    }
    log.info("%s Q→A %.2f QA→R %.2f Q→AR %.2f (majority %.2f / %.2f / %.2f)", cfg.eval_split, scores.q2a, scores.qa2r, scores.q2ar,
             base.q2a, base.qa2r, base.q2ar)
    preds = {a: {"answer": chosen["answer"][a], "rationale": chosen["rationale"][a]} for a in chosen["answer"]}
    atomic.write_text(out / "predictions.json", json.dumps(preds, indent=1, sort_keys=True) + "\n")
    return write_results(out, results, start)


def parse_args(argv: list[str] | None = None) -> VCRConfig:
    d = VCRConfig("", "", "")
    ap = argparse.ArgumentParser(prog="python -m trainer.finetune_vcr", description="Fine-tune and evaluate VCR (Q→A, QA→R, Q→AR).")
    ap.add_argument("--vcr", required=True, help="directory of VCR's train.jsonl and val.jsonl")
    add_task_io_args(ap, d, "region shard directory of the VCR images")
    ap.add_argument("--train-split", default=d.train_split, choices=SPLITS[:2])
    ap.add_argument("--eval-split", default=d.eval_split, choices=SPLITS[:2])
    ap.add_argument("--images", default=d.images, help="root of the metadata_fn files (default: VCR/vcr1images)")
    ap.add_argument("--no-links", dest="links", action="store_false", help="object references as tag words only (no linked-region embeddings)")
    add_run_args(ap, d, "--pretrained", JOIN_KEYS, "img_fn stem → region sample: stem, int, map (with --id-map) or auto")
    return VCRConfig(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cli_main(lambda a: run_vcr(parse_args(a)), argv)


if __name__ == "__main__":
    main()
