#!/usr/bin/env bash
# Paired bf16-vs-fp32 comparison: the same cells and seeds trained in both precisions, one table each.
# Run it on a GPU before making bf16 the default (configs/train.yaml, trainer.precision); the accuracies
# must agree within seed noise. Usage: PRESET=paper bash scripts/precision_check.sh
source "$(dirname "$0")/sweep.sh"

for precision in fp32 bf16; do
  multirun dataset=cifar10 loss=ce,jal_ce seed=123,124,125 noise=symmetric noise.rate=0.4,0.8 \
    "trainer.precision=$precision" "out_root=results/precision/$precision"
done
run_sweeps  # the plan, then both sweeps (DRY_RUN=1: the plan only)
for precision in fp32 bf16; do
  "$PYTHON" -m jal.tables "results/precision/$precision/cifar10" --out "results/precision/$precision"
done
