"""The compiled memory helpers: unaligned word loads and stores, prefetches."""

import numpy as np
from numba import njit

from rtdecoder.kernels.memory import load_word, prefetch, store_word


@njit(cache=True)
def _loads(buf, out):
    for i in range(out.shape[0]):
        out[i] = load_word(buf, i)


@njit(cache=True)
def _store(buf, i, value):
    store_word(buf, i, value)


@njit(cache=True)
def _prefetch_anywhere(arr, idx):
    s = 0
    for i in idx:
        prefetch(arr, i)
        s += 1
    return s


def test_load_word_reads_eight_little_endian_bytes_at_every_offset():
    buf = np.random.default_rng(1).integers(0, 256, 40).astype(np.uint8)
    out = np.zeros(33, np.uint64)
    _loads(buf, out)
    assert [int(x) for x in out] == [int.from_bytes(buf[i:i + 8].tobytes(), "little") for i in range(33)]


def test_store_word_writes_exactly_eight_bytes_at_any_offset():
    for i in range(9):
        buf = np.full(24, 0xAA, np.uint8)
        _store(buf, i, 0x0807060504030201)
        expected = np.full(24, 0xAA, np.uint8)
        expected[i:i + 8] = np.arange(1, 9)
        assert np.array_equal(buf, expected), i


def test_prefetch_of_any_index_changes_nothing_and_never_faults():
    arr = np.arange(100, dtype=np.int64)
    assert _prefetch_anywhere(arr, np.array([0, 99, 100, -1, 1 << 40, -(1 << 40)], np.int64)) == 6
    assert np.array_equal(arr, np.arange(100))


def test_numba_caches_are_dropped_when_any_compiled_source_changes(tmp_path):
    """A cached loop holds the code of the kernels it calls from other files: editing one of
    those must not leave the old code running (``rtdecoder.kernels._forget_stale_caches``)."""
    import os

    from rtdecoder.kernels import _forget_stale_caches

    (tmp_path / "pyproject.toml").write_text("")
    for d in ("kernels", "transport", "rtdecoder", "bench"):
        (tmp_path / d / "__pycache__").mkdir(parents=True)
        (tmp_path / d / "a.py").write_text("import numba\n")
        (tmp_path / d / "__pycache__" / "a.f-1.py311.nbi").write_text("")
    pkg = tmp_path / "kernels"
    _forget_stale_caches(pkg)  # no stamp yet: every cache goes
    assert not list(tmp_path.rglob("*.nbi"))
    (tmp_path / "bench" / "__pycache__" / "b.nbc").write_text("")
    _forget_stale_caches(pkg)  # nothing changed: the new cache stays
    assert (tmp_path / "bench" / "__pycache__" / "b.nbc").exists()
    os.utime(tmp_path / "transport" / "a.py", ns=(1, 1))  # an edit in another folder
    _forget_stale_caches(pkg)
    assert not (tmp_path / "bench" / "__pycache__" / "b.nbc").exists()
