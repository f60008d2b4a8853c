"""Training inputs as the pipelines leave them: empty shards, and labels made from other regions."""
from __future__ import annotations

import json
import shutil

import pytest

from schemas.manifest import write_manifest
from trainer.data.shard_set import region_shards, shard_is_empty, stale_labels_problem
from trainer.data.shard_set import probe_shapes
from trainer.train import main, train
from trainer_fixtures import one_thread  # noqa: F401  (autouse fixture: one torch thread per test)
from trainer_fixtures import tiny_config, write_corpus


def test_empty_shards_are_allowed_and_shapes_come_from_the_first_nonempty_one(tmp_path):
    # 5 images over 16 shards (as `--num-shards 64` on a small corpus): most shards are empty.
    regions, labels = write_corpus(tmp_path / "data", num_images=5, num_shards=16, feat_dim=24, no_caption_every=0)
    shards = region_shards(regions)
    assert shard_is_empty(shards[0]) and sum(map(shard_is_empty, shards)) >= 11
    assert probe_shapes(str(regions)) == (24, 9)
    records = train(tiny_config(regions, labels, tmp_path / "run", steps=3, batch_size=2, num_workers=2))
    assert [r["step"] for r in records] == [1, 2, 3]


def test_only_empty_shards_is_one_clear_error(tmp_path):
    regions, _ = write_corpus(tmp_path / "data", num_images=0, num_shards=2)
    with pytest.raises(ValueError, match="all 2 region shards are empty"):
        probe_shapes(str(regions))


def _regions_manifest(d, fp, samples, shards):
    """The fields pipelines.regions writes (see its ingest manifest)."""
    write_manifest(d, {"stage": "regions", "fingerprint": fp, "counts": {"in": samples, "out": samples, "rejected": 0},
                       "num_shards": shards, "feature_dim": 16, "has_cls_prob": True})


def _labels_manifest(d, regions_dir, samples, shards, **extra):
    """The fields pipelines.label_pipeline writes for its labels stage."""
    write_manifest(d, {"stage": "labels", "fingerprint": "1abe1abe1abe1abe", "upstream": "7eac7eac7eac7eac",
                       "counts": {"in": 40, "out": 40, "rejected": 0}, "regions": str(regions_dir), "num_shards": shards,
                       "images": {"in": samples, "out": samples}, "iou_threshold": 0.5, **extra})


@pytest.fixture()
def layout(tmp_path):
    """DATA/regions/<fp>/ as the DAG lays it out, and labels made from it."""
    regions, labels = write_corpus(tmp_path / "work", num_images=12, num_shards=2)
    old = tmp_path / "data" / "regions" / "aaaaaaaaaaaaaaaa"
    shutil.copytree(regions, old)
    _regions_manifest(old, "aaaaaaaaaaaaaaaa", 12, 2)
    _labels_manifest(labels, old, 12, 2)
    return tmp_path, old, labels


def test_labels_of_these_regions_pass(layout):
    _, old, labels = layout
    assert stale_labels_problem(old, labels) is None


def test_labels_made_from_other_regions_fail_with_one_line_naming_both(layout, tmp_path, caplog):
    root, old, labels = layout
    new = root / "data" / "regions" / "bbbbbbbbbbbbbbbb"  # re-ingested: another fingerprint, same sizes
    shutil.copytree(old, new)
    _regions_manifest(new, "bbbbbbbbbbbbbbbb", 12, 2)
    problem = stale_labels_problem(new, labels)
    assert problem and str(new) in problem and str(labels) in problem and "make labels" in problem
    assert "aaaaaaaaaaaaaaaa" in problem and "\n" not in problem
    with pytest.raises(SystemExit) as e:
        main(["--regions", str(new), "--labels", str(labels), "--out", str(tmp_path / "run"), "--steps", "1", "--progress", "false"])
    assert e.value.code == 2
    assert any("do not belong to regions" in r.getMessage() for r in caplog.records)
    assert not (tmp_path / "run" / "losses.jsonl").exists()


def test_regions_reingested_in_place_are_caught_by_their_counts(layout):
    _, old, labels = layout
    _regions_manifest(old, "cccccccccccccccc", 15, 2)  # same directory, new content
    problem = stale_labels_problem(old, labels)
    assert problem and "12 region samples" in problem and "15" in problem


def test_a_recorded_regions_fingerprint_is_compared_directly(layout):
    _, old, labels = layout
    _labels_manifest(labels, "/elsewhere/regions", 12, 2, regions_fingerprint="dddddddddddddddd")
    assert "dddddddddddddddd" in stale_labels_problem(old, labels)


def test_without_manifests_nothing_is_claimed(tmp_path):
    regions, labels = write_corpus(tmp_path / "d", num_images=4, num_shards=1)
    assert stale_labels_problem(regions, labels) is None
    (labels / "_MANIFEST.json").write_text(json.dumps({"stage": "labels", "images": {"in": 99}}))
    assert stale_labels_problem(regions, labels) is None  # the regions side has none
