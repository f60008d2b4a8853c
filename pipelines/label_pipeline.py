"""Pseudo labels end to end: captions → phrases → teacher → match → label shards (one Beam pipeline).

    python -m pipelines.label_pipeline --captions DIR/captions.tsv --regions REGIONS --out DATA \\
        --teacher tag_similarity --teacher-arg objects_vocab=DIR/objects_vocab.txt [--flickr30k DIR/flickr30k] \\
        [--iou-threshold 0.5] [--images DIR/images] [Beam options, e.g. --runner=DataflowRunner ...]

Outputs, each stage in a directory named by its fingerprint, with ``_DEAD_LETTER.jsonl`` and
``_MANIFEST.json`` written last (``--out`` is the data root, as ``--data`` of ``pipelines.dag``):
``OUT/phrases/<fp>/phrases-NNNNNN.parquet``,
``OUT/teacher/<fp>/teacher-NNNNNN.parquet``, ``OUT/labels/<fp>/labels-NNNNNN.tar`` (paired with
``REGIONS/regions-NNNNNN.tar``). After a successful run ``OUT/<stage>/CURRENT`` holds the current
fingerprint of each stage (:func:`pipelines.label_plan.current_dir` resolves it).

A stage whose fingerprint directory has a complete manifest is skipped: the pipeline reads its
Parquet output instead of recomputing it (so a new teacher re-runs teacher → match → labels only).
An incomplete directory (a run that died) is removed and redone.
Without ``--runner`` it runs on the DirectRunner with one worker process per core (:mod:`pipelines.beam_options`).
The plan (config, fingerprints, checks) is :mod:`pipelines.label_plan`, the Beam graph :mod:`pipelines.label_graph`;
this module runs them and publishes the stages.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from typing import Any

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
import apache_beam as beam

from ssga_io import fs
from pipelines.beam_options import pipeline_options
from pipelines.label_graph import build_pipeline
from pipelines.label_plan import STAGES, LabelConfig, plan_labels, stage_dirs
from pipelines.stages.stage_io import COUNTS_NAME, STATS_NAME, region_shards
from pipelines.stages.labels import publish_shard
from pipelines.stages.match import DEFAULT_IOU_THRESHOLD
from pipelines.stages.phrases import PhraseConfig
from pipelines.stages.quality import precision_recall
from pipelines.stage_guard import DEFAULT_MAX_REJECT, check_matches, check_stage
from pipelines.teachers import DEFAULT_TEACHER
from schemas.manifest import CURRENT_NAME, read_manifest, reconciles, write_manifest
from schemas.shards import LABEL_PREFIX, shard_name

log = logging.getLogger("pipelines.label_pipeline")


def _fill_missing_label_shards(cfg: LabelConfig, labels_dir: str) -> None:
    """A region shard with no samples still gets its (empty) label shard, so pairing holds for every k."""
    for index, _ in region_shards(cfg.regions):
        path = fs.join(labels_dir, shard_name(LABEL_PREFIX, index))
        if not fs.exists(path):
            publish_shard(path, {})


def _stage_manifest(d: str, stage: str, fp: str, extra: dict[str, Any], out: int | None = None) -> dict[str, Any]:
    counts = json.loads(fs.read_text(fs.join(d, COUNTS_NAME)))
    c = {"in": counts["in"], "out": counts["out"] if out is None else out, "rejected": counts["rejected"]}
    if not reconciles(c):
        raise RuntimeError(f"{d}: counts do not reconcile (in={c['in']} != out={c['out']} + rejected={c['rejected']})")
    return write_manifest(d, {"stage": stage, "fingerprint": fp, "counts": c, **extra})


def check_outputs(cfg: LabelConfig, manifests: dict[str, Any], dirs: dict[str, str]) -> None:
    """Stage guards (:mod:`pipelines.stage_guard`): fail on an empty or mostly-rejected stage, or on labels without a single match."""
    hints = {
        "phrases": {"": f"is {cfg.captions} a caption<TAB>url TSV with captions in English?"},
        "teacher": {
            "not in the region source": f"do the caption urls' image ids (file names) name images of --regions {cfg.regions}?",
            "region class id outside": "is --objects-vocab the detector's own class list (one line per class, in its order)?",
            "no class distribution": "tag_similarity needs regions with detector classes (LXMERT TSV with --lxmert, or .npz/.npy with cls_prob), or pick another --teacher",
        },
    }
    for s in STAGES:
        check_stage(s, manifests[s], dirs[s], cfg.max_reject, hint=hints.get(s, {}))
    check_matches(manifests["labels"].get("stats", {}), dirs["labels"],
                  hint="does the teacher fit the regions (for tag_similarity: is --objects-vocab the detector's own class list)?")


def run_labels(cfg: LabelConfig, beam_args: list[str] | None = None) -> dict[str, Any]:
    """Run the stages whose fingerprint has no complete manifest; returns the three stage manifests.

    Each returned manifest carries ``dir`` (where the stage's output lives) and ``ran`` (whether this
    call computed it); neither is part of the file on disk.
    """
    teacher, params, fps = plan_labels(cfg)
    teacher_fp = teacher.fingerprint
    dirs = stage_dirs(cfg.out, fps)
    previous = {s: read_manifest(dirs[s]) for s in STAGES}
    run = {s: cfg.force or not (previous[s] and previous[s].get("fingerprint") == fps[s]) for s in STAGES}
    for s in STAGES:
        if run[s]:
            log.info("stage %s: running (%s)", s, dirs[s])
            fs.remove_tree(dirs[s])  # a dead run's partial output (temp files included) must not mix in
        else:
            log.info("stage %s: skipped (complete manifest %s)", s, fps[s])
    manifests = dict(previous)
    if any(run.values()):
        running = ", ".join(f"{s} ({dirs[s]})" for s in STAGES if run[s])
        cli.note_state(f"stopped while computing {running}: no manifest there, so the next run redoes them; complete stages are kept")
        with cli.worker_output(None if fs.is_remote(cfg.out) else os.path.join(cfg.out, "logs")):
            manifests.update(_run_stages(cfg, teacher, params, fps, dirs, run, beam_args or []))
        cli.note_state("all stages complete")
    check_outputs(cfg, manifests, dirs)  # a failed guard moves no pointer: later steps keep the last good output
    for s in STAGES:  # pointers last: they name only complete outputs
        fs.write_bytes(fs.join(cfg.out, s, CURRENT_NAME), (fps[s] + "\n").encode("utf-8"))
    return {s: {**manifests[s], "dir": dirs[s], "ran": run[s]} for s in STAGES}


@contextlib.contextmanager
def _fewer_gc_passes(gen0: int = 50_000):
    """Collect garbage less often while the pipeline runs in this process: the in-process runner holds
    whole PCollections (millions of objects), which the cyclic collector otherwise rescans thousands
    of times (measured: ~7% of the run's CPU at 4,000 images). Restored afterwards."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], gen0), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


def _run_stages(
    cfg: LabelConfig, teacher, params: dict[str, Any], fps: dict[str, str], dirs: dict[str, str], run: dict[str, bool], beam_args: list[str]
) -> dict[str, Any]:
    t0 = time.perf_counter()
    with _fewer_gc_passes(), beam.Pipeline(options=pipeline_options(beam_args)) as p:
        build_pipeline(p, cfg, teacher.fingerprint, params, dirs, run)
    wall = time.perf_counter() - t0
    common = {"config": _config_json(cfg), "teacher": teacher.describe(), "wall_s": round(wall, 2)}
    manifests: dict[str, Any] = {}
    if run["phrases"]:
        manifests["phrases"] = _stage_manifest(dirs["phrases"], "phrases", fps["phrases"], {"inputs": {"captions": cfg.captions}, "config": _config_json(cfg)})
    if run["teacher"]:
        manifests["teacher"] = _stage_manifest(dirs["teacher"], "teacher", fps["teacher"], {"upstream": fps["phrases"], **common})
    if not run["labels"]:
        return manifests
    d = dirs["labels"]
    _fill_missing_label_shards(cfg, d)
    stats = json.loads(fs.read_text(fs.join(d, STATS_NAME)))
    quality = precision_recall(stats["quality"]) | stats["quality"] if "quality" in stats else None
    label_counts = json.loads(fs.read_text(fs.join(d, COUNTS_NAME)))
    if label_counts["regions_in"] != label_counts["samples_out"]:
        raise RuntimeError(f"{d}: {label_counts['regions_in']} region samples but {label_counts['samples_out']} label samples")
    manifests["labels"] = _stage_manifest(
        d,
        "labels",
        fps["labels"],
        {
            "upstream": fps["teacher"],
            "regions": cfg.regions,
            "num_shards": len(fs.glob(fs.join(d, f"{LABEL_PREFIX}-*.tar"))),
            "images": {"in": label_counts["regions_in"], "out": label_counts["samples_out"]},
            "iou_threshold": cfg.iou_threshold,
            "stats": stats,
            "quality": {cfg.teacher: quality} if quality else None,
            **common,
        },
        out=stats.get("captions", 0),
    )
    return manifests


def _config_json(cfg: LabelConfig) -> dict[str, Any]:
    return json.loads(json.dumps(asdict(cfg), default=str))


def summary(manifests: dict[str, Any]) -> str:
    lines = []
    for s in STAGES:
        c = manifests[s]["counts"]
        lines.append(f"{s:8s} in={c['in']:>7d} out={c['out']:>7d} rejected={c['rejected']:>6d}  ({manifests[s]['fingerprint']})")
    st = manifests["labels"]["stats"]
    if st.get("phrases"):
        lines.append(
            f"labels   images={st['images']} captions={st['captions']} phrases={st['phrases']} "
            f"no-match={st['phrases_without_match'] / st['phrases']:.1%} positives/phrase={st['positive_pairs'] / st['phrases']:.2f}"
        )
    for name, q in (manifests["labels"].get("quality") or {}).items():
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(f"quality  teacher={name} precision={fmt(q['precision'])} recall={fmt(q['recall'])} f1={fmt(q['f1'])} "
                     f"(phrases with GT {q['phrases_with_gt']}, without {q['phrases_without_gt']})")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> tuple[LabelConfig, list[str]]:
    ap = cli.ArgumentParser(prog="python -m pipelines.label_pipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True, help="Conceptual-Captions style TSV (caption<TAB>url)")
    ap.add_argument("--regions", required=True, help="region shard directory or URL (regions-NNNNNN.tar)")
    ap.add_argument("--out", required=True, help="data root: stages go to OUT/phrases/<fp>, OUT/teacher/<fp>, OUT/labels/<fp>")
    ap.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"teacher name (default {DEFAULT_TEACHER})")
    ap.add_argument("--teacher-arg", action="append", default=[], metavar="K=V", help="teacher parameter, repeatable")
    ap.add_argument("--objects-vocab", default="", help="objects_vocab.txt (shorthand for --teacher-arg objects_vocab=...)")
    ap.add_argument("--iou-threshold", type=float, default=DEFAULT_IOU_THRESHOLD, help="M = IoU >= this (inclusive)")
    ap.add_argument("--flickr30k", default="", help="Flickr30k Entities dir: precision/recall of M, and GT for oracle/simulated")
    ap.add_argument("--images", default="", help="image directory (default: caption urls relative to the captions file)")
    ap.add_argument("--max-phrases", type=int, default=PhraseConfig.max_phrases)
    ap.add_argument("--keep-pronouns", action="store_true")
    ap.add_argument("--keep-abstract-heads", action="store_true")
    ap.add_argument("--teacher-batch-size", type=int, default=64, help="images (with all their captions) per teacher call (default %(default)s)")
    ap.add_argument("--force", action="store_true", help="re-run even if a complete manifest matches")
    ap.add_argument("--image-id", default="auto", choices=("auto", "stem", "int"),
                    help="how a caption url names its region sample: file stem, the integer at its end (COCO ids, as BUTD's "
                         "COCO TSV writes), or auto (whichever joins)")
    ap.add_argument("--id-map", default="", help="mapping file url stem → region image_id: COCO instances JSON or TSV stem<TAB>id")
    ap.add_argument("--max-reject", type=float, default=DEFAULT_MAX_REJECT,
                    help="fail (exit 1) when a stage rejects more than this share of its input (default %(default)s)")
    ap.add_argument("--content-hash", action="store_true",
                    help="fingerprint input files by their bytes (default: names, sizes and modification times)")
    cli.add_common_flags(ap)
    args, beam_args = ap.parse_known_args(argv)
    out_name = args.out.rstrip("/").rsplit("/", 1)[-1]
    if out_name in STAGES:
        parent = args.out.rstrip("/")[: -len(out_name)].rstrip("/") or "."
        ap.error(f"--out is the data root (stages go to OUT/phrases/<fp>, OUT/teacher/<fp>, OUT/labels/<fp>); "
                 f"--out {args.out} would write {args.out}/{out_name}/<fp>: pass --out {parent}")
    targs: dict[str, Any] = {}
    targs.update(cli.parse_teacher_args(ap, args.teacher_arg))
    if args.objects_vocab and args.teacher == "tag_similarity":  # only that teacher reads class names
        targs.setdefault("objects_vocab", args.objects_vocab)
    cfg = LabelConfig(
        captions=args.captions,
        regions=args.regions,
        out=args.out,
        teacher=args.teacher,
        teacher_args=targs,
        iou_threshold=args.iou_threshold,
        flickr30k=args.flickr30k,
        images=args.images,
        phrases=PhraseConfig(
            drop_pronouns=not args.keep_pronouns, drop_abstract_heads=not args.keep_abstract_heads, max_phrases=args.max_phrases
        ),
        teacher_batch_size=args.teacher_batch_size,
        force=args.force,
        image_id=args.image_id,
        id_map=args.id_map,
        max_reject=args.max_reject,
        content_hash=args.content_hash,
    )
    return cfg, beam_args


def main(argv: list[str] | None = None) -> None:
    """The command line: user errors are one line (exit 2), a failed stage guard a summary (exit 1), Ctrl-C one line (130)."""
    cli.run_cli(_cli_main, argv)


def _cli_main(argv: list[str]) -> None:
    cli.setup_logging("--verbose" in argv)
    cfg, beam_args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    manifests = run_labels(cfg, beam_args)
    print(summary(manifests))


if __name__ == "__main__":
    # Through the importable module, so Beam pickles classes as pipelines.label_pipeline.X, not __main__.X.
    from pipelines.label_pipeline import main as _main

    _main(sys.argv[1:])
