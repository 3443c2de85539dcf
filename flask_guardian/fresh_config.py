"""``GUARDIAN_FRESH_WITHIN``: how recent a sign-in :func:`~flask_guardian.fresh_login_required`
accepts by default. Its default and reader live here; ``config.py`` only wires them in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .config_values import read_duration

KEY = "GUARDIAN_FRESH_WITHIN"

#: The default, with its reason (docs/configuration.md repeats it).
FRESH_DEFAULTS: dict[str, Any] = {
    # Ten minutes: long enough to finish what made the app ask for the password (change an
    # email, delete an account), short enough that a session left open on a shared
    # computer, or a stolen cookie, cannot reach those routes without the password.
    KEY: 600,
}


def read_fresh_within(values: Mapping[str, Any]) -> int:
    """``GUARDIAN_FRESH_WITHIN``: whole seconds (an int or a ``timedelta``), at least 1."""
    return read_duration(values, KEY, minimum=1)
