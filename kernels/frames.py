"""Ethernet frames carrying UDP, parsed and built in compiled code: what a kernel-bypass
transport (AF_XDP, which hands user space whole frames) needs between the wire and the data path.

``parse_udp`` checks one received frame and finds its UDP payload; ``write_reply`` builds the
reply frame to it (addresses and ports swapped, lengths and checksums set) around a payload the
caller has written. Formats: Ethernet II with at most one IEEE 802.1Q tag; IPv4 (RFC 791; options
allowed); IPv6 (RFC 8200; the UDP header must follow the fixed header or one fragment header,
other extension headers are refused); UDP (RFC 768;
RFC 8200 §8.1 for IPv6). Checksums are the Internet checksum (RFC 1071): a received IPv4 header
checksum and a UDP checksum must verify (a zero UDP checksum over IPv4 means "none", RFC 768; over
IPv6 it is invalid); a computed UDP checksum of zero is sent as 0xFFFF. Multi-byte fields are
big-endian (network order). Nothing here allocates, and no input can make it read outside
``frame[:n]``.

Fragments are not reassembled. The first fragment of a UDP datagram to the service's port
(IPv4: MF set, offset 0; IPv6: a fragment header with offset 0 and M set, then UDP) is reported
``TOO_LARGE`` with what it holds located, so that the caller can answer the datagram as too
large, echoing its header, as a socket transport answers one longer than its receive slot; every
other fragment is ``FRAGMENT``. The UDP checksum of a fragmented datagram covers all of it and is
not checked.
"""

from __future__ import annotations

import numpy as np
from numba import njit

ETH_HEADER = 14
VLAN_TAG = 4
ETH_P_IPV4 = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_8021Q = 0x8100
IPPROTO_UDP = 17
IPV6_FRAGMENT = 44
IPV4_HEADER = 20
IPV6_HEADER = 40
UDP_HEADER = 8

# --- parse_udp's statuses (the reasons a frame is not the service's datagram) ---------------------
OK = 0
SHORT = 1
"""Shorter than the headers its own fields announce."""
NOT_IP = 2
"""Neither IPv4 nor IPv6 (ARP, LLDP, ...): the kernel's business, not the service's."""
BAD_IP_HEADER = 3
"""A version, header length or total length that does not fit the frame."""
BAD_IP_CHECKSUM = 4
FRAGMENT = 5
"""An IPv4 fragment (MF set or a fragment offset) or an IPv6 fragment header, other than the first
fragment of a datagram to the port."""
NOT_UDP = 6
"""Another protocol, or IPv6 extension headers before the transport header."""
OTHER_PORT = 7
"""UDP to another destination port."""
BAD_UDP_LENGTH = 8
BAD_UDP_CHECKSUM = 9
TOO_LARGE = 10
"""The first fragment of a UDP datagram to the port: the datagram did not fit one frame. ``out``
is written as for ``OK``, with ``F_PAYLOAD_LEN`` the length the UDP header announces and
``F_PRESENT`` the part of it in this frame (less)."""
NUM_STATUS = 11
STATUS_NAMES = ("ok", "short", "not_ip", "bad_ip_header", "bad_ip_checksum", "fragment", "not_udp", "other_port",
                "bad_udp_length", "bad_udp_checksum", "too_large")

# --- parse_udp's ``out`` --------------------------------------------------------------------------
F_L3 = 0
"""Offset of the IP header."""
F_FAMILY = 1
"""4 or 6."""
F_PAYLOAD = 2
"""Offset of the UDP payload."""
F_PAYLOAD_LEN = 3
F_SRC_HI = 4
F_SRC_LO = 5
"""The source address as 128 bits in two big-endian int64 halves, IPv4 mapped to
``::ffff:a.b.c.d`` (as ``rtdecoder.transport.libc.source_of``), for the allow-lists."""
F_SRC_PORT = 6
F_PRESENT = 7
"""Bytes of the payload in this frame: ``F_PAYLOAD_LEN`` for ``OK``, fewer for ``TOO_LARGE``."""
NUM_F = 8
V4_MAPPED = 0xFFFF << 32


@njit(cache=True, inline="always", _nrt=False)
def be16(b, i):
    return (np.int64(b[i]) << 8) | np.int64(b[i + 1])


@njit(cache=True, inline="always", _nrt=False)
def put16(b, i, v):
    b[i] = np.uint8((v >> 8) & 0xFF)
    b[i + 1] = np.uint8(v & 0xFF)


