"""Ethernet/IP/UDP frames in compiled code (``rtdecoder.kernels.frames``), against frames built
here with ``struct`` and a checksum written apart from the one under test (RFC 1071 as a
byte-pair sum), and against hostile frames."""

import ipaddress
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdecoder.kernels import frames as F
from rtdecoder.transport.libc import source_words

sys.path.insert(0, os.path.dirname(__file__))
from frame_fixture import MAC_A, MAC_B, checksum, udp, udp_fragments  # noqa: E402

PORT = 7700


def parse(frame: bytes, port: int = PORT):
    buf = np.frombuffer(frame + b"\0" * 16, np.uint8).copy()  # slack past n: nothing may be read there
    out = np.zeros(F.NUM_F, np.int64)
    return F.parse_udp(buf, len(frame), port, out), out


@pytest.mark.parametrize("src,dst,vlan,options", [
    ("10.0.0.2", "10.0.0.1", None, b""),
    ("10.0.0.2", "10.0.0.1", 42, b""),
    ("192.168.7.9", "10.0.0.1", None, b"\x01\x01\x01\x00"),  # NOP, NOP, NOP, end of options
    ("fd00::2", "fd00::1", None, b""),
    ("fe80::1:2", "fd00::1", 7, b""),
])
def test_a_well_formed_datagram_is_found(src, dst, vlan, options):
    payload = bytes(range(37))
    frame = udp(src, dst, 40000, PORT, payload, vlan=vlan, options=options)
    status, out = parse(frame)
    assert status == F.OK
    assert frame[out[F.F_PAYLOAD]:out[F.F_PAYLOAD] + out[F.F_PAYLOAD_LEN]] == payload
    assert out[F.F_FAMILY] == ipaddress.ip_address(src).version and out[F.F_SRC_PORT] == 40000
    assert (out[F.F_SRC_HI], out[F.F_SRC_LO]) == source_words(src)


def test_each_fault_is_named():
    good = udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"hello")
    six = udp("fd00::2", "fd00::1", 40000, PORT, b"hello")
    assert parse(good[:30])[0] == F.SHORT
    assert parse(good[:12] + b"\x08\x06" + good[14:])[0] == F.NOT_IP  # ARP
    assert parse(good[:14] + b"\x55" + good[15:])[0] == F.BAD_IP_HEADER  # version 5
    assert parse(good[:22] + bytes([good[22] ^ 1]) + good[23:])[0] == F.BAD_IP_CHECKSUM  # TTL changed
    # MF set on a datagram that is all there: no fragment of anything
    assert parse(udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"hello", flags_frag=0x2000))[0] == F.BAD_UDP_LENGTH
    assert parse(udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"hello", flags_frag=0x0010))[0] == F.FRAGMENT
    assert parse(udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"hello", proto=6))[0] == F.NOT_UDP
    assert parse(six[:20] + bytes([44]) + six[21:])[0] == F.FRAGMENT
    assert parse(six[:20] + bytes([0]) + six[21:])[0] == F.NOT_UDP  # a hop-by-hop header first
    assert parse(good, PORT + 1)[0] == F.OTHER_PORT
    bad_len = bytearray(good)
    bad_len[38:40] = (200).to_bytes(2, "big")
    assert parse(bytes(bad_len))[0] == F.BAD_UDP_LENGTH
    assert parse(good[:-1] + bytes([good[-1] ^ 0x40]))[0] == F.BAD_UDP_CHECKSUM
    assert parse(six[:-1] + bytes([six[-1] ^ 0x40]))[0] == F.BAD_UDP_CHECKSUM
    assert parse(udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"hello", zero_udp_checksum=True))[0] == F.OK
    assert parse(udp("fd00::2", "fd00::1", 40000, PORT, b"hello", zero_udp_checksum=True))[0] == F.BAD_UDP_CHECKSUM


