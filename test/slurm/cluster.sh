#!/bin/bash
# A whole Slurm 22.05 test cluster on this one host: slurmctld + two slurmd (n1, n2).
#
#   VSE_PREFIX=/tmp/vse-prefix test/slurm/cluster.sh start   # prints: export SLURM_CONF=...
#   test/slurm/cluster.sh status
#   test/slurm/cluster.sh stop
#
# Environment:
#   VSE_PREFIX        where vse was installed (make install PREFIX=$VSE_PREFIX
#                     SYSCONFDIR=$VSE_PREFIX/etc); default /tmp/vse-prefix
#   VSE_SLURM_DIR     conf, spool, state, logs and pids; default /tmp/vse-slurm
#   VSE_SLURM_USER    non-root job user; default vsetest
#   VSE_SLURM_START_TIMEOUT  seconds to wait for both nodes idle; default 60
#   VSE_SLURM_STOP_WAIT      seconds `stop` lets running/completing jobs end; default 60
#   VSE_SLURMD_DEBUG  SlurmdDebug/SlurmctldDebug level; default debug (prolog output
#                     and errors land in the slurmd logs)
#   VSE_SLURM_CTLD_PORT  SlurmctldPort; default 16817
#   VSE_SLURM_NODE_PORT  port of n1 (n2 has the next one); default 16821
#
# Progress goes to stderr; `start` prints only the export line on stdout, so
#   eval "$(test/slurm/cluster.sh start)"
# works. Jobs are meant to be submitted as the job user:
#   runuser -u vsetest -- env SLURM_CONF=$VSE_SLURM_DIR/slurm.conf sbatch ...
set -euo pipefail

VSE_PREFIX=${VSE_PREFIX:-/tmp/vse-prefix}
VSE_SLURM_DIR=${VSE_SLURM_DIR:-/tmp/vse-slurm}
VSE_SLURM_USER=${VSE_SLURM_USER:-vsetest}
START_TIMEOUT=${VSE_SLURM_START_TIMEOUT:-60}
STOP_WAIT=${VSE_SLURM_STOP_WAIT:-60}
DEBUG_LEVEL=${VSE_SLURMD_DEBUG:-debug}
CTLD_PORT=${VSE_SLURM_CTLD_PORT:-16817}
NODE_BASE_PORT=${VSE_SLURM_NODE_PORT:-16821}
NODE_PORTS=("$NODE_BASE_PORT" "$((NODE_BASE_PORT + 1))")
NODES=(n1 n2)

CONF=$VSE_SLURM_DIR/slurm.conf
RUN=$VSE_SLURM_DIR/run
LOG=$VSE_SLURM_DIR/log
CTLD_PID=$RUN/slurmctld.pid
CTLD_LOG=$LOG/slurmctld.log
export SLURM_CONF=$CONF
# Slurm client output must not depend on the caller's locale or terminal width.
export LC_ALL=C
unset SQUEUE_FORMAT SINFO_FORMAT SLURM_TIME_FORMAT 2>/dev/null || true

say() { printf 'cluster.sh: %s\n' "$*" >&2; }
die() { printf 'cluster.sh: error: %s\n' "$*" >&2; exit 1; }

slurmd_pid_file() { printf '%s/slurmd.%s.pid' "$RUN" "$1"; }
slurmd_log() { printf '%s/slurmd.%s.log' "$LOG" "$1"; }

# process exists and is not a zombie (PID 1 here may be slow to reap orphans)
alive() { # PID
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $st && $st != Z && $st != X ]]
}

# pid from a pid file, only if that process is alive and is the expected daemon
live_pid() { # FILE COMM
    local f=$1 comm=$2 pid
    [[ -r $f ]] || return 1
    pid=$(tr -dc 0-9 <"$f")
    [[ -n $pid ]] || return 1
    [[ -r /proc/$pid/comm ]] || return 1
    [[ $(</proc/"$pid"/comm) == "$comm" ]] || return 1
    alive "$pid" || return 1
    printf '%s' "$pid"
}

