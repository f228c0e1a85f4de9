"""The benchmarks' controller clients, compiled: one datagram at a time and timed
(``round_trips``, for ``latency.py``), and open loop (``drive_open_loop``, for ``soak.py``).
Both send and receive with the C library's ``send``/``recv`` on a connected, non-blocking UDP
socket and read replies with the emulator's parser (``rtdecoder.emulator.parse_reply``)."""

from __future__ import annotations

import numpy as np
from numba import njit

from rtdecoder.emulator import (NUM_RP, RP_FLAGS, RP_SERVER_RX, RP_SERVER_TX, RP_SHOT, RP_STATUS, cumulative_flips,
                                parse_reply, shot_packets)
from rtdecoder.kernels import wire as K
from rtdecoder.kernels.clock import monotonic_ns
from rtdecoder.transport import libc as L


@njit(cache=True, nogil=True)
def round_trips(fd, packets, length, first_shot, echo, timeout_ns, rx, out, server):
    """Send ``packets[i, :length]`` one at a time (shot id ``first_shot + i`` written into each)
    and wait for its answer before the next; ``out[i]`` gets the round trip in ns (send →
    final CORRECTION of that shot received, or with ``echo`` the datagram's echo), or -1 if none
    came within ``timeout_ns`` or an ERROR came instead; ``server[i]`` the server's own share
    (the CORRECTION's send stamp minus its receive stamp; 0 for an echo).
    """
    cap = rx.shape[0]
    reply = np.zeros(NUM_RP, np.int64)
    for i in range(packets.shape[0]):
        pkt = packets[i]
        shot = first_shot + i
        K.wr(pkt, K.OFF_SHOT, 8, shot)
        t0 = monotonic_ns()
        K.wr(pkt, K.OFF_CONTROLLER_TS, 8, t0)
        L.send(fd, pkt.ctypes.data, length, 0)
        out[i] = -1
        server[i] = 0
        while True:
            n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
            now = monotonic_ns()
            if n > 0:
                mtype = parse_reply(rx, n, reply)
                if mtype < 0 or reply[RP_SHOT] != shot:
                    continue
                if echo:
                    if n == length:
                        out[i] = now - t0
                        break
                elif mtype == K.T_ERROR:
                    break
                elif mtype == K.T_CORRECTION and reply[RP_FLAGS] & K.FLAG_FINAL:
                    out[i] = now - t0
                    server[i] = reply[RP_SERVER_TX] - reply[RP_SERVER_RX]
                    break
            elif now - t0 > timeout_ns:
                break


# open-loop per-shot outcomes
O_NONE = 0
O_FINAL = 1
O_ERROR = 2


@njit(cache=True)
def _on_open_reply(rx, n, first_shot, nobs, outcome, status, pred, reply):
    mtype = parse_reply(rx, n, reply)
    if mtype < 0:
        return 0
    s = reply[RP_SHOT] - first_shot
    if s < 0 or s >= outcome.shape[0] or outcome[s] != O_NONE:
        return 0
    if mtype == K.T_CORRECTION and reply[RP_FLAGS] & K.FLAG_FINAL:
        cumulative_flips(rx, nobs, pred[s])
        outcome[s] = O_FINAL
        return 1
    if mtype == K.T_ERROR:
        outcome[s] = O_ERROR
        status[s] = reply[RP_STATUS]
        return 1
    return 0


@njit(cache=True, nogil=True)
def drive_open_loop(fd, pkt, offset, length, ready, cycle_ns, timeout_ns, first_shot, nobs, rx, outcome, status,
                    pred):
    """Send many shots' datagrams back to back, paced at ``cycle_ns`` per round and *not* waiting
    for any answer (a controller that does not slow down for the decoder), taking replies as they
    come; then wait up to ``timeout_ns`` for the shots still unanswered. ``outcome[s]`` (``O_*``)
    and ``status[s]`` (the first ERROR's status) tell what became of shot ``first_shot + s``;
    ``pred[s]`` its final correction. Returns ``(shots still unanswered, ns spent sending)``."""
    reply = np.zeros(NUM_RP, np.int64)
    start = monotonic_ns()
    cap = rx.shape[0]
    open_shots = outcome.shape[0]
    for i in range(offset.shape[0]):
        deadline = start + ready[i] * cycle_ns
        now = monotonic_ns()
        while True:
            n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
            if n > 0:
                open_shots -= _on_open_reply(rx, n, first_shot, nobs, outcome, status, pred, reply)
            elif now >= deadline:
                break
            now = monotonic_ns()
        L.send(fd, pkt.ctypes.data + offset[i], length[i], 0)
    sent = monotonic_ns()
    end = sent + timeout_ns
    while open_shots > 0 and monotonic_ns() < end:
        n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
        if n > 0:
            open_shots -= _on_open_reply(rx, n, first_shot, nobs, outcome, status, pred, reply)
    return open_shots, sent - start


def open_loop_packets(stream_id: int, first_shot: int, blocks: np.ndarray, rounds_per_packet: int
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``shot_packets`` of shots ``first_shot ..`` (uint8 ``(shots, num_rounds, round_bytes)``),
    back to back; ``ready`` counts rounds from the first shot's start."""
    bufs, offs, lens, readys = [], [], [], []
    base = 0
    nrounds = blocks.shape[1]
    for s in range(blocks.shape[0]):
        buf, off, length, ready = shot_packets(stream_id, first_shot + s, blocks[s], rounds_per_packet)
        bufs.append(buf)
        offs.append(off + base)
        lens.append(length)
        readys.append(ready + s * nrounds)
        base += len(buf)
    return np.concatenate(bufs), np.concatenate(offs), np.concatenate(lens), np.concatenate(readys)


@njit(cache=True, nogil=True)
def echo_pairs(fd, first, first_len, second, second_len, timeout_ns, rx, out):
    """The transport floor of a two-request exchange (CUQR's ``enqueue_syndromes`` then
    ``get_corrections``) against ``rtdecoder serve --echo``: for each ``i`` send ``first[i]`` and
    at once ``second[i]``, and wait for both echoes; ``out[i]`` is the first send → the second
    echo received, ns (-1: not within ``timeout_ns``). Echoes are told apart by length, so the two
    lengths must differ."""
    cap = rx.shape[0]
    for i in range(first.shape[0]):
        t0 = monotonic_ns()
        L.send(fd, first[i].ctypes.data, first_len, 0)
        L.send(fd, second[i].ctypes.data, second_len, 0)
        out[i] = -1
        got = 0
        while got < 2:
            n = L.recv(fd, rx.ctypes.data, cap, L.MSG_DONTWAIT)
            now = monotonic_ns()
            if n == first_len or n == second_len:
                got += 1
                if got == 2:
                    out[i] = now - t0
            elif now - t0 > timeout_ns:
                break