@pytest.mark.parametrize("src,dst", [("10.0.0.2", "10.0.0.1"), ("fd00::2", "fd00::1")])
def test_a_first_fragment_is_too_large_and_the_rest_are_fragments(src, dst):
    """A datagram larger than a frame arrives fragmented: its first fragment locates the part of
    the payload it holds and the length announced, so that it can be answered TOO_LARGE."""
    payload = bytes(range(256)) * 12
    first, *rest = udp_fragments(src, dst, 40000, PORT, payload, mtu=1500)
    status, out = parse(first)
    assert status == F.TOO_LARGE
    assert out[F.F_PAYLOAD_LEN] == len(payload) and 0 < out[F.F_PRESENT] < len(payload)
    assert first[out[F.F_PAYLOAD]:out[F.F_PAYLOAD] + out[F.F_PRESENT]] == payload[:out[F.F_PRESENT]]
    assert (out[F.F_SRC_HI], out[F.F_SRC_LO], out[F.F_SRC_PORT]) == (*source_words(src), 40000)
    assert len(rest) == 2 and all(parse(f)[0] == F.FRAGMENT for f in rest)
    assert parse(first, PORT + 1)[0] == F.FRAGMENT  # another port's: only counted
    reply = np.zeros(256, np.uint8)  # the answer goes back to the sender's port, unfragmented
    at = F.reply_payload_offset(out[F.F_L3], out[F.F_FAMILY])
    reply[at:at + 5] = np.frombuffer(b"error", np.uint8)
    n = F.write_reply(np.frombuffer(first, np.uint8), out[F.F_L3], out[F.F_FAMILY], reply, 5)
    assert reply[:n].tobytes()[12:] == udp(dst, src, PORT, 40000, b"error")[12:] or ":" not in src
    status, back = parse(reply[:n].tobytes(), 40000)
    assert status == F.OK and back[F.F_SRC_PORT] == PORT and back[F.F_PAYLOAD_LEN] == 5


@pytest.mark.parametrize("src,dst,vlan,options", [
    ("10.0.0.2", "10.0.0.1", None, b"\x01\x01\x01\x00"), ("fd00::2", "fd00::1", 9, b"")])
@pytest.mark.parametrize("payload_len", [0, 1, 72, 1001])
def test_a_reply_parses_back_to_the_sender(src, dst, vlan, options, payload_len):
    frame = udp(src, dst, 40000, PORT, b"x" * 11, vlan=vlan, options=options)
    status, out = parse(frame)
    assert status == F.OK
    req = np.frombuffer(frame, np.uint8)
    reply = np.zeros(2048, np.uint8)
    at = F.reply_payload_offset(out[F.F_L3], out[F.F_FAMILY])
    payload = np.arange(payload_len, dtype=np.uint8)
    reply[at:at + payload_len] = payload
    n = F.write_reply(req, out[F.F_L3], out[F.F_FAMILY], reply, payload_len)
    back = reply[:n].tobytes()
    assert back[:6] == MAC_A and back[6:12] == MAC_B  # back to the request's source
    expect = udp(dst, src, PORT, 40000, payload.tobytes(), vlan=vlan)
    if ipaddress.ip_address(src).version == 4:  # the reply's own IPv4 header: identification 0, no options
        expect = bytearray(expect)
        l3 = 18 if vlan is not None else 14
        expect[l3 + 4:l3 + 6] = b"\0\0"
        expect[l3 + 10:l3 + 12] = b"\0\0"
        expect[l3 + 10:l3 + 12] = checksum(bytes(expect[l3:l3 + 20])).to_bytes(2, "big")
        expect = bytes(expect)
    assert back[12:] == expect[12:]
    status, out2 = parse(back, 40000)
    assert status == F.OK and out2[F.F_PAYLOAD_LEN] == payload_len


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(0, 250))
def test_any_bytes_are_refused_or_found_inside_the_frame(data, n):
    n = min(n, len(data))
    buf = np.frombuffer(data + b"\0" * 64, np.uint8).copy()
    out = np.zeros(F.NUM_F, np.int64)
    status = F.parse_udp(buf, n, PORT, out)
    assert 0 <= status < F.NUM_STATUS
    if status == F.OK:
        assert out[F.F_PAYLOAD] + out[F.F_PAYLOAD_LEN] <= n
    if status == F.TOO_LARGE:
        assert out[F.F_PAYLOAD] + out[F.F_PRESENT] <= n and out[F.F_PRESENT] < out[F.F_PAYLOAD_LEN]


@settings(max_examples=400, deadline=None)
@given(st.integers(0, 80), st.integers(0, 255), st.booleans())
def test_one_changed_byte_of_a_good_frame_is_caught(at, value, six):
    good = udp("fd00::2", "fd00::1", 40000, PORT, b"0123456789") if six else \
        udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"0123456789")
    at = at % len(good)
    if good[at] == value or at < 12:  # the MAC addresses are not checked by anything
        return
    frame = good[:at] + bytes([value]) + good[at + 1:]
    status, _ = parse(frame)
    if status == F.OK:  # only what no checksum covers may change: IPv6's traffic class, flow label, hop limit
        assert six and (14 <= at < 18 or at == 21), (at, value)
