"""The DAG orchestrator: regions → phrases → teacher → match/labels → pretrain, skipping complete stages.

    python -m pipelines.dag regions  --data DATA [--num-shards 4]
    python -m pipelines.dag labels   --data DATA [--teacher NAME --teacher-arg K=V ...] [Beam options]
    python -m pipelines.dag pretrain --data DATA [--steps N] [--train-arg=--flag --train-arg=value ...]
    python -m pipelines.dag demo     --data DATA [--num-images 200] [--steps 150]

Layout under ``DATA`` (each stage directory named by its fingerprint, ``_MANIFEST.json`` written last):

    DATA/sample/                      the input corpus (``pipelines.synthetic`` layout; ``--corpus`` to change)
    DATA/regions/<fp>/                region shards          (fp: source content + ingest params)
    DATA/phrases/<fp>/                phrase Parquet         (fp: captions + spaCy model/params)
    DATA/teacher/<fp>/                teacher Parquet        (fp: phrases, regions, teacher name/params/weights)
    DATA/labels/<fp>/                 label shards           (fp: teacher fp + IoU threshold)
    DATA/pretrain/<fp>/               trainer run            (fp: regions, labels, trainer arguments)
    DATA/<stage>/CURRENT              fingerprint of the stage's current output
    DATA/dag.json                     the resolved stage directories of the last run (written atomically)
    DATA/logs/                        what Beam's worker processes printed (the console shows it with --verbose)

``DATA``, ``--corpus`` and every input may be Beam filesystem URLs (``gs://``, ``s3://``, ``hdfs://``) for
``regions`` and ``labels``; ``pretrain`` and ``demo`` write checkpoints and the gallery, so they need a local ``DATA``.

Input files enter fingerprints by name, size and modification time (so deciding to skip costs
O(files), not O(bytes), on local disks and ``gs://`` alike); ``--content-hash`` hashes their bytes.
A stage that outputs nothing, or rejects more than ``--max-reject`` (default 0.5) of its input,
fails the run (exit 1) with its top rejection reasons; a user error is one line (exit 2).

A stage whose fingerprint directory holds a complete manifest is skipped ("stage X: skipped"); an
incomplete one (a killed run) is removed and redone. So a new teacher re-runs teacher → labels →
pretrain, and nothing upstream. Pre-training runs ``python -m trainer.train`` in a subprocess: the
pipelines never import the trainer.
"""
from __future__ import annotations

import argparse
import logging
import os

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
from pipelines.dag.demo import run_demo, summary
from pipelines.dag.pretrain import pretrain_stage
from pipelines.dag.stages import DagConfig, labels_dag, record, regions_stage
from pipelines.stage_guard import DEFAULT_MAX_REJECT
from pipelines.teachers import DEFAULT_TEACHER, REGISTRY
from ssga_io import fs

log = logging.getLogger("pipelines.dag")


