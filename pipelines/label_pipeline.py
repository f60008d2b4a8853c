"""Pseudo labels end to end: captions → phrases → teacher → match → label shards (one Beam pipeline).

    python -m pipelines.label_pipeline --captions DIR/captions.tsv --regions REGIONS --out LABELS \\
        --teacher tag_similarity --teacher-arg objects_vocab=DIR/objects_vocab.txt [--flickr30k DIR/flickr30k] \\
        [--iou-threshold 0.5] [--images DIR/images] [Beam options, e.g. --runner=DataflowRunner ...]

Outputs, each stage in a directory named by its fingerprint, with ``_DEAD_LETTER.jsonl`` and
``_MANIFEST.json`` written last: ``OUT/phrases/<fp>/phrases-NNNNNN.parquet``,
``OUT/teacher/<fp>/teacher-NNNNNN.parquet``, ``OUT/labels/<fp>/labels-NNNNNN.tar`` (paired with
``REGIONS/regions-NNNNNN.tar``). After a successful run ``OUT/<stage>/CURRENT`` holds the current
fingerprint of each stage (:func:`current_dir` resolves it).

A stage whose fingerprint directory has a complete manifest is skipped: the pipeline reads its
Parquet output instead of recomputing it (so a new teacher re-runs teacher → match → labels only).
An incomplete directory (a run that died) is removed and redone.
Without ``--runner`` it runs on the DirectRunner with one worker process per core.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import remote_io
from pipelines.captions import load_id_map, resolve_image_id
from pipelines.label_io import (
    COUNTS_NAME,
    STATS_NAME,
    ReadCaptions,
    ReadParquetRecords,
    ReadRegions,
    SumStats,
    WriteCounts,
    WriteDeadLetters,
    WriteParquetShards,
    region_shards,
    write_json,
)
from pipelines.labels import STATS, BuildLabels, WriteLabelShards, publish_shard
from pipelines.match import DEFAULT_IOU_THRESHOLD, check_threshold
from pipelines.phrases import DEAD, ExtractPhrases, PhraseConfig
from pipelines.quality import precision_recall
from pipelines.teacher_stage import RunTeacher, TeacherModelHandler
from pipelines.teachers import DEFAULT_TEACHER, build_teacher
from schemas.arrow import PHRASES_SCHEMA, TEACHER_SCHEMA, phrases_from_row, phrases_to_row, teacher_from_row, teacher_to_row
from schemas.manifest import CURRENT_NAME, MANIFEST_NAME, fingerprint, reconciles, write_manifest
from schemas.shards import LABEL_PREFIX, shard_name

log = logging.getLogger("pipelines.label_pipeline")
STAGES = ("phrases", "teacher", "labels")


@dataclass
class LabelConfig:
    captions: str
    regions: str
    out: str
    teacher: str = DEFAULT_TEACHER
    teacher_args: dict[str, Any] = field(default_factory=dict)
    iou_threshold: float = DEFAULT_IOU_THRESHOLD
    flickr30k: str = ""  # ground truth for precision/recall (and for the oracle/simulated teachers)
    images: str = ""  # image directory; default: urls resolved against the captions file's directory
    phrases: PhraseConfig = field(default_factory=PhraseConfig)
    teacher_batch_size: int = 64
    force: bool = False
    image_id: str = "auto"  # caption → region key: auto | stem | int (schemas.image_ids); plan_labels resolves auto
    id_map: str = ""  # mapping file (COCO instances JSON or TSV stem<TAB>id); overrides image_id


def read_manifest(directory: str) -> dict[str, Any] | None:
    path = remote_io.join(directory, MANIFEST_NAME)
    return json.loads(remote_io.read_text(path)) if remote_io.exists(path) else None


def publish_manifest(directory: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """``schemas.manifest.write_manifest`` (adds schema and software versions), local or remote."""
    if not remote_io.is_remote(directory):
        return json.loads(write_manifest(directory, manifest).read_text())
    with tempfile.TemporaryDirectory(prefix="ssga-") as d:
        body = write_manifest(d, manifest).read_bytes()
    remote_io.write_bytes(remote_io.join(directory, MANIFEST_NAME), body)
    return json.loads(body)


def _regions_fingerprint(regions: str) -> str:
    m = read_manifest(regions)
    if m and m.get("fingerprint"):
        return str(m["fingerprint"])
    return fingerprint([remote_io.content_digest(p) for _, p in region_shards(regions)])


def stage_fingerprints(cfg: LabelConfig, teacher_fp: str) -> dict[str, str]:
    # The image key renames every caption's image; "stem" (the historical key) leaves fingerprints as they were.
    key = [] if cfg.image_id in ("stem", "auto") and not cfg.id_map else [cfg.image_id, remote_io.content_digest(cfg.id_map) if cfg.id_map else ""]
    phrases = fingerprint("phrases", remote_io.content_digest(cfg.captions), cfg.phrases.fingerprint_params(), *key)
    teacher = fingerprint("teacher", phrases, _regions_fingerprint(cfg.regions), teacher_fp, cfg.images or "")
    labels = fingerprint("labels", teacher, cfg.iou_threshold, bool(cfg.flickr30k))
    return {"phrases": phrases, "teacher": teacher, "labels": labels}


def stage_dirs(out: str, fps: dict[str, str]) -> dict[str, str]:
    """``OUT/<stage>/<fingerprint>`` of each stage."""
    return {s: remote_io.join(out, s, fps[s]) for s in fps}


def current_dir(out: str, stage: str) -> str:
    """The output directory of ``stage`` that the last successful run of ``OUT`` published."""
    pointer = remote_io.join(out, stage, CURRENT_NAME)
    if not remote_io.exists(pointer):
        raise FileNotFoundError(f"{pointer}: no completed {stage} stage under {out}")
    return remote_io.join(out, stage, remote_io.read_text(pointer).strip())


def _with_urls(p: beam.Pipeline, records, captions):
    """PhraseRecord → ``(PhraseRecord, url)``: Parquet keeps no url, the captions file has it."""
    urls = captions | "UrlByCaption" >> beam.Map(lambda c: (c.caption_id, c.url))
    keyed = records | "PhraseByCaption" >> beam.Map(lambda r: (r.caption_id, r))
    return (
        {"rec": keyed, "url": urls}
        | "JoinUrls" >> beam.CoGroupByKey()
        | "PairUrl" >> beam.FlatMap(lambda kv: [(r, kv[1]["url"][0]) for r in kv[1]["rec"]])
    )


def _with_phrases(teacher_records, phrase_records):
    """TeacherRecord → ``(PhraseRecord, TeacherRecord)``, joined by caption id."""
    keyed_t = teacher_records | "TeacherByCaption" >> beam.Map(lambda t: (t.caption_id, t))
    keyed_p = phrase_records | "PhraseOfTeacher" >> beam.Map(lambda pu: (pu[0].caption_id, pu[0]))
    return (
        {"p": keyed_p, "t": keyed_t}
        | "JoinPhrases" >> beam.CoGroupByKey()
        | "PairPhrase" >> beam.FlatMap(lambda kv: [(kv[1]["p"][0], t) for t in kv[1]["t"]])
    )


def build_pipeline(
    p: beam.Pipeline, cfg: LabelConfig, teacher_fp: str, teacher_params: dict[str, Any], dirs: dict[str, str], run: dict[str, bool]
) -> None:
    """The DAG: a short composition of named transforms. Stages with ``run[stage]`` False are read
    back from their published Parquet (``dirs[stage]``) instead of being recomputed."""
    out = dirs
    num_shards = len(region_shards(cfg.regions))

    # phrases
    caps = p | "ReadCaptions" >> ReadCaptions(cfg.captions, cfg.image_id, load_id_map(cfg.id_map))
    if run["phrases"]:
        phr = caps["captions"] | "ExtractPhrases" >> ExtractPhrases(cfg.phrases)
        _ = (
            phr.phrases
            | "PhraseRecords" >> beam.Map(lambda pu: pu[0])
            | "WritePhrases" >> WriteParquetShards(out["phrases"], "phrases", PHRASES_SCHEMA, phrases_to_row, num_shards)
        )
        phrase_dead = (caps["dead"], phr[DEAD]) | "PhraseDead" >> beam.Flatten()
        _ = phrase_dead | "PhraseDeadLetters" >> WriteDeadLetters(out["phrases"])
        all_rows = (caps["captions"], caps["dead"]) | "CaptionRows" >> beam.Flatten()
        _ = {"in": all_rows, "out": phr.phrases, "rejected": phrase_dead} | "PhraseCounts" >> WriteCounts(out["phrases"])
        phrases = phr.phrases
    else:
        stored = p | "ReadPhrases" >> ReadParquetRecords(out["phrases"], "phrases", phrases_from_row)
        phrases = _with_urls(p, stored, caps["captions"])
    if not (run["teacher"] or run["labels"]):
        return

    # teacher
    regions = p | "ReadRegions" >> ReadRegions(cfg.regions)
    if run["teacher"]:
        handler = TeacherModelHandler(cfg.teacher, teacher_params, min_batch_size=1, max_batch_size=cfg.teacher_batch_size)
        images_root = remote_io.dirname(cfg.captions)
        tea = phrases | "Teacher" >> RunTeacher(handler, teacher_fp, regions, images_root, cfg.images)
        _ = (
            tea["records"]
            | "TeacherRecords" >> beam.Map(lambda pt: pt[1])
            | "WriteTeacher" >> WriteParquetShards(out["teacher"], "teacher", TEACHER_SCHEMA, teacher_to_row, num_shards)
        )
        _ = tea["dead"] | "TeacherDeadLetters" >> WriteDeadLetters(out["teacher"])
        _ = {"in": phrases, "out": tea["records"], "rejected": tea["dead"]} | "TeacherCounts" >> WriteCounts(out["teacher"])
        teacher_records = tea["records"]
    else:
        stored = p | "ReadTeacher" >> ReadParquetRecords(out["teacher"], "teacher", teacher_from_row)
        teacher_records = _with_phrases(stored, phrases)
    if not run["labels"]:
        return

    # match + labels
    keyed = teacher_records | "KeyByImage" >> beam.Map(lambda pt: (pt[0].image_id, pt))
    labels = (
        {"regions": regions, "teacher": keyed}
        | "JoinTeacher" >> beam.CoGroupByKey()
        | "Match" >> beam.ParDo(BuildLabels(cfg.iou_threshold, teacher_fp, cfg.flickr30k)).with_outputs(STATS, main="samples")
    )
    _ = labels.samples | "WriteLabels" >> WriteLabelShards(out["labels"])
    _ = (
        labels[STATS]
        | "SumStats" >> beam.CombineGlobally(SumStats())
        | "WriteStats" >> beam.Map(lambda s: write_json(remote_io.join(out["labels"], STATS_NAME), s))
    )
    _ = (p | "NoDead" >> beam.Create([])) | "LabelDeadLetters" >> WriteDeadLetters(out["labels"])
    _ = {"regions_in": regions, "samples_out": labels.samples, "in": keyed, "rejected": p | "NoReject" >> beam.Create([])} | "LabelCounts" >> WriteCounts(out["labels"])


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Beam options as given; with no ``--runner``, the DirectRunner with one worker process per core."""
    args = list(beam_args)
    if not any(a.startswith("--runner") for a in args):
        args += ["--runner=DirectRunner", "--direct_running_mode=multi_processing"]
        if not any(a.startswith("--direct_num_workers") for a in args):
            args.append(f"--direct_num_workers={os.cpu_count() or 1}")
    return PipelineOptions(args)


