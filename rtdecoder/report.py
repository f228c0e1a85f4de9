"""Printing an emulator report as a table (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from rtdecoder.emulator import Report

METRICS_SHOWN = ("rtdecoder_packets_received_total", "rtdecoder_shots_decoded_total",
                 "rtdecoder_server_latency_seconds_count", "rtdecoder_server_latency_seconds_sum")


def print_report(r: Report, metrics_url: str | None = None, metrics_text: str | None = None,
                 console: Console | None = None) -> None:
    console = console or Console()
    w = "all" if r.window == 0 else "(not said over CUQR)" if r.window < 0 else f"{r.window}/{r.commit}"
    via = ", CUDA-Q's RPC (CUQR)" if r.dialect == "cuqr" else ""
    erased = f", erasure={r.erasure} (heralded)" if r.erasure > 0 else ""
    t = Table(title=f"rtdecoder: {r.circuit}, d={r.distance}, {r.rounds} rounds (incl. final), p={r.p}{erased}, "
                    f"{r.decoder}, window/commit={w}, {r.rounds_per_packet} round(s)/packet, cycle {r.cycle_us} µs"
                    f"{via}", title_justify="left")
    t.add_column("")
    for k in ("p50", "p90", "p99", "p99.9", "max"):
        t.add_column(k, justify="right")
    keys = ("p50", "p90", "p99", "p999", "max")
    t.add_row("round trip, last round → final correction (µs)", *[f"{r.latency_us[k]:.1f}" for k in keys])
    if r.dialect == "cuqr":  # CUQR's replies carry no server stamps
        t.add_row("  of which in the server (µs)", *(["–"] * len(keys)))
    else:
        t.add_row("  of which in the server (µs)", *[f"{r.server_latency_us[k]:.1f}" for k in keys])
    console.print(t)
    s = Table(show_header=False, box=None)
    s.add_column(style="bold")
    s.add_column()
    s.add_row("shots", f"{r.shots}" + (" (interrupted: the shots sent before Ctrl-C)" if r.interrupted else ""))
    s.add_row("throughput", f"{r.throughput_rounds_per_s:,.0f} rounds/s")
    s.add_row("logical error rate", f"{r.logical_error_rate:.2e} ± {r.logical_error_rate_stderr:.1e}")
    ref = "offline PyMatching, same shots" + (" (heralds not used)" if r.erasure > 0 else "")
    s.add_row(ref, f"{r.reference_logical_error_rate:.2e} ± {r.reference_logical_error_rate_stderr:.1e}")
    s.add_row("shots predicted differently from offline", f"{r.disagreements_with_reference}" + (
        " (expected with heralds: the service's decoder erases the heralded edges, the offline reference cannot "
        "see them)" if r.erasure > 0 and r.disagreements_with_reference else ""))
    s.add_row("lost", f"{r.lost}")
    s.add_row("error replies", f"{r.errors}" + (f" {r.error_statuses}" if r.error_statuses else ""))
    if r.faults:
        f = r.faults
        s.add_row("network faults injected", f"{f['shots_affected']} shots affected: {f['affected_poisoned']} poisoned, "
                                             f"{f['affected_lost']} lost, {f['affected_answered']} answered (must be 0); "
                                             f"{f['unaffected_not_answered']} unaffected shots unanswered")
    if metrics_url:
        s.add_row("metrics", metrics_url)
    console.print(s)
    if metrics_text:
        lines = [ln for ln in metrics_text.splitlines() if ln.startswith(METRICS_SHOWN)]
        if lines:
            console.print("[dim]" + "\n".join(lines) + "[/dim]")
