"""Ethernet frames carrying UDP (or not), built with ``struct`` and a checksum written apart from
the service's (RFC 1071 as a byte-pair sum): the reference the frame kernels and the XDP program
are checked against."""

import ipaddress
import struct

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return 0xFFFF - total


def udp(src: str, dst: str, sport: int, dport: int, payload: bytes, *, vlan: int | None = None,
        options: bytes = b"", zero_udp_checksum: bool = False, flags_frag: int = 0x4000, proto: int = 17) -> bytes:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    ulen = 8 + len(payload)
    if s.version == 4:
        pseudo = s.packed + d.packed + struct.pack("!BBH", 0, 17, ulen)
    else:
        pseudo = s.packed + d.packed + struct.pack("!I3xB", ulen, 17)
    head = struct.pack("!HHHH", sport, dport, ulen, 0)
    c = checksum(pseudo + head + payload)
    c = 0 if zero_udp_checksum else (c or 0xFFFF)
    l4 = struct.pack("!HHHH", sport, dport, ulen, c) + payload
    if s.version == 4:
        ihl = 5 + len(options) // 4
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(l4), 1, flags_frag, 64, proto, 0, s.packed,
                         d.packed) + options
        ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
        etype = 0x0800
    else:
        ip = struct.pack("!IHBB16s16s", 0x60000000, len(l4), proto, 64, s.packed, d.packed)
        etype = 0x86DD
    eth = MAC_B + MAC_A + (struct.pack("!HH", 0x8100, vlan) if vlan is not None else b"") + struct.pack("!H", etype)
    return eth + ip + l4


def udp_fragments(src: str, dst: str, sport: int, dport: int, payload: bytes, mtu: int = 1500,
                  ident: int = 0x1234) -> list[bytes]:
    """The frames of one UDP datagram fragmented to ``mtu`` (IPv4: RFC 791 §3.2; IPv6: a fragment
    header, RFC 8200 §4.5), in order; the UDP checksum covers the whole datagram."""
    whole = udp(src, dst, sport, dport, payload)
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    l4 = whole[14 + (20 if s.version == 4 else 40):]
    room = (mtu - (20 if s.version == 4 else 48)) // 8 * 8
    out = []
    for off in range(0, len(l4), room):
        part, more = l4[off:off + room], off + room < len(l4)
        if s.version == 4:
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(part), ident, (0x2000 if more else 0) | off // 8, 64,
                             17, 0, s.packed, d.packed)
            ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
            out.append(MAC_B + MAC_A + b"\x08\x00" + ip + part)
        else:
            frag = struct.pack("!BBHI", 17, 0, off | int(more), ident)
            ip = struct.pack("!IHBB16s16s", 0x60000000, 8 + len(part), 44, 64, s.packed, d.packed)
            out.append(MAC_B + MAC_A + b"\x86\xdd" + ip + frag + part)
    return out
