"""``rtdecoder doctor``: what this host offers a real-time decoder, and what would cost latency.

Each check reads the kernel's own files (sysfs, procfs) or asks the library concerned; none
needs root or changes anything. Every finding is one line: the setting, what was found, and for
anything that costs latency a line of advice pointing at ``deploy/TUNING.md`` and
``deploy/tune-host.sh``. The last lines say what ``rtdecoder serve`` would choose here
(``--transport auto``, ``--backend auto``) and why.
"""

from __future__ import annotations

import os
import resource
import shutil
from dataclasses import dataclass
from pathlib import Path

from rtdecoder.config import parse_cpu_list

OK, WARN, INFO = "ok", "warn", "info"


@dataclass
class Finding:
    area: str
    status: str
    found: str
    advice: str = ""


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return None


def _cpu_list(text: str | None) -> list[int]:
    """A sysfs CPU list (``"2-5,8"``; empty or absent: none)."""
    return list(parse_cpu_list(text or ""))


def check_rdma() -> list[Finding]:
    from rtdecoder.transport import roce

    st = roce.probe()
    out = []
    if not st.ports:
        out.append(Finding("rdma devices", WARN, "none (/sys/class/infiniband is empty or absent)",
                           "for RoCE: a NIC with RDMA (ConnectX, E810, BCM57xxx) and its driver, or rdma_rxe for testing"))
    for p in st.ports:
        good = p.active_roce
        out.append(Finding(f"rdma {p.device} port {p.port}", OK if good else WARN,
                           f"{p.state}, link layer {p.link_layer}, GIDs {', '.join(p.gids) or 'none'}",
                           "" if good else "bring the port up (cable, `ip link set <dev> up`, `rdma link`)"))
    out.append(Finding("pyverbs", OK if st.pyverbs.startswith("importable") else WARN, st.pyverbs,
                       "" if st.pyverbs.startswith("importable") else
                       "install python3-pyverbs (Debian) or the pyverbs sdist built against rdma-core"))
    out.append(Finding("libibverbs", OK if st.libibverbs else WARN, st.libibverbs or "not found",
                       "" if st.libibverbs else "install rdma-core (ibverbs-providers, libibverbs1)"))
    return out


def check_gpu() -> list[Finding]:
    from rtdecoder import gpu

    st = gpu.probe()
    out = [Finding("gpu", OK if st.usable and not st.simulator else (INFO if st.simulator else WARN),
                   st.reason if not st.usable else f"{st.device}: {st.reason}",
                   "" if st.usable else "the GPU backend needs the NVIDIA driver, a device and numba-cuda "
                                        "(pip install 'rtdecoder[gpu]')")]
    drv = _read("/proc/driver/nvidia/version")
    out.append(Finding("nvidia driver", OK if drv else INFO, drv.splitlines()[0] if drv else "not loaded"))
    smi = shutil.which("nvidia-smi")
    out.append(Finding("nvidia-smi", OK if smi else INFO, smi or "not on PATH"))
    return out


def check_cpus() -> list[Finding]:
    n = os.cpu_count() or 1
    allowed = sorted(os.sched_getaffinity(0))
    isolated = _cpu_list(_read("/sys/devices/system/cpu/isolated"))
    nohz = _cpu_list(_read("/sys/devices/system/cpu/nohz_full"))
    out = [Finding("cpus", INFO, f"{n} online, this process may use {allowed}")]
    out.append(Finding("isolated cores", OK if isolated else WARN, str(isolated) if isolated else "none",
                       "" if isolated else "isolate the worker cores (isolcpus=, nohz_full=, rcu_nocbs= on the kernel "
                                           "command line) and pin workers there with --cpus; see deploy/TUNING.md"))
    out.append(Finding("nohz_full", OK if nohz else INFO, str(nohz) if nohz else "none"))
    gov = _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    out.append(Finding("cpu frequency governor", OK if gov in (None, "performance") else WARN,
                       gov or "not exposed (fixed or managed by the hypervisor)",
                       "" if gov in (None, "performance") else "set the performance governor (deploy/tune-host.sh)"))
    return out


