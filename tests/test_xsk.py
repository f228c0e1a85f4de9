"""AF_XDP set-up (``rtdecoder.transport.xsk``) with the redirect program, on a veth pair between
two network namespaces made by the test: the service's datagrams arrive in the socket's RX ring
as whole frames, while ARP and ping (and other ports) still go to the kernel. Needs root, AF_XDP
and BPF; skipped with the reason otherwise."""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from rtdecoder.kernels import frames as F
from rtdecoder.transport import xdp_prog as X
from rtdecoder.transport import xsk as K

sys.path.insert(0, os.path.dirname(__file__))
import netns_fixture as N  # noqa: E402

PORT = 7700


@pytest.fixture
def pair():
    """``netns_fixture.veth_pair``: namespaces ``a`` (va 10.9.0.1, fd09::1) and ``b`` (vb 10.9.0.2,
    fd09::2); yields (a, b, ifindex of va)."""
    with N.veth_pair() as p:
        yield p


def _open_xsk(a, ifindex, mode="copy"):
    """The redirect program attached to va and a socket on its queue 0, made in namespace ``a``
    (skipped with the reason where AF_XDP or BPF is not available)."""
    def setup():
        prog = X.RedirectProgram(PORT, queues=4)
        try:
            prog.attach(ifindex, "skb")
            sock = K.XskSocket(ifindex, 0, frames=256, ring=128, mode=mode, xskmap_fd=prog.map_fd)
        except OSError as e:
            prog.close()
            pytest.skip(f"AF_XDP is not available here: {e}")
        return prog, sock

    return N.in_ns(a, setup)


def _start_loop(engine, sock, echo=False):
    """``xdp_serve_loop`` on ``sock`` for ``engine`` in a thread (compiled first), through the
    transport's own endpoint; returns (worker state, thread)."""
    import threading

    from rtdecoder.kernels import tables as T
    from rtdecoder.transport import xdp as XL
    from rtdecoder.worker import WorkerState

    state = WorkerState(engine)
    ep = XL.XdpEndpoint(sock, PORT, 16, echo)
    state.ctl[T.CTL_STOP] = 1
    ep.loop(state, engine.tables)
    state.ctl[T.CTL_STOP] = 0
    thread = threading.Thread(target=ep.loop, args=(state, engine.tables))
    thread.start()
    return state, thread


def _send(ns, host, port, payload: bytes):
    code = ("import socket,sys; s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, "
            "socket.SOCK_DGRAM); s.sendto(bytes.fromhex(sys.argv[3]), (sys.argv[1], int(sys.argv[2])))")
    subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, host, str(port), payload.hex()],
                   check=True, timeout=30)


def _kernel_refuses(ns, host, port) -> bool:
    """A connected UDP socket in ``ns`` sends to ``host:port``, where nothing listens: True when
    the kernel there answers ICMP port unreachable (the send resolved the address first)."""
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.settimeout(3); s.connect((sys.argv[1], int(sys.argv[2])))\n"
            "s.send(b'not ours')\n"
            "try:\n    s.recv(100)\nexcept ConnectionRefusedError:\n    sys.exit(0)\n"
            "except socket.timeout:\n    sys.exit(3)\n"
            "sys.exit(4)\n")
    r = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code, host, str(port)], timeout=30)
    return r.returncode == 0


def _clients(b):
    """UDP sockets made in namespace ``b``, connected to the service's port over IPv4 and IPv6."""
    import socket

    out = []
    for host, fam in (("10.9.0.1", socket.AF_INET), ("fd09::1", socket.AF_INET6)):
        c = N.in_ns(b, lambda fam=fam: socket.socket(fam, socket.SOCK_DGRAM))
        c.settimeout(5)
        c.connect((host, PORT))
        out.append(c)
    return out


def _wait(sock, n, timeout=5.0):
    got, end = [], time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        got += sock.rx_frames()
        time.sleep(0.01)
    return got


def test_the_services_datagrams_arrive_as_frames_and_the_rest_goes_to_the_kernel(pair):
    a, b, ifindex = pair

    prog, sock = _open_xsk(a, ifindex)
    try:
        assert sock.mode == "copy"
        # Another port: ARP (or ND) and the kernel's ICMP port-unreachable answer come through.
        assert _kernel_refuses(b, "10.9.0.1", PORT + 1) and _kernel_refuses(b, "fd09::1", PORT + 1)
        _send(b, "10.9.0.1", PORT, b"syndrome-v4")
        _send(b, "fd09::1", PORT, b"syndrome-v6")
        got = _wait(sock, 2)
        time.sleep(0.2)
        got += sock.rx_frames()
        payloads = []
        out = np.zeros(F.NUM_F, np.int64)
        for frame in got:
            buf = np.frombuffer(frame, np.uint8).copy()
            status = F.parse_udp(buf, len(frame), PORT, out)
            if status == F.OK:
                payloads.append(frame[out[F.F_PAYLOAD]:out[F.F_PAYLOAD] + out[F.F_PAYLOAD_LEN]])
        assert sorted(payloads) == [b"syndrome-v4", b"syndrome-v6"], got
        assert b"not ours" not in b"".join(got)  # the other port's datagrams went to the kernel
    finally:
        sock.close()
        prog.close()


