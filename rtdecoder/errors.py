"""The errors a configuration raises, below every other module of the package (config, the
decoder and transport registries, the model, the plug-ins all raise them)."""


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message says which and how to fix it."""
