"""Data contracts: box conventions, IoU, validators, shard layout."""
import io
import tarfile

import numpy as np
import pytest
import torch
import torchvision
from pycocotools import mask as coco_mask

from schemas import boxes as B
from schemas.records import ImageLabels, Phrase, PhraseRecord, RegionRecord, TeacherBox, TeacherRecord
from schemas import records as R
from schemas import shards as S
from schemas import manifest as M
from schemas import arrow as A
from schemas.discovery import list_shards


def random_boxes(rng, n, w=640, h=480):
    xy = rng.uniform(0, [w - 20, h - 20], size=(n, 2))
    wh = rng.uniform(1, 200, size=(n, 2))
    b = np.concatenate([xy, np.minimum(xy + wh, [w, h])], axis=1)
    return b.astype(np.float32)


def test_iou_matches_torchvision_and_pycocotools():
    rng = np.random.default_rng(0)
    a, b = random_boxes(rng, 37), random_boxes(rng, 23)
    ours = B.box_iou(a, b)
    tv = torchvision.ops.box_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    coco = coco_mask.iou(B.xyxy_to_xywh(a).astype(np.float64).tolist(), B.xyxy_to_xywh(b).astype(np.float64).tolist(), [0] * len(b))
    np.testing.assert_allclose(ours, tv, atol=1e-6)
    np.testing.assert_allclose(ours, coco, atol=1e-6)
    assert ours.shape == (37, 23) and ours.dtype == np.float32


def test_iou_hand_cases_and_empty():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [10, 10, 20, 20], [0, 0, 0, 0]], np.float32)
    np.testing.assert_allclose(B.box_iou(a, b)[0], [1.0, 50 / 150, 0.0, 0.0], atol=1e-7)
    assert B.box_iou(np.zeros((0, 4)), b).shape == (0, 4)


def test_conversions_round_trip_and_inclusive_convention():
    rng = np.random.default_rng(1)
    a = random_boxes(rng, 10)
    np.testing.assert_allclose(B.xywh_to_xyxy(B.xyxy_to_xywh(a)), a, atol=1e-4)
    # BUTD inclusive box [0, 0, 9, 9] covers 10x10 pixels.
    incl = np.array([[0, 0, 9, 9]], np.float32)
    assert B.box_area(B.inclusive_to_exclusive(incl))[0] == 100
    np.testing.assert_array_equal(B.exclusive_to_inclusive(B.inclusive_to_exclusive(incl)), incl)
    with pytest.raises(ValueError):
        B.xywh_to_xyxy(np.zeros((3, 5)))


@pytest.mark.parametrize(
    "boxes, fragment",
    [
        ([[0, 0, 10, 10]], None),
        ([[5, 5, 5, 10]], "zero-area"),
        ([[0, 0, 700, 10]], "outside"),
        ([[np.nan, 0, 10, 10]], "NaN"),
    ],
)
def test_box_problem(boxes, fragment):
    reason = B.box_problem(np.array(boxes, np.float32), 640, 480)
    assert (reason is None) if fragment is None else (fragment in reason)


def make_region(image_id="img1", n=5, d=8, c=4, seed=0, cls=True):
    rng = np.random.default_rng(seed)
    return RegionRecord(
        image_id, 640, 480, random_boxes(rng, n), rng.normal(size=(n, d)).astype(np.float32),
        rng.dirichlet(np.ones(c), size=n).astype(np.float32) if cls else None,
    )


def test_region_validator_reasons():
    assert R.region_problem(make_region()) is None
    r = make_region(); r.features[1, 2] = np.nan
    assert "NaN" in R.region_problem(r)
    r = make_region(); r.features = r.features[:3]
    assert "features have shape" in R.region_problem(r)
    r = make_region(); r.image_w = 0
    assert "not positive" in R.region_problem(r)
    r = make_region(); r.boxes[0] = [10, 10, 10, 20]
    assert "zero-area" in R.region_problem(r)
    assert "non-empty" in R.region_problem(make_region(image_id=""))


