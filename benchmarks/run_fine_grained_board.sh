#!/usr/bin/env bash
# The fine-grained leaderboard's frozen recipe (docs/results/fine_grained.md, section 3): one queue of
# arm:seed pairs per CPU core, each run one thread, the test split scored once at the end of each run.
# Usage: benchmarks/run_fine_grained_board.sh OUT.json arm:seed [arm:seed ...]
# dasNet (it steers runs/fine_grained_board/plain_sSEED/best.pt) evaluates 8 images per SNES iteration, so
# that its 630 iterations (39 candidates x 2 passes each) cost about 0.6 CPU-h instead of 2.6.
# RESUME=1 continues interrupted runs from their last.pt (their CPU cost is then left out of the table).
set -euo pipefail
json=$1; shift
extra=()
if [[ "${RESUME:-0}" == 1 ]]; then extra=(--resume); fi
for pair in "$@"; do
    arm=${pair%%:*}; seed=${pair##*:}
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_fine_grained.py --arms "$arm" --seeds "$seed" \
        --size 128 --epochs 10 --steps-per-epoch 63 --dasnet-batch-size 8 --test --out runs/fine_grained_board --json "$json" "${extra[@]}"
done
