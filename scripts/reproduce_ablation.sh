#!/usr/bin/env bash
# The JAL paper's ablation on CIFAR-10: NCE and AMSE alone, AGCE+MAE, NCE+MAE and JAL-CE at symmetric 0.4/0.8
# and asymmetric 0.2/0.4, three seeds; then JAL-CE with AMSE's a swept (A_VALUES) at symmetric 0.8 and
# asymmetric 0.4, where jal.theory.amse_min_a bounds the a that makes AMSE asymmetric (9 and 5). Records and
# tables in results/ablation (PRESET=quick: results/quick/ablation): table.md for the losses, a_sweep/ for a
# with its table, the bound and the figure (accuracy against a, the bound marked).
source "$(dirname "$0")/sweep.sh"

LOSSES=${LOSSES:-nce,amse,agce_mae,nce_mae,jal_ce}
SEEDS=${SEEDS:-123,124,125}
A_VALUES=${A_VALUES:-1,3,5,7,9,12,20,30,50}
ROOT=$RESULTS/ablation
RECORDS=$ROOT TABLE=$ROOT  # the losses' runs in runs/, the a sweep's in a_sweep/runs/

multirun dataset=cifar10 "loss=$LOSSES" "seed=$SEEDS" noise=symmetric noise.rate=0.4,0.8 "out_root=$ROOT/runs"
multirun dataset=cifar10 "loss=$LOSSES" "seed=$SEEDS" noise=asymmetric noise.rate=0.2,0.4 "out_root=$ROOT/runs"
# Each a's runs have their own directory (the run directory names loss.passive.a) and table row.
for a in ${A_VALUES//,/ }; do
  multirun dataset=cifar10 loss=jal_ce "loss.passive.a=$a" "seed=$SEEDS" noise=symmetric noise.rate=0.8 \
    "out_root=$ROOT/a_sweep/runs/a$a"
  multirun dataset=cifar10 loss=jal_ce "loss.passive.a=$a" "seed=$SEEDS" noise=asymmetric noise.rate=0.4 \
    "out_root=$ROOT/a_sweep/runs/a$a"
done
run_sweeps  # the plan, then the sweeps above (DRY_RUN=1: the plan only)
seeds=$(echo "$SEEDS" | tr ',' '\n' | wc -l)
"$PYTHON" -m jal.tables "$ROOT/runs" --out "$ROOT" --expect-seeds "$seeds"
"$PYTHON" -m jal.tables "$ROOT/a_sweep/runs" --out "$ROOT/a_sweep" --expect-seeds "$seeds"
"$PYTHON" scripts/plot_a_sweep.py "$ROOT/a_sweep"
