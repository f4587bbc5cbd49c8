#!/usr/bin/env bash
# Instance-dependent noise 0.2/0.4/0.6 (the reference's precomputed label sets) on the dataset given, cifar10
# or cifar100: every row of the published instance-dependent tables (the eps-Softmax paper's seven losses,
# ANL-CE and JAL-CE of the JAL paper's), and JAL-FL, three seeds; then the table beside the published figures.
source "$(dirname "$0")/sweep.sh"

DATASET=${1:-}
case "$DATASET" in cifar10|cifar100) ;; *) echo "error: $0 DATASET: give cifar10 or cifar100" >&2; exit 2;; esac
LOSSES=${LOSSES:-ce,gce,sce,nce_rce,nce_agce,ldr_kl,ce_eps_mae,anl_ce,jal_ce,jal_fl}
SEEDS=${SEEDS:-123,124,125}
RECORDS=$RUNS/$DATASET TABLE=$RESULTS/${DATASET}_idn

multirun "dataset=$DATASET" "loss=$LOSSES" "seed=$SEEDS" noise=instance noise.rate=0.2,0.4,0.6
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
"$PYTHON" -m jal.tables "$RECORDS/instance_0.2" "$RECORDS/instance_0.4" "$RECORDS/instance_0.6" --out "$TABLE" \
  --expect-seeds "$(echo "$SEEDS" | tr ',' '\n' | wc -l)"
