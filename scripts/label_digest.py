"""Digest of the label pipeline's outputs in each way its stages can run, to show that a change to the
Beam graph kept them byte for byte.

    PYTHONPATH=$PWD python scripts/label_digest.py ROOT > a.txt   # on the old checkout
    PYTHONPATH=$PWD python scripts/label_digest.py ROOT > b.txt   # on the new one, same ROOT
    diff a.txt b.txt

On the hand-built fixture corpus (tests/label_fixtures.py: every planted edge case) and a synthetic
corpus, it runs all three stages, then teacher → labels on stored phrases (a new teacher parameter),
then labels alone on a stored teacher (a new IoU threshold), and prints the sha256 of every file each
stage published except the manifest (which holds wall times), plus the manifest's counts.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from label_fixtures import make_corpus  # noqa: E402

from pipelines.label_pipeline import LabelConfig, run_labels  # noqa: E402
from pipelines.synthetic import generate  # noqa: E402
from pipelines.regions import run_regions  # noqa: E402
from schemas.manifest import MANIFEST_NAME  # noqa: E402

IN_MEMORY = ["--runner=DirectRunner", "--direct_running_mode=in_memory"]


def _digest(name: str, manifests: dict) -> None:
    for stage in ("phrases", "teacher", "labels"):
        m = manifests[stage]
        print(f"{name} {stage} ran={m['ran']} counts={json.dumps(m['counts'], sort_keys=True)}")
        for p in sorted(Path(m["dir"]).iterdir()):
            if p.is_file() and p.name != MANIFEST_NAME:
                print(f"  {hashlib.sha256(p.read_bytes()).hexdigest()[:16]} {stage}/{p.name}")


def _modes(name: str, base: dict, out: Path) -> None:
    _digest(f"{name}/all", run_labels(LabelConfig(**base, out=str(out)), IN_MEMORY))
    targs = dict(base["teacher_args"])
    if base["teacher"] == "tag_similarity":
        targs["threshold"] = 0.5
    else:
        targs["miss_rate"] = 0.4
    _digest(f"{name}/stored-phrases", run_labels(LabelConfig(**{**base, "teacher_args": targs}, out=str(out)), IN_MEMORY))
    _digest(f"{name}/stored-teacher", run_labels(LabelConfig(**{**base, "teacher_args": targs}, out=str(out), iou_threshold=0.3), IN_MEMORY))


def main(root: Path) -> None:
    shutil.rmtree(root, ignore_errors=True)
    c = make_corpus(root / "fixture", num_images=8, num_shards=2)
    fixture = {"captions": str(c["captions"]), "regions": str(c["regions"]), "teacher": "tag_similarity",
               "teacher_args": {"objects_vocab": str(c["vocab"])}, "flickr30k": str(c["flickr30k"])}
    _modes("fixture", fixture, root / "fixture-out")
    generate(root / "synth", num_images=60, seed=0)
    run_regions(npz_dir=root / "synth" / "regions_npz", out_dir=root / "synth-regions", num_shards=3)
    synth = {"captions": str(root / "synth" / "captions.tsv"), "regions": str(root / "synth-regions"), "teacher": "simulated",
             "teacher_args": {}, "flickr30k": str(root / "synth" / "flickr30k")}
    _modes("synthetic", synth, root / "synth-out")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if len(sys.argv) != 2:
        sys.exit("usage: python scripts/label_digest.py ROOT  (a scratch directory; the same one for both checkouts)")
    main(Path(sys.argv[1]))