@njit(cache=True, _nrt=False)
def sum16(b, start, length, acc):
    """``acc`` plus the 16-bit big-endian words of ``b[start:start + length]`` (an odd last byte
    padded with zero), not yet folded (RFC 1071)."""
    end = start + length
    i = start
    while i + 1 < end:
        acc += (np.int64(b[i]) << 8) | np.int64(b[i + 1])
        i += 2
    if i < end:
        acc += np.int64(b[i]) << 8
    return acc


@njit(cache=True, inline="always", _nrt=False)
def fold(acc):
    """The one's-complement sum folded to 16 bits."""
    while acc >> 16:
        acc = (acc & 0xFFFF) + (acc >> 16)
    return acc


@njit(cache=True, _nrt=False)
def _udp_pseudo(b, l3, family, udp_len):
    """The pseudo-header's sum (RFC 768; RFC 8200 §8.1)."""
    if family == 4:
        acc = sum16(b, l3 + 12, 8, np.int64(0))
    else:
        acc = sum16(b, l3 + 8, 32, np.int64(0))
    return acc + IPPROTO_UDP + udp_len


@njit(cache=True, _nrt=False)
def parse_udp(frame, n, port, out):
    """Check frame ``frame[:n]`` and locate its UDP payload.

    Args:
        frame: uint8 array holding the frame (at least ``n`` bytes).
        n: the frame's length as received, bytes.
        port: the service's UDP port; a datagram to another port is ``OTHER_PORT``.
        out: int64 ``(NUM_F,)``, written when the frame is ``OK`` or ``TOO_LARGE``.

    Returns:
        ``OK``; ``TOO_LARGE`` for the first fragment of a datagram to ``port``; or the first reason
        the frame is not a well-formed UDP datagram to ``port``.
    """
    n = min(n, frame.shape[0])
    if n < ETH_HEADER:
        return SHORT
    l3 = ETH_HEADER
    etype = be16(frame, 12)
    if etype == ETH_P_8021Q:
        if n < ETH_HEADER + VLAN_TAG:
            return SHORT
        etype = be16(frame, 16)
        l3 += VLAN_TAG
    if etype == ETH_P_IPV4:
        if n < l3 + IPV4_HEADER:
            return SHORT
        if frame[l3] >> 4 != 4:
            return BAD_IP_HEADER
        ihl = np.int64(frame[l3] & 0xF) * 4
        total = be16(frame, l3 + 2)
        if ihl < IPV4_HEADER or total < ihl or l3 + total > n:
            return BAD_IP_HEADER
        if fold(sum16(frame, l3, ihl, np.int64(0))) != 0xFFFF:
            return BAD_IP_CHECKSUM
        frag = be16(frame, l3 + 6) & 0x3FFF
        first = frag == 0x2000  # MF, offset 0
        if frag and not first:
            return FRAGMENT
        if frame[l3 + 9] != IPPROTO_UDP:
            return FRAGMENT if first else NOT_UDP
        l4 = l3 + ihl
        end = l3 + total
        family = 4
        hi = np.int64(0)
        lo = V4_MAPPED | (be16(frame, l3 + 12) << 16) | be16(frame, l3 + 14)
    elif etype == ETH_P_IPV6:
        if n < l3 + IPV6_HEADER:
            return SHORT
        if frame[l3] >> 4 != 6:
            return BAD_IP_HEADER
        plen = be16(frame, l3 + 4)
        if l3 + IPV6_HEADER + plen > n:
            return BAD_IP_HEADER
        nh = frame[l3 + 6]
        l4 = l3 + IPV6_HEADER
        end = l4 + plen
        first = False
        if nh == IPV6_FRAGMENT:
            if l4 + 8 > end:
                return SHORT
            if frame[l4] != IPPROTO_UDP or be16(frame, l4 + 2) != 1:  # offset 0, M set
                return FRAGMENT
            first = True
            l4 += 8
        elif nh != IPPROTO_UDP:
            return NOT_UDP
        family = 6
        hi = np.int64(0)
        lo = np.int64(0)
        for i in range(8):
            hi = (hi << 8) | np.int64(frame[l3 + 8 + i])
            lo = (lo << 8) | np.int64(frame[l3 + 16 + i])
    else:
        return NOT_IP
    if l4 + UDP_HEADER > end:
        return FRAGMENT if first else SHORT
    if be16(frame, l4 + 2) != port:
        return FRAGMENT if first else OTHER_PORT
    ulen = be16(frame, l4 + 4)
    if first:
        if ulen <= end - l4:  # a first fragment holding all it announces is no fragment
            return BAD_UDP_LENGTH
        out[F_L3] = l3
        out[F_FAMILY] = family
        out[F_PAYLOAD] = l4 + UDP_HEADER
        out[F_PAYLOAD_LEN] = ulen - UDP_HEADER
        out[F_PRESENT] = end - l4 - UDP_HEADER
        out[F_SRC_HI] = hi
        out[F_SRC_LO] = lo
        out[F_SRC_PORT] = be16(frame, l4)
        return TOO_LARGE
    if ulen < UDP_HEADER or l4 + ulen > end:
        return BAD_UDP_LENGTH
    csum = be16(frame, l4 + 6)
    if family == 6 and csum == 0:
        return BAD_UDP_CHECKSUM
    if csum != 0 and fold(sum16(frame, l4, ulen, _udp_pseudo(frame, l3, family, ulen))) != 0xFFFF:
        return BAD_UDP_CHECKSUM
    out[F_L3] = l3
    out[F_FAMILY] = family
    out[F_PAYLOAD] = l4 + UDP_HEADER
    out[F_PAYLOAD_LEN] = ulen - UDP_HEADER
    out[F_PRESENT] = ulen - UDP_HEADER
    out[F_SRC_HI] = hi
    out[F_SRC_LO] = lo
    out[F_SRC_PORT] = be16(frame, l4)
    return OK


