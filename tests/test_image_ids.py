"""Image-id joins on real layouts: COCO integer ids (BUTD's COCO TSV), file stems, or a mapping file,
for captions → regions (label pipeline) and REFER → regions (REC fine-tuning); and REFER read as the
official ``refer.py`` reads it."""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from pipelines.formats.captions import read_captions, resolve_image_id
from pipelines.stages.stage_io import region_shards
from pipelines.synthetic import generate
from schemas.image_ids import image_key, parse_id_map
from schemas.records import RegionRecord
from schemas.shards import REGION_PREFIX, encode_region, sample_key, shard_index, shard_name, write_shard
from tests.official_parsers import Refer
from trainer.tasks.rec.refer import ReferError, join_refer

COCO_IDS = (581857, 17, 262145, 9)


def _regions(root: Path, ids: list[str], num_shards: int = 3) -> Path:
    shards: dict[int, dict] = {k: {} for k in range(num_shards)}
    for i, image_id in enumerate(ids):
        boxes = np.array([[0, 0, 10, 10], [5, 5, 30, 30]], np.float32)
        rec = RegionRecord(image_id, 40, 40, boxes, np.full((2, 4), i, np.float32))
        shards[shard_index(image_id, num_shards)][sample_key(image_id)] = encode_region(rec)
    for k, samples in shards.items():
        write_shard(root / shard_name(REGION_PREFIX, k), samples)
    return root