# stop daemons given as FILE:COMM pairs: TERM all at once, wait up to 20 s, then KILL
stop_daemons() { # FILE:COMM...
    local spec f comm pid i pids=() left
    for spec in "$@"; do
        f=${spec%:*} comm=${spec##*:}
        if pid=$(live_pid "$f" "$comm"); then
            say "stopping $comm (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    for ((i = 0; i < 200; i++)); do
        left=()
        for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
        ((${#left[@]} == 0)) && break
        sleep 0.1
    done
    if ((${#left[@]} > 0)); then
        say "pid(s) ${left[*]} ignored SIGTERM for 20 s; sending SIGKILL"
        kill -KILL "${left[@]}" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            left=()
            for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
            ((${#left[@]} == 0)) && break
            sleep 0.1
        done
    fi
    for spec in "$@"; do rm -f "${spec%:*}"; done
}

tail_logs() {
    local f
    for f in "$CTLD_LOG" "$(slurmd_log n1)" "$(slurmd_log n2)"; do
        [[ -r $f ]] || continue
        printf '\n---- last lines of %s ----\n' "$f" >&2
        tail -n 25 "$f" >&2 || true
    done
}

ensure_user() {
    if ! id -u "$VSE_SLURM_USER" >/dev/null 2>&1; then
        say "creating job user $VSE_SLURM_USER"
        useradd -m -d "/home/$VSE_SLURM_USER" -s /bin/bash "$VSE_SLURM_USER"
    fi
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

ensure_munge() {
    if munge_works; then return 0; fi
    mkdir -p /run/munge
    chown munge: /run/munge
    chmod 0755 /run/munge
    if [[ ! -s /etc/munge/munge.key ]]; then
        say "creating munge key"
        mkdir -p /etc/munge
        mungekey --create --keyfile=/etc/munge/munge.key
        chown munge: /etc/munge/munge.key
        chmod 0600 /etc/munge/munge.key
    fi
    say "starting munged"
    runuser -u munge -- /usr/sbin/munged
    local i
    for ((i = 0; i < 50; i++)); do
        munge_works && return 0
        sleep 0.1
    done
    die "munged does not answer (munge -n | unmunge fails); see /var/log/munge/munged.log"
}

write_plugstack() {
    local snippets=$VSE_PREFIX/etc/slurm/plugstack.conf.d so=$VSE_PREFIX/lib/slurm/vse.so
    local f=$VSE_SLURM_DIR/plugstack.conf
    if compgen -G "$snippets/*.conf" >/dev/null; then
        printf 'include %s/*.conf\n' "$snippets" >"$f"
    elif [[ -e $so ]]; then
        printf 'required %s vse=%s/bin/vse\n' "$so" "$VSE_PREFIX" >"$f"
    else
        say "no SPANK plugin under $VSE_PREFIX: empty plugstack.conf"
        : >"$f"
    fi
    chmod 0644 "$f"
}

write_conf() {
    local prolog=$VSE_PREFIX/lib/vse/prolog epilog=$VSE_PREFIX/lib/vse/epilog
    [[ -x $prolog ]] || die "prolog $prolog missing or not executable (VSE_PREFIX=$VSE_PREFIX)"
    [[ -x $epilog ]] || die "epilog $epilog missing or not executable (VSE_PREFIX=$VSE_PREFIX)"
    cat >"$CONF" <<EOF
# generated by test/slurm/cluster.sh: a one-host test cluster, do not edit
ClusterName=vsetest
SlurmctldHost=localhost
SlurmctldPort=$CTLD_PORT
SlurmdPort=${NODE_PORTS[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge

StateSaveLocation=$VSE_SLURM_DIR/state
SlurmdSpoolDir=$VSE_SLURM_DIR/spool/%n
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$RUN/slurmd.%n.pid
SlurmctldLogFile=$CTLD_LOG
SlurmdLogFile=$LOG/slurmd.%n.log
SlurmctldDebug=$DEBUG_LEVEL
SlurmdDebug=$DEBUG_LEVEL

ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=nohold_on_prolog_fail,batch_sched_delay=0

Prolog=$prolog
Epilog=$epilog
PrologFlags=Alloc,DeferBatch
PrologEpilogTimeout=180
PlugStackConfig=$VSE_SLURM_DIR/plugstack.conf

ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300

NodeName=n[1-2] NodeHostname=localhost NodeAddr=127.0.0.1 Port=${NODE_PORTS[0]}-${NODE_PORTS[1]} CPUs=2 RealMemory=$REAL_MEMORY State=UNKNOWN
PartitionName=debug Nodes=n[1-2] Default=YES MaxTime=INFINITE State=UP
EOF
    chmod 0644 "$CONF"
}

# RealMemory: 8000 MB, or less when slurmd -C reports less (keep a margin)
pick_memory() {
    local have
    have=$(slurmd -C 2>/dev/null | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -n1)
    if [[ -n $have ]] && ((have < 8000 + 100)); then
        REAL_MEMORY=$((have > 200 ? have - 100 : 100))
    else
        REAL_MEMORY=8000
    fi
}

check_ports_free() {
    local p busy=()
    for p in "$CTLD_PORT" "${NODE_PORTS[@]}"; do
        if ss -Htln "sport = :$p" 2>/dev/null | grep -q .; then busy+=("$p"); fi
    done
    ((${#busy[@]} == 0)) ||
        die "TCP port(s) ${busy[*]} already in use (another Slurm test cluster from a different VSE_SLURM_DIR?): $(ss -Htlnp "sport = :${busy[0]}" 2>/dev/null | head -n1)"
}

any_running() {
    live_pid "$CTLD_PID" slurmctld >/dev/null && return 0
    local n
    for n in "${NODES[@]}"; do
        live_pid "$(slurmd_pid_file "$n")" slurmd >/dev/null && return 0
    done
    return 1
}

node_states() { sinfo -h -N -o '%N %T' 2>/dev/null || true; }

cmd_stop() {
    if live_pid "$CTLD_PID" slurmctld >/dev/null && [[ -r $CONF ]]; then
        scontrol update nodename=n[1-2] state=resume >/dev/null 2>&1 || true
        local jobs
        jobs=$(squeue -h -o '%i' 2>/dev/null | tr '\n' ' ' || true)
        if [[ -n ${jobs// /} ]]; then
            say "cancelling jobs: $jobs"
            # shellcheck disable=SC2086
            scancel $jobs >/dev/null 2>&1 || true
            # let epilogs run (they clean up VMs) before the daemons go away
            local i
            for ((i = 0; i < STOP_WAIT * 2; i++)); do
                [[ -z $(squeue -h -o '%i' 2>/dev/null || true) ]] && break
                sleep 0.5
            done
            jobs=$(squeue -h -o '%i %T' 2>/dev/null | tr '\n' ' ' || true)
            [[ -z ${jobs// /} ]] || say "jobs still present after ${STOP_WAIT}s: $jobs"
        fi
    fi
    stop_daemons "$(slurmd_pid_file n1):slurmd" "$(slurmd_pid_file n2):slurmd" "$CTLD_PID:slurmctld"
}

cmd_start() {
    local t0
    [[ $(id -u) == 0 ]] || die "must run as root"
    if any_running; then
        say "a cluster from $VSE_SLURM_DIR is running: stopping it first"
        cmd_stop
    fi
    t0=$(date +%s%N)
    check_ports_free
    ensure_user
    ensure_munge
    pick_memory

    mkdir -p "$VSE_SLURM_DIR"
    chmod 0755 "$VSE_SLURM_DIR"
    # fresh controller state: no jobs from an earlier run linger
    rm -rf "$VSE_SLURM_DIR/state" "$VSE_SLURM_DIR/spool"
    mkdir -p "$VSE_SLURM_DIR/state" "$RUN" "$LOG" "$VSE_SLURM_DIR/spool/n1" "$VSE_SLURM_DIR/spool/n2"
    chmod 0755 "$RUN" "$LOG"
    chmod 0700 "$VSE_SLURM_DIR/state"
    # keep old logs of the previous run for post-mortems
    local f
    for f in "$LOG"/*.log; do
        [[ -e $f ]] && mv -f "$f" "$f.old"
    done
    write_plugstack
    write_conf
    runuser -u "$VSE_SLURM_USER" -- test -r "$CONF" ||
        die "$VSE_SLURM_USER cannot read $CONF: make every parent of VSE_SLURM_DIR traversable (o+x)"

    say "starting slurmctld"
    slurmctld -f "$CONF" -c -i ||
        { tail_logs; die "slurmctld failed to start"; }
    local n
    for n in "${NODES[@]}"; do
        say "starting slurmd $n"
        slurmd -f "$CONF" -N "$n" ||
            { tail_logs; die "slurmd -N $n failed to start"; }
    done

    local deadline=$((SECONDS + START_TIMEOUT)) states=""
    while :; do
        states=$(node_states | sort -u)
        if [[ $(grep -c -E '^n[12] idle$' <<<"$states" || true) == 2 ]]; then break; fi
        if ((SECONDS >= deadline)); then
            tail_logs
            die "nodes not idle after ${START_TIMEOUT}s; sinfo says: $(tr '\n' ';' <<<"$states")"
        fi
        live_pid "$CTLD_PID" slurmctld >/dev/null || { tail_logs; die "slurmctld died"; }
        sleep 0.5
    done
    say "cluster up in $((($(date +%s%N) - t0) / 1000000)) ms: $(tr '\n' ' ' <<<"$states")"
    printf 'export SLURM_CONF=%s\n' "$CONF"
}

cmd_status() {
    if ! live_pid "$CTLD_PID" slurmctld >/dev/null; then
        echo "no slurmctld running for $VSE_SLURM_DIR"
        return 0
    fi
    sinfo -N -l
    squeue
}

case ${1:-} in
start) cmd_start ;;
stop) cmd_stop ;;
status) cmd_status ;;
*)
    echo "usage: VSE_PREFIX=... [VSE_SLURM_DIR=...] $0 start|stop|status" >&2
    exit 2
    ;;
esac
