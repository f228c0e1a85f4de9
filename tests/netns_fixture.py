"""The tests' side of ``rtdecoder.transport.netns``: the same helpers, and ``veth_pair`` skipping
the test with the reason where namespaces cannot be made."""

import contextlib

import pytest

from rtdecoder.transport.netns import Unavailable, in_ns, ip, mac, setns, tx_checksum  # noqa: F401
from rtdecoder.transport.netns import veth_pair as _veth_pair


@contextlib.contextmanager
def veth_pair():
    """``rtdecoder.transport.netns.veth_pair``, or a skip naming what is missing."""
    try:
        cm = _veth_pair()
        pair = cm.__enter__()
    except Unavailable as e:
        pytest.skip(str(e))
    try:
        yield pair
    finally:
        cm.__exit__(None, None, None)
