"""``rtdecoder replay DIR``: play a recording (``rtdecoder serve --record DIR``,
``rtdecoder.record``) back against a service and compare its CORRECTIONs with the recorded ones,
after checking that the service is the one recorded (HELLO and DESCRIBE against ``meta.json``).
A tool: it speaks to the service as a controller does (``rtdecoder.emulator.Controller``)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from rtdecoder.kernels import record as KR
from rtdecoder.record import read_records


def _correction_key(data: bytes):
    """``(stream, shot, first round, rounds, flags)`` and the flips (the payload past its two
    time stamps) of a CORRECTION, else None."""
    from rtdecoder import protocol as P

    try:
        h = P.decode_header(data)
    except ValueError:
        return None
    if h.magic != P.MAGIC or h.msg_type != P.MsgType.CORRECTION:
        return None
    return (h.stream_id, h.shot_id, h.first_round, h.num_rounds, h.flags), data[P.HEADER_LEN + 16:]


def _syndrome_header(data: bytes):
    """The header of a SYNDROME of rtdecoder's protocol, else None."""
    from rtdecoder import protocol as P

    try:
        h = P.decode_header(data)
    except ValueError:
        return None
    return h if h.magic == P.MAGIC and h.msg_type == P.MsgType.SYNDROME else None


@dataclass
class ReplayReport:
    datagrams: int
    corrections_recorded: int
    reproduced: int
    differ: list = field(default_factory=list)
    missing: int = 0
    seconds: float = 0.0
    warnings: list = field(default_factory=list)
    """How the service differs from the one that was recorded (``check_service``)."""
    stopped: str = ""
    """Why the replay stopped before its end ("" when it went to the end)."""

    @property
    def fraction(self) -> float:
        return self.reproduced / self.corrections_recorded if self.corrections_recorded else 1.0

    def line(self) -> str:
        text = (f"replayed {self.datagrams:,} datagrams in {self.seconds:.2f} s: {self.reproduced:,} of "
                f"{self.corrections_recorded:,} recorded corrections reproduced ({100 * self.fraction:.2f} %), "
                f"{len(self.differ)} differ, {self.missing} missing")
        if self.warnings:
            text += f"; the service differs from the recorded one in {len(self.warnings)} way(s) (above)"
        if self.stopped:
            text += f"; stopped early: {self.stopped}"
        return text


class ReplayError(RuntimeError):
    """The replay cannot start: nothing answers, or a recorded stream is not served."""


def check_service(meta: dict, streams, host: str, port: int, timeout_s: float = 1.0) -> list[str]:
    """HELLO and DESCRIBE each of ``streams`` at ``host:port`` and compare what it answers with
    the recording's ``meta["stream_info"]`` (decoder, window, commit, rounds, detectors, input,
    DEM fingerprint): one warning per difference.

    Raises:
        ReplayError: a stream gives no HELLO_REPLY within three tries of ``timeout_s`` (nothing
            listens there, or the service does not serve that stream).
    """
    from rtdecoder import decoders
    from rtdecoder import protocol as P
    from rtdecoder.emulator import Controller, EmulatorError

    recorded = meta.get("stream_info")
    warnings = []
    if recorded is None:
        warnings.append("the recording has no stream_info (made by an older rtdecoder): the service's streams "
                        "are not checked against the recorded ones")
    for sid in sorted(streams):
        c = Controller.connect("udp", host, port, sid)
        try:
            try:
                info = c.hello(timeout_s=timeout_s, attempts=3)
            except EmulatorError as e:
                raise ReplayError(f"stream {sid} at {host}:{port}: {e}. Is `rtdecoder serve` running there with the "
                                  "recorded streams? (meta.json lists them)") from None
            want = (recorded or {}).get(str(sid))
            if recorded is not None and want is None:
                warnings.append(f"stream {sid}: not in the recording's stream_info")
                continue
            if want is None:
                continue
            spec = decoders.by_wire_id(info.decoder)
            have = {"decoder": spec.name if spec else f"wire id {info.decoder}", "window": info.window_rounds,
                    "commit": info.commit_rounds, "rounds": info.num_rounds, "detectors": info.num_detectors,
                    "input": info.input}
            try:
                fp, _ = c.describe(info.num_rounds, timeout_s=timeout_s)
                have["fingerprint"] = f"{fp:016x}"
            except EmulatorError:
                have["fingerprint"] = "(no DESCRIBE_REPLY)"
            for key, value in want.items():
                if key in have and have[key] != value:
                    names = {P.INPUT_DETECTION_EVENTS: "detection_events", P.INPUT_MEASUREMENTS: "measurements"}

                    def what(v):
                        return names.get(v, v) if key == "input" else v

                    warnings.append(f"stream {sid}: {key} {what(have[key])} where the recording had {what(value)}"
                                    + (" (a different detector error model: corrections may differ)"
                                       if key == "fingerprint" else "")
                                    + (" (corrections may differ, and equal ones prove little)"
                                       if key == "decoder" else ""))
        finally:
            c.link.close()
    return warnings


