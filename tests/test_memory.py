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
