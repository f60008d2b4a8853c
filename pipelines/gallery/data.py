"""What the gallery shows, gathered: the current labels and their inputs, the run and its provenance, teacher records, images, ground truth."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipelines.formats.captions import read_captions
from pipelines.formats.flickr30k import Flickr30kError, Flickr30kGroundTruth
from pipelines.stages.quality import gt_alignment
from pipelines.teachers.oracle import caption_index
from schemas.arrow import teacher_from_row
from schemas.manifest import read_manifest
from schemas.records import ImageLabels, TeacherRecord
from schemas.shards import LABEL_PREFIX, REGION_PREFIX
from schemas.discovery import current_output, list_shards


class GalleryError(Exception):
    """The data root has nothing the gallery can show; the message says what to run."""


@dataclass
class Labels:
    """The current labels and where their inputs live, from the labels manifest."""

    dir: Path
    manifest: dict[str, Any]
    teacher_dir: Path
    regions_dir: Path

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest.get("config") or {}


def _dag_record(data: Path) -> dict[str, Any]:
    path = data / "dag.json"
    return json.loads(path.read_text()) if path.exists() else {}


def current_labels(data: Path) -> Labels:
    """``DATA/labels/CURRENT`` (else the DAG's last labels) with its teacher output and region shards."""
    try:
        pointed = current_output(data / "labels")
        labels_dir = Path(pointed) if pointed else None
    except ValueError as e:  # a CURRENT that names no fingerprint
        raise GalleryError(str(e)) from e
    dag = _dag_record(data)
    labels_dir = labels_dir or (Path(dag["labels"]["dir"]) if "labels" in dag else None)
    if labels_dir is None:
        raise GalleryError(f"{data}: no labels (no {data / 'labels' / 'CURRENT'}); run `python -m pipelines.dag labels --data {data}` first")
    manifest = read_manifest(labels_dir)
    if manifest is None:
        raise GalleryError(f"{labels_dir}: no _MANIFEST.json (an incomplete labels stage); re-run `python -m pipelines.dag labels --data {data}`")
    teacher_dir = labels_dir.parent.parent / "teacher" / str(manifest.get("upstream", ""))  # the pipeline writes OUT/{teacher,labels}/<fp>
    regions_dir = Path(manifest.get("regions") or dag.get("regions", {}).get("dir", ""))
    if not list_shards(regions_dir, REGION_PREFIX):
        pointed = current_output(regions_dir / "regions") if regions_dir.is_dir() else None  # labels made with --regions DATA
        if pointed is None or not list_shards(pointed, REGION_PREFIX):
            raise GalleryError(f"{labels_dir}: its region shards ({regions_dir}) are gone; re-run the DAG")
        regions_dir = Path(pointed)
    return Labels(labels_dir, manifest, teacher_dir, regions_dir)


def teacher_text(describe: dict[str, Any] | None) -> str:
    """``simulated (miss_rate=0.6, seed=1)``: path parameters by file name; the ground-truth root that the
    pipeline hands the oracle/simulated teachers is left out (the fingerprint tells such teachers apart)."""
    if not describe:
        return "unknown"
    items = sorted((k, v) for k, v in (describe.get("params") or {}).items() if k != "flickr30k")
    params = ", ".join(f"{k}={Path(v).name if isinstance(v, str) and '/' in v else v}" for k, v in items)
    return f"{describe.get('name', '?')} ({params})" if params else str(describe.get("name", "?"))


def run_provenance(run: Path, labels_root: Path) -> dict[str, Any]:
    """Which labels ``run`` was trained on: ``{"labels": fp or None, "teacher": describe or None, "how": ...}``.

    The DAG's pre-training manifest names the labels' fingerprint; a run started by hand has only its
    ``config.json``, whose ``--labels`` names a fingerprint directory, or a pointer (``DATA``,
    ``DATA/labels``) that may have moved since, which cannot be told apart afterwards.
    """
    manifest = read_manifest(run) or {}
    fp = (manifest.get("upstream") or {}).get("labels")
    how = f"{run / '_MANIFEST.json'}"
    if not fp and (run / "config.json").exists():
        given = Path(json.loads((run / "config.json").read_text()).get("labels", ""))
        fp, how = (read_manifest(given) or {}).get("fingerprint") if list_shards(given, LABEL_PREFIX) else None, f"{run / 'config.json'} (--labels {given})"
    teacher = (read_manifest(labels_root / fp) or {}).get("teacher") if fp else None
    losses = run / "losses.jsonl"
    steps = sum(1 for line in losses.read_text().splitlines() if line.strip()) if losses.exists() else 0
    return {"dir": run, "labels": fp, "teacher": teacher, "how": how, "steps": steps}


def runs_on(data: Path, labels_fp: str) -> list[Path]:
    """Complete DAG pre-training runs trained on ``labels_fp``, newest first."""
    found = []
    for d in sorted((data / "pretrain").glob("*/")):
        m = read_manifest(d)
        if m and (m.get("upstream") or {}).get("labels") == labels_fp:
            found.append((m.get("created_unix", 0), d))
    return [d for _, d in sorted(found, key=lambda t: -t[0])]


def default_run(data: Path, labels: Labels) -> Path | None:
    """A run trained on the current labels if there is one, else the DAG's last run (which may be stale)."""
    matching = runs_on(data, labels.fingerprint)
    if matching:
        return matching[0]
    last = _dag_record(data).get("pretrain", {}).get("dir") or current_output(data / "pretrain")
    return Path(last) if last else None


def stale_warning(run: dict[str, Any], labels: Labels, data: Path) -> str | None:
    """Why the run's losses do not belong to the labels shown, or None when they do."""
    if run["labels"] == labels.fingerprint:
        return None
    current = f"the current labels {labels.fingerprint} (teacher {teacher_text(labels.manifest.get('teacher'))})"
    if run["labels"] is None:
        text = f"cannot tell which labels run {run['dir']} was trained on (from {run['how']}); the labels shown are {current}."
    else:
        text = (f"run {run['dir']} was trained on labels {run['labels']} (teacher {teacher_text(run['teacher'])}), not on {current}: "
                f"its loss curves are not those of the labels shown.")
    others = runs_on(data, labels.fingerprint)
    return text + (f" A run on the current labels: --run {others[0]}." if others else f" Train on them: python -m pipelines.dag pretrain --data {data}.")


def teacher_records(teacher_dir: Path, caption_ids: set[str]) -> dict[str, TeacherRecord]:
    out = {}
    for f in sorted(teacher_dir.glob("teacher-*.parquet")):
        for row in pq.read_table(f).to_pylist():
            if row["caption_id"] in caption_ids:
                out[row["caption_id"]] = teacher_from_row(row)
    return out


def image_paths(labels: Labels, corpus: Path | None, image_ids: set[str]) -> dict[str, Path]:
    """Local image file per id: ``CORPUS/images/<id>.*``, else the url of its caption as the teacher resolved it."""
    if corpus is not None:
        return {i: p for i in image_ids for p in sorted((corpus / "images").glob(f"{i}.*"))[:1]}
    from pipelines.stages.teacher import MakeTeacherInputs  # the teacher stage's rule for a caption's url

    captions = labels.config.get("captions", "")
    resolve = MakeTeacherInputs(os.path.dirname(captions), labels.config.get("images", "")).image_path
    out = {}
    for kind, cap in read_captions(captions) if captions and os.path.exists(captions) else ():
        if kind == "caption" and cap.image_id in image_ids and cap.image_id not in out:
            out[cap.image_id] = Path(resolve(cap.url))
    return out


def ground_truth(labels: Labels, lab: ImageLabels, boxes: np.ndarray) -> tuple[list[np.ndarray | None], np.ndarray, np.ndarray]:
    """Per stacked phrase: GT boxes (or None), and ``gt_align [P, N]``, ``has_gt [P]`` as the quality metric counts them."""
    root = labels.config.get("flickr30k")
    none = ([None] * lab.num_phrases, np.zeros((lab.num_phrases, len(boxes)), bool), np.zeros(lab.num_phrases, bool))
    if not root:
        return none
    gt = Flickr30kGroundTruth(root)
    try:
        sentences, gt_boxes = gt.image(lab.image_id)
    except Flickr30kError:
        return none
    per_phrase: list[np.ndarray | None] = []
    for cap in lab.captions:
        spans = [(p["start"], p["end"]) for p in cap["phrases"]]
        per_phrase += gt.phrase_boxes(cap["text"], caption_index(cap["caption_id"]), spans, sentences, gt_boxes)
    gt_align, has_gt = gt_alignment(lab, boxes, gt)
    return per_phrase, gt_align, has_gt
