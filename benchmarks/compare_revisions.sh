#!/usr/bin/env bash
# Before/after a refactor: predict, vectorize and sampling benchmarks on two git revisions,
# alternating in one run (so both see the same machine load), several rounds.
#
#   bash benchmarks/compare_revisions.sh BEFORE AFTER [ROUNDS] [OUT_DIR]
#
# e.g. `bash benchmarks/compare_revisions.sh 0f8cbae HEAD 3`. Each revision is checked out in a
# temporary detached worktree and run with this checkout's .venv (PYTHONPATH points at the
# worktree). Prints the lscpu model/flags and the per-round figures; compare medians.
set -u
BEFORE=${1:?before revision}; AFTER=${2:?after revision}; ROUNDS=${3:-3}
OUT=${4:-$(mktemp -d)}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=$ROOT/.venv/bin/python
WT=$(mktemp -d)
cleanup() { for t in before after; do git -C "$ROOT" worktree remove --force "$WT/$t" 2>/dev/null; done; }
trap cleanup EXIT
git -C "$ROOT" worktree add -q --detach "$WT/before" "$BEFORE"
git -C "$ROOT" worktree add -q --detach "$WT/after" "$AFTER"
mkdir -p "$OUT"
lscpu | grep -E 'Model name'
lscpu | grep Flags | tr ' ' '\n' | grep -E 'avx512|amx' | tr '\n' ' '; echo; nproc
DATA=$OUT/sampling_scene
(cd "$WT/before" && PYTHONPATH=$PWD $PY benchmarks/bench_sampling.py --generate --height 4096 \
    --width 4096 --data "$DATA" > "$OUT/generate.log" 2>&1)
for r in $(seq 1 "$ROUNDS"); do
  for tree in before after; do
    cd "$WT/$tree" || exit 1
    export PYTHONPATH=$PWD
    echo "== round $r $tree"
    $PY benchmarks/bench_predict.py --sizes 1024 --no-baseline --agreement-size 0 --repeats 1 \
        2>/dev/null | grep -E '^[0-9]+x[0-9]+:'
    $PY benchmarks/bench_vectorize.py --size 4096x4096 --objects 20000 --skip-baseline \
        --workers 1 --repeats 1 2>/dev/null | grep -E '^\s+geochange\s+:'
    $PY benchmarks/bench_sampling.py --data "$DATA" --samples 200 --repeats 1 --workers 0 \
        --methods geochange-random geochange-balanced 2>/dev/null | grep -E 'samples/s'
  done
done
