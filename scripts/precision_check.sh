#!/usr/bin/env bash
# Paired bf16-vs-fp32 check on whatever device runs it (a GPU, or a CPU: PRESET as in sweep.sh, quick without
# CUDA): the same cells, seeds and training subsets trained in both precisions, then the difference per cell
# with its seed spread, and the verdict (python -m jal.precision_report), in results/precision/table.md, table.csv,
# summary.json (OUT=DIR as in sweep.sh: DIR/precision).
# bf16 may become a preset's default only if no cell moves by more than twice the larger seed std.
#   Cells: symmetric 0.8 and asymmetric 0.4 for LOSSES (default ce,nce_rce,jal_ce), seeds SEEDS (123,124,125).
#   bf16 runs in results/precision/runs, fp32 runs in results/precision/runs_fp32.
#   FP32_RUNS=DIR: the fp32 side is trained already (e.g. FP32_RUNS=results/quick/runs, the committed quick
#     sweep): only bf16 is trained; the pairs are found among DIR's records by their contents (cell, seed,
#     epochs, subset, precision), not by directory names.
# Usage: bash scripts/precision_check.sh;  PRESET=quick FP32_RUNS=results/quick/runs bash scripts/precision_check.sh
# (DRY_RUN=1: the plan only; JOBS, THREADS, MINUTES as in sweep.sh).
source "$(dirname "$0")/sweep.sh"

LOSSES=${LOSSES:-ce,nce_rce,jal_ce}
SEEDS=${SEEDS:-123,124,125}
CHECK=$OUT/precision  # results/precision, or DIR/precision with OUT=DIR
RECORDS=$CHECK TABLE=$CHECK
FP32_RUNS=${FP32_RUNS:-}

for precision in bf16 fp32; do
  if [ "$precision" = fp32 ] && [ -n "$FP32_RUNS" ]; then continue; fi
  runs="$CHECK/runs"; if [ "$precision" = fp32 ]; then runs="$CHECK/runs_fp32"; fi
  multirun dataset=cifar10 noise=symmetric noise.rate=0.8 "loss=$LOSSES" "seed=$SEEDS" \
    "trainer.precision=$precision" "out_root=$runs"
  multirun dataset=cifar10 noise=asymmetric noise.rate=0.4 "loss=$LOSSES" "seed=$SEEDS" \
    "trainer.precision=$precision" "out_root=$runs"
done
run_sweeps  # the plan, then the sweeps (DRY_RUN=1: the plan only)

seeds=$(awk -F, '{print NF}' <<< "$SEEDS")
if [ -n "$FP32_RUNS" ]; then
  "$PYTHON" -m jal.precision_report "$CHECK/runs" "$FP32_RUNS" --cells-from "$CHECK/runs" --expect-seeds "$seeds" \
    --out "$CHECK"
else
  "$PYTHON" -m jal.precision_report "$CHECK/runs" "$CHECK/runs_fp32" --expect-seeds "$seeds" --out "$CHECK"
fi
