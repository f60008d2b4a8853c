"""The DAG's configuration and its label half: regions ingest, then phrases → teacher → labels, each skipped when complete.

``--data`` and every input may be a Beam filesystem URL (``gs://bucket/ssga``): everything here reads
and writes through :mod:`ssga_io.fs`. Pre-training (:mod:`pipelines.dag.pretrain`) needs a local ``--data``.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
from pipelines.beam_options import has_runner
from pipelines.label_pipeline import LabelConfig, run_labels
from pipelines.stages.phrases import PhraseConfig
from pipelines.regions import check_regions, plan_regions, run_regions
from pipelines.stage_guard import DEFAULT_MAX_REJECT
from pipelines.teachers import DEFAULT_TEACHER
from schemas.manifest import CURRENT_NAME as CURRENT, read_manifest
from ssga_io import fs

log = logging.getLogger("pipelines.dag")
DAG_FILE = "dag.json"


@dataclass
class DagConfig:
    data: str
    corpus: str = ""  # default DATA/sample; the inputs below default to its layout
    captions: str = ""  # Conceptual-Captions TSV (default CORPUS/captions.tsv)
    regions_npz: str = ""  # per-image .npz region files (default CORPUS/regions_npz)
    regions_tsv: list[str] = field(default_factory=list)  # or bottom-up-attention TSV file(s) (no cls_prob)
    objects_vocab: str = ""  # for the tag_similarity teacher (default CORPUS/objects_vocab.txt)
    flickr30k: str = ""  # ground truth for precision/recall (default CORPUS/flickr30k when present)
    images: str = ""  # image directory for pixel teachers (default: caption urls relative to the captions file)
    num_shards: int = 4
    teacher: str = DEFAULT_TEACHER
    teacher_args: dict[str, Any] = field(default_factory=dict)
    iou_threshold: float = 0.5
    steps: int = 150
    train_args: list[str] = field(default_factory=list)
    nproc: int = 1  # > 1: torchrun DDP with this many processes (one per GPU)
    beam_args: list[str] = field(default_factory=list)
    max_reject: float = DEFAULT_MAX_REJECT  # a stage rejecting more than this share of its input fails the run
    content_hash: bool = False  # fingerprint inputs by their bytes, not their files' names, sizes and mtimes

    @property
    def corpus_dir(self) -> str:
        return str(self.corpus) if self.corpus else fs.join(str(self.data), "sample")


def record(data: str | os.PathLike, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into ``DATA/dag.json`` (atomically, local or URL) and return the whole record."""
    path = fs.join(str(data), DAG_FILE)
    current = json.loads(fs.read_text(path)) if fs.exists(path) else {}
    current.update(updates)
    fs.write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


def _region_source(cfg: DagConfig) -> dict[str, Any]:
    if cfg.regions_tsv:
        return {"tsv": cfg.regions_tsv}
    npz = cfg.regions_npz or fs.join(cfg.corpus_dir, "regions_npz")
    if not fs.isdir(npz):
        if not cfg.regions_npz and not fs.isdir(cfg.corpus_dir):
            raise cli.UserError(f"no input corpus at {cfg.corpus_dir}: run `make sample DATA={cfg.data}` first, "
                                "or pass --data DIR whose sample/ holds the corpus (or --corpus DIR)")
        flag = "--regions-npz" if cfg.regions_npz else "--regions-npz DIR (or --regions-tsv FILE)"
        raise cli.UserError(f"region directory {npz} does not exist: pass {flag}")
    return {"npz_dir": npz}


