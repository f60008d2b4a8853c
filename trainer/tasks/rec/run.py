"""Fine-tune a pre-trained encoder for referring-expression comprehension and evaluate it (RefCOCO+ protocol).

    python -m trainer.finetune_rec --refer DIR/refer --regions REGIONS --init RUN_OR_CKPT --out OUT \\
        [--head grounding] [--train-fraction 0.125] [--seed 0] [--steps 400] [--lr 1e-3]
    python -m trainer.finetune_rec ... --init none --model-config RUN/config.json   # no pre-training

The model is the pre-training encoder (same class, weights loaded from the checkpoint's
safetensors) plus a region scorer over each proposal's output token, one of two (``--head``):

- ``linear``: ``score(r) = w · dropout(h_r) + b``, new weights, as ViLBERT does for RefCOCO+;
- ``grounding``: the pre-training grounding head ``f_align(phrase, region)`` with the whole
  expression as the phrase, weights from the checkpoint, so the region-phrase alignment the
  grounding loss taught is carried into fine-tuning instead of being thrown away.

The expression is the text, the image's detector proposals are the regions; the loss is softmax
cross-entropy over the proposals against the proposal with the highest IoU with the ground-truth box
(a hard target; expressions whose best proposal is below 0.5 IoU still train towards their closest
proposal). The other pre-training heads are dropped. Training runs on ``train`` (or a seeded
``--train-fraction`` of its expressions) for a fixed number of steps (AdamW, linear warm-up then
linear decay); the final model is evaluated on ``val``/``testA``/``testB`` with
:mod:`trainer.tasks.rec.metrics` (no checkpoint selection on val).

Writes ``OUT/results.json`` (accuracies per split at IoU ≥ 0.5 and > 0.5, oracle upper bound,
the swapped-text control, accuracy by what the expression needs when the corpus records it) and
``OUT/predictions.jsonl``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ssga_io import atomic
from ssga_io.security import PICKLE_RISK
from trainer.data.text import load_tokenizer
from trainer.tasks.command import RunSettings, add_run_args, cli_main, results_head, run_settings, start_run, write_results
from trainer.tasks.finetune import fit, train_subset
from trainer.tasks.rec.data import collate, make_examples
from trainer.tasks.rec.evaluate import evaluate
from trainer.tasks.rec.model import HEADS, build_rec_model
from trainer.tasks.rec.refer import join_refer
from trainer.tasks.regions import feature_shape

log = logging.getLogger("trainer.finetune_rec")
EVAL_SPLITS = ("val", "testA", "testB")


@dataclass
class FinetuneConfig(RunSettings):
    refer: str
    regions: str
    init: str  # a pre-training run dir (latest.json), a ckpt-NNNNNNNN dir, or "none"
    out: str
    _: KW_ONLY
    head: str = "linear"  # "linear" (ViLBERT's) | "grounding" (the pre-trained f_align, expression as phrase)
    allow_pickle: bool = False


def rec_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Softmax cross-entropy over the proposals against the best-IoU one."""
    return F.cross_entropy(model(batch), batch["target"])


def run_finetune(cfg: FinetuneConfig) -> dict[str, Any]:
    """Load, fine-tune on train, evaluate on val/testA/testB, write OUT/results.json. Returns the results."""
    start = time.perf_counter()
    device, pcfg, ckpt = start_run(cfg, cfg.init)
    max_regions = cfg.max_regions or pcfg.max_regions
    expressions, proposals, _ = join_refer(cfg.refer, cfg.regions, cfg.image_id, cfg.id_map, cfg.allow_pickle, max_regions)
    tokenizer = load_tokenizer(pcfg.tokenizer)
    feat_dim, num_classes = feature_shape(proposals)

    train_exprs = [e for e in expressions if e.split == "train"]
    if not train_exprs:
        raise ValueError(f"{cfg.refer}: no expressions in the train split")
    keep = train_subset(len(train_exprs), cfg.train_fraction, cfg.seed)
    train_ex = make_examples([train_exprs[i] for i in keep], proposals, tokenizer, pcfg.max_text_len)
    eval_ex = make_examples([e for e in expressions if e.split in EVAL_SPLITS], proposals, tokenizer, pcfg.max_text_len)
    log.info("%d train expressions (fraction %g of %d), %d to evaluate, init %s", len(train_ex), cfg.train_fraction, len(train_exprs), len(eval_ex), ckpt or "random")

    torch.manual_seed(cfg.seed)
    model = build_rec_model(pcfg, ckpt, feat_dim, num_classes, len(tokenizer), cfg.head_dropout, cfg.head).to(device)
    out = Path(cfg.out)
    losses = fit(model, train_ex, collate, rec_loss, cfg, device, name="finetune rec", ckpt_dir=out / "checkpoints", settings=run_settings(cfg))
    metrics, lines = evaluate(model, eval_ex, proposals, device, control=True)
    train_metrics, _ = evaluate(model, train_ex, proposals, device)
    results = {
        **results_head(cfg, pcfg, ckpt, losses),
        "train_expressions": len(train_ex),
        "train_expressions_available": len(train_exprs),
        "train_acc": train_metrics.get("train", {}).get("acc"),
        "splits": metrics,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(out / "predictions.jsonl", "".join(json.dumps(x, sort_keys=True) + "\n" for x in lines))
    write_results(out, results, start)
    log.info("%s", " | ".join(f"{s} acc {m['acc']:.3f} (>0.5: {m['acc_strict']:.3f}, oracle {m['oracle']:.3f}, "
                              f"swapped text {m.get('acc_swapped_text', float('nan')):.3f})" for s, m in metrics.items()))
    return results


def parse_args(argv: list[str] | None = None) -> FinetuneConfig:
    d = FinetuneConfig("", "", "", "")
    ap = argparse.ArgumentParser(prog="python -m trainer.finetune_rec", description="Fine-tune and evaluate referring-expression comprehension.")
    ap.add_argument("--refer", required=True, help="REFER directory: refs.json (or refs(unc).p with --allow-pickle) + instances.json")
    ap.add_argument("--regions", required=True, help="region shard directory of the REFER images (proposals)")
    ap.add_argument("--init", required=True, help="pre-training run dir, checkpoint dir, or 'none' (random init; needs --model-config)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--head", default=d.head, choices=HEADS, help="region scorer: linear on region tokens (ViLBERT), or the pre-trained grounding head")
    ap.add_argument("--allow-pickle", action="store_true", help=f"read refs(unc).p when there is no refs.json: {PICKLE_RISK}")
    add_run_args(ap, d, "--init", ("auto", "stem", "int"),
                 "how a REFER image names its region sample: instances.json file_name stem, COCO integer id, or auto")
    return FinetuneConfig(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cli_main(lambda a: run_finetune(parse_args(a)), argv)


if __name__ == "__main__":
    main()