def test_the_compiled_loop_answers_over_af_xdp_as_the_in_process_path(pair):
    """``xdp_serve_loop`` on the socket in namespace ``a``; a controller in ``b`` sends whole shots
    over IPv4 and IPv6 and gets the same CORRECTIONs as the in-process path, sent back as frames
    the kernel there delivers to its UDP socket (so their checksums are right)."""
    from rtdecoder import protocol as P
    from rtdecoder.config import StreamConfig
    from rtdecoder.engine import Engine
    from rtdecoder.kernels import tables as T

    a, b, ifindex = pair
    cfg = StreamConfig(id=0, distance=3, rounds=6, p=0.01, decoder="union_find", window=4, commit=2,
                       allow=("10.9.0.0/24", "fd09::/64"))
    engine, reference = Engine([cfg]), Engine([StreamConfig(id=0, distance=3, rounds=6, p=0.01, decoder="union_find",
                                                            window=4, commit=2)])

    prog, sock = _open_xsk(a, ifindex)
    state, loop = _start_loop(engine, sock)
    clients = []
    try:
        clients += _clients(b)
        lay = reference.streams[0].layout
        nwin = reference.streams[0].plan.num_windows
        dets = reference.streams[0].circuit.compile_detector_sampler(seed=5).sample(20)
        packed = P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)
        strip = lambda r: r[:P.OFF_CONTROLLER_TS] + r[P.HEADER_LEN + 16:]  # noqa: E731 - times differ
        for s in range(len(dets)):
            msg = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=s + 1, num_rounds=lay.num_rounds),
                           packed[s].tobytes())
            c = clients[s % 2]
            c.send(msg)
            got = [c.recv(2048) for _ in range(nwin)]
            assert [strip(g) for g in got] == [strip(w) for w in reference.handle(msg)]
        assert state.counters[T.CNT_FRAMES + F.OK] == len(dets)
    finally:
        state.ctl[T.CTL_STOP] = 1
        loop.join(30)
        for c in clients:
            c.close()
        sock.close()
        prog.close()


def test_echo_mode_sends_every_datagram_back_unchanged_over_af_xdp(pair):
    """The transport floor: in echo mode the loop sends each datagram to its port back to its
    sender, payload unchanged (any bytes, any length up to the MTU, IPv4 and IPv6), and decodes
    nothing."""
    from rtdecoder.config import StreamConfig
    from rtdecoder.engine import Engine
    from rtdecoder.kernels import tables as T

    a, b, ifindex = pair
    engine = Engine([StreamConfig(id=0, distance=3, rounds=3, p=0.01, decoder="union_find")])
    prog, sock = _open_xsk(a, ifindex)
    state, loop = _start_loop(engine, sock, echo=True)
    rng = np.random.default_rng(3)
    clients = []
    try:
        clients += _clients(b)
        sent = 0
        for c in clients:
            for n in (0, 1, 31, 200, 1400):
                data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
                c.send(data)
                assert c.recv(4096) == data
                sent += 1
        assert state.counters[T.CNT_FRAMES + F.OK] == sent
        assert state.counters[T.CNT_PACKETS] == 0  # nothing reached the data path
    finally:
        state.ctl[T.CTL_STOP] = 1
        loop.join(30)
        for c in clients:
            c.close()
        sock.close()
        prog.close()