def _fill_missing_label_shards(cfg: LabelConfig, labels_dir: str) -> None:
    """A region shard with no samples still gets its (empty) label shard, so pairing holds for every k."""
    for index, _ in region_shards(cfg.regions):
        path = remote_io.join(labels_dir, shard_name(LABEL_PREFIX, index))
        if not remote_io.exists(path):
            publish_shard(path, {})


def _stage_manifest(d: str, stage: str, fp: str, extra: dict[str, Any], out: int | None = None) -> dict[str, Any]:
    counts = json.loads(remote_io.read_text(remote_io.join(d, COUNTS_NAME)))
    c = {"in": counts["in"], "out": counts["out"] if out is None else out, "rejected": counts["rejected"]}
    if not reconciles(c):
        raise RuntimeError(f"{d}: counts do not reconcile (in={c['in']} != out={c['out']} + rejected={c['rejected']})")
    return publish_manifest(d, {"stage": stage, "fingerprint": fp, "counts": c, **extra})


def plan_labels(cfg: LabelConfig) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """Validate the configuration and resolve fingerprints: ``(teacher, teacher params, stage fps)``.

    Builds the teacher (hashing its weights) but loads no model.
    """
    check_threshold(cfg.iou_threshold)
    params = dict(cfg.teacher_args)
    if cfg.flickr30k and cfg.teacher in ("oracle", "simulated"):
        params.setdefault("flickr30k", cfg.flickr30k)
    teacher = build_teacher(cfg.teacher, params)  # validates parameters before any work starts
    region_manifest = read_manifest(cfg.regions) or {}
    if cfg.teacher == "tag_similarity" and region_manifest.get("has_cls_prob") is False:
        raise ValueError(
            f"{cfg.regions}: the region shards carry no detector classes (a plain BUTD TSV?), which the tag_similarity "
            "teacher needs: ingest an LXMERT TSV (--lxmert: objects_id) or .npz/.npy with cls_prob, or use --teacher "
            "grounding_dino/owlv2 (--teacher-arg model_dir=LOCAL_DIR, images beside the captions or --images DIR), or "
            "oracle/simulated with --flickr30k ground truth"
        )
    # Which key joins captions to region samples, checked on the data (an error names both sides).
    cfg.image_id = resolve_image_id(cfg.captions, region_shards(cfg.regions), cfg.image_id, load_id_map(cfg.id_map))
    return teacher, params, stage_fingerprints(cfg, teacher.fingerprint)


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
            remote_io.remove_tree(dirs[s])  # a dead run's partial output (temp files included) must not mix in
        else:
            log.info("stage %s: skipped (complete manifest %s)", s, fps[s])
    manifests = dict(previous)
    if any(run.values()):
        manifests.update(_run_stages(cfg, teacher, params, fps, dirs, run, beam_args or []))
    for s in STAGES:  # pointers last: they name only complete outputs
        remote_io.write_bytes(remote_io.join(cfg.out, s, CURRENT_NAME), (fps[s] + "\n").encode("utf-8"))
    return {s: {**manifests[s], "dir": dirs[s], "ran": run[s]} for s in STAGES}


