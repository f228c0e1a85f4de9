"""Recording: ``rtdecoder serve --record DIR`` keeps every datagram the service received and every
reply it sent, with their times (``rtdecoder replay DIR``, ``rtdecoder.replay``, plays the
received ones back against a service and checks its CORRECTIONs against the recorded ones).

Recording is off the data path: each worker copies entries into a ring of its own
(``rtdecoder.kernels.record``, no allocation, a full ring drops and counts), and ``Recorder``, a
thread of the control process, drains the rings every few milliseconds into a bounded ring of
files.

Files in ``DIR``: ``record-NNNNNN.bin``, each at most ``file_bytes`` long, the oldest deleted
beyond ``files`` of them; ``meta.json``: the format, its version, the streams served. An entry in a
file: a 16-byte header (length u32, kind u8: 0 received, 1 sent, worker u8, two zero bytes,
``CLOCK_MONOTONIC`` ns i64; little-endian), then ``length`` bytes of the datagram.
"""

from __future__ import annotations

import json
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rtdecoder.kernels import record as KR

FILE_HEADER = struct.Struct("<IBBHq")
FORMAT = "rtdecoder-record"
FORMAT_VERSION = 1


class Recorder:
    """Drain the workers' record rings (``states``: ``rtdecoder.worker.WorkerState`` with
    recording enabled) into ``directory``.

    Args:
        file_bytes: the largest file; files: how many files are kept (the oldest go first).
        meta: written to ``meta.json`` with the format's name and version.
    """

    def __init__(self, states, directory: str | Path, file_bytes: int = 64 << 20, files: int = 16,
                 meta: dict | None = None, period_s: float = 0.005):
        self.states, self.dir, self.file_bytes, self.files, self.period_s = states, Path(directory), file_bytes, \
            files, period_s
        self.dir.mkdir(parents=True, exist_ok=True)
        for old in self.dir.glob("record-*.bin"):
            old.unlink()
        (self.dir / "meta.json").write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION,
                                                        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                        **(meta or {})}, indent=1))
        self._seq = 0
        self._out = None
        self._written = 0
        self.entries = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def drops(self) -> int:
        """Entries the workers dropped because their ring was full."""
        return int(sum(s.recw[KR.REC_DROPS] for s in self.states))

    def _file(self):
        if self._out is None or self._written >= self.file_bytes:
            if self._out is not None:
                self._out.close()
            self._out = open(self.dir / f"record-{self._seq:06d}.bin", "wb")
            self._seq += 1
            self._written = 0
            kept = sorted(self.dir.glob("record-*.bin"))
            for old in kept[:-self.files]:
                old.unlink()
        return self._out

    def drain(self) -> int:
        """Move what the rings hold to the files now; returns the entries moved."""
        moved = 0
        for w, s in enumerate(self.states):
            rec, recw = s.rec, s.recw
            head = int(recw[KR.REC_HEAD])
            tail = int(recw[KR.REC_TAIL])
            cap = len(rec)
            while tail < head:
                at = tail & (cap - 1)
                hdr = np.take(rec, np.arange(at, at + KR.ENTRY) & (cap - 1)).tobytes()
                n, kind = struct.unpack_from("<IB", hdr)
                t = struct.unpack_from("<q", hdr, 8)[0]
                body = np.take(rec, np.arange(at + KR.ENTRY, at + KR.ENTRY + n) & (cap - 1)).tobytes()
                f = self._file()
                f.write(FILE_HEADER.pack(n, kind, w, 0, t))
                f.write(body)
                self._written += FILE_HEADER.size + n
                tail += (KR.ENTRY + n + 7) & ~7
                moved += 1
            recw[KR.REC_TAIL] = tail  # the worker may reuse the space (numpy's store follows the reads)
        if moved and self._out is not None:
            self._out.flush()
        self.entries += moved
        return moved

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.period_s):
                self.drain()

        self._thread = threading.Thread(target=loop, name="rtdecoder-recorder", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, drain what is left, close the file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.drain()
        if self._out is not None:
            self._out.close()
            self._out = None


@dataclass
class Entry:
    t_ns: int
    kind: int
    worker: int
    data: bytes


def read_records(directory: str | Path) -> list[Entry]:
    """Every entry of a recording, in time order.

    Raises:
        ValueError: not a recording (no ``meta.json`` of this format), or a file cut short.
    """
    d = Path(directory)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{d} is not an rtdecoder recording (meta.json: {e})") from None
    if meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
        raise ValueError(f"{d}: a recording of format {meta.get('format')} {meta.get('version')}, not {FORMAT} "
                         f"{FORMAT_VERSION}")
    out: list[Entry] = []
    for f in sorted(d.glob("record-*.bin")):
        data = f.read_bytes()
        off = 0
        while off < len(data):
            if off + FILE_HEADER.size > len(data):
                raise ValueError(f"{f}: an entry cut short at byte {off}")
            n, kind, w, _, t = FILE_HEADER.unpack_from(data, off)
            off += FILE_HEADER.size
            if off + n > len(data):
                raise ValueError(f"{f}: an entry cut short at byte {off}")
            out.append(Entry(t, kind, w, data[off:off + n]))
            off += n
    out.sort(key=lambda e: e.t_ns)
    return out


def ring_bytes(megabytes: int) -> int:
    """The power of two of at least ``megabytes`` MiB (a worker's record ring)."""
    n = max(int(megabytes), 1) << 20
    return 1 << (n - 1).bit_length()

