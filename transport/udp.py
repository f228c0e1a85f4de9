"""UDP transport: one non-blocking datagram socket, busy-polled.

DESIGN.md: blocking sockets cost tens of microseconds of wake-up latency per round trip, so the
data plane never sleeps; it polls ``recvfrom_into`` with the socket in non-blocking mode and
receives straight into a ring slot. ``MSG_TRUNC`` makes the kernel report a datagram's full length
even when it is longer than the slot, so oversize datagrams are detected (and answered TOO_LARGE)
rather than silently truncated.
"""

from __future__ import annotations

import socket

MSG_TRUNC = getattr(socket, "MSG_TRUNC", 0x20)
SO_BUSY_POLL = getattr(socket, "SO_BUSY_POLL", 46)


class UdpTransport:
    """A bound, non-blocking UDP socket.

    Args:
        host, port: address to bind (port 0 picks a free port; see ``address``).
        rcvbuf_bytes, sndbuf_bytes: socket buffer sizes asked of the kernel (it may cap them).

    Raises:
        OSError: the address cannot be bound (the message names it).
    """

    name = "udp"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, rcvbuf_bytes: int = 4 << 20, sndbuf_bytes: int = 1 << 20):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf_bytes)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf_bytes)
        try:
            self.sock.bind((host, port))
        except OSError as e:
            self.sock.close()
            raise OSError(e.errno, f"cannot bind UDP {host}:{port}: {e.strerror}") from None
        self.sock.setblocking(False)
        self.address = self.sock.getsockname()[:2]

    def close(self) -> None:
        self.sock.close()