def _run_stages(
    cfg: LabelConfig, teacher, params: dict[str, Any], fps: dict[str, str], dirs: dict[str, str], run: dict[str, bool], beam_args: list[str]
) -> dict[str, Any]:
    t0 = time.perf_counter()
    with beam.Pipeline(options=pipeline_options(beam_args)) as p:
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
    stats = json.loads(remote_io.read_text(remote_io.join(d, STATS_NAME)))
    quality = precision_recall(stats["quality"]) | stats["quality"] if "quality" in stats else None
    label_counts = json.loads(remote_io.read_text(remote_io.join(d, COUNTS_NAME)))
    if label_counts["regions_in"] != label_counts["samples_out"]:
        raise RuntimeError(f"{d}: {label_counts['regions_in']} region samples but {label_counts['samples_out']} label samples")
    manifests["labels"] = _stage_manifest(
        d,
        "labels",
        fps["labels"],
        {
            "upstream": fps["teacher"],
            "regions": cfg.regions,
            "num_shards": len(remote_io.glob(remote_io.join(d, f"{LABEL_PREFIX}-*.tar"))),
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
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captions", required=True, help="Conceptual-Captions style TSV (caption<TAB>url)")
    ap.add_argument("--regions", required=True, help="region shard directory (regions-NNNNNN.tar)")
    ap.add_argument("--out", required=True, help="output directory (phrases/, teacher/, labels/)")
    ap.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"teacher name (default {DEFAULT_TEACHER})")
    ap.add_argument("--teacher-arg", action="append", default=[], metavar="K=V", help="teacher parameter, repeatable")
    ap.add_argument("--objects-vocab", default="", help="objects_vocab.txt (shorthand for --teacher-arg objects_vocab=...)")
    ap.add_argument("--iou-threshold", type=float, default=DEFAULT_IOU_THRESHOLD, help="M = IoU >= this (inclusive)")
    ap.add_argument("--flickr30k", default="", help="Flickr30k Entities dir: precision/recall of M, and GT for oracle/simulated")
    ap.add_argument("--images", default="", help="image directory (default: caption urls relative to the captions file)")
    ap.add_argument("--max-phrases", type=int, default=PhraseConfig.max_phrases)
    ap.add_argument("--keep-pronouns", action="store_true")
    ap.add_argument("--keep-abstract-heads", action="store_true")
    ap.add_argument("--teacher-batch-size", type=int, default=64)
    ap.add_argument("--force", action="store_true", help="re-run even if a complete manifest matches")
    ap.add_argument("--image-id", default="auto", choices=("auto", "stem", "int"),
                    help="how a caption url names its region sample: file stem, the integer at its end (COCO ids, as BUTD's "
                         "COCO TSV writes), or auto (whichever joins)")
    ap.add_argument("--id-map", default="", help="mapping file url stem → region image_id: COCO instances JSON or TSV stem<TAB>id")
    args, beam_args = ap.parse_known_args(argv)
    targs: dict[str, Any] = {}
    for kv in args.teacher_arg:
        k, sep, v = kv.partition("=")
        if not sep:
            ap.error(f"--teacher-arg expects K=V, got {kv!r}")
        targs[k] = v
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
    )
    return cfg, beam_args


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("apache_beam", "absl"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    cfg, beam_args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        manifests = run_labels(cfg, beam_args)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"error: {e}") from None
    print(summary(manifests))


if __name__ == "__main__":
    main(sys.argv[1:])
