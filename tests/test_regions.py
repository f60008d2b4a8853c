"""The Beam ``regions`` stage end to end: round trip from the generator, bad input, determinism."""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from schemas.manifest import DEAD_LETTER_NAME, MANIFEST_NAME, read_manifest, reconciles
from schemas.shards import iter_regions, shard_index
from schemas.discovery import list_shards
from ssga_io.security import PICKLE_RISK
from pipelines import regions as R
from pipelines.formats import writers
from pipelines.synthetic import generate, generate_image

N_IMAGES, SEED, DIM, SHARDS = 30, 7, 16, 3
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("regions") / "corpus"
    generate(out, num_images=N_IMAGES, seed=SEED, feature_dim=DIM)
    return out


@pytest.fixture(scope="module")
def source_records():
    """What the generator drew, before any file format: the ground truth of the round trip."""
    return {d.record.image_id: d.record for d in (generate_image(i, N_IMAGES, SEED, DIM)[1] for i in range(N_IMAGES))}


def read_back(out: Path, num_shards: int) -> dict:
    shards = list_shards(out, "regions")
    assert [Path(p).name for p in shards] == [f"regions-{k:06d}.tar" for k in range(num_shards)]  # every shard, empty too
    got = {}
    for k, path in enumerate(shards):
        keys = []
        for key, rec in iter_regions(path):
            assert shard_index(rec.image_id, num_shards) == k and key == rec.image_id
            keys.append(key)
            got[rec.image_id] = rec
        assert keys == sorted(keys)
    return got


def dead_letters(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / DEAD_LETTER_NAME).read_text().splitlines()]


@pytest.mark.parametrize(
    "source",
    [
        {"tsv": "regions.tsv"},
        {"tsv": "regions_lxmert.tsv", "lxmert": True, "num_classes": 6},  # 5-line objects_vocab.txt + background
        {"npz_dir": "regions_npz"},
        {"npy_dir": "regions_npy", "allow_pickle": True},
    ],
    ids=["butd_tsv", "lxmert_tsv", "npz", "npy"],
)
def test_round_trip_generator_to_shards(corpus, source_records, tmp_path, source):
    src = {k: (corpus / v if isinstance(v, str) else v) for k, v in source.items()}
    m = R.run_regions(**src, out_dir=tmp_path / "out", num_shards=SHARDS)
    assert m["counts"] == {"in": N_IMAGES, "out": N_IMAGES, "rejected": 0} and reconciles(m["counts"])
    assert m["stage"] == "regions" and m["feature_dim"] == DIM and m["num_shards"] == SHARDS
    has_cls = "tsv" not in source or "lxmert" in source  # a BUTD TSV carries no classes; LXMERT's its top class
    assert m["has_cls_prob"] is has_cls
    assert sum(s["samples"] for s in m["shards"]) == N_IMAGES
    got = read_back(tmp_path / "out", SHARDS)
    assert sorted(got) == sorted(source_records)
    for image_id, want in source_records.items():
        rec = got[image_id]
        assert (rec.image_w, rec.image_h) == (want.image_w, want.image_h)
        np.testing.assert_array_equal(rec.boxes, want.boxes)  # exact after inclusive → exclusive
        assert rec.features.dtype == np.float16
        np.testing.assert_array_equal(rec.features, want.features.astype(np.float16))
        if "lxmert" in source:  # objects_id = the detector's top class, 0-based into the vocabulary
            np.testing.assert_array_equal(rec.objects, want.cls_prob[:, 1:].argmax(axis=1))
            np.testing.assert_array_equal(rec.cls_prob[:, 1:].argmax(axis=1), want.cls_prob[:, 1:].argmax(axis=1))
            assert rec.cls_prob.shape == want.cls_prob.shape
        elif has_cls:
            np.testing.assert_array_equal(rec.cls_prob, want.cls_prob.astype(np.float16))
        else:
            assert rec.cls_prob is None
    assert dead_letters(tmp_path / "out") == []


