#!/usr/bin/env bash
# One whole run of the workflow, timed from empty caches, on a machine that has torch but neither
# Snakemake nor internet (a GPU machine lent for minutes):
#
#   bash benchmarks/gpu_workflow.sh OUT_DIR [CONFIG [SEED]]
#
# Installs Snakemake from .wheels/workflow (make workflow-wheels, carried along) and builds the
# ranker where they are missing, then runs `snakemake --cores all --resources gpu=1` on CONFIG
# (default: the Market-size preset) with its control arm on, and prints the wall-clock of the
# whole run and of each job. SEED, when given, sets stage 1's seed (and so every stage's): the
# same computation as replicate SEED of a `replicates:` run with seed 0, so that replicates can
# run one per call and be merged afterwards by benchmarks/merge_replicates.py. Brings back
# OUT_DIR/workflow.log and OUT_DIR/workflow_results.tar.gz: the report, summary.csv, the jobs'
# benchmark files, training histories and logs, never weights or features.
set -euo pipefail
OUT_DIR=${1:?usage: bash benchmarks/gpu_workflow.sh OUT_DIR [CONFIG [SEED]]}
CONFIG=${2:-configs/synthetic_market_size.yaml}
SEED=${3:-}
PYTHON=${PYTHON:-python3}
# Seconds Snakemake may run (then interrupted, as Ctrl-C would): what finished still comes back,
# with each finished job's time, inside a call's 10 minutes.
BUDGET=${BUDGET:-540}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/workflow.log"

export PYTHONPATH="${SITE:-/tmp/site}:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# What the machine lacks: Snakemake (from the carried wheels) and the ranker built for its Python.
if ! "$PYTHON" -c "import snakemake" 2>/dev/null; then
  SITE=${SITE:-/tmp/site} PYTHON="$PYTHON" bash benchmarks/workflow_wheels.sh install .wheels/workflow
fi
"$PYTHON" -c "import clusteralign.eval._rank" 2>/dev/null || "$PYTHON" setup.py -q build_ext --inplace

overlay=$(mktemp --suffix=.yaml)
"$PYTHON" - "$CONFIG" "$SEED" >"$overlay" <<'EOF'
import sys
import yaml
config, seed = sys.argv[1], sys.argv[2]
experiments = yaml.safe_load(open(config))["experiments"]
extra = {"control": True, **({"stage1": {"seed": int(seed)}} if seed else {})}
yaml.safe_dump({"experiments": {name: extra for name in experiments}}, sys.stdout)
EOF
echo "config $CONFIG, overlay: $(tr '\n' ' ' <"$overlay")" | tee "$LOG"

start=$EPOCHREALTIME
set +e
# SNAKEMAKE_ARGS: more options, e.g. -n, or --until train (the configfiles stay last: they take
# every word after them).
# shellcheck disable=SC2086
timeout -s INT -k 30 "$BUDGET" \
  "$PYTHON" -m snakemake --cores all --resources gpu=1 ${SNAKEMAKE_ARGS:-} --configfile "$CONFIG" "$overlay" >>"$LOG" 2>&1
rc=$?
set -e
wall=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN {printf "%.1f", b - a}')
(( rc == 124 || rc == 130 )) && echo "stopped at the budget of $BUDGET s" | tee -a "$LOG"
echo "snakemake rc $rc, whole run ${wall} s wall-clock" | tee -a "$LOG"
shopt -s nullglob
for tsv in results/benchmarks/*/*.tsv; do
  printf '%-90s %s s\n' "$tsv" "$(awk 'NR == 2 {print $1}' "$tsv")" | tee -a "$LOG"
done
# (A dry run, or a run stopped early, has written little or nothing of these.)
{ find results logs -type f \( -name '*.md' -o -name '*.csv' -o -name '*.tsv' -o -name '*.json' -o -name '*.log' \) \
    -size -8M -print0 2>/dev/null || true; } | tar --null -czf "$OUT_DIR/workflow_results.tar.gz" --files-from=-
rm -f "$overlay"
exit "$rc"
