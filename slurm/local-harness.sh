#!/usr/bin/env bash
# local-harness.sh — a real single-host Slurm for tests: munged, slurmctld and slurmd
# with a generated slurm.conf, every file (state, spool, logs, pid files, munge socket)
# under one temporary directory, on free ports, so it runs beside anything else on the
# machine (another harness, a system Slurm) without touching it.
#
#   STATE=$(slurm/local-harness.sh start)    start, wait for the node to be idle,
#                                            print the state directory
#   export SLURM_CONF=$STATE/slurm.conf      then sbatch/squeue/sinfo as usual
#   slurm/local-harness.sh stop "$STATE"     stop the daemons by their pid files
#                                            and remove the directory
# Needs root (slurmd runs jobs as any user) and Debian's slurm-wlm and munge.
set -euo pipefail

die() { echo "local-harness: $*" >&2; exit 1; }

free_port() {
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 20000))
        ss -Hltn "sport = :$p" 2>/dev/null | grep -q . || { echo $p; return; }
    done
    die "no free TCP port found"
}

stop() {
    local dir=$1
    [ -f "$dir/slurm.conf" ] || die "$dir: not a harness state directory (no slurm.conf)"
    for f in slurmd.pid slurmctld.pid munged.pid; do
        [ -s "$dir/$f" ] || continue
        local pid; pid=$(cat "$dir/$f")
        kill "$pid" 2>/dev/null || continue
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2>/dev/null || true
    done
    rm -rf "$dir"
}

start() {
    [ "$(id -u)" = 0 ] || die "needs root (slurmd and munged), expected to run as root"
    for b in munged slurmctld slurmd sbatch sinfo; do
        command -v $b >/dev/null || [ -x /usr/sbin/$b ] || die "$b not found (apt-get install slurm-wlm munge)"
    done
    local dir host cpus mem
    dir=$(mktemp -d /tmp/flatq-slurm.XXXXXX)
    chmod 755 "$dir"
    host=$(hostname -s)
    cpus=$(nproc)
    mem=$(awk '/MemTotal/ {print int($2/1024) - 512}' /proc/meminfo)
    mkdir -p "$dir/munge" "$dir/spool" "$dir/state"
    # munged refuses a key or socket directory others can write; the munge user owns both.
    cp /etc/munge/munge.key "$dir/munge/munge.key"
    chown -R munge:munge "$dir/munge"
    chmod 755 "$dir/munge"
    chmod 400 "$dir/munge/munge.key"
    runuser -u munge -- /usr/sbin/munged --socket="$dir/munge/munge.socket" \
        --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
        --log-file="$dir/munge/munged.log" --seed-file="$dir/munge/munged.seed" ||
        { rm -rf "$dir"; die "munged did not start"; }
    cp "$dir/munge/munged.pid" "$dir/munged.pid"
    cat >"$dir/slurm.conf" <<CONF
ClusterName=flatqtest
SlurmctldHost=$host
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SwitchType=switch/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
    export SLURM_CONF="$dir/slurm.conf"
    /usr/sbin/slurmctld -f "$SLURM_CONF" || { stop "$dir"; die "slurmctld did not start (see $dir/slurmctld.log)"; }
    /usr/sbin/slurmd -f "$SLURM_CONF" || { stop "$dir"; die "slurmd did not start"; }
    local state=""
    for _ in $(seq 1 150); do
        state=$(sinfo -h -o %T 2>/dev/null | head -1 || true)
        [ "$state" = idle ] && break
        sleep 0.2
    done
    if [ "$state" != idle ]; then
        tail -5 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
        stop "$dir"
        die "node never became idle (last state '${state:-none}')"
    fi
    echo "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) [ $# -eq 2 ] || die "usage: local-harness.sh stop STATE_DIR"; stop "$2" ;;
    *) die "usage: local-harness.sh start | stop STATE_DIR" ;;
esac
