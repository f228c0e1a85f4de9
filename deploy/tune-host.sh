#!/usr/bin/env bash
# Host tuning for rtdecoder (deploy/TUNING.md explains every step).
#
#   deploy/tune-host.sh --cpus 2,3                 # print what would change (the default: a dry run)
#   sudo deploy/tune-host.sh --cpus 2,3 --apply    # change it (runtime settings; lost at reboot)
#   sudo deploy/tune-host.sh --cpus 2,3 --nic enp1s0f0 --hugepages 512 --apply
#
# --cpus     the worker cores (the ones given to `rtdecoder serve --cpus`): interrupts are moved off
#            them and the kernel command line for isolating them is printed
# --nic      the NIC facing the controller: interrupt coalescing off (UDP path), its IRQs off the cores
# --hugepages N   reserve N hugepages (optional)
set -euo pipefail

CPUS="" NIC="" HUGEPAGES="" APPLY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cpus) CPUS="$2"; shift 2 ;;
        --nic) NIC="$2"; shift 2 ;;
        --hugepages) HUGEPAGES="$2"; shift 2 ;;
        --apply) APPLY=1; shift ;;
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
        *) echo "tune-host.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -n "$CPUS" ] || { echo "tune-host.sh: --cpus is required (the worker cores, e.g. 2,3)" >&2; exit 2; }
if [ "$APPLY" = 1 ] && [ "$(id -u)" != 0 ]; then
    echo "tune-host.sh: --apply needs root" >&2; exit 1
fi

run() {  # print the command; run it only with --apply
    echo "+ $*"
    if [ "$APPLY" = 1 ]; then "$@" || echo "  (failed: $?; continuing)"; fi
}

expand() {  # "2,4-6" -> "2 4 5 6"
    local out="" part
    for part in ${1//,/ }; do
        if [[ "$part" == *-* ]]; then out="$out $(seq "${part%-*}" "${part#*-}" | tr '\n' ' ')"; else out="$out $part"; fi
    done
    echo $out
}

NCPU=$(nproc --all)
WORKERS=" $(expand "$CPUS") "
HOUSE=""
for ((c = 0; c < NCPU; c++)); do
    [[ "$WORKERS" == *" $c "* ]] || HOUSE="${HOUSE:+$HOUSE,}$c"
done
[ -n "$HOUSE" ] || { echo "tune-host.sh: leave at least one CPU outside --cpus for the kernel and the main thread" >&2; exit 2; }
echo "# worker cores: $CPUS; housekeeping cores: $HOUSE"

echo "# 1. busy polling: let SO_BUSY_POLL (rtdecoder --busy-poll-us) work without CAP_NET_ADMIN"
run sysctl -w net.core.busy_read=50 net.core.busy_poll=50

echo "# 2. CPU frequency: the performance governor (no ramp-up latency)"
for g in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
    [ -e "$g" ] && run sh -c "echo performance > $g"
done

echo "# 3. interrupts: every movable IRQ onto the housekeeping cores"
for d in /proc/irq/[0-9]*; do
    [ -e "$d/smp_affinity_list" ] || continue
    run sh -c "echo $HOUSE > $d/smp_affinity_list 2>/dev/null || true"
done
if command -v systemctl >/dev/null && systemctl is-active --quiet irqbalance 2>/dev/null; then
    echo "# irqbalance is running and would undo step 3"
    run systemctl stop irqbalance
fi

if [ -n "$NIC" ]; then
    echo "# 4. $NIC: no interrupt coalescing (each datagram interrupts at once; the UDP path)"
    run ethtool -C "$NIC" adaptive-rx off adaptive-tx off rx-usecs 0 rx-frames 1
fi

if [ -n "$HUGEPAGES" ]; then
    echo "# 5. $HUGEPAGES hugepages"
    run sysctl -w vm.nr_hugepages="$HUGEPAGES"
fi

echo "# 6. deep C-states: rtdecoder serve holds /dev/cpu_dma_latency at 0 while it runs; nothing to do here"
echo "# 7. isolating the worker cores needs the kernel command line (then reboot):"
echo "#      isolcpus=managed_irq,domain,$CPUS nohz_full=$CPUS rcu_nocbs=$CPUS irqaffinity=$HOUSE"
echo "#      clocksource=tsc tsc=reliable processor.max_cstate=1 intel_idle.max_cstate=0"
echo "# 8. locked memory: LimitMEMLOCK=infinity (deploy/rtdecoder.service) for the rings and RDMA regions"
[ "$APPLY" = 1 ] || echo "# dry run: nothing changed (add --apply as root)"
