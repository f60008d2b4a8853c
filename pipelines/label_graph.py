"""The label pipeline's Beam graph: phrases → teacher → match → labels as a composition of named transforms."""
from __future__ import annotations

from typing import Any

from pipelines import cli  # noqa: F401, I001 - first: quiets Beam's import-time log lines
import apache_beam as beam

from ssga_io import fs
from pipelines.formats.captions import load_id_map
from pipelines.label_plan import LabelConfig
from pipelines.stages.stage_io import (
    Batch,
    RegionInfo,
    STATS_NAME,
    ReadCaptions,
    ReadParquetRecords,
    ReadRegionBlocks,
    SumStats,
    by_block,
    WriteCounts,
    WriteDeadLetters,
    WriteParquetShards,
    region_shards,
    write_json,
)
from pipelines.stages.batch import use_batch_aware_coder
from pipelines.stages.labels import STATS, BuildLabels, WriteLabelShards
from pipelines.stages.phrases import DEAD, ExtractPhrases
from schemas.arrow import PHRASES_SCHEMA, TEACHER_SCHEMA, phrases_from_row, phrases_to_row, teacher_from_row, teacher_to_row
from schemas.records import PhraseRecord, TeacherRecord


def _flat(group: dict, tag: str) -> list:
    """The records of one kind in a block's co-group (each value a ``Batch``)."""
    return [x for batch in group.get(tag, ()) for x in batch]


def _phrases_with_urls(block: int, group: dict) -> tuple[int, dict]:
    """The block's ``{"phrases": [(PhraseRecord, url)], "regions": [RegionInfo]}``: phrases as extracted, or
    stored ones paired with their caption's url (Parquet keeps no url, the captions file has it)."""
    if "phrases" in group:
        phrases = _flat(group, "phrases")
    else:
        urls = {caption_id: url for caption_id, url, _ in _flat(group, "urls")}
        stored = _flat(group, "stored_phrases")
        missing = [r.caption_id for r in stored if r.caption_id not in urls]
        if missing:
            raise ValueError(f"stored phrase records {missing[:3]} have no row in the captions file (phrases output and captions disagree)")
        phrases = [(r, urls[r.caption_id]) for r in stored]
    return block, {"phrases": Batch(phrases), "regions": Batch(_flat(group, "regions"))}  # Batches: one pickle each, not one per record


def _stored_teacher(group: dict) -> Batch:
    """The block's images: per image of the regions, its regions and its stored teacher records, each
    paired with its phrase record by caption id."""
    phrases = {r.caption_id: r for r in (_flat(group, "stored_phrases") if "stored_phrases" in group else (pu[0] for pu in _flat(group, "phrases")))}
    teacher: dict[str, list[TeacherRecord]] = {}
    for t in _flat(group, "teacher"):
        teacher.setdefault(t.image_id, []).append(t)
    missing = [t.caption_id for ts in teacher.values() for t in ts if t.caption_id not in phrases]
    if missing:
        raise ValueError(f"stored teacher records {missing[:3]} have no phrase record (teacher and phrases outputs disagree)")
    regions: dict[str, list[RegionInfo]] = {}
    for r in _flat(group, "regions"):
        regions.setdefault(r.image_id, []).append(r)
    return Batch((rs, [(phrases[t.caption_id], t) for t in teacher.get(image_id, [])]) for image_id, rs in sorted(regions.items()))


