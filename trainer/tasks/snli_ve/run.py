"""Fine-tune a pre-trained encoder for SNLI-VE (visual entailment) and score it against the majority class.

    python -m trainer.finetune_snli_ve --snli-ve DIR --regions REGIONS --pretrained RUN_OR_CKPT --out OUT \\
        [--train-split train] [--eval-split dev] [--steps 1000] [--lr 1e-4]
    python -m trainer.finetune_snli_ve ... --pretrained none --model-config RUN/config.json   # no pre-training

``DIR`` holds SNLI-VE's ``snli_ve_{train,dev,test}.jsonl`` (:mod:`trainer.tasks.snli_ve.reader`);
``REGIONS`` the region shards of the Flickr30k images, joined by ``--image-id`` / ``--id-map``
(:func:`trainer.tasks.vcr.join.join_image_names`). Only the two splits' images are read into memory.

The model is the pre-training encoder plus ViLBERT's visual-entailment head on pooled [CLS] ⊙ [IMG]
(the hypothesis is the text, the premise image the regions; the caption is not input); the loss is
three-way cross-entropy. Training is the shared engine (:func:`trainer.tasks.finetune.fit`: AdamW,
linear warm-up/decay, fixed steps, ``--ckpt-every`` / ``--resume``); the final model predicts the eval
split (no selection on it).

Writes ``OUT/predictions.json`` (``{pairID: label}``) and ``OUT/results.json``: accuracy overall and
per gold class (percent) beside the majority-class baseline's, and the loss curve.
"""
from __future__ import annotations

import argparse
import logging
import json
import time
from dataclasses import KW_ONLY, asdict, dataclass
from typing import Any


from ssga_io import atomic
from trainer.data.text import load_tokenizer
from trainer.tasks.command import RunSettings, add_run_args, add_task_io_args, cli_main, fit_task, results_head, start_run, write_results
from trainer.tasks.finetune import predict, train_subset
from trainer.tasks.regions import collate_labelled, read_regions
from trainer.tasks.snli_ve.baseline import majority_predictions
from trainer.tasks.snli_ve.data import check_images, make_examples
from trainer.tasks.snli_ve.metric import evaluate
from trainer.tasks.snli_ve.model import build_snli_ve_model, ve_loss
from trainer.tasks.snli_ve.reader import LABELS, SPLITS, read_split, split_path
from trainer.tasks.vcr.join import JOIN_KEYS, join_region_dir

log = logging.getLogger("trainer.finetune_snli_ve")


@dataclass
class SNLIVEConfig(RunSettings):
    snli_ve: str  # directory of snli_ve_{train,dev,test}.jsonl
    regions: str
    out: str
    _: KW_ONLY
    pretrained: str = "none"  # a pre-training run dir (latest.json), a ckpt-NNNNNNNN dir, or "none"
    train_split: str = "train"
    eval_split: str = "dev"
    steps: int = 1000
    batch_size: int = 64


def run_snli_ve(cfg: SNLIVEConfig) -> dict[str, Any]:
    """Load, fine-tune on the train split, evaluate on the eval split; writes OUT/{predictions,results}.json."""
    start = time.perf_counter()
    device, pcfg, ckpt = start_run(cfg, cfg.pretrained, JOIN_KEYS)
    train_all, eval_ex_raw = read_split(cfg.snli_ve, cfg.train_split), read_split(cfg.snli_ve, cfg.eval_split)
    region_of, key = join_region_dir({e.image_id for e in train_all + eval_ex_raw}, cfg.regions, cfg.image_id, cfg.id_map, "Flickr30K_ID")
    for split, exs in ((cfg.train_split, train_all), (cfg.eval_split, eval_ex_raw)):
        check_images(exs, region_of, str(split_path(cfg.snli_ve, split)), key)
    train_raw = [train_all[i] for i in train_subset(len(train_all), cfg.train_fraction, cfg.seed)]
    regions = read_regions(cfg.regions, cfg.max_regions or pcfg.max_regions, {region_of[e.image_id] for e in train_raw + eval_ex_raw})
    tokenizer = load_tokenizer(pcfg.tokenizer)
    train_ex = make_examples(train_raw, regions, region_of, tokenizer, pcfg.max_text_len)
    eval_ex = make_examples(eval_ex_raw, regions, region_of, tokenizer, pcfg.max_text_len)
    log.info("%d train pairs (fraction %g of %d), %d to evaluate, join key %s, init %s",
             len(train_ex), cfg.train_fraction, len(train_all), len(eval_ex), key, ckpt or "random")

    model, out, losses = fit_task(cfg, regions, lambda feat_dim, num_classes: build_snli_ve_model(
        pcfg, ckpt, feat_dim, num_classes, len(tokenizer), cfg.head_dropout), train_ex, collate_labelled, ve_loss, device, "finetune snli-ve")
    predictions = {e.pair_id: LABELS[int(p)] for e, p in zip(eval_ex_raw, predict(model, eval_ex, collate_labelled, device))}
    scores = evaluate(predictions, eval_ex_raw, source=f"{cfg.eval_split} predictions")
    base = evaluate(majority_predictions(train_raw, eval_ex_raw), eval_ex_raw)
    results: dict[str, Any] = {
        **results_head(cfg, pcfg, ckpt, losses),
        "join_key": key,
        "train_pairs": len(train_ex),
        "train_pairs_available": len(train_all),
        "eval_split": cfg.eval_split,
        "accuracy": asdict(scores),
        "baselines": {"majority_class": asdict(base)},
        "losses": losses,
    }
    log.info("%s accuracy %.2f (majority %.2f) | %s", cfg.eval_split, scores.accuracy, base.accuracy,
             " | ".join(f"{c} {v:.2f}" for c, v in scores.per_class.items()))
    atomic.write_text(out / "predictions.json", json.dumps(predictions, indent=1, sort_keys=True) + "\n")
    return write_results(out, results, start)


def parse_args(argv: list[str] | None = None) -> SNLIVEConfig:
    d = SNLIVEConfig("", "", "")
    ap = argparse.ArgumentParser(prog="python -m trainer.finetune_snli_ve", description="Fine-tune and evaluate SNLI-VE (visual entailment).")
    ap.add_argument("--snli-ve", required=True, help="directory of snli_ve_{train,dev,test}.jsonl")
    add_task_io_args(ap, d, "region shard directory of the Flickr30k images")
    ap.add_argument("--train-split", default=d.train_split, choices=SPLITS)
    ap.add_argument("--eval-split", default=d.eval_split, choices=SPLITS)
    add_run_args(ap, d, "--pretrained", JOIN_KEYS, "Flickr30K_ID → region sample: stem, int, map (with --id-map) or auto")
    return SNLIVEConfig(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cli_main(lambda a: run_snli_ve(parse_args(a)), argv)


if __name__ == "__main__":
    main()
