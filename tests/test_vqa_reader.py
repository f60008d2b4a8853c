"""VQA 2.0 reader and region join on hand-written records in the exact published JSON layout."""
from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest

from schemas.records import RegionRecord
from schemas.shards import REGION_PREFIX, encode_region, sample_key, shard_name, write_shard
from trainer.tasks.vqa.join import coco_file_stem, join_regions, region_image_ids
from trainer.tasks.vqa.reader import VQAError, read_split, read_vqa, split_paths

INFO = {"description": "This is v2.0 of the VQA dataset.", "url": "http://visualqa.org", "version": "2.0", "year": 2017,
        "contributor": "VQA Team", "date_created": "2017-04-26 17:07:13"}  # fmt: skip
LICENSE = {"url": "http://creativecommons.org/licenses/by/4.0/", "name": "Creative Commons Attribution 4.0 International License"}


def _answers(values, confidence="yes"):
    return [{"answer": a, "answer_confidence": confidence, "answer_id": k + 1} for k, a in enumerate(values)]


QUESTIONS = {
    "info": INFO, "task_type": "Open-Ended", "data_type": "mscoco", "license": LICENSE, "data_subtype": "val2014",
    "questions": [
        {"image_id": 458752, "question": "What is this photo taken looking through?", "question_id": 458752000},
        {"image_id": 458752, "question": "Is the dog waiting?", "question_id": 458752002},
        {"image_id": 262146, "question": "How many people are there?", "question_id": 262146001},
    ],
}  # fmt: skip
ANNOTATIONS = {
    "info": INFO, "license": LICENSE, "data_subtype": "val2014", "data_type": "mscoco",
    "annotations": [
        {"question_type": "how many", "multiple_choice_answer": "2", "answers": _answers(["2", "2", "3", "2", "2", "two", "2", "2", "1", "2"]),
         "image_id": 262146, "answer_type": "number", "question_id": 262146001},
        {"question_type": "what is this", "multiple_choice_answer": "net",
         "answers": _answers(["net", "net", "net", "netting", "net", "net", "mesh", "net", "net", "net"], "maybe"),
         "image_id": 458752, "answer_type": "other", "question_id": 458752000},
        {"question_type": "is the", "multiple_choice_answer": "yes", "answers": _answers(["yes"] * 9 + ["no"]),
         "image_id": 458752, "answer_type": "yes/no", "question_id": 458752002},
    ],
}  # fmt: skip


def write_split(root, questions=QUESTIONS, annotations=ANNOTATIONS, split="val2014"):
    root.mkdir(parents=True, exist_ok=True)
    (root / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps(questions))
    if annotations is not None:
        (root / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps(annotations))
    return root


def test_reads_published_layout(tmp_path):
    examples = read_split(write_split(tmp_path), "val2014")
    assert [e.question_id for e in examples] == [458752000, 458752002, 262146001]  # question-file order
    net = examples[0]
    assert net.image_id == 458752 and net.question == "What is this photo taken looking through?"
    assert (net.question_type, net.answer_type, net.multiple_choice_answer) == ("what is this", "other", "net")
    assert net.answers == ("net", "net", "net", "netting", "net", "net", "mesh", "net", "net", "net")
    assert net.answer_confidence == ("maybe",) * 10
    assert examples[2].answers[5] == "two"  # ground truth read raw: normalisation is the metric's business


def test_test_split_without_annotations(tmp_path):
    write_split(tmp_path, annotations=None, split="test2015")
    q, a = split_paths(tmp_path, "test2015")
    assert a is None
    examples = read_split(tmp_path, "test2015")
    assert len(examples) == 3 and not any(e.annotated for e in examples)


def test_missing_split_file_names_the_file(tmp_path):
    with pytest.raises(VQAError, match=r"v2_OpenEnded_mscoco_train2014_questions\.json: no such file"):
        split_paths(tmp_path, "train2014")


def _broken(edit):
    q, a = copy.deepcopy(QUESTIONS), copy.deepcopy(ANNOTATIONS)
    edit(q, a)
    return q, a


BAD = [
    ("nine answers", lambda q, a: a["annotations"][1]["answers"].pop(), "annotations", r"question_id 458752000: annotation has 9 answers"),
    ("missing field", lambda q, a: a["annotations"][2].pop("question_type"), "annotations", r"question_id 458752002: annotation lacks a 'question_type'"),
    ("missing answer_type", lambda q, a: a["annotations"][0].pop("answer_type"), "annotations", r"question_id 262146001: annotation lacks a 'answer_type'"),
    ("bad answer_type", lambda q, a: a["annotations"][0].update(answer_type="count"), "annotations", r"question_id 262146001: annotation answer_type 'count' is not one of"),
    ("answer without id", lambda q, a: a["annotations"][0]["answers"][3].pop("answer_id"), "annotations", r"question_id 262146001: annotation answer #3 lacks"),
    ("repeated answer id", lambda q, a: a["annotations"][0]["answers"][3].update(answer_id=1), "annotations", r"question_id 262146001: annotation answer_id repeats"),
    ("question without annotation", lambda q, a: a["annotations"].pop(2), "questions", r"question_id 458752002: has no annotation in"),
    ("annotation without question", lambda q, a: q["questions"].pop(2), "annotations", r"question_id 262146001: annotation has no question in"),
    ("duplicate question", lambda q, a: q["questions"].append(dict(q["questions"][0])), "questions", r"question_id 458752000: listed twice"),
    ("duplicate annotation", lambda q, a: a["annotations"].append(dict(a["annotations"][0])), "annotations", r"question_id 262146001: annotated twice"),
    ("image disagrees", lambda q, a: a["annotations"][1].update(image_id=1), "annotations", r"question_id 458752000: annotation is for image_id 1, the question for 458752"),
    ("string question id", lambda q, a: q["questions"][1].update(question_id="458752002"), "questions", r"question_id 458752002: question question_id '458752002' is not an integer"),
    ("no question text", lambda q, a: q["questions"][1].update(question=""), "questions", r"question_id 458752002: question lacks a non-empty 'question'"),
    ("no question id", lambda q, a: q["questions"][1].pop("question_id"), "questions", r"question_id \? \(record #1\): question lacks 'question_id'"),
    ("other split", lambda q, a: a.update(data_subtype="train2014"), "questions", r"is data_subtype 'val2014' but .* is 'train2014'"),
]


