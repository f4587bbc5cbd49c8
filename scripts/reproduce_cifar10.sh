#!/usr/bin/env bash
# The paper's CIFAR-10 table (docs/protocol.md section 4): losses x {clean, symmetric 0.2-0.8, asymmetric 0.1-0.4}
# x three seeds, 8-layer CNN, 120 epochs; then the table beside the published figures. The losses: every
# row of the published tables (the 15 of the eps-Softmax paper's main table, ANL-CE, ANL-FL, JAL-CE, JAL-FL),
# the JAL paper's losses at its main table's cells first (LOSSES=... sweeps those over the whole grid).
# PRESET=quick: the CPU-sized version (experiment=quick: a 10000-image subset, 12 epochs; nine losses at
# symmetric 0.4, 0.8 and asymmetric 0.4 with three seeds, clean with one; results/quick/CALIBRATION.md).
# CELLS=headline: only the cells the JAL paper's main table publishes for CIFAR-10 (CE, NCE+RCE, ANL-CE,
# ANL-FL, JAL-CE, JAL-FL at symmetric 0.4, 0.8 and asymmetric 0.2, 0.4), one seed after another (123 first).
source "$(dirname "$0")/sweep.sh"

RECORDS=$RUNS/cifar10 TABLE=$RESULTS/cifar10
if [ "$PRESET" = quick ]; then TABLE=$RESULTS; fi  # the quick table: results/quick's own (OUT: DIR/quick)

if [ "${CELLS:-all}" = headline ]; then
  LOSSES=${LOSSES:-ce,nce_rce,anl_ce,anl_fl,jal_ce,jal_fl}
  SEEDS=${SEEDS:-123,124,125}
  for seed in ${SEEDS//,/ }; do  # a whole first table from seed 123 before any second seed
    multirun dataset=cifar10 "loss=$LOSSES" "seed=$seed" noise=symmetric noise.rate=0.4,0.8
    multirun dataset=cifar10 "loss=$LOSSES" "seed=$seed" noise=asymmetric noise.rate=0.2,0.4
  done
elif [ "${CELLS:-all}" != all ]; then
  echo "error: CELLS=$CELLS: choose all or headline" >&2; exit 2
elif [ "$PRESET" = quick ]; then
  LOSSES=${LOSSES:-ce,gce,sce,nce_rce,ldr_kl,ce_lc,ce_eps_mae,anl_ce,jal_ce}
  SEEDS=${SEEDS:-123,124,125}
  # the cells that decide the findings first (symmetric 0.8, asymmetric 0.4), clean with the first seed only
  multirun dataset=cifar10 "loss=$LOSSES" "seed=$SEEDS" noise=symmetric noise.rate=0.8
  multirun dataset=cifar10 "loss=$LOSSES" "seed=$SEEDS" noise=asymmetric noise.rate=0.4
  multirun dataset=cifar10 "loss=$LOSSES" "seed=$SEEDS" noise=symmetric noise.rate=0.4
  multirun dataset=cifar10 "loss=$LOSSES" "seed=${SEEDS%%,*}" noise=none
else
  SEEDS=${SEEDS:-123,124,125}
  # every row the published tables have; the JAL paper's comparison at its cells first (sweep.sh)
  table_sweeps cifar10 "0.4,0.8" "0.2,0.4"
fi
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
seeds=$(echo "$SEEDS" | tr ',' '\n' | wc -l)
"$PYTHON" -m jal.tables "$RECORDS" --out "$TABLE" --expect-seeds "$seeds" \
  --expect-clean-seeds "$([ "$PRESET" = quick ] && [ "${CELLS:-all}" = all ] && echo 1 || echo "$seeds")"
