#!/usr/bin/env bash
# The real-world table of one dataset (docs/protocol.md section 7): webvision (mini-WebVision, tested on
# WebVision's and ILSVRC12's validation images) or clothing1m, ResNet-50, every loss of the reference's
# real-world configs, one seed (the paper reports one run per cell there); then the table beside the published
# figures. The paper's protocol only (no CPU-sized preset): each run is ~250 (WebVision) or 10 (Clothing1M)
# ResNet-50 epochs, GPU-hours each (docs/performance.md).
PRESET=${PRESET:-paper}
source "$(dirname "$0")/sweep.sh"

DATASET=${1:-}
case "$DATASET" in
  webvision|clothing1m) ;;
  *) echo "error: $0 DATASET: give webvision or clothing1m" >&2; exit 2 ;;
esac
LOSSES=${LOSSES:-ce,fl,gce,sce,agce,ldr_kl,nce_rce,nce_agce,anl_ce,anl_fl,ce_eps_mae,jal_ce,jal_fl}
SEEDS=${SEEDS:-123}
RECORDS=$RUNS/$DATASET TABLE=$RESULTS/$DATASET

multirun "dataset=$DATASET" "loss=$LOSSES" "seed=$SEEDS"
run_sweeps  # the plan, then the sweep (DRY_RUN=1: the plan only)
"$PYTHON" -m jal.tables "$RECORDS" --out "$TABLE" \
  --expect-seeds "$(echo "$SEEDS" | tr ',' '\n' | wc -l)"
