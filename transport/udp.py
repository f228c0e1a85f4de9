"""UDP transport: non-blocking datagram sockets, busy-polled by the compiled data plane.

DESIGN.md: blocking sockets cost tens of microseconds of wake-up latency per round trip, so the
data plane never sleeps; ``rtdecoder.dataplane.serve_loop`` polls ``recvmmsg`` with
``MSG_DONTWAIT`` straight into the receive ring. ``MSG_TRUNC`` makes the kernel report a
datagram's full length even when it is longer than the slot, so oversize datagrams are detected
(and answered TOO_LARGE) rather than silently truncated.

Several workers share one port: each has its own socket in an ``SO_REUSEPORT`` group, and a
classic BPF program attached to the group (``SO_ATTACH_REUSEPORT_CBPF``, Linux 4.5+) steers each
datagram to socket ``stream_id % workers``, reading the little-endian stream id at bytes 10–11
of the datagram (docs/wire-protocol.md §2). A datagram too short to hold a stream id goes to
socket 0. So every stream is handled by exactly one worker, and no datagram changes threads.

``SO_BUSY_POLL`` (Linux 3.11+) asks the kernel to poll the NIC's queue during a receive that finds
the socket empty; raising it past ``net.core.busy_read`` needs ``CAP_NET_ADMIN``. It only helps on
a NIC driver with NAPI; loopback has none, so on loopback it changes nothing.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct

import numpy as np

SO_BUSY_POLL = getattr(socket, "SO_BUSY_POLL", 46)
SO_ATTACH_REUSEPORT_CBPF = 51  # <asm-generic/socket.h>
STREAM_ID_OFFSET = 10  # docs/wire-protocol.md §2: the header's stream_id field, little-endian u16


def _halves(value: int) -> tuple[int, int]:
    """A 128-bit integer as two int64 halves (high, low), two's complement."""
    hi, lo = value >> 64, value & ((1 << 64) - 1)
    return tuple(int(x) for x in np.array([hi, lo], np.uint64).view(np.int64))


def _as_v6(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> int:
    return int(addr) | (0xFFFF << 32) if addr.version == 4 else int(addr)


def source_words(host: str) -> tuple[int, int]:
    """``host`` as the data plane sees a source address (``libc.source_of``): two int64 halves of
    its IPv6 form (IPv4 mapped to ``::ffff:a.b.c.d``)."""
    return _halves(_as_v6(ipaddress.ip_address(host)))


def allow_rows(networks) -> np.ndarray:
    """int64 ``(len(networks), 4)``: ``(network high, network low, mask high, mask low)`` of each
    address or CIDR subnet, IPv4 ones mapped into ``::ffff:0:0/96``."""
    rows = []
    for text in networks:
        net = ipaddress.ip_network(text, strict=False)
        prefix = net.prefixlen + (96 if net.version == 4 else 0)
        mask = ((1 << prefix) - 1) << (128 - prefix) if prefix else 0
        rows.append((*_halves(_as_v6(net.network_address) & mask), *_halves(mask)))
    return np.asarray(rows, np.int64).reshape(-1, 4)


def steering_program(workers: int) -> list[tuple[int, int, int, int]]:
    """The classic BPF program ``return (pkt[10] | pkt[11] << 8) % workers``, as
    ``(code, jt, jf, k)`` instructions (``linux/filter.h``). A failed load (a datagram shorter
    than 12 bytes) ends the program returning 0."""
    return [
        (0x30, 0, 0, STREAM_ID_OFFSET),      # ldb [10]        A = low byte
        (0x07, 0, 0, 0),                     # tax             X = A
        (0x30, 0, 0, STREAM_ID_OFFSET + 1),  # ldb [11]        A = high byte
        (0x64, 0, 0, 8),                     # lsh #8
        (0x4C, 0, 0, 0),                     # or x
        (0x94, 0, 0, workers),               # mod #workers
        (0x16, 0, 0, 0),                     # ret a
    ]


class UdpTransport:
    """``workers`` bound, non-blocking UDP sockets on one address (one per worker).

    Args:
        host, port: address to bind (port 0 picks a free port; see ``address``).
        workers: sockets in the ``SO_REUSEPORT`` group; datagrams are steered by stream id.
        busy_poll_us: ``SO_BUSY_POLL`` to ask for (0: leave it off); ``busy_poll`` says what
            the kernel granted.
        rcvbuf_bytes, sndbuf_bytes: socket buffer sizes asked of the kernel (it may cap them).

    Raises:
        OSError: the address cannot be bound, or the steering program cannot be attached (the
            message names the address or the option).
    """

    name = "udp"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, workers: int = 1, busy_poll_us: int = 50,
                 rcvbuf_bytes: int = 4 << 20, sndbuf_bytes: int = 1 << 20):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socks: list[socket.socket] = []
        self._prog = None
        try:
            for i in range(workers):
                s = socket.socket(family, socket.SOCK_DGRAM)
                self.socks.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf_bytes)
                if workers > 1:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                try:
                    s.bind((host, port))
                except OSError as e:
                    raise OSError(e.errno, f"cannot bind UDP {host}:{port}: {e.strerror}") from None
                if i == 0:
                    port = s.getsockname()[1]
                    if workers > 1:
                        self._attach_steering(s, workers)
                s.setblocking(False)
        except BaseException:
            self.close()
            raise
        self.address = self.socks[0].getsockname()[:2]
        self.busy_poll = self._busy_poll(busy_poll_us)

    @property
    def sock(self) -> socket.socket:
        return self.socks[0]

    def _attach_steering(self, s: socket.socket, workers: int) -> None:
        prog = steering_program(workers)
        self._prog = ctypes.create_string_buffer(b"".join(struct.pack("HBBI", *ins) for ins in prog))
        fprog = struct.pack("HxxxxxxQ", len(prog), ctypes.addressof(self._prog))
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, fprog)
        except OSError as e:
            raise OSError(e.errno, f"cannot attach the stream-steering BPF program (SO_ATTACH_REUSEPORT_CBPF, "
                                   f"Linux 4.5+): {e.strerror}; run with one worker") from None

    def _busy_poll(self, us: int) -> str:
        if us <= 0:
            return "SO_BUSY_POLL off (not asked)"
        try:
            for s in self.socks:
                s.setsockopt(socket.SOL_SOCKET, SO_BUSY_POLL, us)
        except OSError as e:
            return (f"SO_BUSY_POLL {us} µs refused ({e.strerror}): it needs CAP_NET_ADMIN above "
                    "net.core.busy_read; the loop busy-polls in user space regardless")
        note = " (no effect on loopback: it has no NAPI queue)" if self.address[0] in ("127.0.0.1", "::1") else ""
        return f"SO_BUSY_POLL {us} µs{note}"

    def fds(self) -> list[int]:
        return [s.fileno() for s in self.socks]

    def close(self) -> None:
        for s in self.socks:
            s.close()
