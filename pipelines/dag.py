"""The DAG orchestrator: regions → phrases → teacher → match/labels → pretrain, skipping complete stages.

    python -m pipelines.dag regions  --data DATA [--num-shards 4]
    python -m pipelines.dag labels   --data DATA [--teacher NAME --teacher-arg K=V ...] [Beam options]
    python -m pipelines.dag pretrain --data DATA [--steps N] [--train-arg=--flag --train-arg=value ...]
    python -m pipelines.dag demo     --data DATA [--num-images 200] [--steps 150]

Layout under ``DATA`` (each stage directory named by its fingerprint, ``_MANIFEST.json`` written last):

    DATA/sample/                      the input corpus (``pipelines.synthetic`` layout; ``--corpus`` to change)
    DATA/regions/<fp>/                region shards          (fp: source content + ingest params)
    DATA/phrases/<fp>/                phrase Parquet         (fp: captions + spaCy model/params)
    DATA/teacher/<fp>/                teacher Parquet        (fp: phrases, regions, teacher name/params/weights)
    DATA/labels/<fp>/                 label shards           (fp: teacher fp + IoU threshold)
    DATA/pretrain/<fp>/               trainer run            (fp: regions, labels, trainer arguments)
    DATA/<stage>/CURRENT              fingerprint of the stage's current output
    DATA/dag.json                     the resolved stage directories of the last run (written atomically)
    DATA/logs/                        what Beam's worker processes printed (the console shows it with --verbose)

Input files enter fingerprints by name, size and modification time (so deciding to skip costs
O(files), not O(bytes), on local disks and ``gs://`` alike); ``--content-hash`` hashes their bytes.
A stage that outputs nothing, or rejects more than ``--max-reject`` (default 0.5) of its input,
fails the run (exit 1) with its top rejection reasons; a user error is one line (exit 2).

A stage whose fingerprint directory holds a complete manifest is skipped ("stage X: skipped"); an
incomplete one (a killed run) is removed and redone. So a new teacher re-runs teacher → labels →
pretrain, and nothing upstream. Pre-training runs ``python -m trainer.train`` in a subprocess: the
pipelines never import the trainer.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
from pipelines import label_pipeline
from pipelines.beam_options import has_runner
from pipelines.label_pipeline import LabelConfig, run_labels
from pipelines.stages.phrases import PhraseConfig
from pipelines.regions import check_regions, plan_regions, run_regions
from pipelines.stage_guard import DEFAULT_MAX_REJECT
from pipelines.teachers import DEFAULT_TEACHER, REGISTRY
from schemas.manifest import CURRENT_NAME as CURRENT, fingerprint, read_manifest, write_manifest
from ssga_io import atomic

log = logging.getLogger("pipelines.dag")
DAG_FILE = "dag.json"
LABEL_STAGES = label_pipeline.STAGES


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
    def corpus_dir(self) -> Path:
        return Path(self.corpus) if self.corpus else Path(self.data) / "sample"


def _record(data: Path, updates: dict[str, Any]) -> dict[str, Any]:
    """Merge ``updates`` into ``DATA/dag.json`` (atomically) and return the whole record."""
    path = data / DAG_FILE
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(updates)
    atomic.write_text(path, json.dumps(current, indent=2, sort_keys=True) + "\n")
    return current


# ---------------------------------------------------------------------------------------------
# Stages


def _region_source(cfg: DagConfig) -> dict[str, Any]:
    if cfg.regions_tsv:
        return {"tsv": cfg.regions_tsv}
    npz = Path(cfg.regions_npz) if cfg.regions_npz else cfg.corpus_dir / "regions_npz"
    if not npz.is_dir():
        if not cfg.regions_npz and not cfg.corpus_dir.is_dir():
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
    out = Path(cfg.data) / "regions" / fp
    manifest = read_manifest(out)
    ran = not (manifest and manifest.get("fingerprint") == fp)
    if ran:
        log.info("stage regions: running (%s)", out)
        cli.note_state(f"stopped while ingesting regions into {out}: no manifest there, so the next run redoes it")
        shutil.rmtree(out, ignore_errors=True)  # a killed run's partial shards and temp files
        with cli.worker_output(str(Path(cfg.data) / "logs")):
            manifest = run_regions(**source, out_dir=out, num_shards=cfg.num_shards,
                                   pipeline_args=_regions_beam_args(cfg.beam_args), scan=scan, content_hash=cfg.content_hash)
        cli.note_state(f"regions complete in {out}")
    else:
        log.info("stage regions: skipped (complete manifest %s)", fp)
    check_regions(manifest, out, cfg.max_reject)  # before the pointer: a failed stage is never CURRENT
    atomic.write_text(Path(cfg.data) / "regions" / CURRENT, fp + "\n")
    return {**manifest, "dir": str(out), "ran": ran}


def _regions_beam_args(beam_args: list[str]) -> list[str]:
    # Without a runner the DAG's Beam flags (e.g. --direct_num_workers) size the label stages' local run;
    # region ingest keeps its own local default (pipelines.beam_options: in_memory).
    return beam_args if has_runner(beam_args) else []


def label_config(cfg: DagConfig, regions_dir: str) -> LabelConfig:
    corpus = cfg.corpus_dir
    args = dict(cfg.teacher_args)
    if cfg.teacher == "tag_similarity":
        args.setdefault("objects_vocab", cfg.objects_vocab or str(corpus / "objects_vocab.txt"))
    flickr = cfg.flickr30k or (str(corpus / "flickr30k") if (corpus / "flickr30k").is_dir() else "")
    return LabelConfig(
        captions=cfg.captions or str(corpus / "captions.tsv"), regions=regions_dir, out=str(cfg.data), teacher=cfg.teacher,
        teacher_args=args, iou_threshold=cfg.iou_threshold, flickr30k=flickr, images=cfg.images, phrases=PhraseConfig(),
        max_reject=cfg.max_reject, content_hash=cfg.content_hash,
    )


def preflight(cfg: DagConfig, labels: bool = True) -> None:
    """The inputs exist, before minutes of work: a missing one is a :class:`cli.UserError` naming its flag."""
    _region_source(cfg)
    if not labels:
        return
    lc = label_config(cfg, "")
    if not Path(lc.captions).is_file():
        flag = "--captions" if cfg.captions else f"--captions FILE (default {lc.captions})"
        raise cli.UserError(f"captions file {lc.captions} does not exist: pass {flag}")
    vocab = lc.teacher_args.get("objects_vocab")
    if cfg.teacher == "tag_similarity" and vocab and not Path(str(vocab)).is_file():
        raise cli.UserError(f"objects vocabulary {vocab} does not exist: the tag_similarity teacher needs the detector's class names; "
                            "pass --objects-vocab FILE (objects_vocab.txt), or another --teacher")


def labels_dag(cfg: DagConfig) -> dict[str, dict[str, Any]]:
    """regions → phrases → teacher → labels; returns each stage's manifest with ``dir`` and ``ran``."""
    preflight(cfg)
    report = {"regions": regions_stage(cfg)}
    manifests = run_labels(label_config(cfg, report["regions"]["dir"]), cfg.beam_args)
    report.update(manifests)
    _record(Path(cfg.data), {s: {"dir": report[s]["dir"], "fingerprint": report[s]["fingerprint"]} for s in report})
    return report


