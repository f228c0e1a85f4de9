"""Two hosts on one machine, for the network back ends' tests and benchmarks (AF_XDP, the XDP
program, ``bench/latency.py --transport xdp``): network namespaces joined by a veth pair, made
and removed with ``ip`` from iproute2, and setns(2) to make a socket in one of them. Needs root
(CAP_SYS_ADMIN and CAP_NET_ADMIN); ``Unavailable`` says why not."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import uuid


class Unavailable(RuntimeError):
    """Namespaces cannot be made here (not root, no iproute2, or the kernel refused); the
    message says which."""


def setns(fd: int) -> None:
    """Move this thread into the network namespace ``fd`` (``os.setns`` is Python 3.12)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, 0x40000000) != 0:  # CLONE_NEWNET
        raise OSError(ctypes.get_errno(), "setns")


def ip(*args, check=True):
    """``ip ARGS`` (iproute2), its output captured; CalledProcessError on failure with ``check``."""
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


@contextlib.contextmanager
def veth_pair():
    """Namespaces ``a`` (the service: va 10.9.0.1, fd09::1) and ``b`` (the controller: vb
    10.9.0.2, fd09::2) joined by a veth pair, both removed on exit; yields (a, b, ifindex of va).

    Raises:
        Unavailable: not root, or ``ip netns add`` failed.
    """
    if os.geteuid() != 0:
        raise Unavailable("network namespaces need root")
    tag = uuid.uuid4().hex[:6]
    a, b = f"rtda{tag}", f"rtdb{tag}"
    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
    except (OSError, subprocess.CalledProcessError) as e:
        if not isinstance(e, FileNotFoundError):
            ip("netns", "del", a, check=False)
        raise Unavailable(f"cannot make network namespaces here: {e} (iproute2's ip, as root)") from None
    try:
        ip("-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b)
        for ns, dev, v4, v6 in ((a, "va", "10.9.0.1/24", "fd09::1/64"), (b, "vb", "10.9.0.2/24", "fd09::2/64")):
            ip("-n", ns, "addr", "add", v4, "dev", dev)
            ip("-n", ns, "-6", "addr", "add", v6, "dev", dev, "nodad")
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ifindex = int(ip("-n", a, "-o", "link", "show", "va").stdout.split(":")[0])
        # A local socket's datagrams leave a veth with their UDP checksum only begun (checksum
        # offload: CHECKSUM_PARTIAL), and XDP sees them so; a NIC would have finished it. Turn the
        # offload off on the controller's side, so the frames are what a wire carries.
        in_ns(b, lambda: tx_checksum(b"vb", False))
        yield a, b, ifindex
    finally:
        ip("netns", "del", a, check=False)
        ip("netns", "del", b, check=False)


def tx_checksum(dev: bytes, on: bool) -> None:
    """``ethtool -K dev tx on|off`` (SIOCETHTOOL, ETHTOOL_STXCSUM; include/uapi/linux/ethtool.h)."""
    import fcntl
    import socket
    import struct

    value = ctypes.create_string_buffer(struct.pack("=II", 0x17, int(on)), 8)  # ETHTOOL_STXCSUM
    ifreq = struct.pack("=16sQ", dev, ctypes.addressof(value)) + bytes(16)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        fcntl.ioctl(s.fileno(), 0x8946, ifreq)  # SIOCETHTOOL


def in_ns(ns, fn):
    """``fn()`` with this thread in namespace ``ns`` (a socket made there stays there)."""
    fd = os.open(f"/var/run/netns/{ns}", os.O_RDONLY)
    own = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        setns(fd)
        return fn()
    finally:
        setns(own)
        os.close(fd)
        os.close(own)


def mac(ns: str, dev: str) -> bytes:
    """The Ethernet address of ``dev`` in namespace ``ns``."""
    return bytes.fromhex(ip("-n", ns, "-o", "link", "show", dev).stdout.split("link/ether ")[1].split()[0]
                         .replace(":", ""))
