#!/usr/bin/env bash
# Every GPU check and figure of the Performance section in one call, for a machine lent for
# minutes: builds the ranker, runs the CUDA tests, then the benchmarks, most important first,
# skipping the optional ones when the time budget (first argument, seconds) runs short.
#   bash benchmarks/gpu_check.sh 540 [OUTPUT_DIR [STEPS]]
# STEPS, an extended regular expression, runs only the steps whose names match it.
# STAGE1_EPOCHS=N trains that many epochs of the Market-size stage 1 instead of what the
# budget allows, e.g. all 120 after only the CUDA tests:
#   STAGE1_EPOCHS=120 bash benchmarks/gpu_check.sh 560 "$OUT" 'device|ranker|cuda tests|stage 1'
# The peer comparison alone (after `make peer-wheels`, carrying .wheels):
#   bash benchmarks/gpu_check.sh 560 "$OUT" 'device|ranker|peer speed'
# STAGE1_OVERLAY=FILE merges a config overlay over the Market-size preset, e.g. the fast one:
#   STAGE1_EPOCHS=120 STAGE1_OVERLAY=configs/synthetic_market_size_fast.yaml bash benchmarks/gpu_check.sh 560 "$OUT" \
#     'device|ranker|stage 1'
# (On a GPU machine without the project's venv, build the ranker first: that step does.)
# The whole workflow, timed from empty caches, takes a call of its own (after make workflow-wheels,
# carrying .wheels): bash benchmarks/gpu_workflow.sh "$OUT" [CONFIG [SEED]]
# Uses the python3 on the PATH (with torch, torchvision, pandas, pyyaml, cython, pytest) and this
# checkout on PYTHONPATH; nothing is installed. Output: OUTPUT_DIR/gpu_check.log and history.csv.
set -u
BUDGET=${1:-540}
OUT_DIR=${2:-${OUT:-results/benchmarks/gpu_check}}
ONLY=${3:-.}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/gpu_check.log"
: >"$LOG"; : >"$OUT_DIR/full.log"
START=$(date +%s)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
left() { echo $((BUDGET - ($(date +%s) - START))); }
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log it, go on whatever happens
  local name=$1 limit=$2; shift 2
  [[ $name =~ $ONLY ]] || return 0
  local avail; avail=$(left)
  if (( avail < 20 )); then echo "== $name: skipped, $avail s left" | tee -a "$LOG"; return; fi
  (( limit > avail - 5 )) && limit=$((avail - 5))
  echo "== $name (limit ${limit}s, $(left)s left): $*" | tee -a "$LOG"
  local t0; t0=$(date +%s)
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG.tmp" | grep -v "^\s*$" | tail -n 40 >>"$LOG"
  local rc=${PIPESTATUS[0]}
  cat "$LOG.tmp" >>"$OUT_DIR/full.log"; rm -f "$LOG.tmp"
  echo "== $name: rc $rc in $(( $(date +%s) - t0 ))s" | tee -a "$LOG"
}

R50=(--backbone resnet50 --height 256 --width 128 --cache-height 128 --cache-width 64 --amp bf16
     --channels-last --device cuda)

step "device" 30 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm \
  --format=csv; python3 -c "import torch, torchvision, sys; print(sys.version.split()[0], torch.__version__, \
  torchvision.__version__, torch.cuda.get_device_name())"; nproc'
step "build ranker" 120 python3 setup.py -q build_ext --inplace
step "cuda tests" 240 python3 -m pytest -q -p no:cacheprovider -x tests/test_cuda.py \
  "tests/test_augment.py::test_cuda_matches_cpu_for_the_same_random_stream" tests/test_distance.py \
  "tests/test_batches.py::test_the_batches_do_not_depend_on_the_chunk_on_cuda" \
  "tests/test_blockwise.py::test_cuda_gives_the_cpu_metrics"
step "train throughput, batch 64" 90 python3 benchmarks/train_throughput.py "${R50[@]}" --steps 40 --warmup 10
step "train throughput, batch 64, CUDA graph" 90 python3 benchmarks/train_throughput.py "${R50[@]}" --steps 40 \
  --warmup 10 --cuda-graph
step "train throughput, batch 64, CUDA graph, one batch augmented per call" 90 python3 \
  benchmarks/train_throughput.py "${R50[@]}" --steps 40 --warmup 10 --cuda-graph --augment-chunk 1
step "train throughput, batch 64, CUDA graph + compile" 150 python3 benchmarks/train_throughput.py "${R50[@]}" \
  --steps 40 --warmup 10 --cuda-graph --compile
step "train throughput, batch 256" 90 python3 benchmarks/train_throughput.py "${R50[@]}" --steps 20 --warmup 5 \
  --num-identities 64 --num-instances 4 --num-images 4000 --num-classes 751
