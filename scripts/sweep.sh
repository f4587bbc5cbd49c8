# Shared by the table scripts: how they run their Hydra multiruns. Sourced, not run.
# A table script queues its sweeps with `multirun OVERRIDES...`, then `run_sweeps` prints the plan of all of
# them (python -m jal.plan: preset, device, launcher, runs, finished already, time left), stops there when
# DRY_RUN=1, and runs them one after the other.
# Variables (from the Makefile or the environment), each optional:
#   PRESET=paper|quick   default: paper with CUDA; quick, the CPU-sized protocol, without
#   LAUNCHER=basic|joblib|local|slurm|submitit_slurm   default: basic with CUDA; joblib without
#   JOBS=N               runs (with FUSE: fusions) at once with joblib; default: 2 with CUDA, one per core without
#   THREADS=N            torch threads per run or fusion (trainer.threads); default with joblib on a CPU: cores / JOBS
#   SEEDS=123,124,125    LOSSES=ce,gce,...   DRY_RUN=1   PYTHON=python
#   FUSE=K: train the runs of each sweep fused, at most K per fusion, each fusion as one network (python -m
#           jal.fuse), launched as LAUNCHER launches runs: basic one fusion at a time, joblib JOBS fusions side
#           by side with THREADS torch threads each, slurm one fusion per SLURM task (the resources of
#           configs/hydra/launcher/slurm.yaml); default 1, no fusion
#   PRECISION=fp32|bf16|auto: trainer.precision for every run; default: the preset's (paper fp32, quick auto:
#              bf16 on CUDA and on CPUs with bf16 hardware). PRECISION=fp32 continues an fp32 table anywhere
#   SLURM='partition=debug gpus_per_node=0 ...': with LAUNCHER=slurm, settings of configs/hydra/launcher/slurm.yaml
#              for every sweep (each word becomes hydra.launcher.WORD)
#   MINUTES=N: time-boxed: every run pauses at its first epoch end past N minutes from now (trainer.stop_at,
#              one deadline for the whole sweep); the same command later continues where it stopped
#   OUT=DIR: DIR in place of results/, in its layout: the runs train into DIR/runs (quick: DIR/quick/runs), their
#            tables go to DIR/<table>; results/ is neither trained into nor tabulated. Default: results
set -euo pipefail
PYTHON=${PYTHON:-python}
DRY_RUN=${DRY_RUN:-0}
if [ -n "${MINUTES:-}" ] && ! [[ $MINUTES =~ ^[0-9]+$ ]]; then
  echo "error: MINUTES=$MINUTES: give a whole number of minutes, e.g. MINUTES=8" >&2; exit 2
fi
STOP_AT=${STOP_AT:-${MINUTES:+$(($(date +%s) + MINUTES * 60))}}
FUSE=${FUSE:-1}
if [ -n "${SLURM:-}" ] && [[ ! ${LAUNCHER:-} =~ ^(submitit_)?slurm$ ]]; then
  echo "error: SLURM='$SLURM' sets the SLURM launcher's settings: add LAUNCHER=slurm" >&2; exit 2
fi
if ! [[ $FUSE =~ ^[1-9][0-9]*$ ]]; then
  echo "error: FUSE=$FUSE: give the most runs per fusion, e.g. FUSE=8" >&2; exit 2
fi

# CUDA or not, and the cores this process may use (nproc would follow OMP_NUM_THREADS)
read -r CUDA CORES < <("$PYTHON" -c 'import os, torch; print(int(torch.cuda.is_available()), len(os.sched_getaffinity(0)))')
if [ "$CUDA" = 1 ]; then
  PRESET=${PRESET:-paper} LAUNCHER=${LAUNCHER:-basic} JOBS=${JOBS:-2} THREADS=${THREADS:-}
else
  # A CPU takes about 17 h per run of the paper's protocol: parallel single-threaded runs of the CPU-sized one.
  if [ -z "${PRESET:-}" ]; then PRESET=quick; SAY_QUICK=1; fi
  LAUNCHER=${LAUNCHER:-joblib} JOBS=${JOBS:-$CORES}
  if [ "$LAUNCHER" = joblib ]; then THREADS=${THREADS:-$(( CORES / JOBS > 0 ? CORES / JOBS : 1 ))}; fi
  THREADS=${THREADS:-}
fi