@njit(cache=True, _nrt=False)
def reply_payload_offset(l3, family):
    """Where the reply's payload goes in the frame ``write_reply`` builds (after the same link
    headers as the request's)."""
    return l3 + (IPV4_HEADER if family == 4 else IPV6_HEADER) + UDP_HEADER


@njit(cache=True, _nrt=False)
def write_reply(req, l3, family, out, payload_len):
    """Build, in ``out``, the reply frame to the request frame ``req`` (``parse_udp`` said ``OK`` or
    ``TOO_LARGE`` with ``l3`` and ``family``), around the ``payload_len`` bytes the caller has already written
    at ``out[reply_payload_offset(l3, family):]``: Ethernet addresses, IP addresses and UDP ports
    swapped, the VLAN tag kept, an IPv4 header without options (TTL 64, DF set, identification 0)
    or an IPv6 header (hop limit 64, the request's traffic class and flow label), lengths and
    checksums set. Returns the frame's length, bytes."""
    for i in range(6):  # destination MAC <- the request's source, and the other way round
        out[i] = req[6 + i]
        out[6 + i] = req[i]
    for i in range(12, l3):  # ethertype (and the VLAN tag)
        out[i] = req[i]
    if family == 4:
        l4 = l3 + IPV4_HEADER
        total = IPV4_HEADER + UDP_HEADER + payload_len
        out[l3] = 0x45
        out[l3 + 1] = req[l3 + 1]
        put16(out, l3 + 2, total)
        put16(out, l3 + 4, 0)
        put16(out, l3 + 6, 0x4000)  # DF
        out[l3 + 8] = 64
        out[l3 + 9] = IPPROTO_UDP
        put16(out, l3 + 10, 0)
        rihl = np.int64(req[l3] & 0xF) * 4
        for i in range(4):
            out[l3 + 12 + i] = req[l3 + 16 + i]
            out[l3 + 16 + i] = req[l3 + 12 + i]
        put16(out, l3 + 10, 0xFFFF - fold(sum16(out, l3, IPV4_HEADER, np.int64(0))))
        src_port_at = l3 + rihl
    else:
        l4 = l3 + IPV6_HEADER
        for i in range(4):
            out[l3 + i] = req[l3 + i]
        put16(out, l3 + 4, UDP_HEADER + payload_len)
        out[l3 + 6] = IPPROTO_UDP
        out[l3 + 7] = 64
        for i in range(16):
            out[l3 + 8 + i] = req[l3 + 24 + i]
            out[l3 + 24 + i] = req[l3 + 8 + i]
        src_port_at = l4 + (8 if req[l3 + 6] == IPV6_FRAGMENT else 0)  # a first fragment's UDP header
    ulen = UDP_HEADER + payload_len
    put16(out, l4, be16(req, src_port_at + 2))  # our port
    put16(out, l4 + 2, be16(req, src_port_at))  # theirs
    put16(out, l4 + 4, ulen)
    put16(out, l4 + 6, 0)
    c = 0xFFFF - fold(sum16(out, l4, ulen, _udp_pseudo(out, l3, family, ulen)))
    put16(out, l4 + 6, 0xFFFF if c == 0 else c)
    return l4 + ulen
