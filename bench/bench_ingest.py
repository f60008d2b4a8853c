"""Region ingest benchmark: the ``regions`` stage on a 2,000-image synthetic corpus.

Generates the corpus into a temporary directory (its own throughput is reported too), ingests the
bottom-up-attention TSV with the Beam stage on the in-process DirectRunner, and reports images/s
and the bytes per image of the region shards against the source TSV (float16 features vs base64
float32). Run with ``python -m bench.run ingest`` or ``python -m bench.bench_ingest``;
``SSGA_BENCH_IMAGES`` overrides the corpus size.
"""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipelines.regions import run_regions
from pipelines.synthetic import generate

NUM_IMAGES = int(os.environ.get("SSGA_BENCH_IMAGES", "2000"))
SEED = 0
FEATURE_DIM = 64
NUM_SHARDS = 8


_PEAK_RSS = """
import resource, sys
from pipelines.regions import run_regions
run_regions(tsv=sys.argv[1], out_dir=sys.argv[2], num_shards=int(sys.argv[3]))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mb(tsv: Path, out: Path) -> float:
    """Peak resident memory of one ingest in a fresh process (Linux reports ru_maxrss in KiB)."""
    r = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(tsv), str(out), str(NUM_SHARDS)], check=True, capture_output=True, text=True)
    return round(int(r.stdout.split()[-1]) / 1024, 1)


def main() -> dict:
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="ssga-bench-ingest-") as tmp:
        corpus = Path(tmp) / "corpus"
        t0 = time.perf_counter()
        generate(corpus, num_images=NUM_IMAGES, seed=SEED, feature_dim=FEATURE_DIM)
        gen_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        m = run_regions(tsv=corpus / "regions.tsv", out_dir=Path(tmp) / "regions", num_shards=NUM_SHARDS)
        ingest_s = time.perf_counter() - t0

        tsv_bytes = (corpus / "regions.tsv").stat().st_size
        shard_bytes = sum(s["bytes"] for s in m["shards"])
        n = m["counts"]["out"]
        regions = json.loads((corpus / "_MANIFEST.json").read_text())["counts"]["regions"]

        # Does memory grow with the corpus? The first quarter of the TSV is itself a valid corpus.
        quarter = Path(tmp) / "quarter.tsv"
        with open(corpus / "regions.tsv") as src, open(quarter, "w") as dst:
            dst.writelines(line for i, line in zip(range(NUM_IMAGES // 4), src))
        rss = {
            f"{NUM_IMAGES // 4}_images": peak_rss_mb(quarter, Path(tmp) / "rss_quarter"),
            f"{NUM_IMAGES}_images": peak_rss_mb(corpus / "regions.tsv", Path(tmp) / "rss_full"),
        }
    return {
        "corpus_images": NUM_IMAGES,
        "feature_dim": FEATURE_DIM,
        "mean_boxes_per_image": round(regions / NUM_IMAGES, 1),
        "num_shards": NUM_SHARDS,
        "runner": "DirectRunner (in_memory, 1 process)",
        "generate_s": round(gen_s, 2),
        "generate_images_per_s": round(NUM_IMAGES / gen_s, 1),
        "ingest_s": round(ingest_s, 2),
        "ingest_images_per_s": round(n / ingest_s, 1),
        "counts": m["counts"],
        "source_tsv_bytes_per_image": round(tsv_bytes / n),
        "shard_bytes_per_image": round(shard_bytes / n),
        "shard_to_tsv_bytes_ratio": round(shard_bytes / tsv_bytes, 3),
        "ingest_peak_rss_mb_fresh_process": rss,
    }


if __name__ == "__main__":
    print(json.dumps(main(), indent=2, sort_keys=True))
