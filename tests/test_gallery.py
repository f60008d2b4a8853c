"""The pseudo-label gallery: provenance (labels, teacher, quality, run), one card per image, panels, loss plot.

The fixture is the situation of issue #15 item 13: the DAG makes labels with teacher A and pre-trains
on them, then the teacher changes to B (new labels, no new run). The gallery of A must show A's run
as its own; the gallery of B must say that the run it shows was trained on A's labels.
"""
import json
import logging
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines.dag import DagConfig, labels_dag, pretrain_stage
from pipelines.formats.flickr30k import Flickr30kGroundTruth
from pipelines.gallery.__main__ import main
from pipelines.gallery.page import BLUE, GREEN, GREY, ORANGE, RED, build_gallery, draw_phrase
from pipelines.gallery.draw import GT_WIDTH, PURPLE, smooth
from schemas.boxes import box_iou
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, iter_labels, iter_regions
from schemas.discovery import list_shards

ROOT = Path(__file__).resolve().parents[1]
SCALE = 2
SHOWN = 6
IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]
TINY_TRAINER = ["--batch-size", "4", "--num-workers", "0", "--hidden-size", "32", "--num-layers", "1", "--num-heads", "2",
                "--intermediate-size", "64", "--progress", "false", "--warmup-steps", "1"]
TEACHER_A = {"teacher": "simulated", "teacher_args": {"false_rate": 1.5, "jitter": 0.15, "seed": 2}}  # some wrong matches
TEACHER_B = {"teacher": "oracle", "teacher_args": {}}


def _cfg(data: Path, teacher: dict) -> DagConfig:
    return DagConfig(data=str(data), num_shards=1, steps=2, train_args=TINY_TRAINER, beam_args=IN_MEMORY, **teacher)


