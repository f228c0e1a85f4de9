"""rtdecoder: a real-time quantum-error-correction decoder service.

A controller streams syndrome data (detection events or raw measurements, round by round) over UDP
or RoCE; rtdecoder decodes them in sliding windows and sends corrections (logical observable flips)
back, measuring every latency. See README.md and docs/architecture.md.

Public surface:

- ``StreamConfig``, ``ServerConfig``, ``load_config``, ``ConfigError``: configuration.
- ``Engine``: the configured streams, their tables and decoders (``rtdecoder.engine``).
- ``rtdecoder.decoders`` and ``rtdecoder.transport``: the registries of decoders and transports
  (``register``, ``get``, ``names``), which plug-ins extend.
"""

__version__ = "0.1.0"

from rtdecoder.config import ConfigError, ServerConfig, StreamConfig
from rtdecoder.configfile import load_config

__all__ = ["ConfigError", "ServerConfig", "StreamConfig", "load_config", "__version__"]
