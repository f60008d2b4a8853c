"""Region readers and their mirror writers: good records, every kind of bad record, the pickle opt-in."""
import base64
import io
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest

from schemas.boxes import exclusive_to_inclusive
from schemas.records import RegionRecord, region_problem
from ssga_io.security import PICKLE_RISK
from pipelines.formats import writers
from pipelines.formats.readers import (
    PickleNotAllowed,
    Rejected,
    list_region_files,
    parse_butd_line,
    read_butd_tsv,
    read_region_file,
)
from pipelines.formats.region_formats import array_b64, b64_array


def make_record(image_id="img1", n=5, d=8, c=4, seed=0, w=200, h=150) -> RegionRecord:
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, w - 20, n)
    y1 = rng.uniform(0, h - 20, n)
    boxes = np.stack([x1, y1, x1 + rng.uniform(2, 20, n), y1 + rng.uniform(2, 20, n)], axis=1).astype(np.float32)
    cls = rng.dirichlet(np.ones(c), n).astype(np.float32) if c else None
    return RegionRecord(image_id, w, h, boxes, rng.normal(size=(n, d)).astype(np.float32), cls)


def assert_same(got, want: RegionRecord, with_cls=True):
    assert isinstance(got, RegionRecord), got
    assert (got.image_id, got.image_w, got.image_h) == (want.image_id, want.image_w, want.image_h)
    np.testing.assert_array_equal(got.boxes, want.boxes)  # exact: +1/-1 on float32 pixel values is exact
    np.testing.assert_array_equal(got.features, want.features)
    if with_cls:
        np.testing.assert_array_equal(got.cls_prob, want.cls_prob)
    else:
        assert got.cls_prob is None


def butd_fields(rec: RegionRecord) -> list[str]:
    return writers.butd_line(rec).rstrip("\n").split("\t")


def test_base64_codec():
    a = np.arange(6, dtype=np.float32)
    np.testing.assert_array_equal(array_b64(b64_array(a, np.float32), np.float32, "f"), a)
    with pytest.raises(ValueError, match="'f' is not valid base64"):
        array_b64("AAAA=A", np.float32, "f")
    with pytest.raises(ValueError, match="not a whole number of float32"):
        array_b64(base64.b64encode(b"abcdef").decode(), np.float32, "f")


def test_butd_line_round_trip_and_inclusive_convention():
    rec = make_record()
    line = writers.butd_line(rec)
    fields = line.rstrip("\n").split("\t")
    assert fields[:4] == ["img1", "200", "150", "5"]
    on_disk = np.frombuffer(base64.b64decode(fields[4]), np.float32).reshape(5, 4)
    np.testing.assert_array_equal(on_disk, exclusive_to_inclusive(rec.boxes))  # BUTD files are inclusive
    assert_same(parse_butd_line(line, "t.tsv:1"), rec, with_cls=False)
    assert_same(parse_butd_line(line.replace("\n", "\r\n"), "t.tsv:1"), rec, with_cls=False)  # generate_tsv.py writes CRLF
    as_is = parse_butd_line(line, "t.tsv:1", inclusive=False)
    np.testing.assert_array_equal(as_is.boxes, exclusive_to_inclusive(rec.boxes))


def test_lxmert_line_round_trip_and_bad_extra_field():
    rec = make_record(n=3)
    ids, conf = np.array([1, 2, 0]), np.array([0.5, 0.25, 0.125], np.float32)
    line = writers.lxmert_line(rec, ids, conf, ids, conf)
    fields = line.split("\t")
    assert fields[1:3] == ["150", "200"]  # LXMERT puts img_h before img_w
    got = parse_butd_line(line, "lx.tsv:1", lxmert=True)
    assert_same(got, RegionRecord(rec.image_id, rec.image_w, rec.image_h, rec.boxes, rec.features, got.cls_prob))
    # LXMERT's detected classes are kept: objects_id is 0-based into objects_vocab.txt (class id + 1 in
    # cls_prob, column 0 the background), over Visual Genome's 1600 classes unless told otherwise.
    np.testing.assert_array_equal(got.objects, ids)
    np.testing.assert_array_equal(got.objects_conf, conf)
    assert got.cls_prob.shape == (3, 1601)
    np.testing.assert_array_equal(got.cls_prob[:, 1:].argmax(axis=1), ids)
    np.testing.assert_allclose(got.cls_prob[np.arange(3), ids + 1], conf)
    np.testing.assert_allclose(got.cls_prob.sum(axis=1), 1.0, rtol=1e-6)
    small = parse_butd_line(line, "lx.tsv:1", lxmert=True, num_classes=3)  # a 2-line vocabulary: id 2 is out of range
    assert isinstance(small, Rejected) and "objects_id 2 lies outside the 2-class vocabulary" in small.reason
    assert isinstance(parse_butd_line(line, "lx.tsv:1"), Rejected)  # wrong layout is a rejection, not a crash
    fields[3] = b64_array(np.array([1, 2]), np.int64)
    r = parse_butd_line("\t".join(fields), "lx.tsv:1", lxmert=True)
    assert isinstance(r, Rejected) and "objects_id holds 2 values" in r.reason


