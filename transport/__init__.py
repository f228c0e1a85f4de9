"""Network back ends as plug-ins, imported as ``rtdecoder.transport``; one registry that the
configuration, the command line, the server, the emulator and ``rtdecoder doctor`` read.

A transport is one module and one call of ``register``. Its ``TransportSpec`` gives:

- ``probe()``: whether it can run on this host, and why (``Probe``);
- ``open(ctx)``: the service's side, called before any stream is built so that an address in
  use is reported at once: bind or listen (``ctx`` is a ``ServeContext``) and return an
  ``Opened``: the address, what to close, and ``workers(engine, gpu)``, which makes one
  ``rtdecoder.worker.Worker`` per CPU the transport uses once the engine is built, each with its
  endpoint (an object with ``serve(worker)``, the worker thread's body, which runs the
  transport's compiled loop through ``Worker.run_loop``, and ``warm_up(worker)``, which compiles
  that loop before the service is ready);
- ``controller(host, port, stream_id)``: the controller's side, for ``rtdecoder emulate`` and
  tests: an object with ``send(bytes)``, ``recv() -> memoryview | None`` and ``close()``, and
  ``fileno()`` where the emulator's compiled shot driver can use its socket directly;
- ``auto``: its rank under ``--transport auto`` (lowest first among those whose probe says yes;
  None: never chosen by auto); ``remote``: whether a controller in another process can reach it.

Modules: ``udp`` (sockets in an SO_REUSEPORT group, ``serve_loop``), ``roce`` (RDMA through
pyverbs, docs/wire-protocol.md §11), ``xdp`` (AF_XDP sockets, ``xdp_serve_loop``; with
``xdp_prog`` and ``xsk``), ``ring`` (the §11 ring protocol and ``ring_serve_loop``, and the
in-process ``memory`` transport over it), ``libc`` (the C library's socket calls from compiled
code).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass(frozen=True)
class Probe:
    """Whether a transport can run here; ``reason`` says why or why not (and how to fix it)."""

    usable: bool
    reason: str


@dataclass
class ServeContext:
    """What a transport's ``open`` gets from the server.

    Attributes:
        cfg: the ``ServerConfig``; cpus: one entry per worker (a CPU number, or None: not
            pinned); slot_bytes: receive slot size (a power of two); echo: send every datagram
            back unchanged (the transport floor); log: where to write what was chosen.
    """

    cfg: Any
    cpus: list
    slot_bytes: int
    echo: bool
    log: Any


@dataclass
class Opened:
    """What a transport's ``open`` returns: ``address`` (host, port) as bound,
    ``workers(engine, gpu)`` (makes the ``rtdecoder.worker.Worker``s, each with its endpoint;
    ``gpu`` the started ``PersistentDecoder`` or None), ``close()``, and ``fds`` (sockets whose
    queues the metrics read; may be empty)."""

    address: tuple
    workers: Callable[[Any, Any], list]
    close: Callable[[], None]
    fds: list = field(default_factory=list)


@dataclass(frozen=True)
class TransportSpec:
    """One registered transport (see the module docstring)."""

    name: str
    summary: str
    probe: Callable[[], Probe]
    open: Callable[[ServeContext], Opened]
    controller: Callable[[str, int, int], Any]
    auto: int | None = None
    remote: bool = True
    serves: Callable[[Any], str | None] | None = None
    """Optional: whether it can serve this ``ServerConfig`` (None), or why not (a transport that
    needs settings, like AF_XDP's interface)."""
    echo: bool = False
    """Whether its ``open`` honours ``ServeContext.echo`` (``rtdecoder serve --echo``, the
    transport floor); ``--echo`` on one that does not runs over UDP."""


_REGISTRY: dict[str, TransportSpec] = {}


def register(spec: TransportSpec) -> TransportSpec:
    """Add ``spec`` (a transport module calls this when it is imported).

    Raises:
        ValueError: its name is taken, or is ``auto``.
    """
    if spec.name == "auto" or (spec.name in _REGISTRY and _REGISTRY[spec.name] != spec):
        raise ValueError(f"transport name {spec.name!r} is taken")
    _REGISTRY[spec.name] = spec
    return spec


def _loaded() -> dict[str, TransportSpec]:
    from rtdecoder.plugins import load_plugins

    load_plugins()
    return _REGISTRY


def names(remote_only: bool = False) -> tuple[str, ...]:
    """The registered transports' names (those a controller in another process can reach, with
    ``remote_only``)."""
    return tuple(n for n, s in _loaded().items() if s.remote or not remote_only)


def get(name: str) -> TransportSpec:
    """The transport called ``name``.

    Raises:
        rtdecoder.config.ConfigError: no transport has that name.
    """
    from rtdecoder.errors import ConfigError

    try:
        return _loaded()[name]
    except KeyError:
        raise ConfigError(f"unknown transport {name!r}; choose one of {', '.join(names() + ('auto',))}") from None


def choose(name: str, cfg: Any = None) -> tuple[TransportSpec, str]:
    """``(transport, why)`` for ``--transport name``: ``auto`` takes the first transport, by rank,
    whose probe says it can run here and that can serve ``cfg`` (the ``ServerConfig``; a
    transport with a ``serves`` check is passed over without one), and says why.

    Raises:
        rtdecoder.config.ConfigError: an unknown name, or a named transport that cannot run here
            (the message says what is missing).
    """
    from rtdecoder.errors import ConfigError

    if name != "auto":
        spec = get(name)
        st = spec.probe()
        if not st.usable:
            raise ConfigError(f"--transport {name}: {st.reason}")
        why_not = spec.serves(cfg) if spec.serves is not None and cfg is not None else None
        if why_not:
            raise ConfigError(f"--transport {name}: {why_not}")
        return spec, f"transport {name}: {st.reason}"
    ranked = sorted((s for s in _loaded().values() if s.auto is not None), key=lambda s: s.auto)
    passed: list[str] = []
    for spec in ranked:
        st = spec.probe()
        why_not = None
        if st.usable and spec.serves is not None:
            why_not = spec.serves(cfg) if cfg is not None else "needs the server's settings to be chosen"
        if why_not:
            passed.append(f"not {spec.name}: {why_not}")
            continue
        if st.usable:
            return spec, f"transport auto chose {spec.name}: {st.reason}" + (
                f" ({'; '.join(passed)})" if passed else "")
        passed.append(f"not {spec.name}: {st.reason}")
    raise ConfigError(f"--transport auto: no transport can run here ({'; '.join(passed)})")
