#!/usr/bin/env bash
# Run a command as if on a weaker device: fewer cores (taskset) and/or a CPU quota (cgroup).
#
#   bench/emulate-weak-device.sh [--cores N] [--quota F] [--period-us P] -- COMMAND [ARGS...]
#
#   --cores N   pin the command to the first N cores this shell may use (taskset)
#   --quota F   cap the command at F cores' worth of CPU time (e.g. 0.3), with a cgroup:
#               v2: <cgroup>/cpu.max = "F*P P"; v1: cpu.cfs_quota_us / cpu.cfs_period_us.
#               Needs a writable cgroup tree (root in a VM or container that delegates it);
#               without one the script says so and runs with taskset alone.
#
# Example: what would the daemon choose on a single slow core?
#   bench/emulate-weak-device.sh --cores 1 --quota 0.35 -- \
#       .venv/bin/moodgate calibrate --state-dir /tmp/weak
#
# Honest limits: taskset removes cores and a quota removes time, but caches, memory bandwidth
# and the instruction set stay this machine's; a quota also makes latency bursty (the task
# runs flat out, then waits for the next period), which is what a p95 budget is meant to see.
# The calibration identity records cores and quota, so the emulated table never overwrites
# the real one's validity: the next normal start recalibrates.
set -euo pipefail

cores="" quota="" period=100000
while [[ $# -gt 0 ]]; do
    case "$1" in
        --cores) cores="$2"; shift 2 ;;
        --quota) quota="$2"; shift 2 ;;
        --period-us) period="$2"; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
        *) echo "emulate-weak-device: unknown option $1" >&2; exit 2 ;;
    esac
done
[[ $# -gt 0 ]] || { echo "emulate-weak-device: no command given (use -- COMMAND)" >&2; exit 2; }

prefix=()
if [[ -n "$cores" ]]; then
    allowed=$(python3 -c 'import os; print(",".join(map(str, sorted(os.sched_getaffinity(0)))))')
    list=$(echo "$allowed" | cut -d, -f1-"$cores")
    prefix=(taskset -c "$list")
    echo "emulate-weak-device: cores $list" >&2
fi

group="" parent_procs=""
cleanup() {
    if [[ -n "$group" && -d "$group" ]]; then
        echo $$ > "$parent_procs" 2>/dev/null || true
        rmdir "$group" 2>/dev/null || true
    fi
}
trap cleanup EXIT

if [[ -n "$quota" ]]; then
    quota_us=$(python3 -c "print(max(1000, int(float('$quota') * $period)))")
    if python3 -c "import sys; sys.exit(0 if float('$quota') * $period < 1000 else 1)"; then
        echo "emulate-weak-device: warning: a quota under 1 ms per period is raised to 1 ms" \
             "(the kernel's minimum): $quota cores needs --period-us $(python3 -c "import math; print(math.ceil(1000 / float('$quota')))") or more" >&2
    fi
    if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then  # cgroup v2
        self=$(awk -F: '$1 == "0" {print $3}' /proc/self/cgroup)
        base="/sys/fs/cgroup${self%/}"
        candidate="$base/moodgate-weak-$$"
        if mkdir "$candidate" 2>/dev/null && echo "$quota_us $period" > "$candidate/cpu.max" \
                && echo $$ > "$candidate/cgroup.procs"; then
            group="$candidate" parent_procs="$base/cgroup.procs"
        else
            rmdir "$candidate" 2>/dev/null || true
        fi
    else  # cgroup v1: the cpu controller's own hierarchy
        root=/sys/fs/cgroup/cpu
        self=$(awk -F: '$2 ~ /(^|,)cpu(,|$)/ {print $3}' /proc/self/cgroup)
        base="$root${self%/}"
        candidate="$base/moodgate-weak-$$"
        if mkdir "$candidate" 2>/dev/null \
                && echo "$period" > "$candidate/cpu.cfs_period_us" \
                && echo "$quota_us" > "$candidate/cpu.cfs_quota_us" \
                && echo $$ > "$candidate/cgroup.procs"; then
            group="$candidate" parent_procs="$base/cgroup.procs"
        else
            rmdir "$candidate" 2>/dev/null || true
        fi
    fi
    if [[ -n "$group" ]]; then
        echo "emulate-weak-device: CPU quota $quota cores ($quota_us/$period us) in $group" >&2
    else
        echo "emulate-weak-device: no writable cgroup here; running with taskset only" >&2
    fi
fi

# Not exec: the shell stays to move itself out and remove the group afterwards.
status=0
"${prefix[@]}" "$@" || status=$?
exit "$status"
