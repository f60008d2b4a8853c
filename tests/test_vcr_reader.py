"""VCR reader, metadata boxes, linked object words and pairs, on hand-written records in the published layout.

The record is the ``train-0`` example quoted in rowanz/r2c ``dataloaders/vcr.py`` (field names, token
lists with ``[2]`` object references, four choices, integer labels); the metadata follows the
``metadata_fn`` JSON that loader reads (``boxes`` as ``[x1, y1, x2, y2, score]``, ``segms`` polygons,
``width``/``height``/``names``), boxes checked against the image size as r2c asserts.
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from trainer.tasks.vcr import (
    GENDER_NEUTRAL_NAMES, VCRError, choice_pairs, join_image_names, parse_metadata, read_split, read_vcr, words_and_links,
)  # fmt: skip

R2C_RECORD = {
    "movie": "3015_CHARLIE_ST_CLOUD", "objects": ["person", "person", "person", "car"], "interesting_scores": [0],
    "answer_likelihood": "possible", "img_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0.jpg",
    "metadata_fn": "lsmdc_3015_CHARLIE_ST_CLOUD/3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0.json",
    "answer_orig": "No she does not", "question_orig": "Does 3 feel comfortable?",
    "rationale_orig": "She is standing with her arms crossed and looks disturbed",
    "question": ["Does", [2], "feel", "comfortable", "?"], "answer_match_iter": [3, 0, 2, 1], "answer_sources": [3287, 0, 10184, 2260],
    "answer_choices": [["Yes", "because", "the", "person", "sitting", "next", "to", "her", "is", "smiling", "."],
                       ["No", "she", "does", "not", "."],
                       ["Yes", ",", "she", "is", "wearing", "something", "with", "thin", "straps", "."],
                       ["Yes", ",", "she", "is", "cold", "."]],
    "answer_label": 1,
    "rationale_choices": [["There", "is", "snow", "on", "the", "ground", ",", "and", "she", "is", "wearing", "a", "coat", "and", "hate", "."],
                          ["She", "is", "standing", "with", "her", "arms", "crossed", "and", "looks", "disturbed", "."],
                          ["She", "is", "sitting", "very", "rigidly", "and", "tensely", "on", "the", "edge", "of", "the", "bed", "."],
                          [[2], "is", "laying", "in", "bed", "but", "not", "sleeping", ".", "she", "looks", "sad", "."]],
    "rationale_sources": [1921, 0, 9750, 25743], "rationale_match_iter": [3, 0, 2, 1], "rationale_label": 1,
    "img_id": "train-0", "question_number": 0, "annot_id": "train-0", "match_fold": "train-0", "match_index": 0,
}  # fmt: skip


def _second():
    r = copy.deepcopy(R2C_RECORD)
    r.update(annot_id="train-1", question_number=1, question=["Why", "is", [0, 1], "standing", "by", [3], "?"], answer_label=3, rationale_label=0)
    return r


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_reads_published_layout(tmp_path):
    write_jsonl(tmp_path / "val.jsonl", [R2C_RECORD, _second()])
    ex = read_split(tmp_path, "val")
    assert [e.annot_id for e in ex] == ["train-0", "train-1"]
    e = ex[0]
    assert e.question == ("Does", (2,), "feel", "comfortable", "?")
    assert e.objects == ("person", "person", "person", "car") and e.answer_label == 1 and e.rationale_label == 1
    assert e.rationale_choices[3][0] == (2,) and len(e.answer_choices) == 4
    assert e.image_stem == "3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0" and e.extra["movie"] == "3015_CHARLIE_ST_CLOUD"


def test_test_split_reads_without_labels(tmp_path):
    rec = {k: v for k, v in R2C_RECORD.items() if k not in ("answer_label", "rationale_label")}
    write_jsonl(tmp_path / "test.jsonl", [rec])
    (e,) = read_split(tmp_path, "test")
    assert not e.labelled


def _broken(edit):
    r = copy.deepcopy(R2C_RECORD)
    edit(r)
    return r


@pytest.mark.parametrize("edit, msg", [
    (lambda r: r.pop("answer_label"), r"val.jsonl:2: annot_id train-0: field 'answer_label' is missing"),
    (lambda r: r.update(rationale_label=4), r"val.jsonl:2: annot_id train-0: field 'rationale_label' 4 is not an integer in 0..3"),
    (lambda r: r.update(question=["Does", [4], "feel", "?"]), r"val.jsonl:2: annot_id train-0: field 'question' token #1 refers to object 4, out of range of the 4 objects"),
    (lambda r: r["rationale_choices"][3].__setitem__(0, [-1]), r"val.jsonl:2: annot_id train-0: field 'rationale_choices\[3\]' token #0 refers to object -1"),
    (lambda r: r["answer_choices"].pop(), r"val.jsonl:2: annot_id train-0: field 'answer_choices' is not a list of exactly 4 choices"),
    (lambda r: r.pop("img_fn"), r"val.jsonl:2: annot_id train-0: field 'img_fn' is missing"),
    (lambda r: r["question"].__setitem__(0, 3), r"field 'question' token #0 3 is neither a word nor"),
])  # fmt: skip
def test_bad_records_name_file_line_and_field(tmp_path, edit, msg):
    write_jsonl(tmp_path / "val.jsonl", [_second(), _broken(edit)])
    with pytest.raises(VCRError, match=msg):
        read_split(tmp_path, "val")


def test_not_json_and_duplicates_and_missing_file(tmp_path):
    (tmp_path / "val.jsonl").write_text(json.dumps(R2C_RECORD) + "\n{oops\n")
    with pytest.raises(VCRError, match=r"val.jsonl:2: not valid JSON"):
        read_split(tmp_path, "val")
    write_jsonl(tmp_path / "val.jsonl", [R2C_RECORD, R2C_RECORD])
    with pytest.raises(VCRError, match=r"val.jsonl:2: annot_id train-0: listed twice"):
        read_split(tmp_path, "val")
    with pytest.raises(VCRError, match=r"train.jsonl: no such file"):
        read_split(tmp_path, "train")


def test_image_absent_from_region_shards(tmp_path):
    other = _second()
    other["img_fn"] = "lsmdc_x/unknown_clip@3.jpg"
    path = write_jsonl(tmp_path / "val.jsonl", [R2C_RECORD, other])
    region_ids = ["3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0", "some_other@1"]
    known, key = join_image_names([R2C_RECORD["img_fn"], other["img_fn"]], region_ids, "auto", what="VCR image")
    assert key == "stem" and known == {"3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0": "3015_CHARLIE_ST_CLOUD_00.23.57.935-00.24.00.783@0"}
    with pytest.raises(VCRError, match=r"val.jsonl:2: annot_id train-1: field 'img_fn' 'lsmdc_x/unknown_clip@3.jpg' has no region sample \(joined by stem\)"):
        read_vcr(path, known_images=known, join_key=key)


def test_metadata_boxes_to_project_convention():
    doc = {"boxes": [[10.5, 20.0, 110.25, 220.0, 0.99], [0.0, 0.0, 640.0, 360.0, 0.75]], "segms": [[[[10.5, 20.0], [110.0, 20.0], [60.0, 219.0]]], [[[0, 0], [639, 0], [0, 359]]]],
           "names": ["person", "car"], "width": 640, "height": 360}  # fmt: skip
    m = parse_metadata(doc, "m.json", num_objects=2)
    assert m.boxes.dtype == np.float32 and m.boxes.shape == (2, 4)
    np.testing.assert_array_equal(m.boxes, np.array([[10.5, 20.0, 110.25, 220.0], [0, 0, 640, 360]], np.float32))  # already exclusive: no +1
    np.testing.assert_allclose(m.scores, [0.99, 0.75], rtol=1e-6)
    assert (m.width, m.height, m.names) == (640, 360, ("person", "car"))
    with pytest.raises(VCRError, match=r"m.json: field 'boxes' has 2 boxes but the record lists 3 objects"):
        parse_metadata(doc, "m.json", num_objects=3)
    with pytest.raises(VCRError, match=r"m.json: field 'boxes': box at index 1 .* outside the 600x360 image"):
        parse_metadata({**doc, "width": 600}, "m.json")
    with pytest.raises(VCRError, match=r"field 'segms' has 1 entries for 2 boxes"):
        parse_metadata({**doc, "segms": doc["segms"][:1]}, "m.json")


def test_object_references_become_linked_tag_words():
    objects = ["person", "person", "person", "car"]
    words, links = words_and_links(["Why", "is", [0, 2], "near", [3], "?"], objects)
    assert words == ["Why", "is", GENDER_NEUTRAL_NAMES[0], "and", GENDER_NEUTRAL_NAMES[2], "near", "car", "?"]
    assert links == [-1, -1, 0, -1, 2, -1, 3, -1]
    words, _ = words_and_links([[1]], objects, person_names=False)
    assert words == ["person"]


def test_pairs_q2a_and_qa2r(tmp_path):
    (e,) = read_vcr(write_jsonl(tmp_path / "val.jsonl", [R2C_RECORD]))
    q2a = choice_pairs(e, "answer")
    assert len(q2a) == 4 and q2a[0][0][0] == ["Does", "Jessie", "feel", "comfortable", "?"] and q2a[1][1][0] == ["No", "she", "does", "not", "."]
    qa2r = choice_pairs(e, "rationale")
    ctx_words, ctx_links = qa2r[0][0]
    assert ctx_words == ["Does", "Jessie", "feel", "comfortable", "?", "No", "she", "does", "not", "."]  # the correct answer appended
    assert ctx_links[1] == 2 and qa2r[3][1][1][0] == 2
