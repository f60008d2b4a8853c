"""The synthetic grounded corpus: layout, determinism, truthful language, recoverable features."""
import json
import pickle
import pickletools
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from schemas.boxes import box_iou
from schemas.manifest import MANIFEST_NAME
from pipelines.formats.readers import RegionRecord, read_butd_tsv, read_region_file
from pipelines.synthetic import generate
from pipelines.synthetic.scene import COLOURS, SHAPES, SIZES

N = 60
MARKUP = re.compile(r"\[/EN#(\d+)/(\w+) ([^\]]+)\]")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "sample"
    generate(out, num_images=N, seed=3, feature_dim=32)
    return out


def _files(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def _instances(corpus):
    inst = json.loads((corpus / "refer/instances.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for a in inst["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a)
    return inst, by_image


def test_layout_and_manifest(corpus):
    m = json.loads((corpus / MANIFEST_NAME).read_text())
    assert m["kind"] == "ssga-synthetic-corpus" and m["num_images"] == N and m["seed"] == 3 and m["feature_dim"] == 32
    ids = [f"{i:06d}" for i in range(N)]
    for sub, ext in (("images", "png"), ("regions_npz", "npz"), ("regions_npy", "npy"), ("flickr30k/Sentences", "txt"), ("flickr30k/Annotations", "xml")):
        assert sorted(p.stem for p in (corpus / sub).glob(f"*.{ext}")) == ids, sub
    for name in ("captions.tsv", "regions.tsv", "regions_lxmert.tsv", "objects_vocab.txt", "refer/refs.json", "refer/refs(unc).p"):
        assert (corpus / name).stat().st_size > 0, name
    vocab = [line.split(",")[0] for line in (corpus / "objects_vocab.txt").read_text().splitlines()]
    assert vocab == list(SHAPES) and m["num_classes"] == len(vocab) + 1
    rows = [line.split("\t") for line in (corpus / "captions.tsv").read_text().splitlines()]
    assert len(rows) == 2 * N == m["counts"]["captions"]
    assert all(len(r) == 2 and r[1] == f"images/{ids[i // 2]}.png" and r[0].strip() for i, r in enumerate(rows))
    img = Image.open(corpus / "images/000000.png")
    assert img.mode == "RGB" and 160 <= img.width <= 224 and 160 <= img.height <= 224


def test_same_seed_is_byte_identical_and_prefix_stable(corpus, tmp_path):
    again = generate(tmp_path / "again", num_images=N, seed=3, feature_dim=32)
    assert _files(tmp_path / "again") == _files(corpus)
    assert again["fingerprint"] == json.loads((corpus / MANIFEST_NAME).read_text())["fingerprint"]
    # Image i depends only on (seed, i): a smaller corpus is a prefix of a bigger one.
    generate(tmp_path / "small", num_images=5, seed=3, feature_dim=32)
    small = (tmp_path / "small" / "regions.tsv").read_text()
    assert (corpus / "regions.tsv").read_text().startswith(small)
    assert (tmp_path / "small/images/000004.png").read_bytes() == (corpus / "images/000004.png").read_bytes()
    generate(tmp_path / "other", num_images=5, seed=4, feature_dim=32)
    assert (tmp_path / "other" / "regions.tsv").read_text() != small


def test_flickr30k_markup_matches_captions_objects_and_relations(corpus):
    _, by_image = _instances(corpus)
    captions = [line.split("\t")[0] for line in (corpus / "captions.tsv").read_text().splitlines()]
    relations = 0
    for i in range(N):
        image_id = f"{i:06d}"
        sentences = (corpus / f"flickr30k/Sentences/{image_id}.txt").read_text().splitlines()
        assert MARKUP.sub(lambda m: m.group(3), "\n".join(sentences)).splitlines() == captions[2 * i : 2 * i + 2]
        xml = (corpus / f"flickr30k/Annotations/{image_id}.xml").read_text()
        xml_boxes = {
            int(m[0]): [int(v) for v in m[1:]]
            for m in re.findall(r"<name>(\d+)</name><bndbox><xmin>(\d+)</xmin><ymin>(\d+)</ymin><xmax>(\d+)</xmax><ymax>(\d+)</ymax>", xml)
        }
        anns = by_image[i]
        assert sorted(xml_boxes) == list(range(1, len(anns) + 1))
        for ent, a in enumerate(anns, start=1):
            x, y, w, h = a["bbox"]
            assert xml_boxes[ent] == [x + 1, y + 1, x + w, y + h]  # Flickr30k boxes are 1-based inclusive
        for s in sentences:
            ents = []
            for m in MARKUP.finditer(s):
                a = anns[int(m.group(1)) - 1]
                words = m.group(3).split()
                assert words[-1] == SHAPES[a["category_id"] - 1] and a["attributes"]["colour"] in words
                assert words[1] in COLOURS or words[1] == a["attributes"]["size"]
                ents.append(a)
            # "A to the left of B" etc. must be true of the box centres.
            rel = re.search(r"\] (to the left of|to the right of|above|below) \[", s)
            if rel:
                (ax, ay, aw, ah), (bx, by, bw, bh) = ents[0]["bbox"], ents[1]["bbox"]
                dx, dy = (ax + aw / 2) - (bx + bw / 2), (ay + ah / 2) - (by + bh / 2)
                expect = {"to the left of": dx < 0, "to the right of": dx > 0, "above": dy < 0, "below": dy > 0}
                assert expect[rel.group(1)] and (abs(dx) >= abs(dy)) == ("left" in rel.group(1) or "right" in rel.group(1))
                relations += 1
    assert relations > 10


def _resolve(expr: str, anns: list[dict]) -> list[int]:
    """Which objects of an image a minimal referring expression can denote (a tiny interpreter)."""
    words = expr.split()[1:]  # drop "the"
    cands = [i for i, a in enumerate(anns) if SHAPES[a["category_id"] - 1] in words]
    colour = [w for w in words if w in COLOURS]
    if colour:
        cands = [i for i in cands if anns[i]["attributes"]["colour"] == colour[0]]
    if words[0] in SIZES:
        cands = [i for i in cands if anns[i]["attributes"]["size"] == words[0]]
    if words[0] in ("bigger", "smaller"):
        pick = max if words[0] == "bigger" else min
        cands = [pick(cands, key=lambda i: anns[i]["area"])]
    where = " ".join(words[-2:])
    if where in ("the left", "the right", "the top", "the bottom"):
        axis = 0 if where in ("the left", "the right") else 1
        centre = lambda i: anns[i]["bbox"][axis] + anns[i]["bbox"][axis + 2] / 2  # noqa: E731
        cands = [(min if where in ("the left", "the top") else max)(cands, key=centre)]
    return cands


def test_referring_expressions_are_unique_and_need_colour_size_and_space(corpus):
    refs = json.loads((corpus / "refer/refs.json").read_text())
    # The pickle form holds the same plain data, checked without unpickling anything.
    blob = (corpus / "refer/refs(unc).p").read_bytes()
    assert blob == pickle.dumps(refs, protocol=4)
    assert not {op.name for op, _, _ in pickletools.genops(blob)} & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "BUILD"}
    inst, by_image = _instances(corpus)
    anns_by_id = {a["id"]: a for a in inst["annotations"]}
    needs = set()
    assert len(refs) == len(inst["annotations"])
    for r in refs:
        anns = by_image[r["image_id"]]
        target = anns.index(anns_by_id[r["ann_id"]])
        assert r["split"] in ("train", "val", "testA", "testB") and r["category_id"] == anns[target]["category_id"]
        assert r["sent_ids"] == [s["sent_id"] for s in r["sentences"]]
        minimal = r["sentences"][0]
        assert minimal["kind"] == "minimal" and minimal["tokens"] == minimal["raw"].split()
        assert _resolve(minimal["raw"], anns) == [target], (r["image_id"], minimal["raw"])
        needs.update(minimal["needs"])
    assert needs == {"shape", "colour", "size", "spatial"}
    # Scenes hold same-shape distractors on purpose.
    twins = sum(any(a["category_id"] == b["category_id"] and a is not b for b in anns) for anns in by_image.values() for a in anns)
    assert twins > len(inst["annotations"]) * 0.3


def _probe_accuracy(x_train, y_train, x_test, y_test):
    """1-nearest-neighbour probe: test accuracy."""
    d = ((x_test[:, None, :] - x_train[None, :, :]) ** 2).sum(axis=-1)
    return float(np.mean(y_train[d.argmin(axis=1)] == y_test))


def test_features_know_colour_and_shape_cls_prob_knows_shape_only(corpus):
    _, by_image = _instances(corpus)
    feats, cls, colour, shape, split = [], [], [], [], []
    for i, item in enumerate(read_butd_tsv(corpus / "regions.tsv")):
        assert isinstance(item, RegionRecord)
        assert 10 <= item.num_boxes <= 36 and item.features.shape[1] == 32
        npz = read_region_file(corpus / f"regions_npz/{item.image_id}.npz")
        np.testing.assert_array_equal(npz.boxes, item.boxes)
        np.testing.assert_allclose(npz.cls_prob.sum(axis=1), 1.0, atol=1e-5)
        anns = by_image[i]
        gt = np.array([[x, y, x + w, y + h] for x, y, w, h in (a["bbox"] for a in anns)], np.float32)
        iou = box_iou(item.boxes, gt)
        for n in np.flatnonzero(iou.max(axis=1) >= 0.7):
            a = anns[int(iou[n].argmax())]
            feats.append(item.features[n])
            cls.append(npz.cls_prob[n])
            colour.append(list(COLOURS).index(a["attributes"]["colour"]))
            shape.append(a["category_id"] - 1)
            split.append(i % 2)
    feats, cls, colour, shape, split = map(np.asarray, (feats, cls, colour, shape, split))
    tr, te = split == 0, split == 1
    assert te.sum() > 100
    assert _probe_accuracy(feats[tr], colour[tr], feats[te], colour[te]) > 0.85
    assert _probe_accuracy(feats[tr], shape[tr], feats[te], shape[te]) > 0.65
    # The detector's class distribution names the shape (argmax) but carries no colour signal.
    assert np.mean(cls[:, 1:].argmax(axis=1) == shape) > 0.7
    assert _probe_accuracy(cls[tr], colour[tr], cls[te], colour[te]) < 0.4


def test_cli_and_refuses_to_replace_foreign_directory(tmp_path):
    out = tmp_path / "cli"
    subprocess.run(
        [sys.executable, "-m", "pipelines.synthetic", "--out", str(out), "--num-images", "3", "--seed", "1", "--feature-dim", "8"],
        check=True, cwd=ROOT, capture_output=True,
    )
    m = json.loads((out / MANIFEST_NAME).read_text())
    assert m["num_images"] == 3 and len((out / "regions.tsv").read_text().splitlines()) == 3
    generate(out, num_images=2, seed=1, feature_dim=8)  # replacing a previous corpus is fine
    assert len(list((out / "images").iterdir())) == 2
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a synthetic corpus"):
        generate(foreign, num_images=1, seed=0)
    assert (foreign / "precious.txt").read_text() == "keep me"
