"""Error types shared across modules (kept import-free so any module can use them)."""


class ConfigError(ValueError):
    """A preset, a config file or an override is invalid; the message says which key and why."""


def require(ok: bool, key: str, value, what: str) -> None:
    """Raise ConfigError "bad value for 'key': value must be what" unless ok."""
    if not ok:
        raise ConfigError(f"bad value for '{key}': {value!r} must be {what}")


class UserError(Exception):
    """An error caused by the input or settings (shown without a traceback)."""


def disk_full(error: BaseException) -> bool:
    """Whether a write failed for want of space: ENOSPC or EDQUOT, or a library's own error that
    carries the system's message (safetensors' "I/O error: No space left on device")."""
    import errno

    return getattr(error, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(error)
