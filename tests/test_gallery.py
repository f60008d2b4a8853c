"""The pseudo-label gallery: one panel per phrase with regions, teacher boxes and matches; loss curves."""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipelines.dag import DagConfig, labels_dag
from pipelines.gallery import GREEN, GREY, ORANGE, build_gallery, draw_phrase
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, iter_labels, iter_regions, list_shards

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    from pipelines.synthetic import generate

    data = tmp_path_factory.mktemp("gallery")
    generate(data / "sample", num_images=10, seed=3)
    cfg = DagConfig(data=str(data), num_shards=1, teacher="oracle", beam_args=["--runner=DirectRunner", "--direct_running_mode=in_memory"])
    report = labels_dag(cfg)
    run = data / "run"
    run.mkdir()
    rows = [{"step": i, "loss": 20 - i, "word": 9 - i / 2, "img": 1.5, "align": 0.69, "gnd": 0.7 - i / 50} for i in range(1, 11)]
    (run / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    index = build_gallery(data, run, data / "gallery", max_images=6, scale=SCALE)
    return data, report, index


def test_page_lists_every_phrase_with_its_panel_and_the_loss_plot(gallery):
    data, report, index = gallery
    page = index.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', page)
    assert "losses.png" in srcs and (index.parent / "losses.png").stat().st_size > 0
    panels = [s for s in srcs if s.startswith("img/")]
    assert all((index.parent / s).exists() for s in panels)
    labels = {lab.image_id: lab for sh in list_shards(report["labels"]["dir"], LABEL_PREFIX) for _, lab in iter_labels(sh)}
    shown = sorted(labels)[:6]
    assert len(panels) == sum(labels[i].num_phrases for i in shown) > 0
    assert sorted(re.findall(r"<h2>(\d+)</h2>", page)) == shown
    for i in shown:
        for cap in labels[i].captions:
            assert cap["text"] in page and all(p["text"] in page for p in cap["phrases"])
    Image.open(index.parent / "losses.png").verify()


def test_panels_show_matched_regions_green_and_teacher_boxes_orange(gallery):
    data, report, index = gallery
    regions = {r.image_id: r for sh in list_shards(report["regions"]["dir"], REGION_PREFIX) for _, r in iter_regions(sh)}
    labels = {lab.image_id: lab for sh in list_shards(report["labels"]["dir"], LABEL_PREFIX) for _, lab in iter_labels(sh)}
    teacher = {r["caption_id"]: r for f in Path(report["teacher"]["dir"]).glob("teacher-*.parquet") for r in pq.read_table(f).to_pylist()}
    image_id = next(i for i in sorted(labels)[:6] if labels[i].align.any())
    lab, boxes = labels[image_id], regions[image_id].boxes
    row = int(np.flatnonzero(lab.align.any(axis=1))[0])
    # the caption and phrase of that stacked row
    offsets = np.cumsum([0] + [len(c["phrases"]) for c in lab.captions])
    c = int(np.searchsorted(offsets, row, side="right") - 1)
    cap, pi = lab.captions[c], row - offsets[c]
    panel = np.asarray(Image.open(index.parent / "img" / f"{image_id}_{cap['caption_id'].rsplit('#', 1)[-1]}_{pi}.png").convert("RGB"))
    original = Image.open(data / "sample" / "images" / f"{image_id}.png")
    assert panel.shape[:2] == (original.height * SCALE, original.width * SCALE)
    for r in np.flatnonzero(lab.align[row]):  # the left edge of each matched region is green (between orange dashes)
        x1, y1, x2, y2 = (int(v * SCALE) for v in boxes[r])
        edge = panel[y1 + 3 : y2 - 3, x1 : x1 + 2].reshape(-1, 3)
        assert (edge == GREEN).all(axis=1).mean() > 0.3
    colours = {tuple(p) for p in panel.reshape(-1, 3)}
    assert GREY in colours
    tboxes = [b for b in teacher[cap["caption_id"]]["boxes"] if b["phrase_index"] == pi]
    assert tboxes and ORANGE in colours  # the oracle's box, dashed orange
    x1, y1, x2, y2 = (int(v * SCALE) for v in tboxes[0]["box"])
    assert (panel[y1, x1 : x2 - 1] == ORANGE).all(axis=1).mean() > 0.3  # its top edge: dashes


def test_draw_phrase_marks_only_matched_regions():
    image = Image.new("RGB", (40, 30), (255, 255, 255))
    regions = np.array([[2, 2, 12, 12], [20, 5, 35, 25]], np.float32)
    out = np.asarray(draw_phrase(image, regions, [(18.0, 3.0, 37.0, 27.0)], np.array([0, 1], np.uint8), scale=2))
    assert tuple(out[14, 4]) == GREY and tuple(out[30, 40]) == GREEN  # region 0 grey, region 1 (matched) green
    assert ORANGE in {tuple(p) for p in out.reshape(-1, 3)}


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package (not installed in CI)")
def test_gallery_renders_in_headless_chromium(gallery, tmp_path):
    _, _, index = gallery
    shot = tmp_path / "shot.png"
    subprocess.run([str(ROOT / "scripts" / "gallery_screenshot.sh"), str(index), str(shot)], check=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))[150:].reshape(-1, 3)  # below the title and the legend
    green = np.all(np.abs(pixels.astype(int) - GREEN) <= 10, axis=1).sum()
    assert green > 200, "the screenshot shows no green (matched-region) boxes"