@pytest.mark.parametrize(
    "corrupt, fragment",
    [
        (lambda f: f.__setitem__(5, f[5][: len(f[5]) // 2 + 1]), "'features' is not valid base64"),  # truncated mid-quad
        (lambda f: f.__setitem__(5, f[5][:48]), "features field holds 9 values, not a multiple"),  # cut on a quad boundary
        (lambda f: f.__setitem__(4, f[4][:64]), "boxes field holds 12 values"),
        (lambda f: f.__setitem__(3, "7"), "num_boxes is 7 but the boxes field holds 20 values"),
        (lambda f: f.__setitem__(3, "0"), "num_boxes is 0"),
        (lambda f: f.__setitem__(3, "five"), "num_boxes 'five' is not a number"),
        (lambda f: f.__setitem__(1, "20.5"), "image_w '20.5' is not an integer"),
        (lambda f: f.pop(), "expected 6 tab-separated fields"),
        (lambda f: f.__setitem__(0, ""), "image_id must be a non-empty string"),
    ],
)
def test_butd_bad_rows_are_rejected_with_reason(corrupt, fragment):
    fields = butd_fields(make_record())
    corrupt(fields)
    r = parse_butd_line("\t".join(fields) + "\n", "bad.tsv:9")
    assert isinstance(r, Rejected) and fragment in r.reason, r
    assert r.source == "bad.tsv:9" and r.record_id in ("img1", "<bad.tsv:9>")


@pytest.mark.parametrize(
    "mutate, fragment",
    [
        (lambda r: r.features.__setitem__((1, 2), np.nan), "features contain NaN"),
        (lambda r: r.features.__setitem__((0, 0), 1e6), "overflow float16"),
        (lambda r: r.boxes.__setitem__((2, 2), r.boxes[2, 0] - 1), "zero-area or inverted box at index 2"),  # inclusive x2 = x1 - 1
        (lambda r: r.boxes.__setitem__((3, 3), 400.0), "outside the 200x150 image"),
    ],
)
def test_bad_values_are_rejected_in_every_format(tmp_path, mutate, fragment):
    rec = make_record()
    mutate(rec)
    r = parse_butd_line(writers.butd_line(rec), "bad.tsv:2")
    assert isinstance(r, Rejected) and fragment in r.reason and r.record_id == "img1"
    writers.write_region_npz(tmp_path / "img1.npz", rec)
    r = read_region_file(tmp_path / "img1.npz")
    assert isinstance(r, Rejected) and fragment in r.reason and r.source == str(tmp_path / "img1.npz")


def test_read_butd_tsv_streams_skips_blank_lines_and_names_lines(tmp_path):
    good = [make_record(f"i{k}", seed=k) for k in range(3)]
    bad = make_record("broken")
    bad.features[0, 0] = np.nan
    p = tmp_path / "r.tsv"
    p.write_bytes(
        (writers.butd_line(good[0]) + "\n" + writers.butd_line(bad) + writers.butd_line(good[1])).encode()
        + b"\xff\xfe not utf-8\n"
        + writers.butd_line(good[2]).encode()
    )
    items = list(read_butd_tsv(p))
    assert [type(i).__name__ for i in items] == ["RegionRecord", "Rejected", "RegionRecord", "Rejected", "RegionRecord"]
    assert items[1].source == f"{p}:3" and items[1].record_id == "broken"
    assert items[3].source == f"{p}:5" and "UTF-8" in items[3].reason
    for got, want in zip([items[0], items[2], items[4]], good):
        assert_same(got, want, with_cls=False)
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    assert list(read_butd_tsv(empty)) == []


def test_npz_npy_and_mmf_split_round_trip(tmp_path):
    rec = make_record("000017", n=6, d=5, c=7)
    writers.write_region_npz(tmp_path / "000017.npz", rec)
    with np.load(tmp_path / "000017.npz", allow_pickle=False) as z:  # the safe form needs no pickle at all
        assert set(z.files) == {"image_id", "bbox", "num_boxes", "objects", "image_width", "image_height", "cls_prob", "features"}
        np.testing.assert_array_equal(z["objects"], rec.cls_prob[:, 1:].argmax(axis=1))
        np.testing.assert_array_equal(z["bbox"], exclusive_to_inclusive(rec.boxes))
    assert_same(read_region_file(tmp_path / "000017.npz"), rec)

    npy_dir, mmf_dir = tmp_path / "npy", tmp_path / "mmf"
    npy_dir.mkdir(), mmf_dir.mkdir()
    writers.write_region_npy(npy_dir / "000017.npy", rec)
    assert_same(read_region_file(npy_dir / "000017.npy", allow_pickle=True), rec)
    writers.write_mmf_split(mmf_dir, rec)
    assert list_region_files(mmf_dir, "npy") == [str(mmf_dir / "000017.npy")]
    assert_same(read_region_file(mmf_dir / "000017.npy", allow_pickle=True), rec)
    # A dict without cls_prob reads with cls_prob None.
    no_cls = make_record("a", c=0)
    writers.write_region_npz(tmp_path / "a.npz", no_cls)
    assert_same(read_region_file(tmp_path / "a.npz"), no_cls, with_cls=False)
    # Deterministic bytes (np.savez would stamp the clock).
    writers.write_region_npz(tmp_path / "again.npz", rec)
    assert (tmp_path / "again.npz").read_bytes() == (tmp_path / "000017.npz").read_bytes()


class _Payload:
    """Unpickling this creates a file: the harm a pickled .npy can do."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_pickled_npy_is_refused_without_opt_in_and_runs_no_code(tmp_path):
    target = tmp_path / "pwned"
    np.save(tmp_path / "evil.npy", np.array({"bbox": _Payload(target)}, dtype=object), allow_pickle=True)
    with pytest.raises(PickleNotAllowed, match=re.escape(PICKLE_RISK)):
        read_region_file(tmp_path / "evil.npy")
    assert not target.exists()
    writers.write_mmf_split(tmp_path, make_record("m"))
    with pytest.raises(PickleNotAllowed, match="evil|m.npy"):  # also the split form, whose features are plain
        read_region_file(tmp_path / "m.npy")


def test_broken_region_files_are_rejected(tmp_path):
    rec = make_record("x")
    writers.write_region_npz(tmp_path / "x.npz", rec)
    data = (tmp_path / "x.npz").read_bytes()
    (tmp_path / "trunc.npz").write_bytes(data[: len(data) // 2])
    r = read_region_file(tmp_path / "trunc.npz")
    assert isinstance(r, Rejected) and "unreadable region file" in r.reason and r.record_id == "trunc"

    def npz(name, **arrays):
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        (tmp_path / name).write_bytes(buf.getvalue())
        return read_region_file(tmp_path / name)

    d = writers.region_dict(rec)
    r = npz("nokeys.npz", bbox=d["bbox"])
    assert isinstance(r, Rejected) and "lacks key(s)" in r.reason
    r = npz("count.npz", **{**d, "num_boxes": np.int64(9)})
    assert isinstance(r, Rejected) and "num_boxes is 9 but bbox has shape (5, 4)" in r.reason
    r = npz("objarr.npz", **{**d, "features": np.array([{"a": 1}], dtype=object)})  # needs pickle: refused
    assert isinstance(r, Rejected) and "unreadable region file" in r.reason
    r = npz("negcls.npz", **{**d, "cls_prob": -d["cls_prob"]})
    assert isinstance(r, Rejected) and "cls_prob contains negative" in r.reason
    (tmp_path / "x.txt").write_text("hi")
    assert "unknown region file type" in read_region_file(tmp_path / "x.txt").reason
    with zipfile.ZipFile(tmp_path / "x.npz") as z:
        assert z.namelist()  # the good one is a real zip


def test_list_region_files(tmp_path):
    for name in ("b.npz", "a.npz", "c.npy", "c_info.npy", "lonely_info.npy"):
        (tmp_path / name).write_bytes(b"")
    assert [Path(p).name for p in list_region_files(tmp_path, "npz")] == ["a.npz", "b.npz"]
    # an _info file without its features file is listed (and will be rejected on read, not dropped silently)
    assert [Path(p).name for p in list_region_files(tmp_path, "npy")] == ["c.npy", "lonely_info.npy"]
    with pytest.raises(ValueError):
        list_region_files(tmp_path, "tsv")


def test_language_writers():
    assert writers.caption_line("a red circle", "images/000001.png") == "a red circle\timages/000001.png\n"
    with pytest.raises(ValueError, match="tab or newline"):
        writers.caption_line("a red\tcircle", "u")
    text = "a red circle above a blue square"
    assert writers.flickr30k_sentence(text, [(19, 32, 2, "other"), (0, 12, 1, "other")]) == (
        "[/EN#1/other a red circle] above [/EN#2/other a blue square]"
    )
    with pytest.raises(ValueError, match="overlaps"):
        writers.flickr30k_sentence(text, [(0, 12, 1, "other"), (6, 20, 2, "other")])
    xml = writers.flickr30k_xml("1.png", 50, 40, [(1, np.array([0, 0, 10, 5], np.float32))])
    assert "<width>50</width><height>40</height>" in xml
    assert "<xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>5</ymax>" in xml  # 1-based inclusive pixel coords
    with pytest.raises(ValueError, match="token boundary"):
        writers.flickr30k_sentence("a red circle, a square", [(0, 12, 1, "other")])
    with pytest.raises(ValueError, match="objects_id has shape"):
        rec = make_record(n=2)
        writers.lxmert_line(rec, np.zeros(3), np.zeros(2), np.zeros(2), np.zeros(2))


@pytest.mark.parametrize("value, bad", [(np.nan, True), (np.inf, True), (-np.inf, True), (65504.0, False), (-65504.0, False), (6e-8, False)])
def test_float16_features_are_checked_by_their_bits(value, bad):
    """Shards hold float16 features; the check reads the exponent bits (all ones: NaN or Inf), which
    must agree with np.isfinite, in any position and for a strided view."""
    rec = make_record()
    rec.features = rec.features.astype(np.float16)
    rec.features[-1, -1] = value
    assert (region_problem(rec) == "features contain NaN or Inf") is bad
    assert bad is (not np.isfinite(rec.features).all())
    rec.features = rec.features[:, ::-1]  # a strided view
    assert (region_problem(rec) == "features contain NaN or Inf") is bad


@pytest.mark.parametrize("value, bad", [(np.nan, True), (np.inf, True), (-np.inf, True), (-1e-3, True), (-6e-8, True),
                                        (-0.0, False), (0.0, False), (6e-8, False), (1.0, False), (65504.0, False)])
def test_float16_class_distributions_are_checked_by_their_bits(value, bad):
    """Shards hold cls_prob as float16 too; its bit test (NaN, Inf, or a negative value, -0.0 allowed) must
    agree with the float32 check it replaces, in any position and for a strided view."""
    rec = make_record()
    rec.cls_prob = np.full((rec.boxes.shape[0], 7), 0.125, np.float16)
    rec.cls_prob[-1, -1] = value
    as_float32 = bool(not np.isfinite(rec.cls_prob.astype(np.float32)).all() or (rec.cls_prob.astype(np.float32) < 0).any())
    assert as_float32 is bad
    assert (region_problem(rec) == "cls_prob contains negative, NaN or Inf values") is bad
    rec.cls_prob = rec.cls_prob[:, ::-1]
    assert (region_problem(rec) == "cls_prob contains negative, NaN or Inf values") is bad
