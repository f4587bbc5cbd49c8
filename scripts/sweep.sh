# Shared by the table scripts: how to call one Hydra multirun. Sourced, not run.
# Variables (from the Makefile or the environment):
#   PRESET=paper|quick   LAUNCHER=basic|joblib|local|slurm|submitit_slurm (JOBS=N for joblib)
#   SEEDS=123,124,125    LOSSES=ce,gce,...   PYTHON=python
set -euo pipefail
PRESET=${PRESET:-paper}
LAUNCHER=${LAUNCHER:-basic}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python}

# multirun OVERRIDES...: one sweep over the cells given, with the preset and launcher applied.
multirun() {
  local launcher=()
  case "$LAUNCHER" in
    basic) ;;
    joblib) launcher=(hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS") ;;
    *) launcher=("hydra/launcher=$LAUNCHER") ;;
  esac
  echo "+ python -m jal.train -m experiment=$PRESET ${launcher[*]} $*"
  "$PYTHON" -m jal.train -m "experiment=$PRESET" "${launcher[@]}" "$@"
}
