#!/usr/bin/env bash
# The peer toolkits' wheels, for running benchmarks/peer_speed.py on a machine without internet.
#
#   bash benchmarks/peer_wheels.sh download [DIR]   # where PyPI is reachable (make peer-wheels): DIR=.wheels
#   bash benchmarks/peer_wheels.sh install [DIR]    # on the offline machine: pip --no-index from DIR
#
# All are pure-Python wheels (any Python 3, any platform), about 0.6 MB together. torchreid 0.2.5
# exists on PyPI only as a source archive: `download` builds its wheel. `install` installs with
# --no-deps: fast-reid's declared requirements (torch 1.13) cannot be met, and the others'
# remaining dependencies are there already on the machines this was written for (an image with
# torch, torchvision, opencv-python-headless, tabulate, requests, filelock, tqdm and
# typing-extensions, as the H200 image is); a missing one shows as an ImportError in
# peer_speed.py's log for that toolkit. PYTHON picks the interpreter (default python3).
set -euo pipefail
PYTHON=${PYTHON:-python3}
ACTION=${1:-}
DIR=${2:-.wheels}
# The versions the benchmark was tested with; gdown, beautifulsoup4 and soupsieve only for
# torchreid's `import gdown`, yacs and termcolor for fast-reid's config and logging.
WHEELS=(fastreid==1.4.0 gdown==6.5.1 beautifulsoup4==4.15.0 soupsieve==4.1.4 yacs==0.1.8 termcolor==3.3.0)
SOURCE_ONLY=(torchreid==0.2.5)

case "$ACTION" in
  download)
    mkdir -p "$DIR"
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: -d "$DIR" "${WHEELS[@]}"
    "$PYTHON" -m pip wheel -q --no-deps -w "$DIR" "${SOURCE_ONLY[@]}"
    ls -l "$DIR"
    du -sh "$DIR"
    ;;
  install)
    shopt -s nullglob
    wheels=("$DIR"/*.whl)
    if (( ${#wheels[@]} == 0 )); then
      echo "peer_wheels.sh: no wheels in $DIR; run 'bash benchmarks/peer_wheels.sh download $DIR'" \
        "(make peer-wheels) where PyPI is reachable" >&2
      exit 1
    fi
    names=()
    for spec in "${WHEELS[@]}" "${SOURCE_ONLY[@]}"; do names+=("${spec%%==*}"); done
    "$PYTHON" -m pip install -q --no-index --no-deps --find-links "$DIR" "${names[@]}"
    ;;
  *)
    echo "usage: bash benchmarks/peer_wheels.sh download|install [DIR]" >&2
    exit 2
    ;;
esac