STOP_AFTER_SILENT_SHOTS = 3
"""Consecutive shots whose final correction did not come back within the timeout after which a
replay stops (the service stopped answering)."""


def replay(directory: str | Path, host: str, port: int, paced: bool = True, timeout_s: float = 5.0,
           progress: bool = False, check: bool = True) -> ReplayReport:
    """Send a recording's received datagrams to ``host:port`` in order, at the recorded pace (or
    with ``paced`` false as fast as they go), a shot's first datagram no sooner than its stream's
    previous shot's final correction is back (as a controller waits for it; the replay cannot
    push the service into answering BUSY, and time spent waiting shifts the pace), after a RESET of each stream they name, and compare
    the CORRECTIONs that come back with the recorded ones (flips and cumulative flips, by stream,
    shot, rounds and flags; time stamps are not compared). One thread: the replies are read
    between sends, so none waits long in the socket.

    First (``check``) each recorded stream is asked HELLO and DESCRIBE and compared with the
    recording (``check_service``); the report's ``warnings`` name each difference. A replay stops
    early, said in ``stopped``, when ``STOP_AFTER_SILENT_SHOTS`` shots in a row got no final
    correction within ``timeout_s``.

    Raises:
        ValueError: not a recording.
        ReplayError: nothing answers HELLO for a recorded stream at ``host:port``.
    """
    import socket

    from rtdecoder import protocol as P

    entries = read_records(directory)
    meta = json.loads((Path(directory) / "meta.json").read_text())
    rx = [e for e in entries if e.kind == KR.KIND_RX]
    want = {}
    for e in entries:
        if e.kind == KR.KIND_TX:
            k = _correction_key(e.data)
            if k is not None:
                want[k[0]] = k[1]
    streams = {h.stream_id for h in map(_syndrome_header, (e.data for e in rx)) if h is not None}
    warnings = check_service(meta, streams, host, port) if check else []
    final = {(k[0], k[1]): k for k in want if k[4] & P.FLAG_FINAL}  # (stream, shot) -> its final correction
    last_final: dict = {}
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    got: dict = {}
    with socket.socket(fam, socket.SOCK_DGRAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        s.connect((host, port))
        s.setblocking(False)

        def take() -> None:  # every reply waiting now
            while True:
                try:
                    data = s.recv(65536)
                except (BlockingIOError, InterruptedError):
                    return
                except OSError:  # ICMP port unreachable: nothing listens there
                    return
                k = _correction_key(data)
                if k is not None:
                    got[k[0]] = k[1]

        for sid in sorted(streams):
            s.send(P.encode(P.Header(P.MsgType.RESET, stream_id=sid)))
        end = time.monotonic() + 0.05
        while time.monotonic() < end:
            take()
        t0 = time.perf_counter()
        base = rx[0].t_ns if rx else 0
        lag = 0.0  # time lost waiting for the service, not counted against the recorded pace
        silent, stopped, sent = 0, "", 0
        bar = _progress(len(rx)) if progress else None
        for e in rx:
            h = _syndrome_header(e.data)
            if h is not None and h.first_round == 0:  # a shot's first datagram waits for the previous final
                prev = last_final.get(h.stream_id)
                w0 = time.perf_counter()
                end = time.monotonic() + timeout_s
                while prev is not None and prev not in got and time.monotonic() < end:
                    take()
                lag += time.perf_counter() - w0
                silent = silent + 1 if prev is not None and prev not in got else 0
                if silent >= STOP_AFTER_SILENT_SHOTS:
                    stopped = (f"{silent} shots in a row got no final correction within {timeout_s:g} s: the "
                               f"service at {host}:{port} stopped answering")
                    break
                last_final[h.stream_id] = final.get((h.stream_id, h.shot_id))
            if paced:
                due = t0 + lag + (e.t_ns - base) * 1e-9
                while time.perf_counter() < due:
                    take()
            s.send(e.data)
            sent += 1
            take()
            if bar is not None and sent % 256 == 0:
                bar[0].update(bar[1], completed=sent)
        if bar is not None:
            bar[0].update(bar[1], completed=sent)
            bar[0].stop()
        seconds = time.perf_counter() - t0
        end = time.monotonic() + timeout_s
        while len(got) < len(want) and time.monotonic() < end:
            take()
            time.sleep(0.0005)
    differ = [k for k, v in want.items() if k in got and got[k] != v]
    missing = sum(1 for k in want if k not in got)
    return ReplayReport(sent, len(want), sum(1 for k, v in want.items() if got.get(k) == v), differ, missing,
                        seconds, warnings, stopped)


def _progress(total: int):
    """A started rich progress bar on standard error over ``total`` datagrams, and its task."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    p = Progress("replaying", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                 console=Console(stderr=True), transient=True)
    p.start()
    return p, p.add_task("replay", total=total)
