# Shared by the table scripts: how to call one Hydra multirun. Sourced, not run.
# Variables (from the Makefile or the environment):
#   PRESET=paper|quick   LAUNCHER=basic|joblib|local|slurm|submitit_slurm (JOBS=N for joblib)
#   SEEDS=123,124,125    LOSSES=ce,gce,...   PYTHON=python
#   MINUTES=N: time-boxed: every run pauses at its first epoch end past N minutes from now (trainer.stop_at,
#              one deadline for the whole sweep); the same command later continues where it stopped
set -euo pipefail
PRESET=${PRESET:-paper}
LAUNCHER=${LAUNCHER:-basic}
JOBS=${JOBS:-2}
PYTHON=${PYTHON:-python}
if [ -n "${MINUTES:-}" ] && ! [[ $MINUTES =~ ^[0-9]+$ ]]; then
  echo "error: MINUTES=$MINUTES: give a whole number of minutes, e.g. MINUTES=8" >&2; exit 2
fi
STOP_AT=${STOP_AT:-${MINUTES:+$(($(date +%s) + MINUTES * 60))}}

# multirun OVERRIDES...: one sweep over the cells given, with the preset and launcher applied.
multirun() {
  local launcher=()
  case "$LAUNCHER" in
    basic) ;;
    joblib) launcher=(hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS") ;;
    *) launcher=("hydra/launcher=$LAUNCHER") ;;
  esac
  if [ -n "$STOP_AT" ]; then launcher+=("trainer.stop_at=$STOP_AT"); fi
  echo "+ python -m jal.train -m experiment=$PRESET ${launcher[*]} $*"
  "$PYTHON" -m jal.train -m "experiment=$PRESET" "${launcher[@]}" "$@"
}