def test_serve_over_af_xdp_answers_the_emulator_in_another_namespace(pair, tmp_path):
    """``rtdecoder serve --transport xdp`` in namespace ``a`` on the veth, the emulator in ``b``
    speaking plain UDP: every shot answered, none lost, no error reply."""
    import json

    from rtdecoder.cli import ServiceProcess, _stream_argv
    from rtdecoder.config import StreamConfig

    a, b, _ = pair
    cfg = StreamConfig(id=0, distance=3, rounds=9, p=0.01, decoder="union_find", allow=("10.9.0.0/24",))
    try:
        svc = ServiceProcess(_stream_argv(cfg), startup_timeout_s=300,
                             extra=["--transport", "xdp", "--xdp-interface", "va", "--xdp-mode", "copy", "--host",
                                    "10.9.0.1", "--port", str(PORT), "--metrics-port", "-1"],
                             prefix=["ip", "netns", "exec", a])
    except RuntimeError as e:
        if "AF_XDP" in str(e) or "BPF" in str(e):
            pytest.skip(f"AF_XDP is not available here: {e}")
        raise
    out = tmp_path / "report.json"
    with svc:
        log = svc.stderr()
        r = subprocess.run(["ip", "netns", "exec", b, sys.executable, "-m", "rtdecoder", "emulate", "--host",
                            "10.9.0.1", "--port", str(PORT), "--distance", "3", "--rounds", "9", "--p", "0.01",
                            "--shots", "300", "--no-progress", "--cycle-us", "0", "--json", str(out)],
                           capture_output=True, text=True, timeout=300)
    assert "transport xdp" in log and "sockets in copy mode" in log, log
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["shots"] == 300 and report["lost"] == 0 and report["errors"] == 0, report


