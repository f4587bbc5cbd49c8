#!/usr/bin/env bash
# Trains cells of the paper's CIFAR-10 protocol (DATASET=name for another) side by side on one GPU, JOBS
# runs at a time, in the order given, until one deadline. Needs only PyTorch and Hydra, not Hydra's launcher
# plugins: for a cluster node or GPU host without a package index. Where hydra-joblib-launcher is installed,
# `make reproduce-cifar10 CELLS=headline LAUNCHER=joblib MINUTES=N` does the same, with its plan and table.
#
#   DEADLINE=$(($(date +%s) + 300)) JOBS=2 bash scripts/gpu_pool.sh results/runs "loss=ce noise=symmetric noise.rate=0.8"
#   DEADLINE=... SEEDS=123,124 bash scripts/gpu_pool.sh results/runs     # the cells of scripts/gpu_cells.txt
#
# Each cell and seed is one jal.train run, its record in OUT_ROOT/<run_name>/result.json; finished runs are
# skipped and paused ones continue from their checkpoint. Every run pauses at its first epoch end past
# DEADLINE (trainer.stop_at: checkpoint, status "paused"); none starts when fewer than MIN_LEFT seconds
# (default 120) are left. PY=python names the interpreter (default python3). BRING=file.tar.gz then packs
# the records, the logs and the paused runs' checkpoints into one file, to continue on another machine
# (unpack it into the same OUT_ROOT and run the same command; never commit the checkpoints).
set -u
out=${1:?usage: DEADLINE=unix_seconds [JOBS=2] [SEEDS=123] bash scripts/gpu_pool.sh OUT_ROOT [CELL...]}; shift
deadline=${DEADLINE:?set DEADLINE to unix seconds, e.g. DEADLINE=\$((\$(date +%s) + 300))}
jobs=${JOBS:-2} min_left=${MIN_LEFT:-120} seeds=${SEEDS:-123} dataset=${DATASET:-cifar10} python=${PY:-python3}
if [ $# -eq 0 ]; then mapfile -t cells < <(grep -v '^#' "$(dirname "$0")/gpu_cells.txt"); else cells=("$@"); fi
mkdir -p "$out/logs"
for seed in ${seeds//,/ }; do
  for cell in "${cells[@]}"; do
    while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n; done
    if [ $((deadline - $(date +%s))) -lt "$min_left" ]; then
      echo "not started (deadline near): $cell seed=$seed"; continue
    fi
    echo "start $(date +%T): $cell seed=$seed"
    # shellcheck disable=SC2086  # a cell is several overrides
    $python -m jal.train "dataset=$dataset" $cell "seed=$seed" logger=none trainer.progress=false "out_root=$out" \
      "trainer.stop_at=$deadline" > "$out/logs/$(echo "$cell seed=$seed" | tr ' =/' '_-_').log" 2>&1 &
  done
done
wait
echo "pool done $(date +%T)"
for f in $(find "$out" -name result.json | sort); do
  $python -c 'import json, sys; r = json.load(open(sys.argv[1]))
print(sys.argv[1] + ":", r["status"], r.get("last_test_acc", "after epoch %s" % r.get("epoch")))' "$f"
done
if [ -n "${BRING:-}" ]; then  # records, logs, and the checkpoints a paused run continues from
  { find "$out" -name result.json -o -name '*.log' -o -name config.yaml
    grep -l '"status": "paused"' $(find "$out" -name result.json) /dev/null | sed -n 's|result.json$|checkpoint.pt|p'
  } | tar czf "$BRING" -T -
fi