# Where the preset's runs land (the out_root of its experiment config, under results/) and, one folder up, its
# tables go; OUT=DIR puts DIR in results/'s place (a folder inside results/ would mix a user's runs into the
# committed ones: refused).
PRESET_CONFIG="$(dirname "${BASH_SOURCE[0]}")/../configs/experiment/$PRESET.yaml"
if [ ! -f "$PRESET_CONFIG" ]; then echo "error: PRESET=$PRESET: choose paper or quick" >&2; exit 2; fi
RUNS=$(sed -n 's/^out_root: *//p' "$PRESET_CONFIG")
OUT=${OUT:-results}
COMMITTED=$(realpath -m "$(dirname "${BASH_SOURCE[0]}")/../results")
case "$(realpath -m "$OUT")" in
  "$COMMITTED") OUT=results ;;
  "$COMMITTED"/*) echo "error: OUT=$OUT lies inside results/, beside the committed records and tables: give a" \
                       "folder outside it, e.g. OUT=my_results" >&2; exit 2 ;;
esac
if [ "$OUT" != results ]; then RUNS=$OUT/${RUNS#results/}; fi
RESULTS=$(dirname "$RUNS")
if [ -n "${SAY_QUICK:-}" ]; then
  echo "No CUDA device: the CPU-sized preset (PRESET=quick, $RESULTS). PRESET=paper forces the paper's protocol."
fi

SWEEPS=()  # one multirun's overrides per entry, shell-quoted

# multirun OVERRIDES...: queue one sweep over the cells given, with the preset, launcher and threads applied.
multirun() {
  local settings=("experiment=$PRESET")
  case "$LAUNCHER" in
    basic) ;;
    joblib) settings+=(hydra/launcher=joblib "hydra.launcher.n_jobs=$JOBS")
            # parallel runs share one terminal: their progress bars would overwrite each other (unless the
            # sweep says otherwise itself: a key is given once)
            if [ "$JOBS" -gt 1 ] && [[ " $* " != *" trainer.progress="* ]]; then
              settings+=(trainer.progress=false)
            fi ;;
    *) settings+=("hydra/launcher=$LAUNCHER")
       for setting in ${SLURM:-}; do settings+=("hydra.launcher.$setting"); done ;;
  esac
  if [ -n "$THREADS" ]; then settings+=("trainer.threads=$THREADS"); fi
  if [ -n "${PRECISION:-}" ]; then settings+=("trainer.precision=$PRECISION"); fi
  if [ -n "$STOP_AT" ]; then settings+=("trainer.stop_at=$STOP_AT"); fi
  # OUT: the runs into its folder, unless the sweep names its own out_root (the ablation's, under RESULTS)
  if [ "$OUT" != results ] && [[ " $* " != *" out_root="* ]]; then settings+=("out_root=$RUNS"); fi
  SWEEPS+=("$(printf '%q ' "${settings[@]}" "$@")")
}

# run_sweeps: where the runs and the table go (the script's RECORDS and TABLE), the plan of the queued sweeps
# (it stops at a missing data file); then, unless DRY_RUN=1, the sweeps themselves.
run_sweeps() {
  local download=--download  # a data file torchvision can fetch: fetched before the sweep, not by parallel runs
  if [ "$DRY_RUN" != 0 ]; then download=; fi
  if [ -n "${TABLE:-}" ]; then
    if [ "$OUT" = results ]; then
      echo "Runs into $RECORDS, the table into $TABLE (OUT=DIR: both under DIR instead)."
    else
      echo "OUT=$OUT: runs into $RECORDS, the table into $TABLE; results/ is left as it is."
    fi
  fi
  # what trains every run here, into a folder of the user's (the plan says it where some came from elsewhere)
  local retrain="OUT=DIR in the same command"
  if [ -n "${MAKE_TARGET:-}" ]; then retrain="make $MAKE_TARGET OUT=DIR"; fi
  "$PYTHON" -m jal.plan --name "$(basename "$0" .sh)" --fuse "$FUSE" --retrain "$retrain" $download "${SWEEPS[@]}"
  if [ "$DRY_RUN" != 0 ]; then
    echo "DRY_RUN=$DRY_RUN: stopping before the first run."
    exit 0
  fi
  local sweep status failed=0
  for sweep in "${SWEEPS[@]}"; do
    eval "set -- $sweep"
    status=0
    if [ "$FUSE" -gt 1 ]; then
      echo "+ python -m jal.fuse --fuse $FUSE $*"
      "$PYTHON" -m jal.fuse --fuse "$FUSE" "$@" || status=$?
    else
      echo "+ python -m jal.train -m $*"
      "$PYTHON" -m jal.train -m "$@" || status=$?
    fi
    # 1: a run failed or is blocked (its summary says which); the other sweeps and the table go on. Anything
    # else (Ctrl-C 130, a second SIGTERM 143) ends the script here.
    if [ "$status" = 1 ]; then failed=$((failed + 1)); elif [ "$status" != 0 ]; then exit "$status"; fi
  done
  if [ "$failed" -gt 0 ]; then
    # the script goes on to its table (which lists the failed runs), then exits 1
    trap "echo \"$failed of ${#SWEEPS[@]} sweeps had a run that failed or is blocked: see their summaries above\" >&2
          exit 1" EXIT
  fi
}

# The losses of the published CIFAR tables: the JAL paper's main table, then the rest of the eps-Softmax paper's.
JAL_TABLE_LOSSES=ce,nce_rce,anl_ce,anl_fl,jal_ce,jal_fl
EPS_TABLE_LOSSES=fl,gce,nlnl,sce,nce_mae,nfl_rce,nce_aul,nce_agce,nce_ael,ldr_kl,ce_lc,ce_eps_mae,fl_eps_mae

# table_sweeps DATASET SYM_FIRST ASYM_FIRST: queue a whole table (clean, symmetric 0.2-0.8, asymmetric
# 0.1-0.4) of LOSSES, by default every published row in the order that gives the paper's comparison first:
# the JAL paper's losses at its main table's rates (SYM_FIRST, ASYM_FIRST), then at the other settings,
# then the other baselines everywhere. Every cell is queued once.
table_sweeps() {
  local dataset=$1 sym_first=$2 asym_first=$3 sym_rest asym_rest
  sym_rest=$(comm -23 <(tr , '\n' <<<"0.2,0.4,0.6,0.8" | sort) <(tr , '\n' <<<"$sym_first" | sort) | paste -sd,)
  asym_rest=$(comm -23 <(tr , '\n' <<<"0.1,0.2,0.3,0.4" | sort) <(tr , '\n' <<<"$asym_first" | sort) | paste -sd,)
  if [ -n "${LOSSES:-}" ]; then
    multirun "dataset=$dataset" "loss=$LOSSES" "seed=$SEEDS" noise=none
    multirun "dataset=$dataset" "loss=$LOSSES" "seed=$SEEDS" noise=symmetric noise.rate=0.2,0.4,0.6,0.8
    multirun "dataset=$dataset" "loss=$LOSSES" "seed=$SEEDS" noise=asymmetric noise.rate=0.1,0.2,0.3,0.4
    return
  fi
  LOSSES=$JAL_TABLE_LOSSES,$EPS_TABLE_LOSSES
  multirun "dataset=$dataset" "loss=$JAL_TABLE_LOSSES" "seed=$SEEDS" noise=symmetric "noise.rate=$sym_first"
  multirun "dataset=$dataset" "loss=$JAL_TABLE_LOSSES" "seed=$SEEDS" noise=asymmetric "noise.rate=$asym_first"
  multirun "dataset=$dataset" "loss=$JAL_TABLE_LOSSES" "seed=$SEEDS" noise=none
  multirun "dataset=$dataset" "loss=$JAL_TABLE_LOSSES" "seed=$SEEDS" noise=symmetric "noise.rate=$sym_rest"
  multirun "dataset=$dataset" "loss=$JAL_TABLE_LOSSES" "seed=$SEEDS" noise=asymmetric "noise.rate=$asym_rest"
  multirun "dataset=$dataset" "loss=$EPS_TABLE_LOSSES" "seed=$SEEDS" noise=none
  multirun "dataset=$dataset" "loss=$EPS_TABLE_LOSSES" "seed=$SEEDS" noise=symmetric noise.rate=0.2,0.4,0.6,0.8
  multirun "dataset=$dataset" "loss=$EPS_TABLE_LOSSES" "seed=$SEEDS" noise=asymmetric noise.rate=0.1,0.2,0.3,0.4
}
