"""The receive ring: page-locked host memory cut into power-of-two slots.

The UDP transport receives into its slots and the RoCE transport registers it as the memory
region a controller RDMA-writes into. It is an anonymous ``mmap`` locked with ``mlock(2)``; where
locking is not permitted (``RLIMIT_MEMLOCK``) the ring still works, unlocked, and
``pinned_reason`` says why, so that ``rtdecoder serve`` can print it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap
import os

import numpy as np


class PinnedRing:
    """``slots`` receive slots of ``slot_bytes`` bytes each.

    Attributes:
        array: uint8 array of shape ``(slots, slot_bytes)`` over the locked memory.
        pinned: whether ``mlock`` succeeded; ``pinned_reason`` says what happened.

    Raises:
        ValueError: ``slots`` or ``slot_bytes`` is not a power of two.
    """

    def __init__(self, slots: int = 1024, slot_bytes: int = 4096):
        for name, v in (("slots", slots), ("slot_bytes", slot_bytes)):
            if v < 1 or v & (v - 1):
                raise ValueError(f"{name} = {v} must be a power of two")
        self.slots = slots
        self.slot_bytes = slot_bytes
        size = slots * slot_bytes
        self._mmap = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        self.array = np.frombuffer(self._mmap, dtype=np.uint8).reshape(slots, slot_bytes)
        self.array[:] = 0  # touch every page so that none faults on the hot path
        self.pinned, self.pinned_reason = self._lock(size)

    def _lock(self, size: int) -> tuple[bool, str]:
        libc_name = ctypes.util.find_library("c")
        if libc_name is None:
            return False, "not page-locked: the C library was not found"
        libc = ctypes.CDLL(libc_name, use_errno=True)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self._mmap))
        if libc.mlock(ctypes.c_void_p(addr), ctypes.c_size_t(size)) != 0:
            err = ctypes.get_errno()
            return False, (f"not page-locked: mlock failed ({os.strerror(err)}); raise the memlock limit "
                           "(ulimit -l, or LimitMEMLOCK= in the systemd unit)")
        return True, f"page-locked with mlock ({size} bytes)"
