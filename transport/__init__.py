"""Network back ends, imported as ``rtdecoder.transport``.

- ``rtdecoder.transport.udp``: UDP with a busy-polled non-blocking socket.
"""
