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