def test_bad_input_finishes_dead_letters_every_bad_row_and_reconciles(corpus, source_records, tmp_path):
    lines = (corpus / "regions.tsv").read_text().splitlines(keepends=True)
    good = lines[:6]
    ids = [line.split("\t")[0] for line in good]

    def variant(image_id, mutate):
        rec = source_records[ids[0]]
        rec = type(rec)(image_id, rec.image_w, rec.image_h, rec.boxes.copy(), rec.features.copy(), None)
        mutate(rec)
        return writers.butd_line(rec)

    f = lines[6].rstrip("\n").split("\t")
    truncated = "\t".join(f[:5] + [f[5][: len(f[5]) // 3 + 1]]) + "\n"
    wrong_count = "\t".join(["bad_count"] + f[1:3] + ["99"] + f[4:]) + "\n"
    nan = variant("bad_nan", lambda r: r.features.__setitem__((0, 0), np.nan))
    zero_area = variant("bad_zero", lambda r: r.boxes.__setitem__((1, 2), r.boxes[1, 0]))
    outside = variant("bad_outside", lambda r: r.boxes.__setitem__((2, 2), r.image_w + 50))
    duplicate = variant(ids[1], lambda r: r.features.__setitem__((0, 0), 0.5))  # same id, later line, other content
    rows = [good[0], good[1], "\n", truncated, good[2], wrong_count, nan, "   \n", good[3], zero_area, outside, duplicate, good[4], good[5]]
    tsv = tmp_path / "bad.tsv"
    tsv.write_text("".join(rows))

    m = R.run_regions(tsv=tsv, out_dir=tmp_path / "out", num_shards=SHARDS)
    assert m["counts"] == {"in": 12, "out": 6, "rejected": 6} and m["blank_lines"] == 2
    got = read_back(tmp_path / "out", SHARDS)
    assert sorted(got) == sorted(ids)
    # The first of the duplicates (line 2) is kept, the later one (line 12) dead-lettered.
    np.testing.assert_array_equal(got[ids[1]].features, source_records[ids[1]].features.astype(np.float16))
    dead = dead_letters(tmp_path / "out")
    expected = [
        (f"{tsv}:4", f[0], "'features' is not valid base64"),
        (f"{tsv}:6", "bad_count", "num_boxes is 99"),
        (f"{tsv}:7", "bad_nan", "features contain NaN"),
        (f"{tsv}:10", "bad_zero", "zero-area or inverted box at index 1"),
        (f"{tsv}:11", "bad_outside", "outside the"),
        (f"{tsv}:12", ids[1], f"duplicate image_id (first at {tsv}:2)"),
    ]
    assert len(dead) == len(expected)
    for d, (source, record_id, fragment) in zip(dead, expected):
        assert d["stage"] == "regions" and d["source"] == source and d["record_id"] == record_id and fragment in d["reason"], d
    assert sum(m["rejected_by_reason"].values()) == 6
    assert "duplicate image_id (…)" in m["rejected_by_reason"]


def test_empty_tsv_writes_every_empty_shard(tmp_path):
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    m = R.run_regions(tsv=empty, out_dir=tmp_path / "out", num_shards=4)
    assert m["counts"] == {"in": 0, "out": 0, "rejected": 0} and m["feature_dim"] is None and m["has_cls_prob"] is False
    assert read_back(tmp_path / "out", 4) == {}
    assert (tmp_path / "out" / DEAD_LETTER_NAME).read_text() == ""


def test_same_input_gives_identical_shards_with_one_or_two_workers(corpus, tmp_path):
    """Also runs the command line, the way ``make regions`` does."""
    a = R.run_regions(tsv=corpus / "regions.tsv", out_dir=tmp_path / "a", num_shards=SHARDS)
    subprocess.run(
        [sys.executable, "-m", "pipelines.regions", "--tsv", str(corpus / "regions.tsv"), "--out", str(tmp_path / "b"),
         "--num-shards", str(SHARDS), "--direct_num_workers=2", "--direct_running_mode=multi_processing"],
        check=True, cwd=ROOT, capture_output=True,
    )
    b = read_manifest(tmp_path / "b")
    assert a["fingerprint"] == b["fingerprint"] and a["counts"] == b["counts"]
    for k in range(SHARDS):
        name = f"regions-{k:06d}.tar"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # A changed parameter changes the fingerprint; the content of the source does too.
    c = R.run_regions(tsv=corpus / "regions.tsv", out_dir=tmp_path / "c", num_shards=SHARDS + 1)
    assert c["fingerprint"] != a["fingerprint"]


def test_pickled_npy_dir_is_refused_without_opt_in(corpus, tmp_path):
    with pytest.raises(PermissionError, match=re.escape(PICKLE_RISK)):
        R.run_regions(npy_dir=corpus / "regions_npy", out_dir=tmp_path / "out", num_shards=2)
    assert not (tmp_path / "out").exists()
    r = subprocess.run(
        [sys.executable, "-m", "pipelines.regions", "--npy-dir", str(corpus / "regions_npy"), "--out", str(tmp_path / "o"), "--num-shards", "2"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert r.returncode != 0 and PICKLE_RISK in r.stderr


def test_mixed_feature_dims_fail_loudly_or_are_dead_lettered(corpus, source_records, tmp_path):
    recs = list(source_records.values())[:4]
    odd = type(recs[0])("odd_dim", recs[0].image_w, recs[0].image_h, recs[0].boxes, np.zeros((recs[0].num_boxes, DIM + 1), np.float32))
    tsv = tmp_path / "mixed.tsv"
    tsv.write_text("".join(writers.butd_line(r) for r in recs + [odd]))
    with pytest.raises(RuntimeError, match=r"mixed feature dimensions \[16, 17\]"):
        R.run_regions(tsv=tsv, out_dir=tmp_path / "a", num_shards=2)
    assert read_manifest(tmp_path / "a") is None  # no manifest: the directory stays incomplete
    m = R.run_regions(tsv=tsv, out_dir=tmp_path / "b", num_shards=2, feature_dim=DIM)
    assert m["counts"] == {"in": 5, "out": 4, "rejected": 1}
    assert dead_letters(tmp_path / "b")[0]["reason"] == "features have dimension 17 but the stage expects 16"


def test_counts_that_do_not_reconcile_fail_the_stage(corpus, tmp_path, monkeypatch):
    real_scan = R.scan_tsv

    def scan_that_sees_one_more(path, *a):
        digest, records, blanks, chunks = real_scan(path, *a)
        return digest, records + 1, blanks, chunks

    monkeypatch.setattr(R, "scan_tsv", scan_that_sees_one_more)
    with pytest.raises(RuntimeError, match=f"do not reconcile: in={N_IMAGES + 1} but out={N_IMAGES} \\+ rejected=0"):
        R.run_regions(tsv=corpus / "regions.tsv", out_dir=tmp_path / "out", num_shards=2)
    assert not (tmp_path / "out" / MANIFEST_NAME).exists()


def test_rerun_replaces_stale_shards_and_small_byte_ranges_read_every_line(corpus, tmp_path, monkeypatch):
    R.run_regions(tsv=corpus / "regions.tsv", out_dir=tmp_path / "out", num_shards=5)
    monkeypatch.setattr(R, "CHUNK_BYTES", 3000)  # several lines per range, ranges ending mid-file
    m = R.run_regions(tsv=corpus / "regions.tsv", out_dir=tmp_path / "out", num_shards=2)
    assert len(R.scan_tsv(corpus / "regions.tsv", 3000)[3]) > 3
    assert m["counts"]["out"] == N_IMAGES
    assert len(read_back(tmp_path / "out", 2)) == N_IMAGES  # regions-000002..4 of the first run are gone
    assert not (tmp_path / "out" / R.SUMMARY_NAME).exists()


def test_several_tsv_files_are_one_source_and_duplicates_across_files_are_caught(corpus, source_records, tmp_path):
    """bottom-up-attention writes its TSV in several files; the earliest (file, line) wins a duplicate."""
    lines = (corpus / "regions.tsv").read_text().splitlines(keepends=True)
    first, second = tmp_path / "part0.tsv", tmp_path / "part1.tsv"
    first.write_text("".join(lines[:10]))
    second.write_text("".join(lines[10:]) + lines[3])  # image 3 again, at the end of the second file
    m = R.run_regions(tsv=[first, second], out_dir=tmp_path / "out", num_shards=SHARDS)
    assert m["counts"] == {"in": N_IMAGES + 1, "out": N_IMAGES, "rejected": 1}
    assert sorted(read_back(tmp_path / "out", SHARDS)) == sorted(source_records)
    [d] = dead_letters(tmp_path / "out")
    assert d["source"] == f"{second}:{N_IMAGES - 10 + 1}" and d["reason"] == f"duplicate image_id (first at {first}:4)"
    single = R.run_regions(tsv=corpus / "regions.tsv", out_dir=tmp_path / "single", num_shards=SHARDS)
    assert single["fingerprint"] != m["fingerprint"]


def test_mmf_split_directory_through_the_stage(source_records, tmp_path):
    mmf = tmp_path / "mmf"
    mmf.mkdir()
    recs = list(source_records.values())[:5]
    for r in recs:
        writers.write_mmf_split(mmf, r)
    m = R.run_regions(npy_dir=mmf, allow_pickle=True, out_dir=tmp_path / "out", num_shards=2)
    assert m["counts"] == {"in": 5, "out": 5, "rejected": 0} and m["has_cls_prob"] is True
    got = read_back(tmp_path / "out", 2)
    for r in recs:
        np.testing.assert_array_equal(got[r.image_id].boxes, r.boxes)
        np.testing.assert_array_equal(got[r.image_id].features, r.features.astype(np.float16))
