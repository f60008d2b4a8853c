"""The label pipeline's Beam graph: phrases → teacher → match → labels as a composition of named transforms."""
from __future__ import annotations

from typing import Any

from pipelines import cli  # noqa: F401, I001 - first: quiets Beam's import-time log lines
import apache_beam as beam

from ssga_io import fs
from pipelines.formats.captions import load_id_map
from pipelines.label_plan import LabelConfig
from pipelines.stages.stage_io import (
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