def test_twenty_thousand_hostile_frames_are_counted_and_the_loop_still_answers(pair):
    """Frames sent raw (AF_PACKET) from namespace ``b``: good datagrams to the service's port with
    one byte changed, cut short, lengths and header lengths wrong, and the first fragments of
    datagrams too large for a frame treated the same way, over IPv4 and IPv6. Those the program redirects are counted by status; none crashes the loop, which
    answers a clean shot afterwards as the in-process path does."""
    import socket
    sys.path.insert(0, os.path.dirname(__file__))
    from frame_fixture import udp as build
    from frame_fixture import udp_fragments

    from rtdecoder import protocol as P
    from rtdecoder.config import StreamConfig
    from rtdecoder.engine import Engine
    from rtdecoder.kernels import tables as T

    a, b, ifindex = pair
    cfg = StreamConfig(id=0, distance=3, rounds=6, p=0.01, decoder="union_find", allow=("10.9.0.0/24", "fd09::/64"))
    engine, reference = Engine([cfg]), Engine([StreamConfig(id=0, distance=3, rounds=6, p=0.01, decoder="union_find")])

    prog, sock = _open_xsk(a, ifindex)
    mac_a, mac_b = N.mac(a, "va"), N.mac(b, "vb")
    state, loop = _start_loop(engine, sock)
    rng = np.random.default_rng(7)
    lay = reference.streams[0].layout
    dets = reference.streams[0].circuit.compile_detector_sampler(seed=9).sample(1)
    good = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=1, num_rounds=lay.num_rounds),
                    P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)[0].tobytes())
    bases = [mac_a + mac_b + build("10.9.0.2", "10.9.0.1", 40000, PORT, good)[12:],
             mac_a + mac_b + build("fd09::2", "fd09::1", 40000, PORT, good)[12:],
             mac_a + mac_b + udp_fragments("10.9.0.2", "10.9.0.1", 40000, PORT, good * 30, mtu=576)[0][12:],
             mac_a + mac_b + udp_fragments("fd09::2", "fd09::1", 40000, PORT, good * 30, mtu=576)[0][12:]]
    raw = N.in_ns(b, lambda: socket.socket(socket.AF_PACKET, socket.SOCK_RAW))
    client = None
    try:
        raw.bind(("vb", 0))
        for i in range(20_000):
            f = bytearray(bases[i % 4])
            kind = rng.integers(0, 4)
            if kind == 0:  # one byte changed, past the MAC addresses
                at = int(rng.integers(12, len(f)))
                f[at] ^= int(rng.integers(1, 256))
            elif kind == 1:  # cut short
                f = f[:int(rng.integers(14, len(f)))]
            elif kind == 2:  # a length field made up
                at = 16 if i % 2 == 0 else 18  # IPv4 total length, or IPv6 payload length
                f[at:at + 2] = int(rng.integers(0, 65536)).to_bytes(2, "big")
            else:  # random bytes after the Ethernet header
                f[14:] = rng.integers(0, 256, len(f) - 14, dtype=np.uint8).tobytes()
            raw.send(bytes(f))
            if i % 500 == 499:
                time.sleep(0.002)  # let the loop keep up: the RX ring holds 128 frames
        end = time.monotonic() + 10
        while time.monotonic() < end and loop.is_alive():
            before = int(state.counters[T.CNT_FRAMES:T.CNT_FRAMES + F.NUM_STATUS].sum())
            time.sleep(0.2)
            if int(state.counters[T.CNT_FRAMES:T.CNT_FRAMES + F.NUM_STATUS].sum()) == before:
                break
        counted = state.counters[T.CNT_FRAMES:T.CNT_FRAMES + F.NUM_STATUS].copy()
        assert loop.is_alive()
        assert counted.sum() > 5_000, counted  # most of them were the service's to look at
        assert counted[F.BAD_UDP_CHECKSUM] > 0 and counted[F.TOO_LARGE] > 0 and \
            counted[F.SHORT] + counted[F.BAD_IP_HEADER] > 0, counted
        client = N.in_ns(b, lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
        client.settimeout(5)
        client.connect(("10.9.0.1", PORT))
        client.send(P.encode(P.Header(P.MsgType.RESET, stream_id=0)))
        client.recv(2048)
        msg = P.encode(P.Header(P.MsgType.SYNDROME, stream_id=0, shot_id=99, num_rounds=lay.num_rounds),
                       P.pack_rounds(dets, lay.round_offsets, lay.round_bytes)[0].tobytes())
        client.send(msg)
        got = [client.recv(2048) for _ in range(reference.streams[0].plan.num_windows)]
        strip = lambda r: r[:P.OFF_CONTROLLER_TS] + r[P.HEADER_LEN + 16:]  # noqa: E731 - times differ
        reference.handle(P.encode(P.Header(P.MsgType.RESET, stream_id=0)))
        assert [strip(g) for g in got] == [strip(w) for w in reference.handle(msg)]
    finally:
        state.ctl[T.CTL_STOP] = 1
        loop.join(30)
        raw.close()
        if client is not None:
            client.close()
        sock.close()
        prog.close()


def test_zero_copy_on_a_driver_without_it_says_what_to_do(pair):
    a, _, ifindex = pair

    def bind():
        prog = X.RedirectProgram(PORT, queues=1)
        try:
            prog.attach(ifindex, "native")
            with pytest.raises(OSError, match="driver of va has no AF_XDP zero-copy.*--xdp-mode copy"):
                K.XskSocket(ifindex, 0, frames=64, ring=32, mode="zerocopy", xskmap_fd=prog.map_fd)
        finally:
            prog.close()

    N.in_ns(a, bind)


def test_the_xdp_features_of_each_interface_are_read_from_the_kernel(pair):
    """``rtdecoder.transport.netdev`` in namespace ``a``: the veth's driver runs XDP natively but
    has no AF_XDP zero-copy, loopback neither; ``rtdecoder doctor`` says so for va."""
    from rtdecoder.transport import netdev

    a, _, ifindex = pair
    try:
        feats = {f.name: f for f in N.in_ns(a, netdev.xdp_features)}
    except OSError as e:
        pytest.skip(f"this kernel does not report XDP features: {e}")
    assert feats["va"].ifindex == ifindex and feats["va"].native and not feats["va"].zerocopy
    assert not feats["lo"].native and not feats["lo"].zerocopy
    r = subprocess.run(["ip", "netns", "exec", a, sys.executable, "-m", "rtdecoder", "doctor"], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert r.returncode == 0, r.stderr[-2000:]
    line = next(ln for ln in r.stdout.splitlines() if "xdp va" in ln)
    assert "native and generic" in line and "copy only" in line, line


def test_the_umem_is_on_huge_pages_when_the_host_has_them(pair):
    """With 2 MiB pages reserved (vm.nr_hugepages, put back afterwards) the UMEM takes them
    (``pages == "hugetlb"``) and the socket still receives; without, it falls back."""
    from rtdecoder.transport import xsk as K

    def free_huge() -> int:
        return int(next(ln for ln in open("/proc/meminfo") if ln.startswith("HugePages_Free")).split()[1])

    a, b, ifindex = pair
    knob = "/proc/sys/vm/nr_hugepages"
    before = open(knob).read().strip()
    try:
        try:
            with open(knob, "w") as f:
                f.write(str(int(before) + 2))
        except OSError as e:
            pytest.skip(f"cannot reserve huge pages here: {e}")
        if free_huge() < 1:
            pytest.skip("the kernel reserved no huge page (memory too fragmented)")
        prog, sock = _open_xsk(a, ifindex)
        try:
            assert sock.pages == "hugetlb" and free_huge() < int(before) + 2
            _send(b, "10.9.0.1", PORT, b"on huge pages")
            assert any(b"on huge pages" in f for f in _wait(sock, 1))
        finally:
            sock.close()
            prog.close()
        m, pages = K.allocate_umem(1 << 20, huge_pages=False)
        assert pages == "4k" and len(m) == 1 << 20
        m.close()
    finally:
        with open(knob, "w") as f:
            f.write(before)
