"""Pseudo labels end to end: captions → phrases → teacher → match → label shards (one Beam pipeline).

    python -m pipelines.label_pipeline --captions DIR/captions.tsv --regions REGIONS --out DATA \\
        --teacher tag_similarity --teacher-arg objects_vocab=DIR/objects_vocab.txt [--flickr30k DIR/flickr30k] \\
        [--iou-threshold 0.5] [--images DIR/images] [Beam options, e.g. --runner=DataflowRunner ...]

Outputs, each stage in a directory named by its fingerprint, with ``_DEAD_LETTER.jsonl`` and
``_MANIFEST.json`` written last (``--out`` is the data root, as ``--data`` of ``pipelines.dag``):
``OUT/phrases/<fp>/phrases-NNNNNN.parquet``,
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
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from ssga_io import fs
from pipelines.formats.captions import load_id_map, resolve_image_id
from pipelines.stages.stage_io import (
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
from pipelines.stages.labels import STATS, BuildLabels, WriteLabelShards, publish_shard
from pipelines.stages.match import DEFAULT_IOU_THRESHOLD, check_threshold
from pipelines.stages.phrases import DEAD, ExtractPhrases, PhraseConfig
from pipelines.stages.quality import precision_recall
from pipelines.stage_guard import DEFAULT_MAX_REJECT, check_matches, check_max_reject, check_stage
from pipelines.teachers import DEFAULT_TEACHER, REGISTRY, build_teacher
from schemas.arrow import PHRASES_SCHEMA, TEACHER_SCHEMA, phrases_from_row, phrases_to_row, teacher_from_row, teacher_to_row
from schemas.manifest import CURRENT_NAME, fingerprint, read_manifest, reconciles, write_manifest
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
    max_reject: float = DEFAULT_MAX_REJECT  # a stage rejecting more than this share of its input fails the run
    content_hash: bool = False  # fingerprint inputs by their bytes, not their files' names, sizes and mtimes


def _regions_fingerprint(regions: str) -> str:
    m = read_manifest(regions)
    if m and m.get("fingerprint"):
        return str(m["fingerprint"])
    return fingerprint([fs.content_digest(p) for _, p in region_shards(regions)])


PIXEL_TEACHERS = frozenset({"grounding_dino", "owlv2"})  # the teachers that open the images


def images_digest(cfg: LabelConfig) -> str:
    """Fingerprint of the images a pixel teacher reads: ``--images`` (the directory), or else the
    files the caption urls name (relative to the captions file). Metadata by default, bytes with ``content_hash``."""
    if cfg.images:
        return fs.source_digest(cfg.images, cfg.content_hash)
    from pipelines.formats.captions import read_captions  # noqa: PLC0415 - only pixel teachers need it

    root = fs.dirname(cfg.captions)
    urls = sorted({c.url for tag, c in read_captions(cfg.captions) if tag == "caption"})
    local = [u if os.path.isabs(u) or "://" in u else fs.join(root, u) for u in urls]
    files = [p for p in local if not p.startswith(("http://", "https://"))]
    web = [p for p in local if p.startswith(("http://", "https://"))]  # not ours to stat: their urls stand for them
    if cfg.content_hash:
        return fingerprint(web, [(p, fs.content_digest(p)) for p in files if fs.exists(p)])
    parents = sorted({fs.dirname(p) if fs.is_remote(p) else os.path.dirname(p) for p in files})
    wanted = set(files)
    meta = [m for m in fs.file_metadata([fs.join(d, "*") for d in parents]) if m[0] in wanted]
    return fingerprint(web, [(os.path.relpath(p, root) if not fs.is_remote(p) else p, size, mtime) for p, size, mtime in meta])


def stage_fingerprints(cfg: LabelConfig, teacher_fp: str, teacher_name: str = "", teacher_params: dict[str, Any] | None = None) -> dict[str, str]:
    """Each stage's fingerprint covers everything that changes its output.

    phrases: the captions and the spaCy model/params; teacher: phrases, regions, the teacher (name,
    params, weights), the images for a pixel teacher, the ground truth an oracle/simulated teacher
    reads; labels: teacher, IoU threshold, and the ground truth that precision/recall are scored on.
    Files enter by metadata (name, size, mtime; cheap on ``gs://`` too) or, with ``cfg.content_hash``, by content.
    """
    name, params = teacher_name or cfg.teacher, teacher_params or {}
    digest = lambda path: fs.source_digest(path, cfg.content_hash) if path else ""  # noqa: E731
    mode = "content" if cfg.content_hash else "metadata"
    # The image key renames every caption's image; "stem" (the historical key) adds nothing.
    key = [] if cfg.image_id in ("stem", "auto") and not cfg.id_map else [cfg.image_id, digest(cfg.id_map)]
    phrases = fingerprint("phrases", mode, digest(cfg.captions), cfg.phrases.fingerprint_params(), *key)
    inputs = {"images": images_digest(cfg) if name in PIXEL_TEACHERS else ""}
    if params.get("flickr30k"):
        inputs["ground_truth"] = digest(str(params["flickr30k"]))
    teacher = fingerprint("teacher", phrases, _regions_fingerprint(cfg.regions), teacher_fp, inputs)
    labels = fingerprint("labels", teacher, cfg.iou_threshold, digest(cfg.flickr30k))
    return {"phrases": phrases, "teacher": teacher, "labels": labels}


def stage_dirs(out: str, fps: dict[str, str]) -> dict[str, str]:
    """``OUT/<stage>/<fingerprint>`` of each stage."""
    return {s: fs.join(out, s, fps[s]) for s in fps}


def current_dir(out: str, stage: str) -> str:
    """The output directory of ``stage`` that the last successful run of ``OUT`` published."""
    pointer = fs.join(out, stage, CURRENT_NAME)
    if not fs.exists(pointer):
        raise FileNotFoundError(f"{pointer}: no completed {stage} stage under {out}")
    return fs.join(out, stage, fs.read_text(pointer).strip())


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
        from pipelines.stages.teacher import RunTeacher, TeacherModelHandler  # noqa: PLC0415 - imports torch: only when the stage runs

        handler = TeacherModelHandler(cfg.teacher, teacher_params, min_batch_size=1, max_batch_size=cfg.teacher_batch_size)
        images_root = fs.dirname(cfg.captions)
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
        | "WriteStats" >> beam.Map(lambda s: write_json(fs.join(out["labels"], STATS_NAME), s))
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
        path = fs.join(labels_dir, shard_name(LABEL_PREFIX, index))
        if not fs.exists(path):
            publish_shard(path, {})


def _stage_manifest(d: str, stage: str, fp: str, extra: dict[str, Any], out: int | None = None) -> dict[str, Any]:
    counts = json.loads(fs.read_text(fs.join(d, COUNTS_NAME)))
    c = {"in": counts["in"], "out": counts["out"] if out is None else out, "rejected": counts["rejected"]}
    if not reconciles(c):
        raise RuntimeError(f"{d}: counts do not reconcile (in={c['in']} != out={c['out']} + rejected={c['rejected']})")
    return write_manifest(d, {"stage": stage, "fingerprint": fp, "counts": c, **extra})


def plan_labels(cfg: LabelConfig) -> tuple[Any, dict[str, Any], dict[str, str]]:
    """Validate the configuration and resolve fingerprints: ``(teacher, teacher params, stage fps)``.

    Builds the teacher (hashing its weights) but loads no model. A mistake in the configuration
    raises :class:`pipelines.cli.UserError` naming the flag that fixes it.
    """
    with cli.as_user_errors(ValueError):
        check_threshold(cfg.iou_threshold)
        check_max_reject(cfg.max_reject)
    if not fs.exists(cfg.captions) or (not fs.is_remote(cfg.captions) and os.path.isdir(cfg.captions)):
        raise cli.UserError(f"captions file {cfg.captions} does not exist: pass --captions FILE (a caption<TAB>url TSV)")
    with cli.as_user_errors(FileNotFoundError, hint="pass --regions DIR, a directory of regions-NNNNNN.tar shards (python -m pipelines.regions writes them)"):
        region_shards(cfg.regions)
    if cfg.teacher not in REGISTRY:
        raise cli.UserError(f"unknown teacher {cfg.teacher!r}: pass --teacher with one of {', '.join(sorted(REGISTRY))}")
    params = dict(cfg.teacher_args)
    if cfg.teacher == "tag_similarity":
        vocab = str(params.get("objects_vocab") or "")
        if not vocab:
            raise cli.UserError("the tag_similarity teacher needs the detector's class names: pass --objects-vocab FILE (objects_vocab.txt)")
        if not fs.exists(vocab):
            raise cli.UserError(f"objects vocabulary {vocab} does not exist: pass --objects-vocab FILE (the detector's objects_vocab.txt)")
    if cfg.flickr30k and not fs.exists(cfg.flickr30k):
        raise cli.UserError(f"Flickr30k Entities directory {cfg.flickr30k} does not exist: fix --flickr30k, or leave it out")
    if cfg.flickr30k and cfg.teacher in ("oracle", "simulated"):
        params.setdefault("flickr30k", cfg.flickr30k)
    with cli.as_user_errors(ValueError, TypeError, KeyError, FileNotFoundError, hint="check --teacher-arg"):
        teacher = build_teacher(cfg.teacher, params)  # validates parameters before any work starts
        teacher_fp = teacher.fingerprint  # hashes the weights: a missing file is the user's
    region_manifest = read_manifest(cfg.regions) or {}
    if cfg.teacher == "tag_similarity" and region_manifest.get("has_cls_prob") is False:
        raise cli.UserError(
            f"{cfg.regions}: the region shards carry no detector classes (a plain BUTD TSV?), which the tag_similarity "
            "teacher needs: ingest an LXMERT TSV (--lxmert: objects_id) or .npz/.npy with cls_prob, or use --teacher "
            "grounding_dino/owlv2 (--teacher-arg model_dir=LOCAL_DIR, images beside the captions or --images DIR), or "
            "oracle/simulated with --flickr30k ground truth"
        )
    # Which key joins captions to region samples, checked on the data (an error names both sides).
    with cli.as_user_errors(ValueError, FileNotFoundError):
        cfg.image_id = resolved_image_id(cfg)
    return teacher, params, stage_fingerprints(cfg, teacher_fp, cfg.teacher, params)


def resolved_image_id(cfg: LabelConfig) -> str:
    """The caption → region key (:func:`pipelines.formats.captions.resolve_image_id`), remembered under
    ``OUT/.cache`` per (captions, regions, key settings): checking the join reads region shards, which
    a run whose stages are all complete must not do (skipping costs O(files))."""
    digest = lambda path: fs.source_digest(path, cfg.content_hash) if path else ""  # noqa: E731
    key = fingerprint("image-id", digest(cfg.captions), _regions_fingerprint(cfg.regions), cfg.image_id, digest(cfg.id_map))
    memo = fs.join(cfg.out, ".cache", f"image-id-{key}")
    if fs.exists(memo):
        return fs.read_text(memo).strip()
    resolved = resolve_image_id(cfg.captions, region_shards(cfg.regions), cfg.image_id, load_id_map(cfg.id_map))
    fs.write_bytes(memo, resolved.encode("utf-8"))
    return resolved


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
    ap.add_argument("--regions", required=True, help="region shard directory (regions-NNNNNN.tar)")
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
    ap.add_argument("--teacher-batch-size", type=int, default=64)
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
