#!/usr/bin/env bash
# Every GPU check of the project on a lent machine (one H100/H200), in parts, in this order:
#   single    the trainer bench with torch.compile (the CUDA default), single-stream BERT-base: model only
#             and end to end, batch 256 and 512, on a corpus of >= 20,000 examples
#             (scripts/gpu_check.py --compile-only; one dynamic-shape compile, ~110 s on an H100);
#   teachers  CUDA vs CPU boxes, fp16, the shared-model stage, real-size throughput and GPU-busy share
#             (scripts/gpu_check_teachers.py);
#   dual      the same bench for the dual-stream model;
#   resume    torchrun run / SIGKILL / resume / compare, compiled as `make pretrain` runs on CUDA
#             (scripts/gpu_check.py --skip-bench);
#   eager     the bench of both streams without compile, and profiler tables (only when named).
# Each part has its own time limit inside one overall deadline, so a part that fails or hangs does not
# take the others' figures with it; every bench row is printed as soon as it is measured. Logs and
# JSON go to $OUT (default ./gpu-out). The corpus and Inductor's caches stay in /tmp between calls on
# a warm machine. A 15-minute device budget fits two calls on one machine:
#
#   bash scripts/gpu_session.sh 590                  # single, teachers, dual (~10 minutes)
#   PARTS=resume bash scripts/gpu_session.sh 230     # right after, on the still-warm machine
#   SMOKE=1 bash scripts/gpu_session.sh              # toy sizes on a CPU: checks this script, measures nothing
#
# A machine without the project's packages (the lent ones): run scripts/gpu_prepare.sh here first; it
# fills .whl/ (wheels) and .gpu/tokenizer/ (vocabulary), which this script uses when present.
set -u
deadline=$(( $(date +%s) + ${1:-590} ))
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# The project's .venv where there is one (a GPU node set up with make install), else the machine's
# python3, with the wheels of .whl/ installed beside it.
PY=${PYTHON:-python3}
[ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ] && PY=.venv/bin/python
if [ "$PY" = python3 ] && compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ "${SMOKE:-0}" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_session: $PY sees no CUDA device (or no torch); run it on a GPU machine, or SMOKE=1 for the toy sizes" >&2
  exit 2
fi
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
tok=minilm
[ -d .gpu/tokenizer ] && tok=.gpu/tokenizer
smoke=()
[ "${SMOKE:-0}" = 1 ] && smoke=(--smoke)  # SMOKE=1: the same calls at toy size on a CPU (proves the script)

# part NAME LIMIT CMD...: run CMD with the smaller of LIMIT and the time left, log to $OUT/NAME.log.
part() {
  local name=$1 limit=$2 left
  shift 2
  left=$(( deadline - $(date +%s) ))
  (( left < limit )) && limit=$left
  if (( limit < 20 )); then echo "=== $name: skipped, ${left}s left"; return; fi
  echo "=== $name: start $(date +%T), limit ${limit}s"
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  echo "=== $name: exit $? at $(date +%T)"
  grep -E "gpu_check|gpu bench|teacher bench|resume|FAILED|Error|error" "$OUT/$name.log" | grep -v "INFO trainer: step" | tail -n 40
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.cuda.is_available())"
  nproc
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

parts=" ${PARTS:-single teachers dual resume} "  # PARTS="resume": what a later call still needs
check=("$PY" scripts/gpu_check.py --out /tmp/gpu_check --tokenizer "$tok")
[[ $parts == *" single "* ]] && part single 260 "${check[@]}" --compile-only --streams single --json "$OUT/trainer_bench_single.json" "${smoke[@]}"
[[ $parts == *" teachers "* ]] && part teachers 170 "$PY" scripts/gpu_check_teachers.py --images 32 "${smoke[@]}"
[[ $parts == *" dual "* ]] && part dual 260 "${check[@]}" --compile-only --streams dual --json "$OUT/trainer_bench_dual.json" "${smoke[@]}"
[[ $parts == *" resume "* ]] && part resume 230 "${check[@]}" --skip-bench "${smoke[@]}"
[[ $parts == *" eager "* ]] && part eager 300 "${check[@]}" --bench-only --json "$OUT/trainer_bench_eager.json" --profile "${smoke[@]}"
echo "=== done $(date +%T), $(( deadline - $(date +%s) ))s before the deadline"
