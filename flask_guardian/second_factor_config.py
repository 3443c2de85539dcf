"""The settings of the sign-in code step (SPEC §10): their defaults, each with its reason,
and their reader. ``config.py`` adds :data:`DEFAULTS` to its own and puts what
:func:`read_settings` returns on ``Settings.second_factor``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .config_values import read_int
from .errors import ConfigurationError

DEFAULTS: dict[str, Any] = {
    # "Trust this browser" lasts 30 days (the usual choice of the big providers), after
    # which that browser is asked for a code again; 0 turns the option off.
    "GUARDIAN_TWO_FACTOR_TRUST_DAYS": 30,
    # Role names whose users must enrol in two-factor authentication before anything
    # else; empty (nobody is forced, and the request path pays nothing).
    "GUARDIAN_TWO_FACTOR_REQUIRED_ROLES": [],
}

#: How long the state between a correct password and its code lives, in seconds (SPEC §10:
#: 5 minutes, enough to open an authenticator app, short enough that a stolen pending
#: cookie is soon useless).
PENDING_MAX_AGE = 300

#: At most this many days of trust: a browser trusted for longer than a year is a
#: second factor nobody remembers having given.
TRUST_DAYS_MAX = 365


@dataclass(frozen=True, slots=True)
class SecondFactorSettings:
    """The validated settings of the sign-in code step."""

    #: Days a trusted browser skips the code; 0: the option is off.
    trust_days: int = 30
    #: Roles whose users must have passed a second factor (enrol first).
    required_roles: frozenset[str] = frozenset()


#: The defaults, for a ``Settings`` made without :func:`read_settings`.
OFF = SecondFactorSettings()


def read_settings(config: Mapping[str, Any]) -> SecondFactorSettings:
    """Validate the two keys (``config`` has every default filled in); raises
    :class:`ConfigurationError` naming the key and what it accepts."""
    days = read_int(config, "GUARDIAN_TWO_FACTOR_TRUST_DAYS", minimum=0)
    if days > TRUST_DAYS_MAX:
        raise ConfigurationError(
            "GUARDIAN_TWO_FACTOR_TRUST_DAYS",
            f"expected a whole number of days from 0 (off) to {TRUST_DAYS_MAX}, got {days!r}",
        )
    return SecondFactorSettings(trust_days=days, required_roles=_roles(config))


def _roles(config: Mapping[str, Any]) -> frozenset[str]:
    key = "GUARDIAN_TWO_FACTOR_REQUIRED_ROLES"
    value = config[key]
    # A bare string would be read as its letters ("admin" -> a, d, m, i, n): refused.
    if isinstance(value, str | bytes | Mapping) or not isinstance(
            value, list | tuple | set | frozenset):
        raise ConfigurationError(
            key, f"expected a list of role names such as ['admin'], got {value!r}")
    for role in value:
        if not isinstance(role, str) or not role.strip() or role != role.strip():
            raise ConfigurationError(
                key, f"every role must be a non-empty name without surrounding spaces, "
                     f"got {role!r}")
    return frozenset(value)
