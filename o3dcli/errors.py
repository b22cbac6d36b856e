"""Error types shared across modules (kept import-free so any module can use them)."""


class ConfigError(ValueError):
    """A preset, a config file or an override is invalid; the message says which key and why."""