def pretrain_fingerprint(regions_fp: str, labels_fp: str, train_args: list[str], world_size: int = 1) -> str:
    """Regions, labels, trainer arguments and the world size (it changes which rank reads which shard, so the data order)."""
    return fingerprint("pretrain", regions_fp, labels_fp, train_args, {"world_size": world_size})


def _console_args(train_args: list[str]) -> list[str]:
    """Progress bars only on a terminal (in a log each redraw is a line); never part of the fingerprint."""
    if any(a == "--progress" or a.startswith("--progress=") for a in train_args) or cli.progress_enabled():
        return []
    return ["--progress", "false"]


def pretrain_stage(cfg: DagConfig, report: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """``python -m trainer.train`` on the current region and label shards, in a subprocess.

    A run directory without a manifest is resumed, not wiped: the trainer continues from its last
    checkpoint. The manifest (written here, last) records the loss summary.
    """
    train_args = ["--steps", str(cfg.steps), *cfg.train_args]
    fp = pretrain_fingerprint(report["regions"]["fingerprint"], report["labels"]["fingerprint"], train_args, cfg.nproc)
    run_dir = Path(cfg.data) / "pretrain" / fp
    manifest = read_manifest(run_dir)
    ran = not (manifest and manifest.get("fingerprint") == fp)
    if ran:
        log.info("stage pretrain: running (%s)", run_dir)
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={cfg.nproc}"] if cfg.nproc > 1 else [sys.executable]
        cmd = [*launcher, "-m", "trainer.train", "--regions", report["regions"]["dir"], "--labels", report["labels"]["dir"],
               "--out", str(run_dir), *train_args, *_console_args(train_args)]
        log.info("$ %s", " ".join(cmd))
        cli.note_state(f"pre-training stopped in {run_dir} (its checkpoints are kept): run the same command again to resume")
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}).returncode
        if rc != 0:
            raise cli.StageFailed(f"stage pretrain: the trainer exited with code {rc} (its output is above); {run_dir} keeps "
                                  "its checkpoints, so the same command resumes")
        manifest = write_manifest(run_dir, {
            "stage": "pretrain", "fingerprint": fp, "upstream": {"regions": report["regions"]["fingerprint"], "labels": report["labels"]["fingerprint"]},
            "train_args": train_args, "world_size": cfg.nproc, "wall_s": round(time.perf_counter() - t0, 1), "losses": loss_summary(run_dir / "losses.jsonl"),
        })
    else:
        log.info("stage pretrain: skipped (complete manifest %s)", fp)
    atomic.write_text(Path(cfg.data) / "pretrain" / CURRENT, fp + "\n")
    _record(Path(cfg.data), {"pretrain": {"dir": str(run_dir), "fingerprint": fp}})
    return {**manifest, "dir": str(run_dir), "ran": ran}


