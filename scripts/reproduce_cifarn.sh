#!/usr/bin/env bash
# Human label noise, the dataset given's protocol otherwise: CIFAR-10N (cifar10: aggre, rand1-3, worst) or
# CIFAR-100N (cifar100: noisy). Every row of the published CIFAR-N tables the reference can configure (CE,
# GCE, AGCE; ANL-FL and JAL-CE of the JAL paper's) with the other baselines of the CIFAR-10 sweep, three
# seeds; then the table beside the published figures. CE_eps+MAE is not swept: the reference gives no
# eps-Softmax hyperparameters for human noise (docs/protocol.md section 2); LOSSES=ce_eps_mae with
# loss.alpha, loss.beta and loss.active.m given on the command line of jal.train trains it.
source "$(dirname "$0")/sweep.sh"

DATASET=${1:-}
case "$DATASET" in
  cifar10) LABELS=aggre,rand1,rand2,rand3,worst ;;
  cifar100) LABELS=noisy ;;
  *) echo "error: $0 DATASET: give cifar10 or cifar100" >&2; exit 2 ;;
esac
LOSSES=${LOSSES:-ce,gce,sce,agce,nce_rce,nce_agce,anl_ce,anl_fl,jal_ce,jal_fl}
SEEDS=${SEEDS:-123,124,125}
RECORDS=$RUNS/$DATASET TABLE=$RESULTS/${DATASET}n

multirun "dataset=$DATASET" "loss=$LOSSES" "seed=$SEEDS" noise=human "noise.labels=$LABELS"
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
"$PYTHON" -m jal.tables $(for labels in ${LABELS//,/ }; do echo "$RECORDS/human_$labels"; done) --out "$TABLE" \
  --expect-seeds "$(echo "$SEEDS" | tr ',' '\n' | wc -l)"
