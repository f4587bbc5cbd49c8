#!/usr/bin/env bash
# Calibration of experiment=quick (results/quick/CALIBRATION.md): train a few losses at one noise
# setting for one (training subset, epochs) pair; everything else is the quick preset, i.e. the paper's.
# Usage: bash scripts/calibrate_quick.sh SUBSET EPOCHS [LOSSES=ce,jal_ce] [NOISE=symmetric] [RATE=0.8] [SEEDS=123]
# Records land in results/quick/calibration/subset<SUBSET>_epochs<EPOCHS>/.
set -euo pipefail
subset=$1 epochs=$2 losses=${3:-ce,jal_ce} noise=${4:-symmetric} rate=${5:-0.8} seeds=${6:-123}
PYTHON=${PYTHON:-.venv/bin/python}
"$PYTHON" -m jal.train -m experiment=quick hydra/launcher=joblib "hydra.launcher.n_jobs=${JOBS:-2}" \
  trainer.threads=1 trainer.progress=false "dataset.subset=$subset" "trainer.epochs=$epochs" \
  "loss=$losses" "noise=$noise" "noise.rate=$rate" "seed=$seeds" \
  "out_root=results/quick/calibration/subset${subset}_epochs${epochs}"