def test_phrase_and_teacher_validators():
    cap = "a red circle left of a blue square"
    ok = PhraseRecord("c1", "i1", cap, [Phrase("a red circle", 0, 12)])
    assert R.phrases_problem(ok) is None
    bad = PhraseRecord("c1", "i1", cap, [Phrase("x", 30, 40)])
    assert "outside the caption" in R.phrases_problem(bad)
    wrong = PhraseRecord("c1", "i1", cap, [Phrase("blue", 0, 4)])
    assert "differs" in R.phrases_problem(wrong)
    t = TeacherRecord("c1", "i1", "fp", 1, [TeacherBox(0, (0, 0, 5, 5), 0.9)])
    assert R.teacher_problem(t) is None
    t.boxes.append(TeacherBox(3, (0, 0, 5, 5), 0.9))
    assert "phrase 3" in R.teacher_problem(t)
    for box, score, fragment in [((0, 0, float("nan"), 5), 0.9, "not a finite xyxy box"), ((5, 0, 5, 5), 0.9, "positive area"),
                                 ((0, 6, 5, 5), 0.9, "positive area"), ((0, 0, float("inf"), 5), 0.9, "not a finite"),
                                 ((0, 0, 5, 5), float("nan"), "score nan is not finite"), ((0, 0, 5, 5), np.float32("inf"), "score inf")]:
        t = TeacherRecord("c1", "i1", "fp", 1, [TeacherBox(0, (0, 0, 5, 5), 0.9), TeacherBox(0, box, score)])
        assert fragment in R.teacher_problem(t), (box, score)
    assert R.teacher_problem(TeacherRecord("c1", "i1", "fp", 1, [TeacherBox(0, np.array([0, 0, 5.5, 5], np.float32), np.float32(0.5))])) is None


def test_keys_and_shard_index_are_stable():
    assert S.sample_key("000123") == "000123"
    k = S.sample_key("COCO_train2014_000000000009.jpg")
    assert "." not in k and k.startswith("COCO_train2014_000000000009_jpg-")
    assert S.sample_key("a.b") != S.sample_key("a_b")
    # Hard-coded expectations guard against anyone swapping in Python's salted hash().
    idx = [S.shard_index(f"img{i}", 8) for i in range(200)]
    assert idx == [S.shard_index(f"img{i}", 8) for i in range(200)]
    assert set(idx) == set(range(8))
    assert S.shard_index("img0", 8) == int(__import__("hashlib").sha1(b"img0").hexdigest()[:12], 16) % 8


def test_region_shard_round_trip_and_reproducible(tmp_path):
    recs = {S.sample_key(f"im{i}"): make_region(f"im{i}", n=3 + i, seed=i, cls=i % 2 == 0) for i in range(6)}
    p1, p2 = tmp_path / "a" / S.shard_name("regions", 0), tmp_path / "b" / S.shard_name("regions", 0)
    S.write_shard(p1, {k: S.encode_region(r) for k, r in recs.items()})
    S.write_shard(p2, {k: S.encode_region(r) for k, r in reversed(list(recs.items()))})
    assert p1.read_bytes() == p2.read_bytes()  # order of arrival does not matter
    got = list(S.iter_regions(p1))
    assert [k for k, _ in got] == sorted(recs)
    for k, r in got:
        src = recs[k]
        np.testing.assert_array_equal(r.boxes, src.boxes)
        np.testing.assert_allclose(r.features, src.features.astype(np.float16))
        assert r.features.dtype == np.float16
        assert (r.cls_prob is None) == (src.cls_prob is None)
    assert list_shards(tmp_path / "a", "regions") == [str(p1)]
    assert not list((tmp_path / "a").glob(".*tmp*"))


def test_label_round_trip(tmp_path):
    lab = ImageLabels(
        "im0", 3, 0.5,
        [{"caption_id": "im0#0", "text": "a red circle", "phrases": [{"text": "a red circle", "start": 0, "end": 12}]}],
        align=np.array([[1, 0, 0]], np.uint8), iou=np.array([[0.7, 0.1, 0.0]], np.float16),
        score=np.array([[0.9, 0.9, 0.0]], np.float16), teacher="fp",
    )
    assert R.labels_problem(lab) is None
    S.write_shard(tmp_path / "l.tar", {"im0": S.encode_labels(lab)})
    (k, got), = S.iter_labels(tmp_path / "l.tar")
    assert k == "im0" and got.captions == lab.captions and got.iou_threshold == 0.5
    np.testing.assert_array_equal(got.align, lab.align)
    lab.align = np.zeros((2, 3), np.uint8)
    assert "align has shape" in R.labels_problem(lab)