def check_kernel() -> list[Finding]:
    out = []
    br, bp = _read("/proc/sys/net/core/busy_read"), _read("/proc/sys/net/core/busy_poll")
    on = br not in (None, "0") or bp not in (None, "0")
    out.append(Finding("busy poll sysctls", OK if on else WARN, f"net.core.busy_read={br}, net.core.busy_poll={bp}",
                       "" if on else "net.core.busy_read=50 and busy_poll=50 let --busy-poll-us work without "
                                     "CAP_NET_ADMIN (deploy/tune-host.sh)"))
    meminfo = _read("/proc/meminfo") or ""
    hp = {k.strip(): v.split()[0] for k, v in (ln.split(":", 1) for ln in meminfo.splitlines() if ":" in ln)}
    total = int(hp.get("HugePages_Total", "0"))
    out.append(Finding("hugepages", OK if total else INFO,
                       f"{total} of {hp.get('Hugepagesize', '?')} kB, {hp.get('HugePages_Free', '?')} free",
                       "" if total else "optional: reserve hugepages for the rings and the AF_XDP UMEM (vm.nr_hugepages)"))
    thp = _read("/sys/kernel/mm/transparent_hugepage/enabled")
    out.append(Finding("transparent hugepages", INFO, thp or "not exposed"))
    cs = _read("/sys/devices/system/clocksource/clocksource0/current_clocksource")
    out.append(Finding("clock source", OK if cs == "tsc" else WARN, cs or "unknown",
                       "" if cs == "tsc" else "use the tsc clocksource (clocksource=tsc tsc=reliable): other clock "
                                              "sources make every timestamp a slow read"))
    lat = Path("/dev/cpu_dma_latency")
    if lat.exists():
        w = os.access(lat, os.W_OK)
        out.append(Finding("/dev/cpu_dma_latency", OK if w else WARN, "present, " + ("writable" if w else "not writable"),
                           "" if w else "run the service with permission to hold /dev/cpu_dma_latency at 0 (deploy/"
                                        "rtdecoder.service does), so cores never enter deep C-states"))
    else:
        out.append(Finding("/dev/cpu_dma_latency", INFO, "absent (no PM QoS device: a VM or a kernel without it)"))
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    fmt = lambda v: "unlimited" if v == resource.RLIM_INFINITY else f"{v // 1024} KiB"  # noqa: E731
    big = soft == resource.RLIM_INFINITY or soft >= 64 << 20
    out.append(Finding("locked memory limit", OK if big else WARN, f"soft {fmt(soft)}, hard {fmt(hard)}",
                       "" if big else "raise RLIMIT_MEMLOCK (LimitMEMLOCK=infinity in the unit) so rings and RDMA "
                                      "regions can be locked"))
    return out


def check_irqs() -> list[Finding]:
    text = _read("/proc/interrupts")
    if text is None:
        return [Finding("nic interrupts", INFO, "/proc/interrupts not readable")]
    nic = [ln for ln in text.splitlines()[1:] if any(k in ln for k in ("mlx5", "eth", "ens", "enp", "ice", "bnxt"))]
    if not nic:
        return [Finding("nic interrupts", INFO, "no NIC queue interrupts listed (virtual or no NIC)")]
    isolated = set(_cpu_list(_read("/sys/devices/system/cpu/isolated")))
    out = []
    for ln in nic[:8]:
        irq = ln.split(":")[0].strip()
        aff = _read(f"/proc/irq/{irq}/smp_affinity_list")
        name = ln.split()[-1]
        hit = isolated & set(_cpu_list(aff)) if aff else set()
        out.append(Finding(f"irq {irq} ({name})", WARN if hit else OK, f"affinity {aff}",
                           f"move it off the isolated cores {sorted(hit)} (deploy/tune-host.sh)" if hit else ""))
    return out


