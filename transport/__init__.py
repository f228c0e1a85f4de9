"""Network back ends, imported as ``rtdecoder.transport``.

- ``rtdecoder.transport.udp``: UDP sockets in an SO_REUSEPORT group with BPF steering; source
  addresses and allow-list rows.
- ``rtdecoder.transport.libc``: the C library's socket calls from compiled code, atomic loads and
  stores, ``sockaddr`` parsing.
- ``rtdecoder.transport.roce``: RoCE through pyverbs (docs/wire-protocol.md §11): rendezvous,
  the ring protocol, the RC link, the controller side.
- ``rtdecoder.transport.select``: ``--transport udp|roce|auto``.
"""
