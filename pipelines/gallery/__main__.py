"""Command line of the pseudo-label gallery: ``python -m pipelines.gallery --data DATA``.

    python -m pipelines.gallery --data DATA [--run RUN] [--out DATA/gallery] [--max-images 24]

Writes ``OUT/index.html`` (the page: :mod:`pipelines.gallery.page`) and ``OUT/losses.png``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipelines.gallery.page import GalleryError, build_gallery


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.gallery", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="data root of a DAG run (holds labels/CURRENT)")
    ap.add_argument("--run", default="", help="trainer run directory (losses.jsonl); default: a run on the current labels, else the DAG's last run")
    ap.add_argument("--out", default="", help="output directory (default DATA/gallery)")
    ap.add_argument("--corpus", default="", help="corpus with images/<image_id>.* (default: the caption urls, as the teacher read them)")
    ap.add_argument("--max-images", type=int, default=24)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)
    data = Path(args.data)
    run = Path(args.run) if args.run else None
    if run is not None and not run.is_dir():
        sys.exit(f"gallery: --run {run}: no such run directory")
    try:
        index = build_gallery(data, run, Path(args.out) if args.out else data / "gallery", Path(args.corpus) if args.corpus else None, args.max_images)
    except GalleryError as e:
        sys.exit(f"gallery: {e}")
    print(index)


if __name__ == "__main__":
    main()