def regions_stage(cfg: DagConfig) -> dict[str, Any]:
    """Ingest the region source (``CORPUS/regions_npz`` by default) into ``DATA/regions/<fp>`` unless complete.

    Deciding costs O(files): the fingerprint comes from the source files' metadata unless ``content_hash``.
    """
    source = _region_source(cfg)
    with cli.as_user_errors(FileNotFoundError, PermissionError, ValueError, hint="check --regions-tsv / --regions-npz"):
        scan, _, fp = plan_regions(**source, num_shards=cfg.num_shards, content_hash=cfg.content_hash)
    out = fs.join(str(cfg.data), "regions", fp)
    manifest = read_manifest(out)
    ran = not (manifest and manifest.get("fingerprint") == fp)
    if ran:
        log.info("stage regions: running (%s)", out)
        cli.note_state(f"stopped while ingesting regions into {out}: no manifest there, so the next run redoes it")
        fs.remove_tree(out)  # a killed run's partial shards and temp files
        with cli.worker_output(fs.join(str(cfg.data), "logs")):  # a URL: worker output stays on the console
            manifest = run_regions(**source, out_dir=out, num_shards=cfg.num_shards,
                                   pipeline_args=_regions_beam_args(cfg.beam_args), scan=scan, content_hash=cfg.content_hash)
        cli.note_state(f"regions complete in {out}")
    else:
        log.info("stage regions: skipped (complete manifest %s)", fp)
    check_regions(manifest, out, cfg.max_reject)  # before the pointer: a failed stage is never CURRENT
    fs.write_text(fs.join(str(cfg.data), "regions", CURRENT), fp + "\n")
    return {**manifest, "dir": out, "ran": ran}


def _regions_beam_args(beam_args: list[str]) -> list[str]:
    # Without a runner the DAG's Beam flags (e.g. --direct_num_workers) size the label stages' local run;
    # region ingest keeps its own local default (pipelines.beam_options: in_memory).
    return beam_args if has_runner(beam_args) else []


def label_config(cfg: DagConfig, regions_dir: str) -> LabelConfig:
    corpus = cfg.corpus_dir
    args = dict(cfg.teacher_args)
    if cfg.teacher == "tag_similarity":
        args.setdefault("objects_vocab", cfg.objects_vocab or fs.join(corpus, "objects_vocab.txt"))
    flickr = cfg.flickr30k or (fs.join(corpus, "flickr30k") if fs.isdir(fs.join(corpus, "flickr30k")) else "")
    return LabelConfig(
        captions=cfg.captions or fs.join(corpus, "captions.tsv"), regions=regions_dir, out=str(cfg.data), teacher=cfg.teacher,
        teacher_args=args, iou_threshold=cfg.iou_threshold, flickr30k=flickr, images=cfg.images, phrases=PhraseConfig(),
        max_reject=cfg.max_reject, content_hash=cfg.content_hash,
    )


def preflight(cfg: DagConfig, labels: bool = True) -> None:
    """The inputs exist, before minutes of work: a missing one is a :class:`cli.UserError` naming its flag."""
    _region_source(cfg)
    if not labels:
        return
    lc = label_config(cfg, "")
    if not fs.isfile(lc.captions):
        flag = "--captions" if cfg.captions else f"--captions FILE (default {lc.captions})"
        raise cli.UserError(f"captions file {lc.captions} does not exist: pass {flag}")
    vocab = lc.teacher_args.get("objects_vocab")
    if cfg.teacher == "tag_similarity" and vocab and not fs.isfile(str(vocab)):
        raise cli.UserError(f"objects vocabulary {vocab} does not exist: the tag_similarity teacher needs the detector's class names; "
                            "pass --objects-vocab FILE (objects_vocab.txt), or another --teacher")


def labels_dag(cfg: DagConfig) -> dict[str, dict[str, Any]]:
    """regions → phrases → teacher → labels; returns each stage's manifest with ``dir`` and ``ran``."""
    preflight(cfg)
    report = {"regions": regions_stage(cfg)}
    manifests = run_labels(label_config(cfg, report["regions"]["dir"]), cfg.beam_args)
    report.update(manifests)
    record(cfg.data, {s: {"dir": report[s]["dir"], "fingerprint": report[s]["fingerprint"]} for s in report})
    return report