def check_xdp() -> list[Finding]:
    """Which XDP attach modes and AF_XDP bind modes each interface's driver allows (the kernel's
    netdev netlink family: ``rtdecoder.transport.netdev``), for ``--transport xdp``."""
    from rtdecoder.transport.netdev import xdp_features

    try:
        feats = xdp_features()
    except OSError as e:
        return [Finding("xdp features", INFO, f"not reported here: {e.strerror or e}",
                        "AF_XDP still works in copy mode on any interface; Linux 6.3 and later say which "
                        "interfaces allow native XDP and zero-copy")]
    out = []
    for f in feats:
        if f.name == "lo":
            continue
        out.append(Finding(f"xdp {f.name}", OK if f.zerocopy else INFO, f.describe(),
                           "" if f.zerocopy else "--xdp-mode copy (zero-copy needs a driver that declares it: "
                                                 "mlx5, ice, i40e, ixgbe, virtio_net on recent kernels)"))
    return out or [Finding("xdp features", INFO, "no interface but loopback")]


def check_plugins() -> list[Finding]:
    """Every registered decoder and transport (built in and plug-in), and whether each
    transport can run here."""
    from rtdecoder import decoders, transport
    from rtdecoder.plugins import load_plugins

    plugins = load_plugins()
    out = [Finding("plug-in modules", INFO, ", ".join(plugins) if plugins else "none (RTDECODER_PLUGINS, entry "
                   "points of group rtdecoder.plugins)")]
    for d in decoders.specs():
        out.append(Finding(f"decoder {d.name}", INFO, f"wire id {d.wire_id}, called {d.call}"
                           + (", GPU backend" if d.gpu else "") + (f": {d.summary}" if d.summary else "")))
    for name in transport.names():
        spec = transport.get(name)
        st = spec.probe()
        out.append(Finding(f"transport {name}", OK if st.usable else INFO, st.reason,
                           "" if spec.remote else "in-process only"))
    return out


def choices() -> list[Finding]:
    from rtdecoder import transport
    from rtdecoder.gpu import choose_backend

    from rtdecoder.config import ServerConfig, StreamConfig

    try:  # with the default settings (no AF_XDP interface, for one)
        t, why_t = transport.choose("auto", ServerConfig(streams=(StreamConfig(),)))
        chosen = f"{t.name}: {why_t}"
    except ValueError as e:
        chosen = str(e)
    b, why_b = choose_backend("auto")
    return [Finding("serve --transport auto", INFO, chosen),
            Finding("serve --backend auto", INFO, f"{b}: {why_b}")]


def run_checks() -> list[Finding]:
    out: list[Finding] = []
    for check in (check_rdma, check_gpu, check_cpus, check_kernel, check_irqs, check_xdp, check_plugins, choices):
        try:
            out += check()
        except Exception as e:  # noqa: BLE001 - a check that cannot run says so; the others go on
            out.append(Finding(check.__name__.removeprefix("check_"), WARN, f"check failed: {e}"))
    return out


def print_report(findings: list[Finding], console=None) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console(width=None if os.isatty(1) else 150)
    t = Table(title="rtdecoder doctor", show_lines=False)
    for col in ("", "setting", "found", "advice"):
        t.add_column(col, overflow="fold")
    mark = {OK: "[green]ok[/]", WARN: "[yellow]![/]", INFO: "[dim]·[/]"}
    for f in findings:
        t.add_row(mark[f.status], escape(f.area), escape(f.found), escape(f.advice))
    console.print(t)
    n = sum(f.status == WARN for f in findings)
    console.print(f"{n} setting(s) cost latency or capability here; deploy/TUNING.md explains each, "
                  "deploy/tune-host.sh applies the host-side ones." if n else "nothing to tune.")
