"""What each network interface's driver offers XDP and AF_XDP, read from the kernel's ``netdev``
generic-netlink family (Linux 6.3 and later; include/uapi/linux/netdev.h,
Documentation/netlink/specs/netdev.yaml): ``NETDEV_CMD_DEV_GET`` dumped over all interfaces, each
answer's ``NETDEV_A_DEV_XDP_FEATURES`` bit set (``enum netdev_xdp_act``) and
``NETDEV_A_DEV_XDP_ZC_MAX_SEGS``. Reading needs no privilege and changes nothing.

Generic netlink: Documentation/userspace-api/netlink/intro.rst (``nlmsghdr``, ``genlmsghdr``,
attributes aligned to 4 bytes); the family's number is resolved by name through the ``nlctrl``
family (``CTRL_CMD_GETFAMILY``).
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

NETLINK_GENERIC = 16
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 3, 1, 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_DUMP = 0x1, 0x4, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NETDEV_CMD_DEV_GET = 1
NETDEV_A_DEV_IFINDEX, NETDEV_A_DEV_XDP_FEATURES, NETDEV_A_DEV_XDP_ZC_MAX_SEGS = 1, 3, 4
ACT_BASIC, ACT_REDIRECT, ACT_NDO_XMIT, ACT_XSK_ZEROCOPY, ACT_HW_OFFLOAD, ACT_RX_SG, ACT_NDO_XMIT_SG = (
    1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class XdpFeatures:
    """One interface's XDP features as its driver declares them.

    Attributes:
        ifindex, name: the interface.
        bits: the ``enum netdev_xdp_act`` bit set.
        zc_max_segs: the most buffers a zero-copy AF_XDP frame may span (1: no multi-buffer).
    """

    ifindex: int
    name: str
    bits: int
    zc_max_segs: int

    @property
    def native(self) -> bool:
        """The driver runs XDP programs itself (attach mode ``native``), with XDP_REDIRECT, which
        an AF_XDP socket needs; otherwise only generic (``skb``) mode, which every interface has."""
        return bool(self.bits & ACT_BASIC) and bool(self.bits & ACT_REDIRECT)

    @property
    def zerocopy(self) -> bool:
        """AF_XDP sockets may bind in zero-copy mode (the driver DMAs into the UMEM)."""
        return bool(self.bits & ACT_XSK_ZEROCOPY)

    def describe(self) -> str:
        """One line: the attach modes and AF_XDP bind modes this interface allows."""
        attach = "native and generic" if self.native else "generic only (the driver has no native XDP)"
        bind = "zero-copy and copy" if self.zerocopy else "copy only"
        return f"XDP attach: {attach}; AF_XDP bind: {bind}"


def _attrs(data: bytes, off: int, end: int) -> dict[int, bytes]:
    out = {}
    while off + 4 <= end:
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4 or off + alen > end:
            break
        out[atype & 0x3FFF] = data[off + 4:off + alen]  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER
        off += (alen + 3) & ~3
    return out


def _attr(atype: int, value: bytes) -> bytes:
    a = struct.pack("=HH", 4 + len(value), atype) + value
    return a + b"\0" * (-len(a) % 4)


def _request(sock: socket.socket, family: int, cmd: int, flags: int, attrs: bytes, seq: int) -> list[tuple[int, bytes]]:
    """Send one generic-netlink request; returns ``(cmd, attributes)`` of every answer (a dump's
    many) until done. Raises OSError with the kernel's errno on an error answer."""
    body = struct.pack("=BBH", cmd, 1, 0) + attrs
    sock.send(struct.pack("=IHHII", 16 + len(body), family, NLM_F_REQUEST | flags, seq, 0) + body)
    out = []
    while True:
        data = sock.recv(1 << 16)
        off = 0
        while off + 16 <= len(data):
            mlen, mtype, _, mseq, _ = struct.unpack_from("=IHHII", data, off)
            if mlen < 16 or off + mlen > len(data):
                return out
            if mtype == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + 16)
                if err:
                    raise OSError(-err, "netlink request refused")
                return out
            if mtype == NLMSG_DONE:
                return out
            if mseq == seq and mlen >= 20:
                out.append((data[off + 16], _attrs(data, off + 20, off + mlen)))
            off += (mlen + 3) & ~3
        if not flags & NLM_F_DUMP:
            return out


def xdp_features() -> list[XdpFeatures]:
    """Every interface in this network namespace with its XDP features, by interface index.

    Raises:
        OSError: no generic netlink, or no ``netdev`` family (a kernel before 6.3: ENOENT).
    """
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC) as s:
        s.bind((0, 0))
        fam = _request(s, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, 0, _attr(CTRL_ATTR_FAMILY_NAME, b"netdev\0"), 1)
        if not fam or CTRL_ATTR_FAMILY_ID not in fam[0][1]:
            raise OSError(2, "the kernel has no netdev netlink family (Linux 6.3 or later reports XDP features)")
        (family,) = struct.unpack("=H", fam[0][1][CTRL_ATTR_FAMILY_ID][:2])
        out = []
        for _, a in _request(s, family, NETDEV_CMD_DEV_GET, NLM_F_DUMP, b"", 2):
            if NETDEV_A_DEV_IFINDEX not in a:
                continue
            (ifindex,) = struct.unpack("=I", a[NETDEV_A_DEV_IFINDEX][:4])
            bits = int.from_bytes(a.get(NETDEV_A_DEV_XDP_FEATURES, b"")[:8], "little")
            zc = int.from_bytes(a.get(NETDEV_A_DEV_XDP_ZC_MAX_SEGS, b"")[:4], "little")
            try:
                name = socket.if_indextoname(ifindex)
            except OSError:
                name = f"index {ifindex}"
            out.append(XdpFeatures(ifindex, name, bits, zc))
    return sorted(out, key=lambda f: f.ifindex)
