"""The XDP redirect program (``rtdecoder.transport.xdp_prog``), run in the kernel on frames built
apart (``tests/frame_fixture.py``) with ``BPF_PROG_TEST_RUN``: the service's datagrams are
redirected (here: the fallback action, as no AF_XDP socket is bound), everything else passes to
the kernel. Needs root and a kernel with BPF; skipped with the reason otherwise."""

import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtdecoder.kernels import frames as F
from rtdecoder.transport import xdp_prog as X

sys.path.insert(0, os.path.dirname(__file__))
import netns_fixture as N  # noqa: E402
from frame_fixture import udp, udp_fragments  # noqa: E402

PORT = 7700
OURS = X.XDP_DROP  # the fallback chosen here: what a service datagram gets while no socket is bound


def _program():
    if os.geteuid() != 0:
        pytest.skip("loading an XDP program needs root (CAP_BPF, CAP_NET_ADMIN)")
    try:
        return X.RedirectProgram(PORT, queues=4, fallback=OURS)
    except OSError as e:
        pytest.skip(f"this kernel or host cannot load BPF here: {e}")


@pytest.fixture(scope="module")
def prog():
    p = _program()
    yield p
    p.close()


@pytest.mark.parametrize("frame", [
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"syndrome"),
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b""),
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x", options=b"\x01" * 8),
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x", vlan=12),
    udp("fd00::2", "fd00::1", 40000, PORT, b"syndrome"),
    udp("fd00::2", "fd00::1", 40000, PORT, b"x", vlan=3),
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x", flags_frag=0x2000),  # MF set: the service counts it
    udp_fragments("10.0.0.2", "10.0.0.1", 40000, PORT, bytes(3000))[0],  # the service answers it TOO_LARGE
    udp_fragments("fd00::2", "fd00::1", 40000, PORT, bytes(3000))[0],
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x", zero_udp_checksum=True),
], ids=["v4", "v4-empty", "v4-options", "v4-vlan", "v6", "v6-vlan", "v4-mf", "v4-first-fragment",
        "v6-first-fragment", "v4-no-checksum"])
def test_the_services_datagrams_are_redirected(prog, frame):
    assert prog.test_run(frame) == OURS


@pytest.mark.parametrize("frame", [
    udp("10.0.0.2", "10.0.0.1", 40000, PORT + 1, b"x"),
    udp("fd00::2", "fd00::1", 40000, 53, b"x"),
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x", proto=6),  # TCP to the same port
    bytes(12) + b"\x08\x06" + bytes(28),  # ARP
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x")[:30],  # IPv4 header cut short
    udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x")[:36],  # UDP header cut short
    bytes(14),
    udp_fragments("10.0.0.2", "10.0.0.1", 40000, PORT, bytes(3000))[1],  # later fragments: the kernel's
    udp_fragments("fd00::2", "fd00::1", 40000, PORT, bytes(3000))[2],
], ids=["other-port", "v6-dns", "tcp", "arp", "short-ip", "short-udp", "bare-ethernet", "v4-later-fragment",
        "v6-later-fragment"])
def test_everything_else_passes_to_the_kernel(prog, frame):
    assert prog.test_run(frame) == X.XDP_PASS


def test_ipv4_with_a_header_length_under_five_words_passes(prog):
    f = bytearray(udp("10.0.0.2", "10.0.0.1", 40000, PORT, b"x"))
    f[14] = 0x44
    assert prog.test_run(bytes(f)) == X.XDP_PASS


def test_ipv6_extension_headers_pass(prog):
    f = bytearray(udp("fd00::2", "fd00::1", 40000, PORT, b"x"))
    f[20] = 0  # a hop-by-hop header before UDP: the kernel's to deal with
    assert prog.test_run(bytes(f)) == X.XDP_PASS


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=14, max_size=160), st.integers(0, 5))
def test_what_the_service_accepts_is_redirected(prog, data, kind):
    """On random frames, and on good ones (whole datagrams, first fragments) cut short: whatever
    the service's own parser accepts as a datagram to its port, or as the first fragment of one,
    the program redirects (nothing of the service's reaches the kernel), and the program never
    does anything but redirect or pass."""
    if kind:
        if kind >= 4:
            base = udp_fragments("10.0.0.2" if kind == 4 else "fd00::2", "10.0.0.1" if kind == 4 else "fd00::1",
                                 40000, PORT, data * 20, mtu=576)[0]
        elif kind == 1:
            base = udp("10.0.0.2", "10.0.0.1", 40000, PORT, data[:40])
        else:
            base = udp("fd00::2", "fd00::1", 40000, PORT, data[:40], vlan=5 if kind == 3 else None)
        cut = data[-1] % 4
        data = base[:len(base) - cut] if cut else base
    action = prog.test_run(data)
    assert action in (OURS, X.XDP_PASS)
    out = np.zeros(F.NUM_F, np.int64)
    if F.parse_udp(np.frombuffer(data, np.uint8).copy(), len(data), PORT, out) in (F.OK, F.TOO_LARGE):
        assert action == OURS


def test_it_attaches_to_a_veth_in_a_namespace_and_detaches():
    p = _program()
    try:
        with N.veth_pair() as (a, _, ifindex):
            def attach_and_look():
                p.attach(ifindex, "skb")
                shown = N.ip("-o", "link", "show", "va").stdout
                p.close()
                return shown, N.ip("-o", "link", "show", "va").stdout

            shown, after = N.in_ns(a, attach_and_look)
        assert "xdpgeneric" in shown, shown
        assert "xdp" not in after, after
    finally:
        p.close()