@pytest.mark.parametrize("name,edit,file,msg", BAD, ids=[b[0] for b in BAD])
def test_bad_records_name_file_and_question(tmp_path, name, edit, file, msg):
    q, a = _broken(edit)
    write_split(tmp_path, q, a)
    fname = {"questions": "v2_OpenEnded_mscoco_val2014_questions.json", "annotations": "v2_mscoco_val2014_annotations.json"}[file]
    with pytest.raises(VQAError) as err:
        read_split(tmp_path, "val2014")
    assert fname in str(err.value) and re.search(msg, str(err.value)), str(err.value)


def test_not_the_published_layout(tmp_path):
    write_split(tmp_path, questions={"data": []})
    with pytest.raises(VQAError, match=r"questions\.json: expected a JSON object with a 'questions' list"):
        read_split(tmp_path, "val2014")
    (tmp_path / "v2_OpenEnded_mscoco_val2014_questions.json").write_text("{")
    with pytest.raises(VQAError, match="not valid JSON"):
        read_split(tmp_path, "val2014")


def test_unknown_image_names_question(tmp_path):
    write_split(tmp_path)
    with pytest.raises(VQAError, match=r"questions\.json: question_id 262146001: image_id 262146 has no region sample \(joined by int\); 1 question\(s\) of 1 image"):
        read_split(tmp_path, "val2014", known_images={458752}, join_key="int")
    assert len(read_split(tmp_path, "val2014", known_images={458752, 262146})) == 3


# ---------------------------------------------------------------------------------------------
# The join to region shards


def test_join_keys():
    ids = [458752, 262146]
    stems = ["COCO_val2014_000000458752", "COCO_val2014_000000262146", "COCO_val2014_000000000001"]
    assert join_regions(ids, stems, "int") == ({458752: stems[0], 262146: stems[1]}, "int")
    assert join_regions(ids, stems, "stem", data_subtype="val2014") == ({458752: stems[0], 262146: stems[1]}, "stem")
    assert join_regions(ids, stems, "auto", data_subtype="val2014")[1] == "int"  # equal hits: int first
    assert join_regions(ids, ["458752", "262146"], "auto", data_subtype="val2014") == ({458752: "458752", 262146: "262146"}, "int")
    assert join_regions([17, 3], ["000017", "000003"], "int")[0] == {17: "000017", 3: "000003"}  # synthetic corpus ids
    id_map = {"COCO_val2014_000000458752": "img-a", "COCO_val2014_000000262146": "img-b"}  # schemas.image_ids TSV: stem → region id
    assert join_regions(ids, ["img-a", "img-b"], "auto", data_subtype="val2014", id_map=id_map) == ({458752: "img-a", 262146: "img-b"}, "map")
    assert coco_file_stem(581857, "train2014") == "COCO_train2014_000000581857"


def test_partial_join_returns_the_joined():
    joined, key = join_regions([1, 2, 3], ["000001", "000002"], "int")
    assert joined == {1: "000001", 2: "000002"} and key == "int"


def test_no_join_names_keys_and_ids():
    with pytest.raises(VQAError) as err:
        join_regions([458752, 262146], ["img-a", "img-b"], "auto", data_subtype="val2014", regions="/data/regions")
    msg = str(err.value)
    assert "by int: e.g. ['262146', '458752']" in msg
    assert "by stem: e.g. ['COCO_val2014_000000262146', 'COCO_val2014_000000458752']" in msg
    assert "region image_ids e.g. ['img-a', 'img-b']" in msg and "/data/regions" in msg and "--id-map" in msg


def test_join_refuses_ambiguity_and_bad_keys():
    with pytest.raises(VQAError, match=r"'000017' and '17' both mean image 17 under the int key"):
        join_regions([17], ["000017", "17"], "int")
    with pytest.raises(VQAError, match="needs the split's data_subtype"):
        join_regions([17], ["x"], "stem")
    with pytest.raises(VQAError, match="join key must be one of"):
        join_regions([17], ["x"], "name")


def test_join_from_region_shards_then_read(tmp_path):
    regions = tmp_path / "regions"
    regions.mkdir()
    samples = {}
    for rid in ("COCO_val2014_000000458752", "COCO_val2014_000000999999"):
        rec = RegionRecord(rid, 64, 48, np.array([[0, 0, 10, 10]], np.float32), np.zeros((1, 4), np.float32))
        samples[sample_key(rid)] = encode_region(rec)
    write_shard(regions / shard_name(REGION_PREFIX, 0), samples)
    rids = region_image_ids(regions)
    assert sorted(rids) == ["COCO_val2014_000000458752", "COCO_val2014_000000999999"]
    joined, key = join_regions([458752, 262146], rids, "auto", data_subtype="val2014")
    assert joined == {458752: "COCO_val2014_000000458752"} and key == "int"
    write_split(tmp_path / "vqa")
    with pytest.raises(VQAError, match=r"question_id 262146001: image_id 262146 has no region sample \(joined by int\)"):
        read_split(tmp_path / "vqa", "val2014", known_images=joined, join_key=key)