def _coco_refer(root: Path) -> Path:
    """RefCOCO's published layout: instances.json images by COCO id with COCO file names; refs whose
    own file_name carries the annotation id (``COCO_train2014_000000581857_<ann_id>.jpg``)."""
    images, anns, refs = [], [], []
    for i, cid in enumerate(COCO_IDS):
        fname = f"COCO_train2014_{cid:012d}.jpg"
        images.append({"id": cid, "file_name": fname, "width": 40, "height": 40})
        ann_id = 1000 + i
        anns.append({"id": ann_id, "image_id": cid, "bbox": [5.0, 5.0, 25.0, 25.0], "category_id": 1, "iscrowd": 0})
        refs.append({"ref_id": i, "ann_id": ann_id, "image_id": cid, "category_id": 1, "split": ("train", "val", "testA", "testB")[i],
                     "file_name": f"COCO_train2014_{cid:012d}_{ann_id}.jpg", "sent_ids": [10 + i],
                     "sentences": [{"sent_id": 10 + i, "tokens": ["the", "right", "box"], "raw": "The right box.", "sent": "the right box"}]})
    root.mkdir(parents=True)
    (root / "refs.json").write_text(json.dumps(refs))
    with open(root / "refs(unc).p", "wb") as f:
        pickle.dump(refs, f)
    (root / "instances.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "box"}]}))
    return root


def test_refer_joins_butd_coco_features_by_integer_id(tmp_path):
    refer = _coco_refer(tmp_path / "refer")
    regions = _regions(tmp_path / "regions", [str(c) for c in COCO_IDS])  # generate_tsv.py writes int(image_id)
    exprs, props, key = join_refer(refer, regions)
    assert key == "int" and [e.image_id for e in exprs] == [str(c) for c in COCO_IDS] and set(props) == {str(c) for c in COCO_IDS}
    # The same as REFER's own loader: box, split and image of every ref.
    official = Refer(refer)
    for e in exprs:
        x, y, w, h = official.getRefBox(e.ref_id)
        np.testing.assert_array_equal(e.gt_box, [x, y, x + w, y + h])
        assert e.split == official.Refs[e.ref_id]["split"] and e.image_id == str(official.Refs[e.ref_id]["image_id"])
    with pytest.raises(ReferError, match=r"matched by stem.*COCO_train2014_000000000009"):
        join_refer(refer, regions, image_id="stem")


def test_refer_joins_stem_keyed_features_by_the_image_file_name_not_the_refs(tmp_path):
    refer = _coco_refer(tmp_path / "refer")
    regions = _regions(tmp_path / "regions", [f"COCO_train2014_{c:012d}" for c in COCO_IDS])
    exprs, _, key = join_refer(refer, regions)
    official = Refer(refer)
    assert key == "stem"
    assert [e.image_id for e in exprs] == [Path(official.loadImgs(e_id)[0]["file_name"]).stem for e_id in COCO_IDS]


def test_refer_join_error_names_the_keys_tried_and_ids_from_both_sides(tmp_path):
    refer = _coco_refer(tmp_path / "refer")
    regions = _regions(tmp_path / "regions", ["img_a", "img_b"])
    with pytest.raises(ReferError) as err:
        join_refer(refer, regions)
    msg = str(err.value)
    assert "by stem: e.g. ['COCO_train2014_000000000009'" in msg and "by int: e.g. ['17'" in msg and "['img_a', 'img_b']" in msg
    (tmp_path / "map.tsv").write_text("".join(f"COCO_train2014_{c:012d}\t{'img_a' if i % 2 else 'img_b'}\n" for i, c in enumerate(COCO_IDS)))
    exprs, _, key = join_refer(refer, regions, id_map=tmp_path / "map.tsv")
    assert key == "map" and {e.image_id for e in exprs} == {"img_a", "img_b"}


def test_generated_refer_agrees_with_official_loader(tmp_path):
    corpus = tmp_path / "sample"
    generate(corpus, num_images=12, seed=1, feature_dim=8)
    regions = _regions(tmp_path / "regions", [f"{i:06d}" for i in range(12)])
    exprs, _, key = join_refer(corpus / "refer", regions)
    official = Refer(corpus / "refer")
    assert key == "stem" and len(exprs) == len(official.Sents)
    for e in exprs:
        ref = official.sentToRef[e.sent_id]
        assert ref["file_name"] != official.Imgs[ref["image_id"]]["file_name"]  # REFER's _<ann_id> suffix, as published
        assert e.image_id == Path(official.Imgs[ref["image_id"]]["file_name"]).stem
        x, y, w, h = official.getRefBox(ref["ref_id"])
        np.testing.assert_array_equal(e.gt_box, [x, y, x + w, y + h])
        assert e.text == official.Sents[e.sent_id]["sent"]
    for split in ("train", "val", "testA", "testB"):
        assert sorted({e.ref_id for e in exprs if e.split == split}) == sorted(official.getRefIds(split=split))


def _captions(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = [f"a box number {c}\ttrain2014/COCO_train2014_{c:012d}.jpg" for c in COCO_IDS]
    (root / "captions.tsv").write_text("\n".join(rows + ["a second caption\ttrain2014/COCO_train2014_000000000017.jpg"]) + "\n")
    return root / "captions.tsv"


def test_captions_join_coco_integer_ids_automatically(tmp_path):
    caps = _captions(tmp_path)
    shards = region_shards(_regions(tmp_path / "regions", [str(c) for c in COCO_IDS]))
    assert resolve_image_id(str(caps), shards, "auto", None) == "int"
    got = [c for tag, c in read_captions(str(caps), "int") if tag == "caption"]
    assert [c.image_id for c in got] == ["581857", "17", "262145", "9", "17"] and got[-1].caption_id == "17#1"
    stems = region_shards(_regions(tmp_path / "stems", [f"COCO_train2014_{c:012d}" for c in COCO_IDS]))
    assert resolve_image_id(str(caps), stems, "auto", None) == "stem"


def test_captions_join_error_and_id_map(tmp_path):
    caps = _captions(tmp_path)
    shards = region_shards(_regions(tmp_path / "regions", ["img_a", "img_b"]))
    with pytest.raises(ValueError) as err:
        resolve_image_id(str(caps), shards, "auto", None)
    msg = str(err.value)
    assert "by stem: e.g. ['COCO_train2014_000000000009'" in msg and "by int: e.g. ['17'" in msg and "['img_a', 'img_b']" in msg
    with pytest.raises(ValueError, match=r"keys tried by int"):
        resolve_image_id(str(caps), shards, "int", None)
    coco = {"images": [{"id": "img_a" if i % 2 else "img_b", "file_name": f"COCO_train2014_{c:012d}.jpg"} for i, c in enumerate(COCO_IDS)]}
    mapping = parse_id_map(json.dumps(coco), "instances.json")
    assert resolve_image_id(str(caps), shards, "auto", mapping) == "map"
    got = [c.image_id for tag, c in read_captions(str(caps), "map", mapping) if tag == "caption"]
    assert got == ["img_b", "img_a", "img_b", "img_a", "img_a"]
    assert image_key("COCO_val2014_000000000042", "int") == "42" and image_key("nodigits", "int") is None
    with pytest.raises(ValueError, match=r"map.tsv:2: expected two tab-separated columns"):
        parse_id_map("a\t1\nb 2\n", "map.tsv")


def test_label_planning_remembers_the_resolved_key_so_a_rerun_reads_no_shards(tmp_path, monkeypatch):
    """Checking the join reads region shards; a second plan of the same inputs must not (no-op runs cost O(files))."""
    import pipelines.label_plan as lp

    caps = _captions(tmp_path)
    regions = _regions(tmp_path / "regions", [str(c) for c in COCO_IDS])
    cfg = lp.LabelConfig(captions=str(caps), regions=str(regions), out=str(tmp_path / "out"), teacher="oracle")
    assert lp.resolved_image_id(cfg) == "int"

    def must_not_run(*_a, **_k):
        raise AssertionError("the join was checked again on unchanged inputs")

    monkeypatch.setattr(lp, "resolve_image_id", must_not_run)
    assert lp.resolved_image_id(cfg) == "int"
    cfg.id_map = str(tmp_path / "map.tsv")  # other key settings: checked anew
    (tmp_path / "map.tsv").write_text("".join(f"COCO_train2014_{c:012d}\t{c}\n" for c in COCO_IDS))
    with pytest.raises(AssertionError, match="checked again"):
        lp.resolved_image_id(cfg)
