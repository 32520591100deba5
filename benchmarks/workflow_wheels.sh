#!/usr/bin/env bash
# Snakemake and everything it needs as wheels, for running the workflow on a machine that has
# torch but neither Snakemake nor internet (the GPU machines gpu_check.sh is written for).
#
#   bash benchmarks/workflow_wheels.sh download [DIR]   # where PyPI is reachable (make workflow-wheels)
#   bash benchmarks/workflow_wheels.sh install [DIR]    # on the offline machine, into $SITE
#
# `download` resolves Snakemake's requirements for the target's Python (PYTHON_VERSION, default
# 3.12, the GPU image's) and x86-64 Linux, binary wheels only; about 20 MB. `install` puts them
# in SITE (default /tmp/site), never into the interpreter's own site-packages, so nothing the
# machine's torch relies on is replaced: run the workflow with PYTHONPATH=$SITE. The version is
# the one constraints.txt pins. PYTHON picks the interpreter that runs pip (default python3).
set -euo pipefail
PYTHON=${PYTHON:-python3}
ACTION=${1:-}
DIR=${2:-.wheels/workflow}
SITE=${SITE:-/tmp/site}
PYTHON_VERSION=${PYTHON_VERSION:-3.12}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SNAKEMAKE=$(grep -E '^snakemake==' "$HERE/constraints.txt")
SOURCE_ONLY=(connection_pool==0.0.3)

case "$ACTION" in
  download)
    mkdir -p "$DIR"
    platforms=()
    for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
             manylinux1_x86_64 linux_x86_64; do platforms+=(--platform "$p"); done
    # Published only as source archives, all pure Python: built here, found by the download below.
    "$PYTHON" -m pip wheel -q --no-deps -w "$DIR" "${SOURCE_ONLY[@]}"
    "$PYTHON" -m pip download -q --only-binary=:all: --python-version "$PYTHON_VERSION" --implementation cp \
      "${platforms[@]}" --find-links "$DIR" -d "$DIR" "$SNAKEMAKE"
    ls "$DIR"
    du -sh "$DIR"
    ;;
  install)
    shopt -s nullglob
    wheels=("$DIR"/*.whl)
    if (( ${#wheels[@]} == 0 )); then
      echo "workflow_wheels.sh: no wheels in $DIR; run 'bash benchmarks/workflow_wheels.sh download $DIR'" \
        "(make workflow-wheels) where PyPI is reachable" >&2
      exit 1
    fi
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "${wheels[@]}"
    PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -m snakemake --version
    ;;
  *)
    echo "usage: bash benchmarks/workflow_wheels.sh download|install [DIR]" >&2
    exit 2
    ;;
esac
