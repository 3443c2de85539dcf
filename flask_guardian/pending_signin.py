"""The state between a correct password and its second factor (SPEC §10): a short-lived
cookie, signed with the app's secret key, that names the user and what the finished
sign-in will need (the "remember me" choice and the checked redirect), bound to the
browser that typed the password.

Why it cannot be used elsewhere or later:

- **Signed** (itsdangerous, HMAC-SHA256 under a key derived from ``GUARDIAN_SECRET_KEY``
  or ``SECRET_KEY`` with its own salt): a forged or altered value is refused, and one made for
  another purpose (a CSRF token, another app) never verifies here.
- **5 minutes**: the signature carries its time, and a value older than
  :data:`~flask_guardian.second_factor_config.PENDING_MAX_AGE` seconds is refused whatever
  the cookie's own ``Max-Age`` says (a browser or a thief may keep a cookie longer).
- **Bound to this browser**: it records a digest of the browser's CSRF seed cookie (random,
  256 bits, HttpOnly, set before the password was posted). Another browser has another seed,
  so the pending cookie alone, copied or leaked, completes nothing.
- **Bound to the account as it was**: the user's uniquifier and ``session_version``; a
  password change, deactivation or deleted account in the meantime voids it.
- **Once**: the finished sign-in rotates the CSRF seed (every new session does), so the
  pending cookie no longer matches this browser either, besides being cleared.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from typing import Any

from flask import Response, after_this_request, request
from itsdangerous import BadData, URLSafeTimedSerializer

from .per_request import outgoing
from .second_factor_config import PENDING_MAX_AGE
from .state import AppState

#: The pending cookie is ``<session cookie name>-2fa``.
COOKIE_SUFFIX = "-2fa"
#: Longer values are not ours (a real one is about 250 characters).
MAX_LENGTH = 1024
_SALT = "flask-guardian.two-factor-pending"


@dataclass(frozen=True, slots=True)
class Pending:
    """A verified pending sign-in: whose it is and how the session should start."""

    user_id: int
    uniquifier: str
    version: int
    remember: bool
    redirect_url: str
    #: How the first step was passed: ``"password"`` or ``"external"`` (``sign_in_user``),
    #: for ``user_signed_in``'s ``method``.
    method: str = "password"


def cookie_name(state: AppState) -> str:
    """The pending cookie's name: ``<session cookie name>-2fa``."""
    return state.settings.cookie_name + COOKIE_SUFFIX


def _serializer(state: AppState) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(state.settings.secret_key, salt=_SALT,
                                  signer_kwargs={"digest_method": hashlib.sha256})


def _seed_digest(seed: str) -> str:
    return hashlib.sha256(b"flask-guardian 2fa pending|" + seed.encode("ascii")).hexdigest()


def _browser_seed(state: AppState) -> str:
    """This browser's CSRF seed: the one this response sets, else the one it sent, else a
    new one (set in this response)."""
    seed = outgoing().csrf_seed or request.cookies.get(state.settings.csrf_cookie_name)
    if seed is None or len(seed) != 43 or not seed.isascii():
        seed = state.csrf.rotate()
    return seed


def _attributes(state: AppState) -> dict[str, Any]:
    settings = state.settings
    return {"path": settings.cookie_path, "domain": settings.cookie_domain,
            "secure": settings.cookie_secure, "httponly": True,
            "samesite": settings.cookie_samesite}


def start(state: AppState, user: Any, *, remember: bool, redirect_url: str,
          method: str = "password") -> None:
    """Set the pending cookie for ``user`` on this request's response."""
    value = _serializer(state).dumps({
        "u": user.id, "q": user.uniquifier, "v": user.session_version,
        "r": remember, "t": redirect_url, "m": method,
        "b": _seed_digest(_browser_seed(state)),
        "n": secrets.token_urlsafe(16),  # every pending state is a different value
    })
    name, attrs = cookie_name(state), _attributes(state)

    @after_this_request
    def _set(response: Response) -> Response:
        response.set_cookie(name, value, max_age=PENDING_MAX_AGE, **attrs)
        return response


def clear(state: AppState) -> None:
    """Delete the pending cookie in this request's response (same attributes as set)."""
    if cookie_name(state) not in request.cookies:
        return
    name, attrs = cookie_name(state), _attributes(state)

    @after_this_request
    def _clear(response: Response) -> Response:
        response.delete_cookie(name, **attrs)
        return response


def read(state: AppState) -> Pending | None:
    """The request's pending sign-in, or None when it has none, or one that is forged,
    older than 5 minutes, malformed, or made in another browser."""
    raw = request.cookies.get(cookie_name(state))
    if raw is None or len(raw) > MAX_LENGTH or not raw.isascii():
        return None
    try:
        data = _serializer(state).loads(raw, max_age=PENDING_MAX_AGE)
    except (BadData, UnicodeError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    user_id, uniquifier, version = data.get("u"), data.get("q"), data.get("v")
    remember, target, bound = data.get("r"), data.get("t"), data.get("b")
    method = data.get("m")
    if not (isinstance(user_id, int) and isinstance(uniquifier, str)
            and isinstance(version, int) and isinstance(remember, bool)
            and isinstance(target, str) and isinstance(bound, str)
            and method in ("password", "external")):
        return None
    seed = request.cookies.get(state.settings.csrf_cookie_name)
    if seed is None or len(seed) != 43 or not seed.isascii():
        return None
    if not secrets.compare_digest(bound, _seed_digest(seed)):
        return None  # another browser (or this one after a finished sign-in)
    return Pending(user_id, uniquifier, version, remember, target, method)
