"""The label pipeline's Beam graph: phrases → teacher → match → labels as a composition of named transforms."""
from __future__ import annotations

from typing import Any

from pipelines import cli  # noqa: F401, I001 - first: quiets Beam's import-time log lines
import apache_beam as beam

from ssga_io import fs
from pipelines.formats.captions import load_id_map
from pipelines.label_plan import LabelConfig
from pipelines.stages.stage_io import (
    RegionInfo,
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
from pipelines.stages.labels import STATS, BuildLabels, WriteLabelShards
from pipelines.stages.phrases import DEAD, ExtractPhrases
from schemas.arrow import PHRASES_SCHEMA, TEACHER_SCHEMA, phrases_from_row, phrases_to_row, teacher_from_row, teacher_to_row
from schemas.records import PhraseRecord, TeacherRecord


def _phrases_with_urls(image_id: str, group: dict) -> list[tuple[PhraseRecord, str]]:
    """The image's ``(PhraseRecord, url)``: as extracted, or stored ones paired with their caption's url
    (Parquet keeps no url, the captions file has it)."""
    if "phrases" in group:
        return list(group["phrases"])
    urls = dict(group["urls"])
    missing = [r.caption_id for r in group["stored_phrases"] if r.caption_id not in urls]
    if missing:
        raise ValueError(f"image {image_id!r}: stored phrase records {missing[:3]} have no row in the captions file (phrases output and captions disagree)")
    return [(r, urls[r.caption_id]) for r in group["stored_phrases"]]


def _stored_teacher(image_id: str, group: dict) -> tuple[list[RegionInfo], list[tuple[PhraseRecord, TeacherRecord]]]:
    """The image's regions and its stored teacher records, each paired with its phrase record by caption id."""
    phrases = {r.caption_id: r for r in (group["stored_phrases"] if "stored_phrases" in group else (pu[0] for pu in group["phrases"]))}
    missing = [t.caption_id for t in group["teacher"] if t.caption_id not in phrases]
    if missing:
        raise ValueError(f"image {image_id!r}: stored teacher records {missing[:3]} have no phrase record (teacher and phrases outputs disagree)")
    return list(group["regions"]), [(phrases[t.caption_id], t) for t in group["teacher"]]


def build_pipeline(
    p: beam.Pipeline, cfg: LabelConfig, teacher_fp: str, teacher_params: dict[str, Any], dirs: dict[str, str], run: dict[str, bool]
) -> None:
    """The DAG: a short composition of named transforms. Stages with ``run[stage]`` False are read
    back from their published Parquet (``dirs[stage]``) instead of being recomputed.

    Teacher, match and labels share one shuffle: everything they need of an image (its regions, its
    phrases, stored records and caption urls where a stage is skipped) is grouped by image id once
    (``GroupByImage``), and the image's group travels through the teacher into match → labels. The
    only other shuffles write shards (grouped by shard) and gather counts and dead letters.
    """
    out = dirs
    num_shards = len(region_shards(cfg.regions))

    # phrases
    if run["phrases"] or run["teacher"]:  # a stored phrase needs its caption's url only for the teacher
        caps = p | "ReadCaptions" >> ReadCaptions(cfg.captions, cfg.image_id, load_id_map(cfg.id_map))
    by_image: dict[str, Any] = {}
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
        by_image["phrases"] = phrases | "PhraseByImage" >> beam.Map(lambda pu: (pu[0].image_id, pu))
    else:
        phrases = p | "ReadPhrases" >> ReadParquetRecords(out["phrases"], "phrases", phrases_from_row)
        by_image["stored_phrases"] = phrases | "PhraseByImage" >> beam.Map(lambda r: (r.image_id, r))
        if run["teacher"]:
            by_image["urls"] = caps["captions"] | "UrlByImage" >> beam.Map(lambda c: (c.image_id, (c.caption_id, c.url)))
    if not (run["teacher"] or run["labels"]):
        return

    # teacher, on each image's group
    regions = p | "ReadRegions" >> ReadRegions(cfg.regions)
    by_image["regions"] = regions
    if not run["teacher"]:
        teacher_records = p | "ReadTeacher" >> ReadParquetRecords(out["teacher"], "teacher", teacher_from_row)
        by_image["teacher"] = teacher_records | "TeacherByImage" >> beam.Map(lambda t: (t.image_id, t))
    groups = by_image | "GroupByImage" >> beam.CoGroupByKey()
    if run["teacher"]:
        from pipelines.stages.teacher import RunTeacher, TeacherModelHandler  # noqa: PLC0415 - imports torch: only when the stage runs

        handler = TeacherModelHandler(cfg.teacher, teacher_params, min_batch_size=1, max_batch_size=cfg.teacher_batch_size)
        images_root = fs.dirname(cfg.captions)
        tea = (
            groups
            | "WithUrls" >> beam.Map(lambda kv: (kv[0], {"phrases": _phrases_with_urls(*kv), "regions": kv[1]["regions"]}))
            | "Teacher" >> RunTeacher(handler, teacher_fp, images_root, cfg.images)
        )
        _ = (
            tea["records"]
            | "TeacherRecords" >> beam.Map(lambda pt: pt[1])
            | "WriteTeacher" >> WriteParquetShards(out["teacher"], "teacher", TEACHER_SCHEMA, teacher_to_row, num_shards)
        )
        _ = tea["dead"] | "TeacherDeadLetters" >> WriteDeadLetters(out["teacher"])
        _ = {"in": phrases, "out": tea["records"], "rejected": tea["dead"]} | "TeacherCounts" >> WriteCounts(out["teacher"])
        teacher_records, images = tea["records"], tea["images"]
    else:
        images = groups | "PairTeacher" >> beam.Map(lambda kv: _stored_teacher(*kv))
    if not run["labels"]:
        return

    # match + labels, on the same groups
    labels = images | "Match" >> beam.ParDo(BuildLabels(cfg.iou_threshold, teacher_fp, cfg.flickr30k)).with_outputs(STATS, main="samples")
    _ = labels.samples | "WriteLabels" >> WriteLabelShards(out["labels"])
    _ = (
        labels[STATS]
        | "SumStats" >> beam.CombineGlobally(SumStats())
        | "WriteStats" >> beam.Map(lambda s: write_json(fs.join(out["labels"], STATS_NAME), s))
    )
    _ = (p | "NoDead" >> beam.Create([])) | "LabelDeadLetters" >> WriteDeadLetters(out["labels"])
    counts = {"regions_in": regions, "samples_out": labels.samples, "in": teacher_records, "rejected": p | "NoReject" >> beam.Create([])}
    _ = counts | "LabelCounts" >> WriteCounts(out["labels"])
