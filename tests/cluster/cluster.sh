#!/bin/sh
# A real single-node SLURM cluster for the tests: `cluster.sh up`, `cluster.sh down`, `cluster.sh env`.
#
# Idempotent: `up` starts only the daemons that are not running (munged, mariadbd, slurmdbd,
# slurmctld, slurmd) and waits until a job can be submitted; `down` stops, by their pid files,
# only the daemons that `up` started, after cancelling the cluster's jobs. Accounting
# (slurmdbd on MariaDB) is there because submitit reads job states with sacct: without it, a
# cancelled job's result is never known. The node has two partitions, cpu-a (the default)
# and cpu-b, so that a sweep "across GPU kinds" can be tried on one machine.
#
# Needs root and the Debian packages slurmctld slurmd slurm-client slurmdbd munge
# mariadb-server (`make slurm` installs them). The configuration lives in $JACBENCH_SLURM_DIR
# (default /var/tmp/jacbench-slurm), never in the system's /etc/slurm: clients find it through
# SLURM_CONF, which `cluster.sh env` prints.
set -eu

DIR=${JACBENCH_SLURM_DIR:-/var/tmp/jacbench-slurm}
CONF=$DIR/slurm.conf
NODE=$(hostname -s)
export SLURM_CONF="$CONF"

# A pid file's process is alive and no zombie.
alive() {
    [ -s "$1" ] || return 1
    pid=$(cat "$1")
    [ -d "/proc/$pid" ] || return 1
    state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null)
    [ -n "$state" ] && [ "$state" != Z ]
}

wait_for() {  # wait_for SECONDS COMMAND...: until the command succeeds
    limit=$1; shift
    i=0
    while ! "$@" >/dev/null 2>&1; do
        i=$((i + 1))
        [ "$i" -le $((limit * 10)) ] || { echo "cluster: timed out waiting for: $*" >&2; return 1; }
        sleep 0.1
    done
}

configure() {
    mkdir -p "$DIR/ctld" "$DIR/spool" /run/munge /run/mysqld
    chown munge:munge /run/munge
    chown mysql:mysql /run/mysqld
    cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p')
    memory=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
    cat >"$CONF" <<EOF
ClusterName=jacbench
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/ctld
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MinJobAge=2
KillWait=5
ReturnToService=2
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$((memory * 9 / 10)) State=UNKNOWN
PartitionName=cpu-a Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=cpu-b Nodes=$NODE MaxTime=INFINITE State=UP
EOF
    cat >"$DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=$NODE
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$DIR/slurmdbd.pid
LogFile=$DIR/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=jacbench_slurm_acct
EOF
    chmod 600 "$DIR/slurmdbd.conf"
}

# start NAME PIDFILE COMMAND...: run the daemon unless its pid file names a live process;
# remember that we started it, so that `down` stops it and nothing else.
start() {
    name=$1 pidfile=$2; shift 2
    if alive "$pidfile"; then return 0; fi
    "$@"
    wait_for 20 alive "$pidfile"
    remember "$name" "$pidfile"
}

remember() { grep -qx "$1 $2" "$DIR/started" 2>/dev/null || echo "$1 $2" >>"$DIR/started"; }

up() {
    for tool in slurmctld slurmd slurmdbd munged mariadbd sbatch sacct; do
        command -v "$tool" >/dev/null 2>&1 || { echo "cluster: $tool is not installed (make slurm)" >&2; exit 3; }
    done
    configure
    start munged /run/munge/munged.pid runuser -u munge -- munged
    if ! alive /run/mysqld/mysqld.pid; then
        runuser -u mysql -- mariadbd --pid-file=/run/mysqld/mysqld.pid --skip-networking >"$DIR/mariadb.log" 2>&1 &
        wait_for 30 alive /run/mysqld/mysqld.pid
        wait_for 30 test -S /run/mysqld/mysqld.sock
        remember mariadbd /run/mysqld/mysqld.pid
    fi
    SLURM_CONF="$DIR/slurmdbd.conf" start slurmdbd "$DIR/slurmdbd.pid" slurmdbd
    wait_for 30 sacctmgr -n list cluster
    sacctmgr -i -n add cluster jacbench >/dev/null 2>&1 || true
    start slurmctld "$DIR/slurmctld.pid" slurmctld -f "$CONF"
    start slurmd "$DIR/slurmd.pid" slurmd -f "$CONF"
    wait_for 30 sh -c "sinfo -h -N -o %T | grep -qE '^(idle|mixed|allocated)'"
}

down() {
    [ -f "$DIR/started" ] || return 0
    if alive "$DIR/slurmctld.pid"; then
        scancel --full --quiet --partition cpu-a,cpu-b 2>/dev/null || true
        wait_for 15 sh -c "[ -z \"\$(squeue -h -o %i)\" ]" || true
    fi
    # the reverse order of starting
    tac "$DIR/started" | while read -r name pidfile; do
        if alive "$pidfile"; then
            pid=$(cat "$pidfile")
            kill "$pid" 2>/dev/null || true
            wait_for 15 sh -c "! [ -d /proc/$pid ] || grep -q '^State:[[:space:]]*Z' /proc/$pid/status" \
                || kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    rm -f "$DIR/started"
}

case "${1:-}" in
    up) up ;;
    down) down ;;
    env) echo "export SLURM_CONF=$CONF" ;;
    *) echo "usage: $0 up|down|env" >&2; exit 2 ;;
esac
