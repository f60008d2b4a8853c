"""The ``regions`` stage (Apache Beam): detector-region files → region shards.

Command line (any standard Beam option may follow, e.g. ``--runner``, ``--direct_num_workers``)::

    python -m pipelines.regions --tsv regions.tsv [more.tsv ...] [--lxmert] --out DIR --num-shards N
    python -m pipelines.regions --npz-dir regions_npz/ --out DIR --num-shards N
    python -m pipelines.regions --npy-dir regions_npy/ --allow-pickle --out DIR --num-shards N

From Python (tests, the DAG orchestrator): ``run_regions(tsv=..., out_dir=..., num_shards=...)``
returns the manifest. The stage writes ``regions-%06d.tar`` for every shard index (empty shards too;
image → shard by :func:`schemas.shards.shard_index`, keys sorted), ``_DEAD_LETTER.jsonl`` (one line
per rejected record: id, source location, reason; sorted by source position) and ``_MANIFEST.json``
last. ``counts.in`` is counted by the driver in its own pass over the source (while hashing it for
the fingerprint), independently of the pipeline, and the stage fails unless in = out + rejected.

Every path may be a Beam filesystem URL (``gs://``, ``s3://``, ``hdfs://``) as well as a local path:
the source is listed and read, and the shards, the dead letter and the manifest are written, through
:mod:`ssga_io.fs`. The workers' per-shard counts and dead letters travel through the pipeline to
one last step, which writes ``_DEAD_LETTER.jsonl`` and a merged summary at ``--out``; the driver
reads that summary back from the same URL, reconciles it and publishes the manifest (nothing is
read from a worker's local disk, so a Dataflow or Flink run works as a local one).

Memory: the source is read in byte ranges (TSV) or file by file, validated and encoded as float16
samples, and grouped by shard, so a worker holds one shard, not the corpus, on a distributed runner
(Dataflow, Flink). Beam's local runners keep the grouped samples of a run in memory. Duplicate image
ids always land in the same shard; the one at the earliest source position is kept.
Blank lines of a TSV are no records: skipped and reported as ``blank_lines``, not counted in ``in``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any

from pipelines import cli  # noqa: I001 - first: quiets Beam's import-time log lines
import apache_beam as beam

from ssga_io import fs

from schemas.manifest import DEAD_LETTER_NAME, MANIFEST_NAME, files_digest, fingerprint, reconciles, write_manifest
from schemas.records import SCHEMA_VERSION
from schemas.shards import REGION_PREFIX
from pipelines.formats.readers import list_region_files
from pipelines.formats.region_formats import LXMERT_NUM_CLASSES, count_classes
from ssga_io.security import PICKLE_RISK
from pipelines.stage_guard import DEFAULT_MAX_REJECT, check_max_reject, check_stage, warn_empty_shards
from pipelines.beam_options import IN_MEMORY, pipeline_options
from pipelines.stages.regions import CHUNK_BYTES, DEAD, STAGE, SUMMARY_NAME, SourceScan, scan_tsv, ReadTsvRegions, ReadRegionFiles, WriteRegionShards

log = logging.getLogger(__name__)



def scan_source(
    tsv: list[str] | None, lxmert: bool, npz_dir: str | None, npy_dir: str | None, allow_pickle: bool, content_hash: bool = True
) -> SourceScan:
    """The driver's own pass over the source: record count, TSV byte ranges, file list, and a digest
    (a TSV is hashed while it is counted; a directory's files only with ``content_hash``)."""
    given = [x for x in (tsv, npz_dir, npy_dir) if x]
    if len(given) != 1:
        raise ValueError("give exactly one region source: tsv (one or more files), npz_dir or npy_dir")
    if tsv:
        scans = []
        for i, path in enumerate(tsv):
            if not fs.isfile(path):
                raise FileNotFoundError(f"region TSV {path} does not exist")
            scans.append(scan_tsv(path, CHUNK_BYTES, i))
        digest = scans[0][0] if len(scans) == 1 else fingerprint([s[0] for s in scans])  # content only, in order
        return SourceScan(
            "lxmert_tsv" if lxmert else "butd_tsv", ", ".join(tsv), digest,
            sum(s[1] for s in scans), sum(s[2] for s in scans), [c for s in scans for c in s[3]],
        )
    directory, kind = (npz_dir, "npz") if npz_dir is not None else (npy_dir, "npy")
    if not fs.isdir(directory):
        raise FileNotFoundError(f"region directory {directory} does not exist")
    if kind == "npy" and not allow_pickle:
        raise PermissionError(f"{directory}: refusing to read pickled .npy files: {PICKLE_RISK}")
    files = list_region_files(directory, kind)
    if content_hash:
        listed = set(fs.glob(fs.join(directory, "*_info.npy"))) if kind == "npy" else set()
        companions = [c for p in files if (c := p[: -len(".npy")] + "_info.npy") in listed]
        digest = files_digest(files + companions)
    else:
        digest = source_metadata_digest(None, npz_dir, npy_dir)
    return SourceScan(f"{kind}_dir", str(directory), digest, len(files), files=files)


def source_metadata_digest(tsv: list[str] | None, npz_dir: str | None, npy_dir: str | None) -> str:
    """Fingerprint of the source files' names, sizes and modification times (no content read): O(files)."""
    if tsv:
        for path in tsv:
            if not fs.isfile(path):
                raise FileNotFoundError(f"region TSV {path} does not exist")
        return fingerprint([fs.metadata_digest([str(p)], root=fs.dirname(str(p)) if fs.is_remote(p) else os.path.dirname(str(p))) for p in tsv])
    directory, kind = (npz_dir, "npz") if npz_dir is not None else (npy_dir, "npy")
    if not fs.isdir(directory):
        raise FileNotFoundError(f"region directory {directory} does not exist")
    return fs.metadata_digest([fs.join(str(directory), f"*.{kind}")], root=str(directory))


def plan_regions(
    tsv: str | os.PathLike | list[str | os.PathLike] | None = None,
    *,
    lxmert: bool = False,
    npz_dir: str | os.PathLike | None = None,
    npy_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    num_shards: int,
    inclusive: bool = True,
    feature_dim: int | None = None,
    scan: SourceScan | None = None,
    num_classes: int = LXMERT_NUM_CLASSES,
    content_hash: bool = False,
) -> tuple[SourceScan | None, dict[str, Any], str]:
    """Resolve the stage's fingerprint without running anything: ``(scan, params, fingerprint)``.

    By default the source enters the fingerprint by its files' metadata (name, size, mtime), so that
    deciding to skip a complete stage costs O(files), not O(bytes), and ``scan`` is None (the run
    scans). ``content_hash``: hash every byte instead (the scan, returned for the run to reuse).
    The DAG uses it to name the output directory and to skip.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    tsv_files = None if tsv is None else [str(t) for t in ([tsv] if isinstance(tsv, (str, os.PathLike)) else tsv)]
    npz, npy = None if npz_dir is None else str(npz_dir), None if npy_dir is None else str(npy_dir)
    if content_hash and scan is None:
        scan = scan_source(tsv_files, lxmert, npz, npy, allow_pickle, content_hash=True)
    if content_hash:
        kind, digest = scan.kind, ("content", scan.digest)
    else:
        if len([x for x in (tsv_files, npz, npy) if x]) != 1:
            raise ValueError("give exactly one region source: tsv (one or more files), npz_dir or npy_dir")
        kind = ("lxmert_tsv" if lxmert else "butd_tsv") if tsv_files else ("npz_dir" if npz else "npy_dir")
        digest = ("metadata", source_metadata_digest(tsv_files, npz, npy))
    params = {"source_format": kind, "inclusive_boxes": inclusive, "num_shards": num_shards, "feature_dim": feature_dim}
    if kind == "lxmert_tsv":  # width of the class distribution built from objects_id (1 + vocabulary)
        params["num_classes"] = num_classes
    return scan, params, fingerprint(STAGE, SCHEMA_VERSION, digest, params)


def run_regions(
    tsv: str | os.PathLike | list[str | os.PathLike] | None = None,
    *,
    lxmert: bool = False,
    npz_dir: str | os.PathLike | None = None,
    npy_dir: str | os.PathLike | None = None,
    allow_pickle: bool = False,
    out_dir: str | os.PathLike,
    num_shards: int,
    inclusive: bool = True,
    feature_dim: int | None = None,
    pipeline_args: list[str] | None = None,
    scan: SourceScan | None = None,
    num_classes: int = LXMERT_NUM_CLASSES,
    content_hash: bool = False,
) -> dict[str, Any]:
    """Run the stage on one source and return its manifest.

    ``tsv``: one BUTD/LXMERT TSV or a list of them (BUTD writes several); an image id may appear once
    in all of them together. ``inclusive``: the source's boxes are inclusive pixel indices (BUTD, ViLBERT/MMF: the default).
    ``feature_dim``: if given, records of another dimension are dead-lettered; if not, a source with
    mixed dimensions fails the stage. ``pipeline_args``: Beam options (default: in-process DirectRunner).
    ``scan``: the source scan :func:`plan_regions` already made (saves hashing the source twice).
    ``content_hash``: the fingerprint hashes the source's bytes, not its files' metadata.
    """
    scan, params, fp = plan_regions(
        tsv, lxmert=lxmert, npz_dir=npz_dir, npy_dir=npy_dir, allow_pickle=allow_pickle, num_shards=num_shards,
        inclusive=inclusive, feature_dim=feature_dim, scan=scan, num_classes=num_classes, content_hash=content_hash,
    )
    if scan is None:
        tsv_files = None if tsv is None else [str(t) for t in ([tsv] if isinstance(tsv, (str, os.PathLike)) else tsv)]
        scan = scan_source(tsv_files, lxmert, None if npz_dir is None else str(npz_dir), None if npy_dir is None else str(npy_dir),
                           allow_pickle, content_hash=False)
    out = str(out_dir)
    fs.makedirs(out)
    # The manifest goes first, so that an interrupted rerun never looks complete.
    for old in [fs.join(out, MANIFEST_NAME), fs.join(out, DEAD_LETTER_NAME), fs.join(out, SUMMARY_NAME),
                *fs.glob(fs.join(out, f"{REGION_PREFIX}-*.tar"))]:
        fs.remove(old)

    log.info("regions: %d records from %s (%s) → %d shards in %s", scan.records_in, scan.path, scan.kind, num_shards, out)

    options = pipeline_options(pipeline_args, IN_MEMORY)  # I/O bound: one process unless the flags say otherwise
    with beam.Pipeline(options=options) as p:
        if scan.kind.endswith("tsv"):
            read = p | "ReadTsv" >> ReadTsvRegions(scan, lxmert, inclusive, feature_dim, num_classes)
        else:
            read = p | "ReadFiles" >> ReadRegionFiles(scan, allow_pickle, inclusive, feature_dim)
        _ = (read.samples, read[DEAD]) | "WriteShards" >> WriteRegionShards(str(out), num_shards)

    return _publish(out, scan, num_shards, fp, params)


def _publish(out: str, scan: SourceScan, num_shards: int, fp: str, params: dict[str, Any]) -> dict[str, Any]:
    """Read the pipeline's merged summary back from ``out`` (any filesystem), reconcile the counts, write the manifest."""
    summary_path = fs.join(out, SUMMARY_NAME)
    if not fs.exists(summary_path):
        raise RuntimeError(f"{out}: the pipeline wrote no {SUMMARY_NAME}; it did not finish")
    merged = json.loads(fs.read_text(summary_path))
    summaries = merged["shards"]
    missing = sorted(set(range(num_shards)) - {s["shard"] for s in summaries})
    if missing:
        raise RuntimeError(f"{out}: shard(s) {missing} reported no summary; the pipeline did not write them")
    counts = {"in": scan.records_in, "out": sum(s["samples"] for s in summaries), "rejected": merged["rejected"]}
    if not reconciles(counts):
        raise RuntimeError(f"{out}: counts do not reconcile: in={counts['in']} but out={counts['out']} + rejected={counts['rejected']}")
    dims = sorted({d for s in summaries for d in s["feature_dims"]})
    if len(dims) > 1:
        raise RuntimeError(f"{scan.path}: records have mixed feature dimensions {dims}; pass feature_dim to keep one and dead-letter the rest")
    with_cls = sum(s["with_cls_prob"] for s in summaries)
    fs.remove(summary_path)  # merged into the manifest below

    manifest = {
        "stage": STAGE,
        "fingerprint": fp,
        "params": params,
        "counts": counts,
        "blank_lines": scan.blank_lines,
        "rejected_by_reason": merged["rejected_by_reason"],
        "num_shards": num_shards,
        "shards": [{"name": s["name"], "samples": s["samples"], "bytes": s["bytes"]} for s in summaries],
        "feature_dim": dims[0] if dims else None,
        "has_cls_prob": counts["out"] > 0 and with_cls == counts["out"],
        "samples_with_cls_prob": with_cls,
        "source": {"kind": scan.kind, "path": scan.path, "digest": scan.digest, "box_convention": "inclusive" if params["inclusive_boxes"] else "exclusive"},
        "dead_letter": DEAD_LETTER_NAME,
    }
    written = write_manifest(out, manifest)
    log.info("regions: in=%d out=%d rejected=%d", counts["in"], counts["out"], counts["rejected"])
    return written


def main(argv: list[str] | None = None) -> None:
    """The command line: user errors are one line (exit 2), a failed stage guard a summary (exit 1)."""
    cli.run_cli(_cli_main, argv)


def _cli_main(argv: list[str]) -> None:
    ap = cli.ArgumentParser(prog="python -m pipelines.regions", description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--tsv", nargs="+", help="bottom-up-attention TSV file(s)")
    src.add_argument("--npz-dir", help="directory of per-image .npz region files (safe, no pickle)")
    src.add_argument("--npy-dir", help="directory of ViLBERT/MMF pickled .npy region dicts (needs --allow-pickle)")
    ap.add_argument("--lxmert", action="store_true", help="the TSV has LXMERT's columns (objects_id/objects_conf become the region classes)")
    ap.add_argument("--objects-vocab", default="", help="with --lxmert: the objects_vocab.txt that objects_id indexes (default: Visual Genome's 1600 classes)")
    ap.add_argument("--allow-pickle", action="store_true", help=f"read pickled .npy files: {PICKLE_RISK}")
    ap.add_argument("--exclusive-boxes", action="store_true", help="source boxes already have an exclusive end (default: inclusive, as BUTD writes)")
    ap.add_argument("--feature-dim", type=int, default=None, help="dead-letter records of any other feature dimension")
    ap.add_argument("--out", required=True, help="output directory, or a gs:// s3:// hdfs:// URL")
    ap.add_argument("--num-shards", type=int, required=True)
    ap.add_argument("--max-reject", type=float, default=DEFAULT_MAX_REJECT,
                    help="fail (exit 1) when more than this share of the records is rejected (default %(default)s)")
    ap.add_argument("--content-hash", action="store_true", help="fingerprint the source by its bytes (default: file names, sizes, mtimes)")
    cli.add_common_flags(ap)
    args, beam_args = ap.parse_known_args(argv)
    cli.setup_logging(args.verbose)
    if args.npy_dir and not args.allow_pickle:
        ap.error(f"--npy-dir needs --allow-pickle: {PICKLE_RISK}")
    if args.num_shards < 1:
        ap.error(f"--num-shards must be at least 1, got {args.num_shards}")
    with cli.as_user_errors(ValueError):
        check_max_reject(args.max_reject)
    with cli.as_user_errors(FileNotFoundError, PermissionError):
        num_classes = count_classes(args.objects_vocab) if args.objects_vocab else LXMERT_NUM_CLASSES
        plan_regions(args.tsv, lxmert=args.lxmert, npz_dir=args.npz_dir, npy_dir=args.npy_dir, allow_pickle=args.allow_pickle,
                     num_shards=args.num_shards, content_hash=args.content_hash, num_classes=num_classes)
    cli.note_state(f"{args.out} is incomplete (no {MANIFEST_NAME}); run the command again to redo it")
    with cli.worker_output(os.path.join(args.out, "_logs")):
        m = run_regions(
            args.tsv,
            lxmert=args.lxmert,
            npz_dir=args.npz_dir,
            npy_dir=args.npy_dir,
            allow_pickle=args.allow_pickle,
            out_dir=args.out,
            num_shards=args.num_shards,
            inclusive=not args.exclusive_boxes,
            feature_dim=args.feature_dim,
            pipeline_args=beam_args,
            content_hash=args.content_hash,
            num_classes=num_classes,
        )
    print(json.dumps({"counts": m["counts"], "rejected_by_reason": m["rejected_by_reason"], "out": args.out}, indent=2))
    check_regions(m, args.out, args.max_reject)


def check_regions(manifest: dict[str, Any], out_dir: str | os.PathLike, max_reject: float = DEFAULT_MAX_REJECT) -> None:
    """The stage guard for region ingest (see :mod:`pipelines.stage_guard`), and the empty-shard warning."""
    hint = ""
    if manifest["counts"]["in"] and manifest["counts"]["out"] == 0 and str(manifest.get("source", {}).get("kind", "")).endswith("tsv"):
        hint = "is it a bottom-up-attention TSV (image_id, image_w, image_h, num_boxes, boxes, features)?"
    check_stage(STAGE, manifest, str(out_dir), max_reject, manifest.get("rejected_by_reason", {}), hint)
    warn_empty_shards(manifest["num_shards"], manifest["counts"]["out"])


if __name__ == "__main__":
    # Run through the importable module, so that Beam pickles its classes as pipelines.regions.X,
    # not __main__.X, which worker processes could not import.
    from pipelines.regions import main as _main

    _main()
