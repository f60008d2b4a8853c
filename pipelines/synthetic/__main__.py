"""``python -m pipelines.synthetic --out DIR --num-images N --seed S [--feature-dim D]``."""
from __future__ import annotations

import argparse
import logging

from pipelines.synthetic.corpus import generate


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipelines.synthetic", description="Generate the synthetic grounded corpus.")
    ap.add_argument("--out", required=True, help="output directory (replaced if it holds a previous synthetic corpus)")
    ap.add_argument("--num-images", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--feature-dim", type=int, default=64, help="region feature dimension D")
    ap.add_argument("--captions-per-image", type=int, default=2)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    generate(args.out, args.num_images, args.seed, args.feature_dim, args.captions_per_image)


if __name__ == "__main__":
    main()
