"""Compute kernels (numba, and numba.cuda), imported as ``rtdecoder.kernels``.

- ``rtdecoder.kernels.tables``: the layouts of the arrays the data path shares (stream table
  columns, counters, histogram rows, trace, control words) and the tuples compiled code takes.
- ``rtdecoder.kernels.wire``: the wire format in compiled code; the one header encoder.
- ``rtdecoder.kernels.ingest``: the datagram checks and the stream state machine.
- ``rtdecoder.kernels.window``: window completion, the commit/carry rule, PyMatching's node
  pairs to edges.
- ``rtdecoder.kernels.histogram``: latency histograms.
- ``rtdecoder.kernels.union_find``: weighted union-find with peeling (CPU).
- ``rtdecoder.kernels.uf_cuda``: the same decoder compiled for CUDA, batch and persistent
  kernels (imported only by ``rtdecoder.gpu``).
- ``rtdecoder.kernels.slots``: the persistent GPU decoder's slot layout.
- ``rtdecoder.kernels.clock``: CLOCK_MONOTONIC from compiled code.
- ``rtdecoder.kernels.memory``: unaligned 8-byte loads and stores of uint8 arrays, cache prefetches.
"""

import hashlib as _hashlib
import os as _os
from pathlib import Path as _Path


def _forget_stale_caches(pkg: _Path | None = None) -> None:
    """Numba keys a cached function on its own source file only, but the compiled data path
    holds the code and constants of the functions it calls from other files (a transport's loop
    holds ``process_datagram``, which holds ``ingest``, which holds ``tables``' constants): after
    an edit to one of those, the cached callers would run the old code. So the caches of every
    folder with compiled code are dropped whenever one of its Python files that uses numba (or
    ``protocol.py``, whose constants compiled code holds; any file of this folder) changed, by
    size or modification time, since they were written. An installed package never changes; a
    checkout being edited recompiles once. ``pkg``: this folder (another in tests)."""
    pkg = pkg or _Path(__file__).resolve().parent
    root = pkg.parent
    folders = [pkg, root / "rtdecoder", root / "transport"]
    if (root / "pyproject.toml").is_file():
        folders.append(root / "bench")
    folders = [f for f in dict.fromkeys(folders) if f.is_dir()]
    h = _hashlib.sha256()
    for f in folders:
        for p in sorted(f.rglob("*.py")):
            if f != pkg and p.name != "protocol.py" and "numba" not in p.read_text(errors="replace"):
                continue  # no compiled code, no constants of it: an edit there changes no cache
            st = p.stat()
            h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    stamp = pkg / "__pycache__" / "numba-sources.sha256"
    digest = h.hexdigest()
    try:
        if stamp.is_file() and stamp.read_text() == digest:
            return
        for f in folders:
            for c in f.rglob("__pycache__/*.nb[ic]"):
                c.unlink(missing_ok=True)
        stamp.parent.mkdir(exist_ok=True)
        tmp = stamp.with_suffix(f".{_os.getpid()}")
        tmp.write_text(digest)
        tmp.replace(stamp)
    except OSError:  # a read-only installation: nothing is edited there either
        pass


_forget_stale_caches()