TERMS = ("loss", "word", "img", "align", "gnd")


def loss_summary(losses_jsonl: str | os.PathLike) -> dict[str, dict[str, float]]:
    """First and last value (and the mean of the last tenth of steps) of each loss term."""
    rows = [json.loads(line) for line in Path(losses_jsonl).read_text().splitlines() if line.strip()]
    if not rows:
        return {}
    tail = rows[-max(1, len(rows) // 10):]
    return {t: {"first": rows[0][t], "last": rows[-1][t], "last_10pct_mean": sum(r[t] for r in tail) / len(tail)}
            for t in TERMS if t in rows[0]}


# ---------------------------------------------------------------------------------------------
# Reporting


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


# ---------------------------------------------------------------------------------------------
# Command line


def run_demo(cfg: DagConfig, num_images: int, seed: int) -> dict[str, Any]:
    """Sample corpus → label DAG → a few minutes of CPU pre-training → gallery; prints a summary."""
    from pipelines.gallery.page import build_gallery
    from pipelines.synthetic import generate

    t0 = time.perf_counter()
    corpus = cfg.corpus_dir
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


def parse_args(argv: list[str] | None = None) -> tuple[str, DagConfig, argparse.Namespace]:
    ap = cli.ArgumentParser(prog="python -m pipelines.dag", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("regions", "labels", "pretrain", "demo"))
    ap.add_argument("--data", required=True, help="data root (DATA/sample is the input corpus; stage outputs go beside it)")
    ap.add_argument("--corpus", default="", help="input corpus directory (default DATA/sample); the inputs below default to its layout")
    ap.add_argument("--captions", default="", help="captions TSV (default CORPUS/captions.tsv)")
    ap.add_argument("--regions-npz", default="", help="per-image .npz region files (default CORPUS/regions_npz)")
    ap.add_argument("--regions-tsv", nargs="+", default=[], help="bottom-up-attention TSV file(s) instead (no cls_prob: not for tag_similarity)")
    ap.add_argument("--objects-vocab", default="", help="objects_vocab.txt for tag_similarity (default CORPUS/objects_vocab.txt)")
    ap.add_argument("--flickr30k", default="", help="Flickr30k Entities dir for precision/recall (default CORPUS/flickr30k if present)")
    ap.add_argument("--images", default="", help="image directory for pixel teachers (default: urls relative to the captions)")
    ap.add_argument("--num-shards", type=int, default=4, help="region (and label) shards")
    ap.add_argument("--teacher", default=DEFAULT_TEACHER, help=f"one of {', '.join(sorted(REGISTRY))} (default {DEFAULT_TEACHER})")
    ap.add_argument("--teacher-arg", action="append", default=[], metavar="K=V", help="teacher parameter, repeatable")
    ap.add_argument("--iou-threshold", type=float, default=0.5)
    ap.add_argument("--steps", type=int, default=150, help="pre-training steps")
    ap.add_argument("--train-arg", action="append", default=[], metavar="ARG",
                    help="extra argument for trainer.train, repeatable: --train-arg=--batch-size --train-arg=8")
    ap.add_argument("--nproc", type=int, default=1, help="pretrain: processes for torchrun DDP (1: plain python)")
    ap.add_argument("--num-images", type=int, default=200, help="demo: corpus size")
    ap.add_argument("--seed", type=int, default=0, help="demo: corpus seed")
    ap.add_argument("--max-reject", type=float, default=DEFAULT_MAX_REJECT,
                    help="fail (exit 1) when a stage rejects more than this share of its input (default %(default)s)")
    ap.add_argument("--content-hash", action="store_true",
                    help="fingerprint input files by their bytes (default: names, sizes and modification times: O(files))")
    cli.add_common_flags(ap)
    args, beam_args = ap.parse_known_args(argv)
    if args.teacher not in REGISTRY:
        ap.error(f"unknown teacher {args.teacher!r}: pass --teacher with one of {', '.join(sorted(REGISTRY))}")
    for flag in ("num_shards", "nproc", "steps", "num_images"):
        if getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be at least 1, got {getattr(args, flag)}")
    if not 0.0 <= args.max_reject <= 1.0:
        ap.error(f"--max-reject must be a share between 0 and 1, got {args.max_reject}")
    # Beam's options are spelled with underscores; a hyphenated one is a mistyped flag of ours that
    # Beam would silently discard.
    unknown = [a for a in beam_args if a.startswith("--") and "-" in a[2:].split("=", 1)[0]]
    if unknown:
        ap.error(f"unknown option {unknown[0]} (Beam options use underscores, e.g. --direct_num_workers=2)")
    targs = {}
    targs.update(cli.parse_teacher_args(ap, args.teacher_arg))
    cfg = DagConfig(data=args.data, corpus=args.corpus, captions=args.captions, regions_npz=args.regions_npz, regions_tsv=args.regions_tsv,
                    objects_vocab=args.objects_vocab, flickr30k=args.flickr30k, images=args.images, num_shards=args.num_shards, teacher=args.teacher, teacher_args=targs,
                    iou_threshold=args.iou_threshold, steps=args.steps, train_args=args.train_arg, nproc=args.nproc,
                    beam_args=beam_args, max_reject=args.max_reject, content_hash=args.content_hash)
    return args.command, cfg, args


def main(argv: list[str] | None = None) -> None:
    """The command line: user errors are one line (exit 2), a failed stage guard a summary (exit 1), Ctrl-C one line (130)."""
    cli.run_cli(_cli_main, argv)


def _cli_main(argv: list[str]) -> None:
    cli.setup_logging("--verbose" in argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    command, cfg, args = parse_args(argv)
    log.info("teacher %s%s", cfg.teacher, "".join(f" {k}={v}" for k, v in sorted(cfg.teacher_args.items())))
    if command == "demo":
        run_demo(cfg, args.num_images, args.seed)
        return
    if command == "regions":
        report = {"regions": regions_stage(cfg)}
        _record(Path(cfg.data), {"regions": {"dir": report["regions"]["dir"], "fingerprint": report["regions"]["fingerprint"]}})
        print(summary(report))
        return
    report = labels_dag(cfg)
    if command == "pretrain":
        report["pretrain"] = pretrain_stage(cfg, report)
    print(summary(report))


if __name__ == "__main__":
    # Through the importable module, so Beam pickles classes as pipelines.dag.X, not __main__.X.
    from pipelines.dag import main as _main

    _main()
