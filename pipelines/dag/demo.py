"""What a DAG run did, as text (per-stage counts, pseudo-label quality, losses), and the one-command demo."""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from pipelines import label_pipeline
from pipelines.dag.pretrain import TERMS, pretrain_stage
from pipelines.dag.stages import DagConfig, labels_dag
from schemas.manifest import read_manifest

log = logging.getLogger("pipelines.dag")
LABEL_STAGES = label_pipeline.STAGES


def summary(report: dict[str, dict[str, Any]]) -> str:
    """What the DAG did: per stage ran/skipped and counts, pseudo-label quality, losses."""
    lines = []
    for s in ("regions", *LABEL_STAGES, "pretrain"):
        if s not in report:
            continue
        m = report[s]
        c = m.get("counts")
        counts = f"in={c['in']:>6d} out={c['out']:>6d} rejected={c['rejected']:>5d}" if c else ""
        lines.append(f"{s:9s} {'ran    ' if m['ran'] else 'skipped'} {counts:40s} {m['dir']}")
    lab = report.get("labels")
    if lab:
        st = lab["stats"]
        if st.get("phrases"):
            lines.append(f"labels: images={st['images']} captions={st['captions']} phrases={st['phrases']} "
                         f"positive pairs={st['positive_pairs']} phrases without a match={st['phrases_without_match'] / st['phrases']:.1%}")
        for name, q in (lab.get("quality") or {}).items():
            fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
            lines.append(f"pseudo-label quality (teacher {name}): precision={fmt(q['precision'])} recall={fmt(q['recall'])} f1={fmt(q['f1'])}")
    pre = report.get("pretrain")
    if pre and pre.get("losses"):
        lines.append("loss (first → last, mean of last 10%): " + "  ".join(
            f"{t} {pre['losses'][t]['first']:.3f}→{pre['losses'][t]['last']:.3f} ({pre['losses'][t]['last_10pct_mean']:.3f})"
            for t in TERMS if t in pre["losses"]))
    return "\n".join(lines)


def run_demo(cfg: DagConfig, num_images: int, seed: int) -> dict[str, Any]:
    """Sample corpus → label DAG → a few minutes of CPU pre-training → gallery; prints a summary."""
    from pipelines.gallery.page import build_gallery
    from pipelines.synthetic import generate

    t0 = time.perf_counter()
    corpus = Path(cfg.corpus_dir)
    m = read_manifest(corpus) or {}
    if m.get("num_images") == num_images and m.get("seed") == seed:
        log.info("stage sample: skipped (complete manifest: %d images, seed %d)", num_images, seed)
    else:
        log.info("stage sample: running (%d images, seed %d → %s)", num_images, seed, corpus)
        generate(corpus, num_images, seed)
    report = labels_dag(cfg)
    report["pretrain"] = pretrain_stage(cfg, report)
    gallery = Path(cfg.data) / "gallery"
    index = build_gallery(Path(cfg.data), Path(report["pretrain"]["dir"]), gallery, corpus=corpus)
    sm = read_manifest(corpus) or {}
    counts = sm.get("counts", {})
    print(f"\n== ssga demo ({time.perf_counter() - t0:.0f} s) ==")
    print(f"corpus: {corpus}  " + "  ".join(f"{k}={v}" for k, v in sorted(counts.items())))
    print(summary(report))
    print(f"gallery: {index}")
    return report
