"""The gallery page: what the current labels are, who made them, how good they are, and the run on them.

The labels shown are the current ones (``DATA/labels/CURRENT``, found by :mod:`pipelines.gallery.data`);
their manifest names the teacher, its precision/recall against the ground truth, the region shards
and the teacher output they came from. The run (default: one trained on the current labels, else the DAG's last pre-training run) is
checked against them: a run trained on other labels — the teacher changed since — gets a warning on
the page and in the log, and its loss plot is titled with the labels and teacher it was trained on.

Writes ``OUT/index.html``: one card per image with its captions and one panel per phrase (drawing in
:mod:`pipelines.gallery.draw`: detector regions grey, ground-truth boxes blue, matched regions green
when right and red when wrong, teacher boxes dashed orange on top with their scores), and
``OUT/losses.png``. Only the first ``--max-images`` images (by id) are drawn.
"""
from __future__ import annotations

import html
import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from pipelines.gallery.data import (
    GalleryError, Labels, current_labels, default_run, ground_truth, image_paths, run_provenance, stale_warning, teacher_records, teacher_text,
)  # fmt: skip
from pipelines.gallery.draw import BLUE, GREEN, GREY, ORANGE, PURPLE, RED, SCALE, draw_phrase, plot_losses, region_verdicts
from schemas.records import ImageLabels, TeacherRecord
from schemas.shards import LABEL_PREFIX, REGION_PREFIX, iter_labels, iter_regions
from schemas.discovery import list_shards
from ssga_io import atomic

__all__ = ["GREEN", "GREY", "ORANGE", "RED", "BLUE", "GalleryError", "build_gallery", "draw_phrase", "current_labels", "run_provenance"]
log = logging.getLogger("pipelines.gallery")
PANEL_WIDTH = 280  # CSS pixels


def _display_width(width: int) -> int:
    # Panels are drawn at SCALE x for crisp lines; shown at most PANEL_WIDTH wide so a card fits on screen.
    return min(PANEL_WIDTH, width * SCALE)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _card(image_id: str, image: Image.Image, lab: ImageLabels, boxes: np.ndarray, teacher: dict[str, TeacherRecord], labels: Labels, out: Path, scale: int) -> str:
    gt_per_phrase, gt_align, has_gt = ground_truth(labels, lab, boxes)
    totals = {"right": 0, "wrong": 0, "missed": 0}
    row, caps = 0, []
    for cap in lab.captions:
        tea = teacher.get(cap["caption_id"])
        panels = []
        for pi, ph in enumerate(cap["phrases"]):
            tb = [b for b in tea.boxes if b.phrase_index == pi] if tea else []
            matched, gt_hit = lab.align[row], (gt_align[row] if has_gt[row] else None)
            name = f"{image_id}_{cap['caption_id'].rsplit('#', 1)[-1]}_{pi}.png"
            draw_phrase(image, boxes, [b.box for b in tb], matched, scale, gt_per_phrase[row], gt_hit, [b.score for b in tb]).save(out / "img" / name)
            v = region_verdicts(matched, gt_hit)
            if gt_hit is None:
                judged = '<span class="nogt">no ground truth</span>'
            else:
                judged = (f'<span class="right">{len(v["right"])} right</span> · <span class="wrong">{len(v["wrong"])} wrong</span> · '
                          f'{len(v["missed"])} missed · {len(gt_per_phrase[row])} GT box{"es" * (len(gt_per_phrase[row]) != 1)}')
                for k in totals:
                    totals[k] += len(v[k])
            scores = ", ".join(f"{b.score:.2f}" for b in sorted(tb, key=lambda b: -b.score)) or "none"
            panels.append(
                f'<figure class="phrase"><img src="img/{name}" alt="{html.escape(ph["text"])}" width="{_display_width(image.width)}">'
                f'<figcaption><b>{html.escape(ph["text"])}</b><br>teacher boxes: {scores}<br>'
                f"matched {int(np.count_nonzero(matched))} / {len(boxes)} regions: {judged}</figcaption></figure>"
            )
            row += 1
        caps.append(f'<div class="caption"><p class="cap">“{html.escape(cap["text"])}”</p><div class="row">{"".join(panels) or "<i>no phrases</i>"}</div></div>')
    head = f"{len(lab.captions)} captions · {lab.num_phrases} phrases · {len(boxes)} regions"
    if has_gt.any():
        head += f' · matched regions <span class="right">{totals["right"]} right</span>, <span class="wrong">{totals["wrong"]} wrong</span>, {totals["missed"]} missed'
    return (f'<article class="card" id="img-{html.escape(image_id)}"><h2>{html.escape(image_id)}</h2><p class="sub">{head}</p>'
            f'<div class="caps">{"".join(caps) or "<i>no captions</i>"}</div></article>')


