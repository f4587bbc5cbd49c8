#!/usr/bin/env bash
# The paper's CIFAR-100 table: losses x {clean, symmetric 0.2-0.8, asymmetric 0.1-0.4} x three seeds,
# ResNet-34, 200 epochs, lr 0.1 (all from dataset=cifar100); then the table beside the published figures.
source "$(dirname "$0")/sweep.sh"

LOSSES=${LOSSES:-ce,gce,sce,nce_rce,nfl_rce,nce_aul,nce_agce,anl_ce,anl_fl,jal_ce,jal_fl}
SEEDS=${SEEDS:-123,124,125}

multirun dataset=cifar100 "loss=$LOSSES" "seed=$SEEDS" noise=none
multirun dataset=cifar100 "loss=$LOSSES" "seed=$SEEDS" noise=symmetric noise.rate=0.2,0.4,0.6,0.8
multirun dataset=cifar100 "loss=$LOSSES" "seed=$SEEDS" noise=asymmetric noise.rate=0.1,0.2,0.3,0.4
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
"$PYTHON" -m jal.tables results/runs/cifar100 --out results/cifar100 --expect-seeds "$(echo "$SEEDS" | tr ',' '\n' | wc -l)"
