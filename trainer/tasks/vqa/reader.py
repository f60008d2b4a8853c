"""Read VQA 2.0 in its published layout, validated record by record.

A split ``S`` (``train2014``, ``val2014``, ``test2015``, ``test-dev2015``) is two JSON files:

* ``v2_OpenEnded_mscoco_S_questions.json``: ``{info, task_type, data_type, data_subtype, license,
  questions: [{image_id, question, question_id}]}``;
* ``v2_mscoco_S_annotations.json`` (absent for the test splits): ``{info, license, data_type,
  data_subtype, annotations: [{question_id, image_id, question_type, answer_type,
  multiple_choice_answer, answers: [10 x {answer, answer_confidence, answer_id}]}]}``.

The two are joined by ``question_id``. Images are COCO's integer ``image_id``; how they meet region
samples is :mod:`trainer.tasks.vqa.join`. The first bad record raises :class:`VQAError` naming the
file, the question id and the reason: a missing or mistyped field, an ``answer_type`` outside
``yes/no | number | other``, not exactly 10 answers (or repeated ``answer_id``: the official
leave-one-out removes answers by equality), a question without annotation or the reverse, question
and annotation disagreeing on the image, a duplicated question id, or an image with no region sample.
``answer_confidence`` is optional (the metric never reads it).
"""
from __future__ import annotations

import json
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

QUESTIONS_FILE = "v2_OpenEnded_mscoco_{split}_questions.json"
ANNOTATIONS_FILE = "v2_mscoco_{split}_annotations.json"
ANSWER_TYPES = ("yes/no", "number", "other")
NUM_ANSWERS = 10


class VQAError(ValueError):
    """VQA input that cannot be used; the message names the file, the question id and the reason."""


@dataclass(frozen=True)
class VQAExample:
    """One question, with its annotation when the split has one (``answers`` empty otherwise)."""

    question_id: int
    image_id: int  # COCO's integer id
    question: str
    question_type: str = ""
    answer_type: str = ""
    multiple_choice_answer: str = ""
    answers: tuple[str, ...] = ()  # the 10 raw ground-truth answers, in answer_id order of the file
    answer_confidence: tuple[str, ...] = ()

    @property
    def annotated(self) -> bool:
        return bool(self.answers)


def split_paths(root: str | Path, split: str) -> tuple[Path, Path | None]:
    """``(questions, annotations)`` of a split under ``root``; annotations ``None`` when the file is absent."""
    root = Path(root)
    q, a = root / QUESTIONS_FILE.format(split=split), root / ANNOTATIONS_FILE.format(split=split)
    if not q.exists():
        raise VQAError(f"{q}: no such file (expected VQA 2.0's {QUESTIONS_FILE.format(split=split)} in {root})")
    return q, (a if a.exists() else None)


