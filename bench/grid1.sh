#!/usr/bin/env bash
# Parallel exploration runs (one per line of GRID: "PRESET overrides..."), each cut at LIMIT seconds; prints curves.
GRID=$1; LIMIT=${2:-500}; OUTROOT=${3:-/tmp/grid}; shift 3
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONWARNINGS=ignore
i=0
while read -r preset line; do
  [ -z "$preset" ] && continue
  i=$((i+1))
  timeout "$LIMIT" python3 bench/explore.py run "$OUTROOT/r$(printf %02d $i)" "$preset" train.threads=1 \
    train.checkpoint_schedule='"every:100000"' train.eval_schedule='"every:500"' train.steps=200000 "$@" $line \
    > "$OUTROOT/r$(printf %02d $i).log" 2>&1 &
done < "$GRID"
wait