def _provenance(labels: Labels, run: dict[str, Any] | None) -> str:
    m = labels.manifest
    q = (m.get("quality") or {}).get((m.get("teacher") or {}).get("name", ""))
    st = m.get("stats") or {}
    quality = (f"precision <b>{_fmt(q.get('precision'))}</b> · recall <b>{_fmt(q.get('recall'))}</b> · F1 {_fmt(q.get('f1'))} "
               f"(regions: {q.get('tp', 0)} right, {q.get('fp', 0)} wrong, {q.get('fn', 0)} missed; {q.get('phrases_with_gt', 0)} phrases with ground truth)"
               if q else "no ground truth (give the DAG --flickr30k to measure precision/recall)")
    rows = [
        ("labels", f"{html.escape(str(labels.dir))} · IoU ≥ {m.get('iou_threshold', '?')} · {st.get('images', '?')} images, {st.get('phrases', '?')} phrases, "
                   f"{st.get('positive_pairs', '?')} matched (phrase, region) pairs"),
        ("teacher", f'<b class="teacher">{html.escape(teacher_text(m.get("teacher")))}</b> · fingerprint {html.escape(str((m.get("teacher") or {}).get("fingerprint", "?")))}'),
        ("vs ground truth", quality),
    ]
    if run is None:
        rows.append(("run", "none (no pre-training run; python -m pipelines.dag pretrain --data DATA)"))
    else:
        on = "the current labels" if run["labels"] == labels.fingerprint else f"labels {run['labels'] or 'unknown'}"
        rows.append(("run", f"{html.escape(str(run['dir']))} · {run['steps']} steps logged · trained on {html.escape(on)} "
                            f"(teacher {html.escape(teacher_text(run['teacher']) if run['labels'] else 'unknown')})"))
    return '<table class="meta">' + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def build_gallery(data: Path, run: Path | None, out: Path, corpus: Path | None = None, max_images: int = 24, scale: int = SCALE) -> Path:
    """Write the gallery of the current labels (and ``run``, default :func:`default_run`); returns ``index.html``."""
    labels = current_labels(data)
    run = run if run is not None else default_run(data, labels)
    run_info = run_provenance(run, labels.dir.parent) if run is not None else None
    warning = stale_warning(run_info, labels, data) if run_info is not None else None
    if warning:
        log.warning("gallery: %s", warning)

    regions = {rec.image_id: rec.boxes for shard in list_shards(labels.regions_dir, REGION_PREFIX) for _, rec in iter_regions(shard)}
    chosen = set(sorted(regions)[:max_images])
    image_labels = {lab.image_id: lab for shard in list_shards(labels.dir, LABEL_PREFIX) for _, lab in iter_labels(shard) if lab.image_id in chosen}
    teacher = teacher_records(labels.teacher_dir, {c["caption_id"] for lab in image_labels.values() for c in lab.captions})
    paths = image_paths(labels, corpus, chosen)

    (out / "img").mkdir(parents=True, exist_ok=True)
    cards, left_out = [], []
    for image_id in sorted(chosen):
        lab, path = image_labels.get(image_id), paths.get(image_id)
        if lab is None or path is None or not path.exists():
            reason = "no labels" if lab is None else f"no local image file ({path or 'no caption url'})"
            log.warning("gallery: image %s left out: %s", image_id, reason)
            left_out.append(f"{html.escape(image_id)}: {html.escape(reason)}")
            continue
        cards.append(_card(image_id, Image.open(path), lab, regions[image_id], teacher, labels, out, scale))

    losses = ""
    if run_info is not None:
        title = f"run {run_info['dir'].name} · labels {run_info['labels'] or 'unknown'} · teacher {teacher_text(run_info['teacher']) if run_info['labels'] else 'unknown'}"
        if plot_losses(run_info["dir"] / "losses.jsonl", out / "losses.png", title):
            losses = (f'<h2 id="losses">Loss curves</h2><p class="losscap">{html.escape(title)}</p>{"<p class=warn>" + html.escape(warning) + "</p>" if warning else ""}'
                      f'<p class="losses"><a href="losses.png"><img src="losses.png" alt="loss curves"></a><br>from {html.escape(str(run_info["dir"] / "losses.jsonl"))}</p>')
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>ssga pseudo-label gallery</title>
<style>body{{font-family:sans-serif;margin:1em;background:#f4f4f4}} .row{{display:flex;flex-wrap:wrap;gap:8px}} figure{{margin:0}}
figcaption{{font-size:12px;max-width:{PANEL_WIDTH}px}} .cap{{margin:.5em 0 .2em;max-width:{2 * PANEL_WIDTH}px}} .caps{{display:flex;flex-wrap:wrap;column-gap:24px}} .key span{{padding:0 .4em;margin-right:.8em}}
.card{{background:#fff;border:1px solid #ccc;border-radius:6px;padding:.4em .8em .8em;margin:0 0 1em}} .card h2{{margin:.2em 0;font-size:1.1em}}
.losses img{{max-width:100%}} .sub{{margin:0;color:#555;font-size:13px}} .meta th{{text-align:left;padding-right:1em;vertical-align:top}} .meta td{{font-size:14px}}
.warn{{background:#fff3cd;border:2px solid #d39e00;padding:.5em .8em;font-weight:bold}} .right{{color:rgb{GREEN}}} .wrong{{color:rgb{RED}}} .nogt{{color:rgb{PURPLE}}}
</style></head>
<body><h1>Pseudo-label gallery ({len(cards)} image{"s" * (len(cards) != 1)})</h1>
{f'<p class="warn" id="stale-run">⚠ {html.escape(warning)}</p>' if warning else ''}
{_provenance(labels, run_info)}
<p class="key"><span style="border:1px solid rgb{GREY}">detector regions</span><span style="border:2px solid rgb{BLUE}">ground truth</span>
<span style="border:3px solid rgb{GREEN}">matched, right</span><span style="border:3px solid rgb{RED}">matched, wrong</span>
<span style="border:3px solid rgb{PURPLE}">matched, no ground truth</span><span style="border:2px dashed rgb{ORANGE}">teacher box (score)</span>
{'· <a href="#losses">loss curves</a>' if losses else ''}</p>
{''.join(cards)}
{'<p class="sub">left out: ' + '; '.join(left_out) + '</p>' if left_out else ''}
{losses}
</body></html>
"""
    index = out / "index.html"
    atomic.write_text(index, page)
    log.info("gallery: %d images → %s", len(cards), index)
    return index