def load_json_file(path: str | Path, list_key: str) -> dict[str, Any]:
    """A VQA JSON document, checked to be an object holding the list ``list_key``."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise VQAError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get(list_key), list):
        raise VQAError(f"{path}: expected a JSON object with a {list_key!r} list (VQA 2.0 layout)")
    return doc


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _question_problem(q: Any) -> str | None:
    if not isinstance(q, dict):
        return "is not a JSON object"
    for key in ("question_id", "image_id"):
        if key not in q:
            return f"lacks {key!r}"
        if not _is_int(q[key]):
            return f"{key} {q[key]!r} is not an integer"
    if not isinstance(q.get("question"), str) or not q["question"].strip():
        return "lacks a non-empty 'question' string"
    return None


def _annotation_problem(a: Any) -> str | None:
    if not isinstance(a, dict):
        return "is not a JSON object"
    for key in ("question_id", "image_id"):
        if not _is_int(a.get(key)):
            return f"lacks an integer {key!r}" if key not in a else f"{key} {a[key]!r} is not an integer"
    for key in ("question_type", "answer_type", "multiple_choice_answer"):
        if not isinstance(a.get(key), str):
            return f"lacks a {key!r} string"
    if a["answer_type"] not in ANSWER_TYPES:
        return f"answer_type {a['answer_type']!r} is not one of {ANSWER_TYPES}"
    answers = a.get("answers")
    if not isinstance(answers, list):
        return "lacks an 'answers' list"
    if len(answers) != NUM_ANSWERS:
        return f"has {len(answers)} answers, VQA 2.0 has exactly {NUM_ANSWERS} per question"
    for k, ans in enumerate(answers):
        if not isinstance(ans, dict) or not isinstance(ans.get("answer"), str) or not _is_int(ans.get("answer_id")):
            return f"answer #{k} lacks an 'answer' string or an integer 'answer_id'"
    ids = [ans["answer_id"] for ans in answers]
    if len(set(ids)) != len(ids):
        return f"answer_id repeats ({sorted(ids)}): the official leave-one-out needs 10 distinct answers"
    return None


def _index_annotations(path: Path, annotations: list) -> dict[int, dict]:
    out: dict[int, dict] = {}
    for k, a in enumerate(annotations):
        reason = _annotation_problem(a)
        if reason:
            qid = a.get("question_id", f"? (record #{k})") if isinstance(a, dict) else f"? (record #{k})"
            raise VQAError(f"{path}: question_id {qid}: annotation {reason}")
        if a["question_id"] in out:
            raise VQAError(f"{path}: question_id {a['question_id']}: annotated twice")
        out[a["question_id"]] = a
    return out


def iter_vqa(
    questions: str | Path, annotations: str | Path | None = None, known_images: Collection[int] | None = None, join_key: str = ""
) -> Iterator[VQAExample]:
    """Validated examples in question-file order. ``known_images``: the COCO ids that have a region
    sample (from :func:`trainer.tasks.vqa.join.join_regions`); ``join_key`` names the key in errors."""
    qdoc = load_json_file(questions, "questions")
    adoc = load_json_file(annotations, "annotations") if annotations is not None else None
    if adoc is not None and "data_subtype" in qdoc and "data_subtype" in adoc and qdoc["data_subtype"] != adoc["data_subtype"]:
        raise VQAError(f"{questions} is data_subtype {qdoc['data_subtype']!r} but {annotations} is {adoc['data_subtype']!r}: files of different splits")
    by_qid = _index_annotations(Path(annotations), adoc["annotations"]) if adoc is not None else {}
    if known_images is not None:
        _check_images(questions, qdoc["questions"], known_images, join_key)
    seen: set[int] = set()
    for k, q in enumerate(qdoc["questions"]):
        reason = _question_problem(q)
        if reason:
            qid = q.get("question_id", f"? (record #{k})") if isinstance(q, dict) else f"? (record #{k})"
            raise VQAError(f"{questions}: question_id {qid}: question {reason}")
        qid = q["question_id"]
        if qid in seen:
            raise VQAError(f"{questions}: question_id {qid}: listed twice")
        seen.add(qid)
        if adoc is None:
            yield VQAExample(qid, q["image_id"], q["question"])
            continue
        a = by_qid.get(qid)
        if a is None:
            raise VQAError(f"{questions}: question_id {qid}: has no annotation in {annotations}")
        if a["image_id"] != q["image_id"]:
            raise VQAError(f"{annotations}: question_id {qid}: annotation is for image_id {a['image_id']}, the question for {q['image_id']}")
        yield VQAExample(
            question_id=qid, image_id=q["image_id"], question=q["question"], question_type=a["question_type"],
            answer_type=a["answer_type"], multiple_choice_answer=a["multiple_choice_answer"],
            answers=tuple(ans["answer"] for ans in a["answers"]),
            answer_confidence=tuple(str(ans.get("answer_confidence", "")) for ans in a["answers"]),
        )
    orphans = sorted(set(by_qid) - seen)
    if orphans:
        raise VQAError(f"{annotations}: question_id {orphans[0]}: annotation has no question in {questions} ({len(orphans)} such, e.g. {orphans[:5]})")


def _check_images(path: str | Path, questions: list, known: Collection[int], join_key: str) -> None:
    missing = [q for q in questions if isinstance(q, dict) and _is_int(q.get("image_id")) and q["image_id"] not in known]
    if missing:
        images = sorted({q["image_id"] for q in missing})
        how = f" (joined by {join_key})" if join_key else ""
        raise VQAError(
            f"{path}: question_id {missing[0].get('question_id')}: image_id {missing[0]['image_id']} has no region sample{how}; "
            f"{len(missing)} question(s) of {len(images)} image(s) lack one, e.g. image ids {images[:5]}"
        )


def read_vqa(
    questions: str | Path, annotations: str | Path | None = None, known_images: Collection[int] | None = None, join_key: str = ""
) -> list[VQAExample]:
    """All examples of a questions file (and its annotations), validated; see :func:`iter_vqa`."""
    return list(iter_vqa(questions, annotations, known_images, join_key))


def read_split(root: str | Path, split: str, known_images: Collection[int] | None = None, join_key: str = "") -> list[VQAExample]:
    """``read_vqa`` on the published file names of ``split`` under ``root``."""
    q, a = split_paths(root, split)
    return read_vqa(q, a, known_images, join_key)


def data_subtype(questions: str | Path) -> str:
    """The questions file's ``data_subtype`` (``val2014``): the split part of COCO file names."""
    return str(load_json_file(questions, "questions").get("data_subtype", ""))
