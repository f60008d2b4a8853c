#!/usr/bin/env bash
# Digest of a demo run, to show that a change kept behaviour: run the demo from SRC (a checkout) into
# ROOT/data with content-hash fingerprints, then print sha256 of every shard and Parquet file under its
# fingerprint path, and every losses.jsonl line without samples_per_s. Compare two checkouts with
#   scripts/demo_digest.sh OLD_CHECKOUT /tmp/root > a.txt; scripts/demo_digest.sh NEW_CHECKOUT /tmp/root > b.txt; diff a.txt b.txt
# (the same ROOT for both: fingerprints include input paths). Uses SRC's .venv, or PYTHON.
set -euo pipefail
src=$(cd "$1" && pwd); root=$2
python=${PYTHON:-$src/.venv/bin/python}
rm -rf "$root" && mkdir -p "$root"
(cd "$src" && PYTHONPATH=$src HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$python" -m pipelines.dag demo --data "$root/data" \
  --num-images 60 --steps 60 --content-hash --runner=DirectRunner --direct_running_mode=multi_processing \
  --direct_num_workers=2 > "$root/log.txt" 2>&1)
cd "$root/data"
find regions labels phrases teacher \( -name '*.tar' -o -name '*.parquet' \) | sort | while read -r f; do
  echo "$(sha256sum < "$f" | cut -c1-16) $f"
done
"$python" - <<'PY'
import glob, json
for p in sorted(glob.glob("pretrain/*/losses.jsonl")):
    for line in open(p):
        r = json.loads(line)
        r.pop("samples_per_s", None)
        print(p, json.dumps(r, sort_keys=True))
PY
