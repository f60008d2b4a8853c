"""Fine-tune a pre-trained encoder for VQA 2.0 and evaluate it with the official metric.

    python -m trainer.finetune_vqa --vqa DIR --regions REGIONS --pretrained RUN_OR_CKPT --out OUT \\
        [--train-split train2014] [--eval-split val2014] [--min-answer-count 9] [--steps 2000] [--lr 1e-4]
    python -m trainer.finetune_vqa ... --pretrained none --model-config RUN/config.json   # no pre-training

``DIR`` holds VQA 2.0's published files (``v2_OpenEnded_mscoco_<split>_questions.json`` and
``v2_mscoco_<split>_annotations.json``, :mod:`trainer.tasks.vqa.reader`); ``REGIONS`` the region
shards of the COCO images, joined by ``--image-id`` / ``--id-map`` (:mod:`trainer.tasks.vqa.join`).
Only the images of the two splits are read into memory (:func:`trainer.tasks.regions.read_regions`).

The answer vocabulary is built from the training questions (answers that are the
``multiple_choice_answer`` of ≥ ``--min-answer-count`` questions, 9 giving VQA 2.0's 3,129 on
train+val) or read with ``--vocab FILE`` (:meth:`AnswerVocab.save`'s format). The model is the
pre-training encoder plus ViLBERT's head on pooled [CLS] ⊙ [IMG]
(:class:`~trainer.tasks.vqa.model.VQAModel`); the loss is BCE over the vocabulary against the soft
targets (the official accuracy of each answer). Training is the shared engine
(:func:`trainer.tasks.finetune.fit`: AdamW, linear warm-up/decay, fixed steps, ``--ckpt-every`` /
``--resume``); the final model predicts the eval split's answers (no selection on it).

Writes ``OUT/vocab.json``, ``OUT/predictions.json`` (the official results format: a list of
``{"question_id", "answer"}``) and ``OUT/results.json``: accuracy overall, per answer type and per
question type (official metric, percent), the majority-answer baselines beside them, the share of
eval questions no vocabulary answer can score on, and the loss curve.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any


from schemas.image_ids import parse_id_map
from trainer.data.text import load_tokenizer
from trainer.tasks.command import RunSettings, add_run_args, add_task_io_args, cli_main, fit_task, results_head, start_run, write_results
from trainer.tasks.finetune import predict, train_subset
from trainer.tasks.regions import RegionError, read_regions
from trainer.tasks.vqa.baseline import majority_predictions
from trainer.tasks.vqa.data import check_images, collate_for, make_examples, uncovered, vocab_upper_bound
from trainer.tasks.vqa.join import JOIN_KEYS, join_regions, region_image_ids
from trainer.tasks.vqa.metric import VQAScores, evaluate, write_predictions
from trainer.tasks.vqa.model import build_vqa_model, vqa_loss
from trainer.tasks.vqa.reader import VQAError, VQAExample, data_subtype, read_vqa, split_paths
from trainer.tasks.vqa.vocab import MIN_COUNT, SOURCES, AnswerVocab, build_answer_vocab

log = logging.getLogger("trainer.finetune_vqa")


@dataclass
class VQAConfig(RunSettings):
    vqa: str  # directory of VQA 2.0's question and annotation files
    regions: str
    out: str
    _: KW_ONLY
    pretrained: str = "none"  # a pre-training run dir (latest.json), a ckpt-NNNNNNNN dir, or "none"
    train_split: str = "train2014"
    eval_split: str = "val2014"
    vocab: str = ""  # an AnswerVocab JSON; empty: built from the training questions
    min_answer_count: int = MIN_COUNT
    answer_source: str = SOURCES[0]  # count multiple_choice_answer (the convention) or all ten answers
    steps: int = 1000
    batch_size: int = 64  # lr stays 1e-4: ViLBERT's 4e-5 is for BERT-base at batch 256 (trainer/README.md "VQA")


def _split(root: str, split: str, need_annotations: bool) -> tuple[list[VQAExample], Path]:
    q, a = split_paths(root, split)
    if a is None and need_annotations:
        raise VQAError(f"{root}: split {split!r} has no annotations file; training needs annotated questions")
    return read_vqa(q, a), q


def _join(cfg: VQAConfig, splits: dict[str, tuple[list[VQAExample], Path]]) -> tuple[dict[int, str], str]:
    """``{COCO image_id: region image_id}`` for both splits under one key, every question's image checked."""
    try:
        rids = region_image_ids(cfg.regions)
    except RegionError as e:
        raise VQAError(str(e)) from e
    id_map = parse_id_map(Path(cfg.id_map).read_text(), cfg.id_map) if cfg.id_map else None
    key, region_of = cfg.image_id, {}
    for questions, path in splits.values():
        joined, key = join_regions({e.image_id for e in questions}, rids, key, data_subtype(path), id_map, regions=cfg.regions)
        check_images(questions, joined, str(path), key)
        region_of.update(joined)
    return region_of, key


def _scores(s: VQAScores) -> dict[str, Any]:
    return {"overall": s.overall, "per_answer_type": s.per_answer_type, "per_question_type": s.per_question_type, "n": s.n, "official": s.official()}


