"""Fine-tune a pre-trained encoder for NLVR2 and score it (accuracy and consistency) against the majority label.

    python -m trainer.finetune_nlvr2 --nlvr2 DIR --regions REGIONS --pretrained RUN_OR_CKPT --out OUT \\
        [--train-split train] [--eval-split dev] [--id-map images.tsv --image-id map] [--steps 1000]
    python -m trainer.finetune_nlvr2 ... --pretrained none --model-config RUN/config.json   # no pre-training

``DIR`` holds NLVR2's ``train.json`` / ``dev.json`` / ``test1.json`` (:mod:`trainer.tasks.nlvr2.reader`);
``REGIONS`` the region shards of its images (``<split>-<set>-<pair>-img0`` / ``-img1``), joined by
``--image-id`` / ``--id-map`` (:func:`trainer.tasks.vcr.join.join_image_names`).

The "pair" setup of ViLBERT / LXMERT / UNITER: the sentence is encoded with each image by the
pre-training encoder; :class:`~trainer.tasks.nlvr2.head.NLVR2Head` classifies the two pooled
[CLS] ⊙ [IMG] outputs, concatenated; two-way cross-entropy. Training is the shared engine
(:func:`trainer.tasks.finetune.fit`); the final model predicts the eval split (no selection on it).

Writes ``OUT/predictions.csv`` (the official ``identifier,True|False`` lines) and ``OUT/results.json``:
accuracy and consistency (lil-lab/nlvr's metrics, percent) beside the majority label's, and the loss curve
(an unlabelled eval split, test2, gets predictions only).
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Any


from trainer.data.text import load_tokenizer
from trainer.tasks.command import RunSettings, add_run_args, add_task_io_args, cli_main, fit_task, results_head, start_run, write_results
from trainer.tasks.finetune import predict, train_subset
from trainer.tasks.nlvr2.baseline import majority_predictions
from trainer.tasks.nlvr2.data import check_images, collate_pairs, make_examples
from trainer.tasks.nlvr2.metric import evaluate, write_predictions
from trainer.tasks.nlvr2.model import build_nlvr2_model, pair_loss
from trainer.tasks.nlvr2.reader import SPLIT_FILES, image_names, read_split, split_path
from trainer.tasks.regions import read_regions
from trainer.tasks.vcr.join import JOIN_KEYS, join_region_dir

log = logging.getLogger("trainer.finetune_nlvr2")


@dataclass
class NLVR2Config(RunSettings):
    nlvr2: str  # directory of train.json / dev.json / test1.json
    regions: str
    out: str
    _: KW_ONLY
    pretrained: str = "none"  # a pre-training run dir (latest.json), a ckpt-NNNNNNNN dir, or "none"
    train_split: str = "train"
    eval_split: str = "dev"
    steps: int = 1000
    batch_size: int = 32  # 64 encodings a step


def run_nlvr2(cfg: NLVR2Config) -> dict[str, Any]:
    """Load, fine-tune on the train split, evaluate on the eval split; writes OUT/predictions.csv and OUT/results.json."""
    start = time.perf_counter()
    device, pcfg, ckpt = start_run(cfg, cfg.pretrained, JOIN_KEYS)
    train_all, eval_raw = read_split(cfg.nlvr2, cfg.train_split), read_split(cfg.nlvr2, cfg.eval_split)
    region_of, key = join_region_dir(image_names(train_all + eval_raw), cfg.regions, cfg.image_id, cfg.id_map, "NLVR2 image")
    for split, exs in ((cfg.train_split, train_all), (cfg.eval_split, eval_raw)):
        check_images(exs, region_of, str(split_path(cfg.nlvr2, split)), key)
    train_raw = [train_all[i] for i in train_subset(len(train_all), cfg.train_fraction, cfg.seed)]
    regions = read_regions(cfg.regions, cfg.max_regions or pcfg.max_regions, {region_of[i] for i in image_names(train_raw + eval_raw)})
    tokenizer = load_tokenizer(pcfg.tokenizer)
    train_ex = make_examples(train_raw, regions, region_of, tokenizer, pcfg.max_text_len)
    eval_ex = make_examples(eval_raw, regions, region_of, tokenizer, pcfg.max_text_len)
    log.info("%d train examples (fraction %g of %d), %d to evaluate, join key %s, init %s",
             len(train_ex), cfg.train_fraction, len(train_all), len(eval_ex), key, ckpt or "random")

    model, out, losses = fit_task(cfg, regions, lambda feat_dim, num_classes: build_nlvr2_model(
        pcfg, ckpt, feat_dim, num_classes, len(tokenizer), cfg.head_dropout), train_ex, collate_pairs, pair_loss, device, "finetune nlvr2")
    predictions = {e.identifier: bool(p) for e, p in zip(eval_raw, predict(model, eval_ex, collate_pairs, device))}
    results: dict[str, Any] = {
        **results_head(cfg, pcfg, ckpt, losses),
        "join_key": key,
        "train_examples": len(train_ex),
        "train_examples_available": len(train_all),
        "eval_split": cfg.eval_split,
        "eval_examples": len(eval_ex),
        "losses": losses,
    }
    if eval_raw and all(e.label is not None for e in eval_raw):
        scores = evaluate(predictions, eval_raw, source=f"{cfg.eval_split} predictions")
        base = evaluate(majority_predictions(train_raw, eval_raw), eval_raw)
        results["accuracy"] = asdict(scores)
        results["baselines"] = {"majority_label": asdict(base)}
        log.info("%s accuracy %.2f consistency %.2f (majority %.2f / %.2f)", cfg.eval_split, scores.accuracy, scores.consistency,
                 base.accuracy, base.consistency)
    write_predictions(out / "predictions.csv", predictions)
    return write_results(out, results, start)


def parse_args(argv: list[str] | None = None) -> NLVR2Config:
    d = NLVR2Config("", "", "")
    ap = argparse.ArgumentParser(prog="python -m trainer.finetune_nlvr2", description="Fine-tune and evaluate NLVR2 (accuracy, consistency).")
    ap.add_argument("--nlvr2", required=True, help="directory of NLVR2's train.json, dev.json, test1.json")
    add_task_io_args(ap, d, "region shard directory of the NLVR2 images")
    ap.add_argument("--train-split", default=d.train_split, choices=tuple(SPLIT_FILES))
    ap.add_argument("--eval-split", default=d.eval_split, choices=tuple(SPLIT_FILES), help="scored when labelled; test2: predictions only")
    add_run_args(ap, d, "--pretrained", JOIN_KEYS, "NLVR2 image stem → region sample: stem, int, map (with --id-map) or auto")
    return NLVR2Config(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cli_main(lambda a: run_nlvr2(parse_args(a)), argv)


if __name__ == "__main__":
    main()
