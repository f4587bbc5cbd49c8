#!/bin/bash
# Stop the daemons scripts/slurm/start.sh started, by the pids in their pid files (nothing by name).
STATE=/tmp/slurm/state
for d in slurmd slurmctld slurmdbd mariadb munged; do
  f=$STATE/$d.pid; [ -s "$f" ] || continue
  pid=$(cat "$f")
  if kill "$pid" 2>/dev/null; then
    for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "stopped $d ($pid)"
  fi
  rm -f "$f"
done
