#!/usr/bin/env bash
# The paper's CIFAR-100 table: losses x {clean, symmetric 0.2-0.8, asymmetric 0.1-0.4} x three seeds,
# ResNet-34, 200 epochs, lr 0.1 (all from dataset=cifar100); then the table beside the published figures.
# The losses: every row of the published tables, the JAL paper's at its main table's cells first.
source "$(dirname "$0")/sweep.sh"

SEEDS=${SEEDS:-123,124,125}
RECORDS=$RUNS/cifar100 TABLE=$RESULTS/cifar100

# every row the published tables have; the JAL paper's comparison at its cells first (sweep.sh)
table_sweeps cifar100 "0.4,0.6" "0.3,0.4"
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
"$PYTHON" -m jal.tables "$RECORDS" --out "$TABLE" --expect-seeds "$(echo "$SEEDS" | tr ',' '\n' | wc -l)"
