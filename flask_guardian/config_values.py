"""Reading one configuration value: the checks every setting goes through, for
``config.py`` and for a strategy validating its own keys (``SessionStrategy.config_keys``).

Each reader takes the configuration with every default filled in (``load_settings`` hands
out a ``ChainMap`` of ``app.config`` over the defaults) and raises
:class:`~flask_guardian.errors.ConfigurationError` naming the key and what it accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from .errors import ConfigurationError


def read_int(config: Mapping[str, Any], key: str, *, minimum: int = 0) -> int:
    """A whole number, at least ``minimum`` (``True``/``False`` are refused)."""
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigurationError(key, f"expected a whole number >= {minimum}, got {value!r}")
    return value


def check_seconds(
    key: str, value: Any, *, whole: bool, minimum: float = 0, maximum: float | None = None
) -> float:
    """A duration in seconds: an int (or, unless ``whole``, a float) of seconds, or a
    ``timedelta`` as Flask's own settings (``PERMANENT_SESSION_LIFETIME``) accept."""
    accepted = int if whole else (int, float)
    seconds: float | None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, accepted) and not isinstance(value, bool):
        seconds = value
    else:
        seconds = None
    if (
        seconds is None
        or seconds < minimum
        or (maximum is not None and seconds > maximum)
        or (whole and seconds != int(seconds))
    ):
        kind = "a whole number of seconds" if whole else "seconds"
        bounds = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"
        raise ConfigurationError(key, f"expected {kind} {bounds} or a timedelta, got {value!r}")
    return seconds


def read_seconds(config: Mapping[str, Any], key: str, *, minimum: float = 0,
                 maximum: float | None = None) -> float:
    """A duration in seconds, fractions allowed (an int, a float or a ``timedelta``)."""
    return check_seconds(key, config[key], whole=False, minimum=minimum, maximum=maximum)


def read_duration(config: Mapping[str, Any], key: str, *, minimum: int = 0) -> int:
    """A duration in whole seconds (an int or a ``timedelta``), at least ``minimum``."""
    return int(check_seconds(key, config[key], whole=True, minimum=minimum))


def read_timeout(config: Mapping[str, Any], key: str) -> float | None:
    """A timeout in seconds (int, float or timedelta, from 0.1 to 300), or None for none."""
    value = config[key]
    if value is None:
        return None
    if isinstance(value, timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0.1 <= value <= 300
    ):
        raise ConfigurationError(
            key, f"expected seconds from 0.1 to 300 (or None for no bound), got {value!r}"
        )
    return float(value)


def read_bool(config: Mapping[str, Any], key: str) -> bool:
    """``True`` or ``False`` (not a truthy string: ``"false"`` is a mistake, not False)."""
    value = config[key]
    if not isinstance(value, bool):
        raise ConfigurationError(key, f"expected True or False, got {value!r}")
    return value


def read_choice(config: Mapping[str, Any], key: str, choices: tuple[str, ...]) -> str:
    """One of ``choices``."""
    value = config[key]
    if value not in choices:
        accepted = ", ".join(repr(c) for c in choices)
        raise ConfigurationError(key, f"expected one of {accepted}, got {value!r}")
    return str(value)


def read_path(config: Mapping[str, Any], key: str, *, allow_root: bool = True) -> str:
    """A path starting with one ``/``, without a trailing one."""
    value = config[key]
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        raise ConfigurationError(key, f"expected a path starting with one '/', got {value!r}")
    value = value.rstrip("/") or "/"
    if value == "/" and not allow_root:
        raise ConfigurationError(key, "expected a path other than '/'")
    return value


def read_redis_url(values: Mapping[str, Any]) -> str | None:
    """``GUARDIAN_REDIS_URL``: None, or a redis-py URL (redis://, rediss:// or unix://)."""
    key = "GUARDIAN_REDIS_URL"
    value = values[key]
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(
            key, f"expected a redis-py URL (redis://, rediss:// or unix://), got {value!r}"
        )
    return value


def read_redis_prefix(values: Mapping[str, Any]) -> str:
    """``GUARDIAN_REDIS_PREFIX``: a non-empty printable key prefix without spaces."""
    key = "GUARDIAN_REDIS_PREFIX"
    value = values[key]
    if not isinstance(value, str) or not value or not value.isprintable() or " " in value:
        raise ConfigurationError(key, f"expected a non-empty key prefix without spaces, "
                                 f"got {value!r}")
    return value


def read_frame_options(values: Mapping[str, Any]) -> tuple[str, str] | None:
    """``GUARDIAN_FRAME_OPTIONS``: ``(X-Frame-Options, Content-Security-Policy)`` or None."""
    key = "GUARDIAN_FRAME_OPTIONS"
    value = values[key]
    if value is None:
        return None
    ancestors = {"DENY": "'none'", "SAMEORIGIN": "'self'"}
    if value not in ancestors:
        raise ConfigurationError(key, f"expected 'DENY', 'SAMEORIGIN' or None, got {value!r}")
    return value, f"frame-ancestors {ancestors[value]}"
