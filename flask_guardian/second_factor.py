"""The second step of a sign-in (SPEC §10): what happens after a correct password for a
user with two-factor authentication, and ``POST /auth/2fa/verify``, which finishes it.

After the password (``auth.sign_in``, and ``sign_in_user`` for an app's own login view),
:func:`after_password` decides, for users with 2FA on (one indexed read for every user,
nothing more for those without it): a browser the user trusts starts the session at once
(``two_factor=True``); any other gets the pending state of ``pending_signin.py`` and no
session. :func:`verify` takes the pending state and a code (contract 2's
``verify_second_factor``: a TOTP code once, or a recovery code once, under the sign-in
lockout) and starts the session the password step would have started, with
``two_factor=True``.

``auth.py`` reaches :func:`after_password` through ``AppState.second_step`` (set by
``init_app``), so it imports nothing of this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from flask import g, has_request_context, request
from sqlalchemy import select

from . import pending_signin, trusted_browsers
from .auth import _bounded, _client_ip, begin_session, forget_started
from .session import Session
from .state import AppState
from .storage import is_storage_error, rollback_quietly, unavailable
from .two_factor import (
    enrolment_generation,
    recovery_codes_left,
    two_factor_enabled,
    verify_second_factor,
)

#: What :func:`after_password` decided: no 2FA (start the session as usual), a trusted
#: browser (start it with ``two_factor=True``), or a code is needed (pending state set).
Outcome = Literal["none", "trusted", "pending"]


def after_password(state: AppState, user: Any, *, remember: bool, redirect_url: str,
                   method: str = "password") -> Outcome:
    """Called by ``auth.sign_in`` after a correct password for an active ``user`` (and by
    ``sign_in_user``, ``method="external"``), before any session starts. Does not commit
    (the caller does)."""
    if not two_factor_enabled(state, user):  # the one read a user without 2FA pays
        return "none"
    if not has_request_context():
        return "pending"  # no browser to finish it: no session either
    if state.settings.second_factor.trust_days > 0 and trusted_browsers.is_trusted(state,
                                                                                     user):
        pending_signin.clear(state)
        return "trusted"
    pending_signin.start(state, user, remember=remember, redirect_url=redirect_url,
                         method=method)
    return "pending"


@dataclass(frozen=True, slots=True)
class Verified:
    """A finished sign-in: the new session, the checked redirect, which kind of code it
    took (``"totp"`` or ``"recovery"``) and, after a recovery code, how many are left."""

    session: Session
    redirect_url: str
    method: str
    recovery_codes_left: int | None = None


def pending_user(state: AppState) -> tuple[pending_signin.Pending, Any] | None:
    """The request's valid pending sign-in and its user (active, the same account as at the
    password step, unchanged since), or None."""
    pending = pending_signin.read(state)
    if pending is None:
        return None
    model = state.models.user
    user = state.db.session.execute(
        select(model).where(model.__table__.c.id == pending.user_id)
    ).scalar_one_or_none()
    if (user is None or not user.is_active or user.uniquifier != pending.uniquifier
            or user.session_version != pending.version):
        return None  # deleted, deactivated, or changed (password, role...) meanwhile
    return pending, user


@_bounded
def verify(state: AppState, code: object, *, trust: bool) -> Verified | None:
    """Finish the pending sign-in with ``code``: None when the request has no valid pending
    state (nothing is counted or written); :class:`~flask_guardian.errors.InvalidCode` or
    :class:`~flask_guardian.errors.TooManyAttempts` from ``verify_second_factor`` for a
    refused code (counted). On success the session starts (``two_factor=True``, the
    remembered "remember me"), the pending cookie is cleared and, with ``trust``, this
    browser is trusted."""
    carried = g.get("session")
    try:
        found = pending_user(state)
        if found is None:
            return None
        pending, user = found
        ip = _client_ip()
        method = verify_second_factor(state, user, code, client_ip=ip)  # commits
        generation = enrolment_generation(state, user)
        if trust and generation is not None:
            trusted_browsers.trust(state, user, generation)
        session = begin_session(state, user, pending.method, remember=pending.remember,
                                two_factor=True)  # commits
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        rollback_quietly(state.db)
        forget_started(carried)
        raise unavailable(exc, "two-factor sign-in") from exc
    pending_signin.clear(state)
    left = recovery_codes_left(state, user) if method == "recovery" else None
    return Verified(session, pending.redirect_url, method, left)


def wants_trust(value: object) -> bool | None:
    """The "trust this browser" choice: JSON ``true``/``false`` (or absent), a form
    checkbox; None for anything else (the caller answers 400)."""
    if value is None or isinstance(value, bool):
        return value is True
    if not request.is_json and isinstance(value, str) and value.lower() in (
            "on", "1", "true", "yes", "", "0", "false", "off", "no"):
        return value.lower() in ("on", "1", "true", "yes")
    return None
