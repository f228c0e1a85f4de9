"""Plug-in loading: the modules that register decoders (``rtdecoder.decoders.register``) and
transports (``rtdecoder.transport.register``).

Loaded once, on the first look into either registry:

1. rtdecoder's own decoders and transports;
2. every entry point of the ``rtdecoder.plugins`` group of the installed distributions (a
   plug-in package declares ``[project.entry-points."rtdecoder.plugins"] name = "module"``);
3. the modules named in the ``RTDECODER_PLUGINS`` environment variable, comma-separated (a
   module on ``PYTHONPATH``; the service's child processes inherit the variable).

Importing a plug-in module registers what it holds.
"""

from __future__ import annotations

import importlib
import os
from importlib.metadata import entry_points

from rtdecoder.errors import ConfigError

ENV = "RTDECODER_PLUGINS"
GROUP = "rtdecoder.plugins"
BUILTIN = ("rtdecoder.decoders.matching", "rtdecoder.decoders.union_find", "rtdecoder.decoders.matching_correlated",
           "rtdecoder.transport.udp", "rtdecoder.transport.xdp",
           "rtdecoder.transport.roce", "rtdecoder.transport.ring")

_loaded: list[str] = []
_loading = [False]


def load_plugins() -> list[str]:
    """Import the built-in and plug-in modules (once); returns the plug-ins' module names.

    Raises:
        ConfigError: a plug-in module cannot be imported (the message names it and where it was
            named).
    """
    if _loaded or _loading[0]:
        return [m for m in _loaded if m not in BUILTIN]
    _loading[0] = True
    try:
        for mod in BUILTIN:
            importlib.import_module(mod)
            _loaded.append(mod)
        named = [(ep.value.split(":")[0], f"entry point {ep.name!r} of group {GROUP}")
                 for ep in entry_points(group=GROUP)]
        named += [(m.strip(), f"{ENV}={os.environ[ENV]!r}") for m in os.environ.get(ENV, "").split(",") if m.strip()]
        for mod, where in named:
            if mod in _loaded:
                continue
            try:
                importlib.import_module(mod)
            except Exception as e:  # noqa: BLE001 - any failure of a plug-in is reported the same way
                raise ConfigError(f"plug-in module {mod!r} ({where}) cannot be imported: {type(e).__name__}: {e}; "
                                  "install it or put its folder on PYTHONPATH") from None
            _loaded.append(mod)
    finally:
        _loading[0] = False
    return [m for m in _loaded if m not in BUILTIN]
