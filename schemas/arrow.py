"""pyarrow schemas of the Parquet stages (``phrases``, ``teacher``), with row converters."""
from __future__ import annotations

from typing import Any

import pyarrow as pa

from schemas.records import Phrase, PhraseRecord, TeacherBox, TeacherRecord

PHRASE_STRUCT = pa.struct([("text", pa.string()), ("start", pa.int32()), ("end", pa.int32())])

PHRASES_SCHEMA = pa.schema(
    [
        ("caption_id", pa.string()),
        ("image_id", pa.string()),
        ("caption", pa.string()),
        ("phrases", pa.list_(PHRASE_STRUCT)),
    ],
    metadata={"ssga_record": "phrases", "ssga_schema_version": "1.0"},
)

TEACHER_BOX_STRUCT = pa.struct(
    [("phrase_index", pa.int32()), ("box", pa.list_(pa.float32(), 4)), ("score", pa.float32())]
)

TEACHER_SCHEMA = pa.schema(
    [
        ("caption_id", pa.string()),
        ("image_id", pa.string()),
        ("teacher", pa.string()),
        ("num_phrases", pa.int32()),
        ("boxes", pa.list_(TEACHER_BOX_STRUCT)),
    ],
    metadata={"ssga_record": "teacher", "ssga_schema_version": "1.0"},
)


def phrases_to_row(r: PhraseRecord) -> dict[str, Any]:
    return {
        "caption_id": r.caption_id,
        "image_id": r.image_id,
        "caption": r.caption,
        "phrases": [{"text": p.text, "start": p.start, "end": p.end} for p in r.phrases],
    }


def phrases_from_row(row: dict[str, Any]) -> PhraseRecord:
    return PhraseRecord(row["caption_id"], row["image_id"], row["caption"], [Phrase(**p) for p in row["phrases"]])


def teacher_to_row(r: TeacherRecord) -> dict[str, Any]:
    return {
        "caption_id": r.caption_id,
        "image_id": r.image_id,
        "teacher": r.teacher,
        "num_phrases": r.num_phrases,
        "boxes": [{"phrase_index": b.phrase_index, "box": list(map(float, b.box)), "score": float(b.score)} for b in r.boxes],
    }


def teacher_from_row(row: dict[str, Any]) -> TeacherRecord:
    return TeacherRecord(
        row["caption_id"],
        row["image_id"],
        row["teacher"],
        int(row["num_phrases"]),
        [TeacherBox(int(b["phrase_index"]), tuple(b["box"]), float(b["score"])) for b in row["boxes"]],
    )
