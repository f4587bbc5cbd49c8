#!/usr/bin/env bash
# CIFAR-10 with instance-dependent noise 0.2/0.4/0.6 (the reference's precomputed label sets).
source "$(dirname "$0")/sweep.sh"

LOSSES=${LOSSES:-ce,gce,sce,nce_rce,nce_agce,anl_ce,jal_ce,jal_fl}
SEEDS=${SEEDS:-123,124,125}

multirun dataset=cifar10 "loss=$LOSSES" "seed=$SEEDS" noise=instance noise.rate=0.2,0.4,0.6
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
"$PYTHON" -m jal.tables results/runs/cifar10/instance_0.2 results/runs/cifar10/instance_0.4 \
  results/runs/cifar10/instance_0.6 --out results/cifar10_idn --expect-seeds "$(echo "$SEEDS" | tr ',' '\n' | wc -l)"
