#!/usr/bin/env bash
# CIFAR-10N: human label noise (aggre, rand1-3, worst), CIFAR-10 protocol otherwise.
source "$(dirname "$0")/sweep.sh"

LOSSES=${LOSSES:-ce,gce,sce,nce_rce,nce_agce,anl_ce,jal_ce,jal_fl}
SEEDS=${SEEDS:-123,124,125}

multirun dataset=cifar10 "loss=$LOSSES" "seed=$SEEDS" noise=human noise.labels=aggre,rand1,rand2,rand3,worst
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
"$PYTHON" -m jal.tables results/runs/cifar10/human_aggre results/runs/cifar10/human_rand1 \
  results/runs/cifar10/human_rand2 results/runs/cifar10/human_rand3 results/runs/cifar10/human_worst \
  --out results/cifar10n --expect-seeds "$(echo "$SEEDS" | tr ',' '\n' | wc -l)"