def parse_args(argv: list[str] | None = None) -> tuple[str, DagConfig, argparse.Namespace]:
    ap = cli.ArgumentParser(prog="python -m pipelines.dag", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("regions", "labels", "pretrain", "demo"))
    ap.add_argument("--data", required=True, help="data root (DATA/sample is the input corpus; stage outputs go beside it)")
    ap.add_argument("--corpus", default="", help="input corpus directory (default DATA/sample); the inputs below default to its layout")
    ap.add_argument("--captions", default="", help="captions TSV (default CORPUS/captions.tsv)")
    ap.add_argument("--regions-npz", default="", help="per-image .npz region files (default CORPUS/regions_npz)")
    ap.add_argument("--regions-tsv", nargs="+", default=[], help="bottom-up-attention TSV file(s) instead (no cls_prob: not for tag_similarity)")
    ap.add_argument("--objects-vocab", default="", help="objects_vocab.txt for tag_similarity (default CORPUS/objects_vocab.txt)")
    ap.add_argument("--flickr30k", default="", help="Flickr30k Entities dir for precision/recall (default CORPUS/flickr30k if present)")
    ap.add_argument("--images", default="", help="image directory for pixel teachers (default: urls relative to the captions)")
    ap.add_argument("--num-shards", type=int, default=4, help="region (and label) shards")
    ap.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"one of {', '.join(sorted(REGISTRY))} (default {DEFAULT_TEACHER})")
    ap.add_argument("--teacher-arg", action="append", default=[], metavar="K=V", help="teacher parameter, repeatable")
    ap.add_argument("--iou-threshold", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=150, help="pre-training steps")
    ap.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for trainer.train, repeatable: --train-arg=--batch-size --train-arg=8")
    ap.add_argument("--nproc", type=int, default=1, help="pretrain: processes for torchrun DDP (1: plain python)")
    ap.add_argument("--num-images", type=int, default=200, help="demo: corpus size")
    ap.add_argument("--seed", type=int, default=0, help="demo: corpus seed")
    ap.add_argument("--max-reject", type=float, default=DEFAULT_MAX_REJECT,
                    help="fail (exit 1) when a stage rejects more than this share of its input (default %(default)s)")
    ap.add_argument("--content-hash", action="store_true",
                    help="fingerprint input files by their bytes (default: names, sizes and modification times: O(files))")
    cli.add_common_flags(ap)
    args, beam_args = ap.parse_known_args(argv)
    if args.teacher not in REGISTRY:
        ap.error(f"unknown teacher {args.teacher!r}: pass --teacher with one of {', '.join(sorted(REGISTRY))}")
    for flag in ("num_shards", "nproc", "steps", "num_images"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if not 0.0 <= args.max_reject <= 1.0:
        ap.error(f"--max-reject must be a share between 0 and 1, got {args.max_reject}")
    # Beam's options are spelled with underscores; a hyphenated one is a mistyped flag of ours that
    # Beam would silently discard.
    unknown = [a for a in beam_args if a.startswith("--") and "-" in a[2:].split("=", 1)[0]]
    if unknown:
        ap.error(f"unknown option {unknown[0]} (Beam options use underscores, e.g. --direct_num_workers=2)")
    targs = {}
    targs.update(cli.parse_teacher_args(ap, args.teacher_arg))
    cfg = DagConfig(data=args.data, corpus=args.corpus, captions=args.captions, regions_npz=args.regions_npz, regions_tsv=args.regions_tsv,
                    objects_vocab=args.objects_vocab, flickr30k=args.flickr30k, images=args.images, num_shards=args.num_shards, teacher=args.teacher, teacher_args=targs,
                    iou_threshold=args.iou_threshold, steps=args.steps, train_args=args.train_arg, nproc=args.nproc,
                    beam_args=beam_args, max_reject=args.max_reject, content_hash=args.content_hash)
    return args.command, cfg, args


def main(argv: list[str] | None = None) -> None:
    """The command line: user errors are one line (exit 2), a failed stage guard a summary (exit 1), Ctrl-C one line (130)."""
    cli.run_cli(_cli_main, argv)


def _cli_main(argv: list[str]) -> None:
    cli.setup_logging("--verbose" in argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    command, cfg, args = parse_args(argv)
    log.info("teacher %s%s", cfg.teacher, "".join(f" {k}={v}" for k, v in sorted(cfg.teacher_args.items())))
    if command == "demo" and fs.is_remote(cfg.data):
        raise cli.UserError(f"--data {cfg.data}: the demo writes its gallery and checkpoints to a local directory; pass a local --data")
    if command == "demo":
        run_demo(cfg, args.num_images, args.seed)
        return
    if command == "regions":
        report = {"regions": regions_stage(cfg)}
        record(cfg.data, {"regions": {"dir": report["regions"]["dir"], "fingerprint": report["regions"]["fingerprint"]}})
        print(summary(report))
        return
    if command == "pretrain" and fs.is_remote(cfg.data):
        raise cli.UserError(f"--data {cfg.data}: pretrain writes checkpoints to a local directory; run `dag labels` with this "
                            "--data, then `python -m trainer.train --regions URL --labels URL --out LOCAL_DIR` (it streams the shards from the URLs)")
    report = labels_dag(cfg)
    if command == "pretrain":
        report["pretrain"] = pretrain_stage(cfg, report)
    print(summary(report))