def test_reader_rejects_pickle_truncation_and_bad_layout(tmp_path):
    p = tmp_path / "x.tar"
    S.write_shard(p, {"a": S.encode_region(make_region("a")), "b": S.encode_region(make_region("b"))})
    data = p.read_bytes()
    (tmp_path / "trunc.tar").write_bytes(data[: len(data) // 2 + 100])
    with pytest.raises(S.ShardError, match="trunc.tar"):
        list(S.iter_regions(tmp_path / "trunc.tar"))
    # Cut exactly after a whole member: still a readable tar stream, but the end marker is missing.
    with tarfile.open(p) as t:
        first_end = t.getmembers()[1].offset
    (tmp_path / "cut.tar").write_bytes(data[:first_end])
    with pytest.raises(S.ShardError, match="end-of-archive|lacks"):
        list(S.iter_regions(tmp_path / "cut.tar"))
    # A pickled object array inside an npy member is refused, not executed.
    buf = io.BytesIO(); np.save(buf, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(S.ShardError, match="pickle"):
        S.load_npy(buf.getvalue(), "evil.npy")
    with tarfile.open(tmp_path / "evil.tar", "w") as t:
        info = tarfile.TarInfo("a.pkl"); info.size = 1; t.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(S.ShardError, match="forbidden"):
        list(S.iter_shard(tmp_path / "evil.tar"))
    with pytest.raises(S.ShardError, match="forbidden"):
        S.write_shard(tmp_path / "y.tar", {"a": {"pth": b""}})


def test_manifest_and_fingerprint(tmp_path):
    assert M.fingerprint({"a": 1, "b": 2}) == M.fingerprint({"b": 2, "a": 1})
    assert M.fingerprint({"a": 1}) != M.fingerprint({"a": 2})
    assert M.read_manifest(tmp_path) is None
    M.write_manifest(tmp_path, {"fingerprint": "abc", "counts": {"in": 3, "out": 2, "rejected": 1}})
    assert M.is_complete(tmp_path, "abc") and not M.is_complete(tmp_path, "abd")
    assert M.reconciles(M.read_manifest(tmp_path)["counts"])
    (tmp_path / "w.bin").write_bytes(b"weights")
    d1 = M.files_digest([tmp_path / "w.bin"])
    (tmp_path / "w.bin").write_bytes(b"weightz")
    assert M.files_digest([tmp_path / "w.bin"]) != d1


def test_arrow_rows_round_trip():
    import pyarrow as pa
    r = PhraseRecord("c", "i", "a cat", [Phrase("a cat", 0, 5)])
    t = pa.Table.from_pylist([A.phrases_to_row(r)], schema=A.PHRASES_SCHEMA)
    assert A.phrases_from_row(t.to_pylist()[0]) == r
    tr = TeacherRecord("c", "i", "fp", 1, [TeacherBox(0, (1.0, 2.0, 3.0, 4.0), 0.5)])
    t = pa.Table.from_pylist([A.teacher_to_row(tr)], schema=A.TEACHER_SCHEMA)
    assert A.teacher_from_row(t.to_pylist()[0]) == tr


@pytest.mark.parametrize(
    "array",
    [np.zeros((0, 4), np.float32), np.arange(12, dtype=np.float16).reshape(3, 4), np.array(5, np.int64),
     np.asfortranarray(np.arange(6.0).reshape(2, 3)), np.array([True, False]), np.zeros((2, 3), ">f4")],
)
def test_load_npy_reads_what_numpy_writes(array):
    buf = io.BytesIO(); np.save(buf, array)
    got = S.load_npy(buf.getvalue())
    assert got.dtype == array.dtype and got.shape == array.shape and np.array_equal(got, array)
    assert got.flags.writeable


def test_load_npy_refuses_structured_and_truncated():
    buf = io.BytesIO(); np.save(buf, np.zeros(3, dtype=[("a", "<f4")]))
    with pytest.raises(S.ShardError, match="plain numeric"):
        S.load_npy(buf.getvalue(), "x.npy")
    good = S.npy_bytes(np.ones((4, 4), np.float32))
    with pytest.raises(S.ShardError, match="truncated"):
        S.load_npy(good[:-3], "x.npy")
    with pytest.raises(S.ShardError, match="magic"):
        S.load_npy(b"PK\x03\x04" + good, "x.npy")


def test_label_iou_is_stored_exactly_so_rethresholding_agrees_with_align(tmp_path):
    """A pair at IoU 0.4999 is negative at 0.5; a float16 iou (0.5) would flip it when the trainer
    re-thresholds. Old float16 shards still read."""
    from pipelines.stages.stage_io import RegionInfo
    from pipelines.stages.labels import image_labels
    from schemas.records import Phrase, PhraseRecord, TeacherBox, TeacherRecord
    from trainer.data.sampling import positives

    regions = np.array([[0, 0, 100, 100], [0, 0, 100, 60]], np.float32)
    info = RegionInfo(0, "im0", "im0", 100, 100, regions, None)
    phr = PhraseRecord("im0#0", "im0", "a square", [Phrase("a square", 0, 8)])
    tea = TeacherRecord("im0#0", "im0", "fp", 1, [TeacherBox(0, (0.0, 0.0, 100.0, 49.99), 0.9)])
    lab = image_labels(info, [(phr, tea)], 0.5, "fp")
    assert lab.align.tolist() == [[0, 1]] and 0.4998 < lab.iou[0, 0] < 0.5
    S.write_shard(tmp_path / "l.tar", {"im0": S.encode_labels(lab)})
    (_, got), = S.iter_labels(tmp_path / "l.tar")
    assert got.iou.dtype == np.float32
    np.testing.assert_array_equal(positives(got.align, got.iou, 0.5), got.align)
    old = S.encode_labels(lab)
    old["iou.npy"] = S.npy_bytes(lab.iou.astype(np.float16))  # schema 1.0 layout
    assert S.decode_labels(old, "old").iou.dtype == np.float16


def test_region_with_detected_classes_is_stored_compactly_and_reads_as_a_distribution(tmp_path):
    boxes = np.array([[0, 0, 10, 10], [5, 5, 20, 20]], np.float32)
    objects, conf = np.array([1599, 0]), np.array([0.75, 0.5], np.float32)
    rec = RegionRecord("im0", 30, 30, boxes, np.ones((2, 4), np.float32), R.objects_to_cls(objects, conf, 1601), objects, conf)
    assert R.region_problem(rec) is None
    members = S.encode_region(rec)
    assert "cls.npy" not in members and len(members["objects.npy"]) < 200  # not a dense 2 x 1601 matrix
    got = S.decode_region(members, "x")
    np.testing.assert_array_equal(got.objects, objects)
    assert got.cls_prob.shape == (2, 1601) and got.cls_prob.dtype == np.float16
    assert got.cls_prob[0, 1600] == np.float16(0.75) and got.cls_prob[0, 0] == np.float16(0.25) and got.cls_prob[1, 1] == np.float16(0.5)
    rec.objects = np.array([1600, 0])
    assert "objects_id 1600 lies outside the 1600-class vocabulary" in R.region_problem(rec)


def _tar_bytes(fmt: int, members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            info.type = kind
            if kind == tarfile.SYMTYPE:
                info.linkname = "a.json"
            info.size = len(data) if data is not None else 0
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", [tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_tar_reader_reads_what_tarfile_reads(fmt):
    """The shard reader parses tar headers itself (tarfile's stream mode is a sixth of a loader worker's
    time); on every format tarfile writes it must list the same regular files with the same bytes."""
    rng = np.random.default_rng(0)
    long_dir = "d" * 120  # beyond ustar's 100-byte name field: a prefix (ustar), an L entry (GNU) or pax path
    members = [("a.json", b'{"x": 1}', tarfile.REGTYPE), ("sub", None, tarfile.DIRTYPE),
               (f"{long_dir}/k1.feat.npy", rng.bytes(70_001), tarfile.REGTYPE), ("ln", None, tarfile.SYMTYPE),
               ("k2.txt", b"", tarfile.REGTYPE), ("k3.npy", rng.bytes(512), tarfile.REGTYPE)]
    if fmt == tarfile.USTAR_FORMAT:
        members[2] = (f"{'d' * 90}/k1.feat.npy", members[2][1], tarfile.REGTYPE)
    raw = _tar_bytes(fmt, members)
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r|") as tar:
        expected = [(m.name, m.size, tar.extractfile(m).read()) for m in tar if m.isfile()]
    assert list(S._tar_files(io.BytesIO(raw))) == expected
    assert len(expected) == 4


def test_tar_reader_refuses_truncated_and_corrupt_tars(tmp_path):
    S.write_shard(tmp_path / "s.tar", {"k1": {"json": b"{}", "feat.npy": bytes(1000)}, "k2": {"json": b"{}"}})
    raw = (tmp_path / "s.tar").read_bytes()
    assert [k for k, _ in S.iter_shard(tmp_path / "s.tar")] == ["k1", "k2"]
    end = 7 * 512  # 3 headers, 4 data blocks, then the end-of-archive marker (and tar's record padding)
    assert raw[end:] == bytes(len(raw) - end) and raw[end - 512:end] != bytes(512)
    for cut in (end, end + 512, 512 + 100, 3 * 512):  # no marker, half a marker, mid-member, at a header
        (tmp_path / "t.tar").write_bytes(raw[:cut])
        with pytest.raises(S.ShardError, match=r"t\.tar.*truncated"):
            list(S.iter_shard(tmp_path / "t.tar"))
    (tmp_path / "h.tar").write_bytes(b"hello\n")
    with pytest.raises(S.ShardError, match=r"h\.tar: not a tar shard, or truncated before its first sample"):
        list(S.iter_shard(tmp_path / "h.tar"))
    bad = bytearray(raw)
    bad[10] ^= 0xFF  # a byte of the first header's name: its checksum no longer matches
    (tmp_path / "c.tar").write_bytes(bytes(bad))
    with pytest.raises(S.ShardError, match=r"c\.tar: unreadable or truncated tar after sample None: header checksum"):
        list(S.iter_shard(tmp_path / "c.tar"))