def build_pipeline(
    p: beam.Pipeline, cfg: LabelConfig, teacher_fp: str, teacher_params: dict[str, Any], dirs: dict[str, str], run: dict[str, bool]
) -> None:
    """The DAG: a short composition of named transforms. Stages with ``run[stage]`` False are read
    back from their published Parquet (``dirs[stage]``) instead of being recomputed.

    Teacher, match and labels share one shuffle: everything they need of an image (its regions, its
    phrases, stored records and caption urls where a stage is skipped) is grouped once by the image's
    block (``GroupByBlock``: its stable shard index, :func:`~pipelines.stages.stage_io.by_block`), and
    each block's images travel through the teacher into match → labels. The only other shuffles spread
    the inputs, write shards (grouped by shard) and gather counts and dead letters.

    Records travel in ``Batch`` es (a batch of captions, a block of images), not one per element:
    Beam's per-element cost is then paid per batch, not per record.
    """
    use_batch_aware_coder()  # Beam sizes a sampled batch cheaply, instead of pickling it whole
    out = dirs
    num_shards = len(region_shards(cfg.regions))
    blocks = num_shards  # a block's phrase and teacher rows are one Parquet file

    # phrases
    if run["phrases"] or run["teacher"]:  # a stored phrase needs its caption's url only for the teacher
        caps = p | "ReadCaptions" >> ReadCaptions(cfg.captions, cfg.image_id, load_id_map(cfg.id_map))
    to_group: dict[str, Any] = {}
    if run["phrases"]:
        phr = caps["captions"] | "ExtractPhrases" >> ExtractPhrases(cfg.phrases)
        _ = (
            phr.phrases
            | "PhraseRecords" >> beam.Map(lambda b: Batch(pu[0] for pu in b))
            | "WritePhrases" >> WriteParquetShards(out["phrases"], "phrases", PHRASES_SCHEMA, phrases_to_row, num_shards)
        )
        phrase_dead = (caps["dead"], phr[DEAD]) | "PhraseDead" >> beam.Flatten()
        _ = phrase_dead | "PhraseDeadLetters" >> WriteDeadLetters(out["phrases"])
        all_rows = (caps["captions"], caps["dead"]) | "CaptionRows" >> beam.Flatten()
        _ = {"in": all_rows, "out": phr.phrases, "rejected": phrase_dead} | "PhraseCounts" >> WriteCounts(out["phrases"])
        phrases = phr.phrases
        to_group["phrases"] = phrases | "PhraseBlocks" >> beam.FlatMap(lambda b: by_block(b, blocks, lambda pu: pu[0].image_id))
    else:
        phrases = p | "ReadPhrases" >> ReadParquetRecords(out["phrases"], "phrases", phrases_from_row)
        to_group["stored_phrases"] = phrases | "PhraseBlocks" >> beam.FlatMap(lambda b: by_block(b, blocks, lambda r: r.image_id))
        if run["teacher"]:
            to_group["urls"] = caps["captions"] | "UrlBlocks" >> beam.FlatMap(
                lambda b: by_block([(c.caption_id, c.url, c.image_id) for c in b], blocks, lambda u: u[2]))
    if not (run["teacher"] or run["labels"]):
        return

    # teacher, on each block of images
    regions = p | "ReadRegions" >> ReadRegionBlocks(cfg.regions, blocks)
    to_group["regions"] = regions
    if not run["teacher"]:
        teacher_records = p | "ReadTeacher" >> ReadParquetRecords(out["teacher"], "teacher", teacher_from_row)
        to_group["teacher"] = teacher_records | "TeacherBlocks" >> beam.FlatMap(lambda b: by_block(b, blocks, lambda t: t.image_id))
    groups = to_group | "GroupByBlock" >> beam.CoGroupByKey()
    if run["teacher"]:
        from pipelines.stages.teacher import RunTeacher, TeacherModelHandler  # noqa: PLC0415 - imports torch: only when the stage runs

        handler = TeacherModelHandler(cfg.teacher, teacher_params, images_per_batch=cfg.teacher_batch_size)
        images_root = fs.dirname(cfg.captions)
        tea = (
            groups
            | "WithUrls" >> beam.Map(lambda kv: _phrases_with_urls(*kv))
            | "Teacher" >> RunTeacher(handler, teacher_fp, images_root, cfg.images)
        )
        _ = tea["records"] | "WriteTeacher" >> WriteParquetShards(out["teacher"], "teacher", TEACHER_SCHEMA, teacher_to_row, num_shards)
        _ = tea["dead"] | "TeacherDeadLetters" >> WriteDeadLetters(out["teacher"])
        _ = {"in": phrases, "out": tea["records"], "rejected": tea["dead"]} | "TeacherCounts" >> WriteCounts(out["teacher"])
        teacher_records, images = tea["records"], tea["images"]
    else:
        images = groups | "PairTeacher" >> beam.Map(lambda kv: _stored_teacher(kv[1]))
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
