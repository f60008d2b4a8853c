"""Pseudo-label gallery: per image and phrase, the detector regions, the teacher's boxes and the matches.

    python -m pipelines.gallery --data DATA --run RUN --out DATA/gallery [--max-images 24]

Reads the stage directories of the last DAG run (``DATA/dag.json``), the images of the corpus
(``DATA/sample/images/<image_id>.png``), and ``RUN/losses.jsonl``. Writes ``OUT/index.html``, one PNG
per (image, caption, phrase) under ``OUT/img/`` (upscaled; all detector regions thin grey, teacher
boxes dashed orange, regions matched to the phrase (``align = 1``) thick green), and the loss curves
as ``OUT/losses.png``. Only the first ``--max-images`` images (by id) are drawn.
"""
from __future__ import annotations

import argparse
import html
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from schemas.arrow import teacher_from_row
from schemas.records import ImageLabels, TeacherRecord
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, iter_labels, iter_regions, list_shards

log = logging.getLogger("pipelines.gallery")

GREY = (150, 150, 150)
ORANGE = (255, 140, 0)
GREEN = (0, 200, 0)
SCALE = 2  # the synthetic images are small; boxes are hard to read at 1x
LOSS_TERMS = ("loss", "word", "img", "align", "gnd")


def _dashed_rect(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], colour, width: int = 2, dash: int = 6) -> None:
    x1, y1, x2, y2 = box
    for (ax, ay, bx, by) in ((x1, y1, x2, y1), (x2, y1, x2, y2), (x2, y2, x1, y2), (x1, y2, x1, y1)):
        length = max(abs(bx - ax), abs(by - ay))
        steps = max(1, int(length // dash))
        for i in range(0, steps, 2):  # every other segment: a dash, then a gap
            t0, t1 = i / steps, min(1.0, (i + 1) / steps)
            draw.line([(ax + (bx - ax) * t0, ay + (by - ay) * t0), (ax + (bx - ax) * t1, ay + (by - ay) * t1)], fill=colour, width=width)


def _scaled(box, scale: int) -> tuple[float, float, float, float]:
    # Exclusive end: the last pixel inside is x2 - 1.
    x1, y1, x2, y2 = (float(v) for v in box)
    return x1 * scale, y1 * scale, x2 * scale - 1, y2 * scale - 1


def draw_phrase(image: Image.Image, regions: np.ndarray, teacher_boxes: list[tuple[float, ...]], matched: np.ndarray, scale: int = SCALE) -> Image.Image:
    """One panel: all ``regions`` grey, ``teacher_boxes`` dashed orange, ``regions[matched]`` green."""
    img = image.convert("RGB").resize((image.width * scale, image.height * scale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    for b in regions:
        draw.rectangle(_scaled(b, scale), outline=GREY, width=1)
    for i in np.flatnonzero(matched):
        draw.rectangle(_scaled(regions[i], scale), outline=GREEN, width=3)
    for b in teacher_boxes:  # on top: a teacher box often coincides with the region it matched
        _dashed_rect(draw, _scaled(b, scale), ORANGE, width=2)
    return img


def plot_losses(losses_jsonl: Path, out_png: Path) -> bool:
    """Loss curves (one panel per term) from the trainer's ``losses.jsonl``; False when there is none."""
    if not losses_jsonl.exists():
        return False
    rows = [json.loads(line) for line in losses_jsonl.read_text().splitlines() if line.strip()]
    if not rows:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = [t for t in LOSS_TERMS if t in rows[0]]
    fig, axes = plt.subplots(1, len(terms), figsize=(3.2 * len(terms), 2.8), squeeze=False)
    steps = [r["step"] for r in rows]
    for ax, t in zip(axes[0], terms):
        ax.plot(steps, [r[t] for r in rows], lw=1)
        ax.set_title(t)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return True


def _stage_dirs(data: Path) -> dict[str, Path]:
    dag = data / "dag.json"
    if not dag.exists():
        raise FileNotFoundError(f"{dag}: no DAG run recorded; run `python -m pipelines.dag labels --data {data}` first")
    rec = json.loads(dag.read_text())
    return {s: Path(rec[s]["dir"]) for s in ("regions", "teacher", "labels") if s in rec}


def _teacher_records(teacher_dir: Path, caption_ids: set[str]) -> dict[str, TeacherRecord]:
    out = {}
    for f in sorted(teacher_dir.glob("teacher-*.parquet")):
        for row in pq.read_table(f).to_pylist():
            if row["caption_id"] in caption_ids:
                out[row["caption_id"]] = teacher_from_row(row)
    return out


def build_gallery(data: Path, run: Path | None, out: Path, corpus: Path | None = None, max_images: int = 24, scale: int = SCALE) -> Path:
    """Write the gallery; returns the path of ``index.html``."""
    dirs = _stage_dirs(data)
    corpus = corpus or data / "sample"
    regions = {}
    for shard in list_shards(dirs["regions"], REGION_PREFIX):
        for _, rec in iter_regions(shard):
            regions[rec.image_id] = rec.boxes
    chosen = set(sorted(regions)[:max_images])
    labels: dict[str, ImageLabels] = {}
    for shard in list_shards(dirs["labels"], LABEL_PREFIX):
        for _, lab in iter_labels(shard):
            if lab.image_id in chosen:
                labels[lab.image_id] = lab
    teacher = _teacher_records(dirs["teacher"], {c["caption_id"] for lab in labels.values() for c in lab.captions})

    (out / "img").mkdir(parents=True, exist_ok=True)
    sections = []
    for image_id in sorted(chosen):
        lab, boxes = labels.get(image_id), regions[image_id]
        path = corpus / "images" / f"{image_id}.png"
        if lab is None or not path.exists():
            log.warning("gallery: image %s has no %s; left out", image_id, "labels" if lab is None else f"image file {path}")
            continue
        image = Image.open(path)
        row, caps = 0, []
        for cap in lab.captions:
            tea = teacher.get(cap["caption_id"])
            panels = []
            for pi, ph in enumerate(cap["phrases"]):
                tboxes = [tuple(b.box) for b in tea.boxes if b.phrase_index == pi] if tea else []
                matched = lab.align[row]
                name = f"{image_id}_{cap['caption_id'].rsplit('#', 1)[-1]}_{pi}.png"
                draw_phrase(image, boxes, tboxes, matched, scale).save(out / "img" / name, optimize=False)
                panels.append(
                    f'<figure><img src="img/{name}" alt="{html.escape(ph["text"])}" width="{image.width * scale}">'
                    f'<figcaption><b>{html.escape(ph["text"])}</b><br>teacher boxes {len(tboxes)} · matched regions {int(matched.sum())}'
                    f" / {len(boxes)}</figcaption></figure>"
                )
                row += 1
            caps.append(f'<p class="cap">{html.escape(cap["text"])}</p><div class="row">{"".join(panels) or "<i>no phrases</i>"}</div>')
        sections.append(f'<section><h2>{html.escape(image_id)}</h2>{"".join(caps) or "<i>no captions</i>"}</section>')

    losses = ""
    if run is not None and plot_losses(run / "losses.jsonl", out / "losses.png"):
        losses = f'<h2>Loss curves</h2><p><a href="losses.png"><img src="losses.png" alt="loss curves"></a><br>from {html.escape(str(run / "losses.jsonl"))}</p>'
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ssga pseudo-label gallery</title>
<style>body{{font-family:sans-serif;margin:1em}} .row{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}}
figcaption{{font-size:12px;max-width:{64 * scale}px}} .cap{{margin:.4em 0}} .key span{{padding:0 .4em;margin-right:1em}}</style></head>
<body><h1>Pseudo labels ({len(sections)} images)</h1>
<p class="key"><span style="border:1px solid rgb{GREY}">detector regions</span><span style="border:2px dashed rgb{ORANGE}">teacher boxes</span>
<span style="border:3px solid rgb{GREEN}">matched regions (M = 1)</span> labels: {html.escape(str(dirs['labels']))}
{'· <a href="losses.png">loss curves</a>' if losses else ''}</p>
{''.join(sections)}
{losses}
</body></html>
"""
    index = out / "index.html"
    tmp = out / f".index.html.tmp-{os.getpid()}"
    tmp.write_text(page)
    os.replace(tmp, index)
    log.info("gallery: %d images → %s", len(sections), index)
    return index


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.gallery", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data root of a DAG run (holds dag.json)")
    ap.add_argument("--run", default="", help="trainer run directory (losses.jsonl); default: the DAG's pretrain run, if any")
    ap.add_argument("--out", default="", help="output directory (default DATA/gallery)")
    ap.add_argument("--corpus", default="", help="corpus with images/ (default DATA/sample)")
    ap.add_argument("--max-images", type=int, default=24)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    data = Path(args.data)
    run = Path(args.run) if args.run else None
    if run is None and (data / "dag.json").exists():
        rec = json.loads((data / "dag.json").read_text())
        run = Path(rec["pretrain"]["dir"]) if "pretrain" in rec else None
    index = build_gallery(data, run, Path(args.out) if args.out else data / "gallery", Path(args.corpus) if args.corpus else None, args.max_images)
    print(index)


if __name__ == "__main__":
    main()
