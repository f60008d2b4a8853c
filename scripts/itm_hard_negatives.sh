#!/usr/bin/env bash
# Held-out ITM with and without same-image hard negatives, at matched steps (trainer/README.md's table):
#   scripts/itm_hard_negatives.sh ROOT [STEPS=500] [SEEDS="0 1"] [SHARES="0 0.5"] [MASK="false true"]
# Builds a training corpus (600 images, seed 11) and a held-out one (150 images, seed 12) with the
# project's CLIs (pipelines.synthetic → pipelines.regions → pipelines.label_pipeline), pre-trains the
# default small single-stream model once per (itm_mask_negatives, share, seed) at the grid's pre-training rate and batch
# (trainer.experiment: lr 5e-4, batch 16), evaluates each run with
# trainer.eval_itm on the held-out shards, and prints the table. Uses PYTHON (default: python).
set -euo pipefail
root=$1; steps=${2:-500}; seeds=${3:-0 1}; shares=${4:-0 0.5}; masks=${5:-false true}
py=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONHASHSEED=0
mkdir -p "$root/runs"
for spec in train:600:11 heldout:150:12; do
  IFS=: read -r name num seed <<< "$spec"
  w=$root/$name
  if [ ! -d "$w/lab/labels" ]; then
    "$py" -m pipelines.synthetic --out "$w/corpus" --num-images "$num" --seed "$seed" --feature-dim 32 > "$root/$name.log" 2>&1
    "$py" -m pipelines.regions --npz-dir "$w/corpus/regions_npz" --out "$w/regions" --num-shards 4 >> "$root/$name.log" 2>&1
    "$py" -m pipelines.label_pipeline --captions "$w/corpus/captions.tsv" --regions "$w/regions" --out "$w/lab" \
      --teacher tag_similarity --objects-vocab "$w/corpus/objects_vocab.txt" --flickr30k "$w/corpus/flickr30k" \
      --images "$w/corpus/images" --runner=DirectRunner >> "$root/$name.log" 2>&1
  fi
done
for mask in $masks; do
for share in $shares; do
  for seed in $seeds; do
    run=$root/runs/mask${mask}_share${share}_seed${seed}
    [ -f "$run.eval.json" ] && continue
    "$py" -m trainer.train --regions "$root/train/regions" --labels "$root/train/lab/labels" --out "$run" \
      --steps "$steps" --warmup-steps 50 --batch-size 16 --lr 5e-4 --num-workers 1 --seed "$seed" --progress false \
      --itm-hard-neg-share "$share" --itm-mask-negatives "$mask" --ckpt-every "$steps" > "$run.log" 2>&1
    "$py" -m trainer.eval_itm --regions "$root/heldout/regions" --labels "$root/heldout/lab/labels" --ckpt "$run" \
      --json "$run.eval.json" > /dev/null
  done
done
done
"$py" - "$root/runs" <<'PY'
import glob, json, sys
from pathlib import Path
import numpy as np
runs = {}
for p in sorted(glob.glob(f"{sys.argv[1]}/*.eval.json")):
    r = json.load(open(p))
    rows = [json.loads(line) for line in open(Path(p.removesuffix(".eval.json")) / "losses.jsonl")]
    r["train_itm"] = float(np.mean([x["align"] for x in rows[-100:]]))
    runs.setdefault((r["step"], r.get("itm_mask_negatives", False), r["itm_hard_neg_share"]), []).append(r)
print("| steps | negatives masked | `itm_hard_neg_share` | seeds | training ITM loss (last 100 steps) | positives: loss / acc | swaps: loss / acc | hard: loss / acc | true caption above its edit (attribute / object / relation) |")
print("|---|---|---|---|---|---|---|---|---|")
for (steps, mask, share), rs in sorted(runs.items()):
    def cell(kind):
        l = [r[kind]["loss"] for r in rs]; a = [r[kind]["accuracy"] for r in rs]
        return f"{np.mean(l):.3f} / {np.mean(a):.3f}"
    ranked = " / ".join(f"{np.mean([r['hard_ranked'][k]['rate'] for r in rs]):.3f}" for k in ("attribute", "object", "relation"))
    print(f"| {steps:,} | {'yes' if mask else 'no'} | {share:g} | {len(rs)} | {np.mean([r['train_itm'] for r in rs]):.3f} | "
          f"{cell('positive')} | {cell('swap')} | {cell('hard')} | {ranked} |")
n = rs[0]
print(f"\nheld-out pairs: {n['positive']['n']} positives, {n['swap']['n']} swaps, {n['hard']['n']} hard negatives "
      f"(means over seeds; per-seed values in {sys.argv[1]}/*.eval.json)")
PY
