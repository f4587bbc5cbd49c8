#!/bin/bash
# Start a single-node SLURM cluster on this machine (munged, MariaDB, slurmdbd, slurmctld, slurmd), no systemd:
# what the `slurm` tests (tests/test_slurm.py, `make test-slurm`) submit to. Run as root.
# Usage: bash scripts/slurm/start.sh [--install]
#   --install: apt-get update, then install Debian's packages (slurmctld slurmd slurm-client munge slurmdbd
#              mariadb-server); about 40 s on a 2-core machine, a restart with them installed about 4 s
# Pids go to /tmp/slurm/state/*.pid, logs beside them; scripts/slurm/stop.sh stops the daemons by those pids.
# A cluster already up (sinfo answers) is left as it is.
set -euo pipefail
KIT=$(cd "$(dirname "$0")" && pwd)
STATE=/tmp/slurm/state
if [ "${1:-}" = --install ]; then
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge \
    slurmdbd mariadb-server
fi
if [ -s "$STATE/slurmctld.pid" ] && kill -0 "$(cat "$STATE/slurmctld.pid")" 2>/dev/null && sinfo >/dev/null 2>&1; then
  echo "SLURM is up already (scripts/slurm/stop.sh stops it)"; sinfo; exit 0
fi
mkdir -p "$STATE/ctld" "$STATE/slurmd" /run/munge /var/log/munge /var/lib/munge /etc/slurm
install -m 644 "$KIT/slurm.conf" /etc/slurm/slurm.conf
install -m 600 "$KIT/slurmdbd.conf" /etc/slurm/slurmdbd.conf
# munge: Debian's postinst makes /etc/munge/munge.key; make one if it is missing.
[ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge
chmod 700 /etc/munge; chmod 400 /etc/munge/munge.key; chmod 755 /run/munge
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  for i in $(seq 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
fi
cp /run/munge/munged.pid "$STATE/munged.pid"   # munged writes its own pid file
# accounting: sacct through slurmdbd and MariaDB (root over its unix socket)
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
if ! mariadb -e 'select 1' >/dev/null 2>&1; then
  runuser -u mysql -- /usr/sbin/mariadbd --datadir=/var/lib/mysql --socket=/run/mysqld/mysqld.sock \
    --pid-file=/run/mysqld/mariadb.pid --skip-networking --innodb-buffer-pool-size=64M \
    --log-error=/run/mysqld/mariadb.log </dev/null >/dev/null 2>&1 &
  for i in $(seq 150); do mariadb -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
fi
cp /run/mysqld/mariadb.pid "$STATE/mariadb.pid"   # written by its own user (mysql), copied as munged's
/usr/sbin/slurmdbd
for i in $(seq 150); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.2; done
# -c: clean start (forget jobs of an earlier cluster); -i: ignore state errors
/usr/sbin/slurmctld -c -i
/usr/sbin/slurmd
for i in $(seq 150); do
  sinfo -h -o '%T' 2>/dev/null | grep -qx idle && break; sleep 0.2
done
sinfo -h -o '%T' 2>/dev/null | grep -qx idle || { echo "error: SLURM did not come up: see $STATE/*.log" >&2; exit 1; }
sinfo