class _LogLines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _fake_trainer(cmd, **_):
    """Stands in for ``python -m trainer.train`` (a subprocess, seconds of torch start-up): writes what the
    trainer writes, ``config.json`` and ``losses.jsonl``; the DAG's own bookkeeping around it is real."""
    args = dict(zip(cmd[cmd.index("trainer.train") + 1 :: 2], cmd[cmd.index("trainer.train") + 2 :: 2]))
    out = Path(args["--out"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({"regions": args["--regions"], "labels": args["--labels"], "steps": int(args["--steps"])}))
    rng = np.random.default_rng(0)
    rows = [{"step": i, "loss": 20 - i / 10 + rng.normal(), "word": 9.0, "img": 1.5, "align": 0.69, "gnd": 0.7 - i / 500} for i in range(1, 41)]
    (out / "losses.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return subprocess.CompletedProcess(cmd, 0)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Teacher A's labels and a run on them (gallery A); teacher B's labels (gallery B, the run is stale);
    a run on B; back to teacher A (gallery A2: the DAG's last run is B's, but A's run exists)."""
    from pipelines.synthetic import generate

    data = tmp_path_factory.mktemp("gallery")
    generate(data / "sample", num_images=10, seed=3)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("pipelines.dag.pretrain.subprocess.run", _fake_trainer)
        report_a = labels_dag(_cfg(data, TEACHER_A))
        run_a = pretrain_stage(_cfg(data, TEACHER_A), report_a)
        index_a = build_gallery(data, None, data / "gallery_a", max_images=SHOWN, scale=SCALE)
        report_b = labels_dag(_cfg(data, TEACHER_B))
        logged = _LogLines()
        logging.getLogger("pipelines.gallery").addHandler(logged)
        try:
            index_b = build_gallery(data, None, data / "gallery_b", max_images=SHOWN, scale=SCALE)
        finally:
            logging.getLogger("pipelines.gallery").removeHandler(logged)
        run_b = pretrain_stage(_cfg(data, TEACHER_B), report_b)
        again = labels_dag(_cfg(data, TEACHER_A))
        index_a2 = build_gallery(data, None, data / "gallery_a2", max_images=1, scale=SCALE)
    assert not any(m["ran"] for m in again.values())
    return {"data": data, "a": report_a, "b": report_b, "run": Path(run_a["dir"]), "run_b": Path(run_b["dir"]),
            "index_a": index_a, "index_b": index_b, "index_a2": index_a2, "log_b": logged.lines}


def _by_image(report, stage, prefix, reader):
    return {r.image_id: r for sh in list_shards(report[stage]["dir"], prefix) for _, r in reader(sh)}


def _ring(panel: np.ndarray, box, inset: int) -> np.ndarray:
    """The panel's pixels on the outline of ``box`` (image coordinates, exclusive end) moved ``inset`` pixels inwards."""
    x1, y1 = (int(v * SCALE) + inset for v in box[:2])
    x2, y2 = (int(v * SCALE) - 1 - inset for v in box[2:])
    x1, y1, x2, y2 = max(x1, 0), max(y1, 0), min(x2, panel.shape[1] - 1), min(y2, panel.shape[0] - 1)
    return np.concatenate([panel[y1, x1:x2], panel[y2, x1:x2], panel[y1:y2, x1], panel[y1:y2, x2]])


def _meta(page: str) -> dict[str, str]:
    """The provenance table: ``{row name: its text}``."""
    return {k: re.sub(r"<[^>]+>", "", v) for k, v in re.findall(r"<tr><th>([^<]+)</th><td>(.*?)</td></tr>", page)}


def test_run_on_the_current_labels_is_shown_as_theirs_without_warning(demo):
    page = demo["index_a"].read_text()
    meta = _meta(page)
    assert 'id="stale-run"' not in page and "was trained on labels" not in page
    assert str(demo["run"]) in meta["run"] and "trained on the current labels" in meta["run"] and "40 steps" in meta["run"]
    # the loss plot is titled with the run and the teacher its labels came from
    title = re.search(r'<p class="losscap">([^<]+)</p>', page).group(1)
    assert demo["run"].name in title and demo["a"]["labels"]["fingerprint"] in title and "simulated" in title and "false_rate=1.5" in title


def test_after_a_teacher_change_the_gallery_warns_that_the_run_was_trained_on_other_labels(demo):
    page = demo["index_b"].read_text()
    warning = re.search(r'<p class="warn" id="stale-run">(.*?)</p>', page, re.S)
    assert warning, "no warning that the run's labels are not the current ones"
    text = warning.group(1)
    assert str(demo["run"]) in text and demo["a"]["labels"]["fingerprint"] in text and demo["b"]["labels"]["fingerprint"] in text
    assert "simulated" in text and "oracle" in text  # the teacher the run was trained on, and the current one
    meta = _meta(page)
    assert "oracle" in meta["teacher"] and demo["a"]["labels"]["fingerprint"] in meta["run"] and "simulated" in meta["run"]
    title = re.search(r'<p class="losscap">([^<]+)</p>', page).group(1)
    assert demo["a"]["labels"]["fingerprint"] in title and "simulated" in title and "oracle" not in title
    assert any("was trained on labels " + demo["a"]["labels"]["fingerprint"] in line for line in demo["log_b"])  # and in the log


def test_back_on_the_first_teacher_the_gallery_shows_the_run_trained_on_its_labels(demo):
    assert json.loads((demo["data"] / "dag.json").read_text())["pretrain"]["dir"] == str(demo["run_b"])  # the DAG's last run
    page = demo["index_a2"].read_text()
    assert 'id="stale-run"' not in page and str(demo["run"]) in _meta(page)["run"] and "trained on the current labels" in _meta(page)["run"]
    stale = build_gallery(demo["data"], demo["run_b"], demo["data"] / "gallery_explicit", max_images=1).read_text()
    assert f"A run on the current labels: --run {demo['run']}" in stale  # an explicit --run on other labels: warned, pointed to A's


def test_page_names_the_teacher_and_its_precision_recall_from_the_labels_manifest(demo):
    for key, index in (("a", "index_a"), ("b", "index_b")):
        manifest = demo[key]["labels"]
        meta = _meta(demo[index].read_text())
        name = manifest["teacher"]["name"]
        q = manifest["quality"][name]
        assert meta["teacher"].startswith(name) and manifest["teacher"]["fingerprint"] in meta["teacher"]
        assert f"precision {q['precision']:.3f}" in meta["vs ground truth"] and f"recall {q['recall']:.3f}" in meta["vs ground truth"]
        assert f"{q['tp']} right, {q['fp']} wrong, {q['fn']} missed" in meta["vs ground truth"]
        assert manifest["dir"] in meta["labels"]
    assert "false_rate=1.5" in _meta(demo["index_a"].read_text())["teacher"]
    assert _meta(demo["index_a"].read_text())["vs ground truth"] != _meta(demo["index_b"].read_text())["vs ground truth"]


def test_one_card_per_image_with_its_captions_phrases_and_panels(demo):
    index = demo["index_b"]
    page = index.read_text()
    labels = _by_image(demo["b"], "labels", LABEL_PREFIX, iter_labels)
    shown = sorted(labels)[:SHOWN]
    cards = re.findall(r'<article class="card" id="img-([^"]+)">(.*?)</article>', page, re.S)
    assert [i for i, _ in cards] == shown
    for image_id, body in cards:
        lab = labels[image_id]
        panels = re.findall(r'<img src="(img/[^"]+)"', body)
        assert len(panels) == lab.num_phrases > 0 and all((index.parent / p).exists() for p in panels)
        assert all(p.startswith(f"img/{image_id}_") for p in panels)
        for cap in lab.captions:
            assert cap["text"] in body and all(f"<b>{p['text']}</b>" in body for p in cap["phrases"])
    assert (index.parent / "losses.png").stat().st_size > 0
    Image.open(index.parent / "losses.png").verify()


def test_panels_draw_ground_truth_and_colour_matched_regions_right_or_wrong(demo):
    """Expected colours from the Flickr30k files directly: a matched region is right when its IoU with a GT box of the phrase is >= 0.5."""
    data, report = demo["data"], demo["a"]
    regions = _by_image(report, "regions", REGION_PREFIX, iter_regions)
    labels = _by_image(report, "labels", LABEL_PREFIX, iter_labels)
    gt = Flickr30kGroundTruth(data / "sample" / "flickr30k")
    seen = {"right": 0, "wrong": 0, "gt": 0}
    for image_id in sorted(labels)[:SHOWN]:
        lab, boxes = labels[image_id], regions[image_id].boxes
        sentences, gt_boxes = gt.image(image_id)
        row = 0
        for cap in lab.captions:
            k = int(cap["caption_id"].rsplit("#", 1)[1])
            phrase_gt = gt.phrase_boxes(cap["text"], k, [(p["start"], p["end"]) for p in cap["phrases"]], sentences, gt_boxes)
            for pi, g in enumerate(phrase_gt):
                panel = np.asarray(Image.open(demo["index_a"].parent / "img" / f"{image_id}_{k}_{pi}.png").convert("RGB"))
                assert g is not None
                for b in g:  # ground truth: blue, just outside the box (where no matched region or teacher box lies over it)
                    assert (_ring(panel, b, -1) == BLUE).all(axis=1).mean() > 0.25, (image_id, k, pi)
                    seen["gt"] += 1
                right = (box_iou(g, boxes) >= 0.5).any(axis=0)
                for r in np.flatnonzero(lab.align[row]):  # the 3-pixel outline of a matched region
                    band = np.concatenate([_ring(panel, boxes[r], i) for i in range(3)])
                    # wrong ones are drawn last but for the teacher's dashes; a right one may lie under them and its neighbours
                    colour, share = (GREEN, 0.05) if right[r] else (RED, 0.3)
                    assert (band == colour).all(axis=1).mean() > share, (image_id, k, pi, r)
                    seen["right" if right[r] else "wrong"] += 1
                row += 1
    assert seen["right"] and seen["wrong"] and seen["gt"], seen


def test_draw_order_puts_teacher_boxes_on_top_of_matched_regions_and_ground_truth_beside_them():
    image = Image.new("RGB", (60, 40), (255, 255, 255))
    regions = np.array([[2, 2, 12, 12], [20, 5, 40, 30], [44, 4, 58, 20]], np.float32)
    teacher = [(20.0, 5.0, 40.0, 30.0)]  # exactly on the matched region 1
    gt = np.array([[20, 5, 40, 30]], np.float32)  # and so is the ground truth
    out = np.asarray(draw_phrase(image, regions, teacher, np.array([0, 1, 1], np.uint8), 2, gt, np.array([False, True, False]), [0.87]))
    top = out[10, 40:80]  # the shared top edge (y = 5 * 2): the teacher's orange dashes, over the green
    assert (top == ORANGE).all(axis=1).mean() > 0.3 and (top == GREEN).all(axis=1).mean() > 0.2
    assert tuple(out[30, 41]) == GREEN and tuple(out[30, 40 - GT_WIDTH]) == BLUE  # green inside the edge, ground truth outside
    assert tuple(out[16, 89]) == RED and tuple(out[14, 4]) == GREY  # region 2 matched but not on the GT; region 0 not matched
    no_gt = np.asarray(draw_phrase(image, regions, [], np.array([0, 0, 1], np.uint8), 2, None, None))
    assert tuple(no_gt[16, 89]) == PURPLE  # matched, nothing to judge it by
    assert BLUE not in {tuple(p) for p in no_gt.reshape(-1, 3)}


def test_smooth_is_a_trailing_moving_average():
    assert np.allclose(smooth([4.0] * 7, 3), 4.0)
    assert np.allclose(smooth([0, 3, 6, 9], 2), [0, 1.5, 4.5, 7.5])
    noisy = 10 + np.random.default_rng(0).normal(0, 1, 400)
    assert smooth(noisy, 20)[20:].std() < noisy.std() / 3 and len(smooth(noisy, 20)) == 400


def test_cli_says_what_to_run_when_there_are_no_labels(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path)])
    assert "no labels" in str(e.value) and "pipelines.dag labels" in str(e.value) and "\n" not in str(e.value)


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium package (not installed in CI)")
def test_gallery_renders_in_headless_chromium(demo, tmp_path):
    shot = tmp_path / "shot.png"
    subprocess.run([str(ROOT / "scripts" / "gallery_screenshot.sh"), str(demo["index_a"]), str(shot), "1200,1400"], check=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))[300:].reshape(-1, 3).astype(int)  # below the title, table and legend
    for name, colour in (("green (right)", GREEN), ("red (wrong)", RED), ("blue (ground truth)", BLUE), ("orange (teacher)", ORANGE)):
        assert np.all(np.abs(pixels - colour) <= 10, axis=1).sum() > 50, f"the screenshot shows no {name} boxes"
