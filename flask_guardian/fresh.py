"""Fresh sign-in (SPEC §10): :func:`fresh_login_required` lets a view run only for a
session whose last authentication (``Session.auth_time``: the sign-in, or the last
``POST /auth/reauthenticate``) is recent enough. A stale session is asked for the password
again: browsers are sent to ``GET /auth/reauthenticate?redirectUrl=<this path>``, JSON
clients get 401 ``{"error": "reauthentication_required"}``. Anonymous requests are treated
exactly as :func:`~flask_guardian.login_required` treats them.

Only the views it decorates pay for it: one clock read and a subtraction.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any, TypeVar, overload
from urllib.parse import urlencode

from flask import url_for

from .errors import Unauthorized
from .per_request import get_session
from .session import Session
from .state import get_state

F = TypeVar("F", bound=Callable[..., Any])


class ReauthenticationRequired(Unauthorized):
    """Signed in, but not recently enough for this route (:func:`fresh_login_required`).
    Browsers are redirected to ``GET /auth/reauthenticate``; JSON clients get 401 with
    ``error`` ``"reauthentication_required"``."""

    status_code = 401
    code = "reauthentication_required"
    default_message = "Enter your password again to continue."


def is_fresh(session: Session, within: float) -> bool:
    """Whether ``session`` authenticated at most ``within`` seconds ago."""
    return time.time() - session.auth_time.timestamp() <= within


def reauthenticate_url(target: str) -> str:
    """The re-authentication page's URL, coming back to ``target`` (an already checked
    same-origin path) afterwards."""
    return url_for("guardian.reauthenticate_page") + "?" + urlencode({"redirectUrl": target})


def _seconds(within: object) -> float | None:
    """``within`` as seconds (None: the ``GUARDIAN_FRESH_WITHIN`` setting); a mistake is a
    ``TypeError``/``ValueError`` when the view is decorated, not on a request."""
    if within is None:
        return None
    if isinstance(within, timedelta):
        seconds = within.total_seconds()
    elif isinstance(within, (int, float)) and not isinstance(within, bool):
        seconds = float(within)
    else:
        raise TypeError(f"fresh_login_required(within=...) takes seconds (an int or a float) "
                        f"or a timedelta, got {within!r}")
    if not seconds > 0:  # also refuses NaN
        raise ValueError(f"fresh_login_required(within=...) must be more than 0 seconds, "
                         f"got {within!r}")
    return seconds


def _guard(view: F, within: float | None) -> F:
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        session = get_session()
        if session is None:
            raise Unauthorized()
        limit = get_state().settings.fresh_within if within is None else within
        if not is_fresh(session, limit):
            raise ReauthenticationRequired()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@overload
def fresh_login_required(within: F) -> F: ...


@overload
def fresh_login_required(within: float | timedelta | None = None) -> Callable[[F], F]: ...


def fresh_login_required(within: Any = None) -> Any:
    """Let the view run only for a session that authenticated within ``within`` seconds
    (an int, a float or a ``timedelta``; None: ``GUARDIAN_FRESH_WITHIN``, 600 by default).

    Use it as ``@fresh_login_required()``, ``@fresh_login_required(within=300)`` or bare,
    ``@fresh_login_required`` (as Flask-Login's). A stale session raises
    :class:`ReauthenticationRequired` (browsers: 303 to ``/auth/reauthenticate`` with the
    current path as ``redirectUrl``; JSON: 401 ``reauthentication_required``); an anonymous
    request is refused as :func:`~flask_guardian.login_required` refuses it."""
    if callable(within) and not isinstance(within, type):
        return _guard(within, None)  # bare @fresh_login_required
    seconds = _seconds(within)

    def decorator(view: F) -> F:
        return _guard(view, seconds)

    return decorator