def run_vqa(cfg: VQAConfig) -> dict[str, Any]:
    """Load, fine-tune on the train split, evaluate on the eval split; writes OUT/{vocab,predictions,results}.json."""
    start = time.perf_counter()
    device, pcfg, ckpt = start_run(cfg, cfg.pretrained, JOIN_KEYS)
    train_all, train_path = _split(cfg.vqa, cfg.train_split, True)
    eval_q, eval_path = _split(cfg.vqa, cfg.eval_split, False)
    region_of, key = _join(cfg, {"train": (train_all, train_path), "eval": (eval_q, eval_path)})
    train_q = [train_all[i] for i in train_subset(len(train_all), cfg.train_fraction, cfg.seed)]
    try:
        regions = read_regions(cfg.regions, cfg.max_regions or pcfg.max_regions, {region_of[e.image_id] for e in train_q + eval_q})
    except RegionError as e:
        raise VQAError(str(e)) from e
    vocab = AnswerVocab.load(cfg.vocab) if cfg.vocab else build_answer_vocab(train_q, cfg.min_answer_count, cfg.answer_source)
    tokenizer = load_tokenizer(pcfg.tokenizer)
    train_ex = make_examples(train_q, regions, region_of, tokenizer, pcfg.max_text_len, vocab)
    eval_ex = make_examples(eval_q, regions, region_of, tokenizer, pcfg.max_text_len, vocab)
    missed = uncovered(eval_ex)
    if missed:  # scored 0 by the official metric, as they should be; named so a vocabulary problem is visible
        log.warning("%d of %d %s questions have no ground-truth answer in the %d-answer vocabulary (they score 0), e.g. question_id %s",
                    len(missed), len(eval_ex), cfg.eval_split, len(vocab), missed[:5])
    log.info("%d train questions (fraction %g of %d), %d to evaluate, %d answers, join key %s, init %s",
             len(train_ex), cfg.train_fraction, len(train_all), len(eval_ex), len(vocab), key, ckpt or "random")

    collate = collate_for(vocab)
    model, out, losses = fit_task(cfg, regions, lambda feat_dim, num_classes: build_vqa_model(
        pcfg, ckpt, feat_dim, num_classes, len(tokenizer), len(vocab), cfg.head_dropout), train_ex, collate, vqa_loss, device, "finetune vqa")
    answers = vocab.decode(predict(model, eval_ex, collate, device))
    predictions = {e.question_id: a for e, a in zip(eval_q, answers)}
    results: dict[str, Any] = {
        **results_head(cfg, pcfg, ckpt, losses),
        "join_key": key,
        "train_questions": len(train_ex),
        "train_questions_available": len(train_all),
        "eval_split": cfg.eval_split,
        "eval_questions": len(eval_ex),
        "num_answers": len(vocab),
        "losses": losses,
    }
    if eval_q and all(e.annotated for e in eval_q):
        scores = evaluate(predictions, eval_q, source=f"{cfg.eval_split} predictions")
        results["accuracy"] = _scores(scores)
        results["baselines"] = {
            f"majority_by_{by}": _scores(evaluate(majority_predictions(train_q, eval_q, by), eval_q)) for by in ("answer_type", "question_type")
        }
        results["eval_uncovered"] = {"n": len(missed), "question_ids": missed[:20], "vocab_upper_bound": vocab_upper_bound(eval_ex)}
        base = results["baselines"]["majority_by_answer_type"]["per_answer_type"]
        log.info("%s accuracy %.2f | %s", cfg.eval_split, scores.overall,
                 " | ".join(f"{t} {v:.2f} (majority {base[t]:.2f})" for t, v in sorted(scores.per_answer_type.items())))
    vocab.save(out / "vocab.json")
    write_predictions(out / "predictions.json", predictions)
    return write_results(out, results, start)


def parse_args(argv: list[str] | None = None) -> VQAConfig:
    d = VQAConfig("", "", "")
    ap = argparse.ArgumentParser(prog="python -m trainer.finetune_vqa", description="Fine-tune and evaluate VQA 2.0 (official metric).")
    ap.add_argument("--vqa", required=True, help="directory of v2_OpenEnded_mscoco_<split>_questions.json and v2_mscoco_<split>_annotations.json")
    add_task_io_args(ap, d, "region shard directory of the COCO images")
    ap.add_argument("--train-split", default=d.train_split)
    ap.add_argument("--eval-split", default=d.eval_split, help="scored when annotated; otherwise predictions only")
    ap.add_argument("--vocab", default=d.vocab, help="answer vocabulary JSON (default: built from the training questions)")
    ap.add_argument("--min-answer-count", type=int, default=d.min_answer_count, help="keep answers of at least N training questions (9: VQA's 3,129)")
    ap.add_argument("--answer-source", default=d.answer_source, choices=SOURCES)
    add_run_args(ap, d, "--pretrained", JOIN_KEYS[:3], "COCO image → region sample: int, stem, or auto")
    return VQAConfig(**vars(ap.parse_args(argv)))


def main(argv: list[str] | None = None) -> None:
    cli_main(lambda a: run_vqa(parse_args(a)), argv)


if __name__ == "__main__":
    main()
