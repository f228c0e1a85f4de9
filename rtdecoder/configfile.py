"""Configuration files of either form, by their name: rtdecoder's TOML (``rtdecoder.config``) or
CUDA-Q QEC's decoder YAML (``rtdecoder.cudaq_config``, for ``.yaml``/``.yml``). Above both
readers, so that neither imports the other."""

from __future__ import annotations

import os
from pathlib import Path

from rtdecoder.config import ServerConfig, load_toml


def is_yaml(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a YAML file (CUDA-Q's form) rather than TOML (rtdecoder's)."""
    return Path(path).suffix.lower() in (".yaml", ".yml")


def load_config(path: str | os.PathLike[str]) -> ServerConfig:
    """Load and validate a configuration: CUDA-Q QEC's decoder YAML when the file ends
    ``.yaml``/``.yml`` (``rtdecoder.cudaq_config.load_yaml``), else rtdecoder's TOML
    (``rtdecoder.config.load_toml``).

    Raises:
        ConfigError: the file is missing or does not parse, a key is unknown, or a value is
            invalid; the message names the file and the key.
    """
    if is_yaml(path):
        from rtdecoder.cudaq_config import load_yaml

        return load_yaml(path)
    return load_toml(path)
