"""Which transport the service and the emulator use: ``--transport udp|roce|auto``.

``auto`` takes RoCE where an RDMA device with an active Ethernet port and pyverbs exist
(``rtdecoder.transport.roce.probe``), else UDP, and says why; ``roce`` without them is a
configuration error that names what is missing and how to fix it.
"""

from __future__ import annotations

TRANSPORTS = ("udp", "roce", "auto")


def choose_transport(name: str) -> tuple[str, str]:
    """``(transport, why)`` for ``--transport name``.

    Raises:
        rtdecoder.config.ConfigError: an unknown name, or ``roce`` where RoCE cannot run.
    """
    from rtdecoder.config import ConfigError
    from rtdecoder.transport import roce

    if name not in TRANSPORTS:
        raise ConfigError(f"unknown transport {name!r}; choose one of {', '.join(TRANSPORTS)}")
    if name == "udp":
        return "udp", "transport udp (asked for)"
    st = roce.probe()
    if name == "roce":
        if not st.usable:
            raise ConfigError(f"--transport roce: {st.reason}")
        return "roce", f"transport roce: {st.reason}"
    if st.usable:
        return "roce", f"transport auto chose roce: {st.reason}"
    return "udp", f"transport auto chose udp: {st.reason}"