step "train throughput, batch 256, CUDA graph" 90 python3 benchmarks/train_throughput.py "${R50[@]}" --steps 20 \
  --warmup 5 --num-identities 64 --num-instances 4 --num-images 4000 --num-classes 751 --cuda-graph
step "extraction" 60 python3 benchmarks/extract_speed.py "${R50[@]}" --num-images 8192 --batch-size 512
step "ranking" 90 python3 benchmarks/eval_speed.py
step "checkpoint" 60 python3 benchmarks/checkpoint_speed.py --device cuda

# Stage 1 of the Market-size preset (cuda_graph + compile): as many epochs as the time left
# allows at that setting's measured full-step rate, less 100 s for compiling, validation and
# set-up (all 120 when they fit, about 330 s on an H200), else projected to 120 by the script.
IPS=$(awk '/^model /{b = /batch 64 .*compile default, cuda_graph True/} /^full step/ && b {print $3}' "$LOG" | tail -n 1)
EPOCHS=${STAGE1_EPOCHS:-$(python3 -c "import sys; ips=float(sys.argv[1] or 0); t=0.9*(int(sys.argv[2])-100); \
print(max(3, min(120, int(t*ips/12936))))" "${IPS:-0}" "$(left)")}
# A fixed epoch count may use all the time left; else a fifth is kept for the steps after it.
LIMIT=$(( ${STAGE1_EPOCHS:-0} ? $(left) - 10 : $(left) * 8 / 10 ))
# Compiled cold: a compile cache of its own, which the throughput steps above have not filled.
CACHE=/tmp/stage1_time_compile_cache
rm -rf "$CACHE"
STAGE1=(benchmarks/stage1_time.py configs/synthetic_market_size.yaml ${STAGE1_OVERLAY:+"$STAGE1_OVERLAY"}
        --workers "$(nproc)" --work-dir /tmp/stage1_time)
step "stage 1, Market-size${STAGE1_OVERLAY:+ + $STAGE1_OVERLAY}, $EPOCHS epochs" "$LIMIT" \
  env TORCHINDUCTOR_CACHE_DIR="$CACHE" python3 "${STAGE1[@]}" --epochs "$EPOCHS"
cp /tmp/stage1_time/*/stage1/history.csv "$OUT_DIR/" 2>/dev/null
# The same with the cache now warm, as stage 2, the control or a rerun find it: epoch 1's time.
step "stage 1 again, warm compile cache, 3 epochs" 120 env TORCHINDUCTOR_CACHE_DIR="$CACHE" python3 "${STAGE1[@]}" \
  --epochs 3

step "train throughput, batch 256, CUDA graph + compile" 200 python3 benchmarks/train_throughput.py "${R50[@]}" \
  --steps 20 --warmup 5 --num-identities 64 --num-instances 4 --num-images 4000 --num-classes 751 --cuda-graph --compile
step "decoding, Market-size" 90 python3 benchmarks/decode_speed.py --config configs/synthetic_market_size.yaml \
  --height 128 --width 64 --workers 1 2 4 8 "$(nproc)" --repeats 1 --prepare-workers "$(nproc)" --work-dir /tmp/decode
step "train throughput, batch 64, torch.compile" 200 python3 benchmarks/train_throughput.py "${R50[@]}" \
  --steps 40 --warmup 10 --compile
step "train throughput, batch 64, CUDA graph + compile max-autotune" 300 python3 benchmarks/train_throughput.py \
  "${R50[@]}" --steps 40 --warmup 10 --cuda-graph --compile --compile-mode max-autotune-no-cudagraphs
step "train throughput, every family" 150 python3 benchmarks/train_throughput.py "${R50[@]}" --family all \
  --steps 15 --warmup 5
# Evaluation from features at MSMT17's size (11,659 x 82,161, 2,048-d), with and without
# re-ranking, all on the GPU; alone: bash benchmarks/gpu_check.sh 420 "$OUT" 'device|build ranker|MSMT17'
step "evaluation at MSMT17 size, on the GPU" 300 python3 benchmarks/eval_scale.py --device cuda --no-peer
# torchreid's and fast-reid's training step beside stage 1's, same images (docs/performance.md).
# Needs the peers' wheels in .wheels/ (make peer-wheels here, carried there); installs them offline.
step "peer speed, Market-size" 420 bash -c 'bash benchmarks/peer_wheels.sh install .wheels && \
  python3 benchmarks/peer_speed.py --device cuda --work-dir /tmp/peer_speed'
echo "== done in $(( $(date +%s) - START ))s" | tee -a "$LOG"
