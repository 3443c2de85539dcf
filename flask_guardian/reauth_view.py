"""``GET``/``POST /auth/reauthenticate`` (SPEC §10): a signed-in user proves it is still
them, with the password (and a second-factor code when two-factor authentication is on),
and the session becomes fresh for :func:`~flask_guardian.fresh_login_required`.

The password goes through the sign-in's own check (``auth.check_credentials``: the same
hash, the same per-identifier and per-address lockout), and success rotates the session:
a new id and token with ``auth_time`` now, the same "remember me" and two-factor state,
and the old session ends (no fixation). The routes are registered on the ``guardian``
blueprint when this module is imported (``Guardian.init_app`` does).
"""

from __future__ import annotations

import math
from typing import Any

from flask import g, jsonify, redirect, render_template, request

from .auth import Checked, begin_session, check_credentials, forget_started
from .errors import InvalidCode, TooManyAttempts, Unauthorized
from .redirects import safe_redirect
from .session import Session
from .signin_view import signin_url
from .state import AppState, get_state
from .storage import is_storage_error, translate
from .two_factor import two_factor_enabled, verify_second_factor
from .views import _check_csrf, _field, _payload, _redirect_field, blueprint, wants_json

#: A storage outage while re-authenticating is a 503 in bounded time.
_guard = translate("reauthentication", get_state)

_REFUSED = "The password is incorrect."
_MESSAGES = {
    "two_factor_required": "Enter the code from your authenticator app, or a recovery code.",
    "invalid_code": "The password or the code is incorrect.",
}


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _asked_target(default: str) -> str:
    """The checked ``redirectUrl`` (or ``next``) of the query string."""
    try:
        asked = request.args.get("redirectUrl") or request.args.get("next")
    except UnicodeDecodeError:  # Werkzeug decodes the query strictly: not ours to guess
        asked = None
    return safe_redirect(asked, default)


def _needs_code(state: AppState, session: Session) -> bool:
    """Whether the session's user has two-factor authentication on (one indexed read)."""
    user = state.db.session.get(state.models.user, session.user.id)
    return user is not None and two_factor_enabled(state, user)


def _page(session: Session, target: str, error: str | None = None, status: int = 200,
          headers: dict[str, str] | None = None) -> Any:
    return (render_template("guardian/reauthenticate.html", redirect_url=target, error=error,
                            email=session.user.email,
                            needs_code=_needs_code(get_state(), session)),
            status, headers or {})


@blueprint.get("/reauthenticate")
def reauthenticate_page() -> Any:
    """The form: the account's email, a password field (and a code field with 2FA)."""
    state = get_state()
    target = _asked_target(state.settings.default_redirect)
    session: Session | None = g.get("session")
    if session is None:  # nobody to re-authenticate: sign in, then come back
        if wants_json():
            raise Unauthorized()
        return redirect(signin_url(state.settings.signin_view, target), 303)
    return _guard(_page)(session, target)


def _identifier(state: AppState, user: Any) -> str | None:
    """What the sign-in form would take for ``user``: its first login field that holds a
    value (``GUARDIAN_LOGIN_FIELDS``), so the check and its lockout are the sign-in's."""
    for field in state.settings.login_fields:
        value = getattr(user, field, None)
        if isinstance(value, str) and value:
            return value
    return None


def _check_password(state: AppState, session: Session, password: str) -> Checked:
    """The sign-in's password check (lockout included) for the session's own user."""
    user = state.db.session.get(state.models.user, session.user.id)
    identifier = None if user is None else _identifier(state, user)
    if identifier is None:  # the strategy vouched for the session: should not happen
        raise Unauthorized()
    checked = check_credentials(state, identifier, password)
    if checked.user is not None and checked.user.id != session.user.id:
        # Another account answers to this identifier (a username equal to an email):
        # the password of someone else never refreshes this session.
        return Checked(None, "invalid_credentials")
    return checked


@blueprint.post("/reauthenticate")
@_guard
def reauthenticate() -> Any:
    """Check the password (and code) and rotate the session; 303 to the checked
    ``redirectUrl`` or JSON ``{"ok": true, "session": {...}}``."""
    data = _payload()
    session: Session | None = g.get("session")
    if session is None:
        raise Unauthorized()
    _check_csrf(data)
    password = _field(data, "password")
    code = _field(data, "code", required=False)
    state = get_state()
    target = safe_redirect(_redirect_field(data), state.settings.default_redirect)
    assert password is not None  # required: _field raised otherwise
    checked = _check_password(state, session, password)
    if checked.error is not None or checked.user is None:
        return _refused(session, target, checked.error or "invalid_credentials",
                        checked.retry_after)
    two_factor = session.two_factor
    if two_factor_enabled(state, checked.user):
        # The second factor too: a code, under the same lockout (contract 2 of issue 14).
        if not code:
            return _refused(session, target, "two_factor_required", None)
        try:
            verify_second_factor(state, checked.user, code, client_ip=_client_ip())
        except InvalidCode:
            return _refused(session, target, "invalid_code", None)
        except TooManyAttempts as exc:
            return _refused(session, target, "too_many_attempts", exc.retry_after)
        two_factor = True
    try:
        fresh = begin_session(state, checked.user, "reauthentication",
                              remember=session.remember, two_factor=two_factor)
    except Exception as exc:
        if is_storage_error(exc):
            forget_started(session)  # nothing new was stored: no cookie for it
        raise
    if wants_json():
        return jsonify(ok=True, redirectUrl=target, session=fresh.to_dict(),
                       csrfToken=state.csrf.token())
    return redirect(target, 303)


def _refused(session: Session, target: str, error: str, retry_after: int | None) -> Any:
    """The generic refusal: 401 (429 with ``Retry-After`` when locked out), as JSON or as
    the form again with a message."""
    status = 429 if error == "too_many_attempts" else 401
    headers = {"Retry-After": str(retry_after)} if retry_after else {}
    if wants_json():
        return jsonify(ok=False, error=error), status, headers
    if error in _MESSAGES:
        message = _MESSAGES[error]
    elif retry_after:
        minutes = math.ceil(retry_after / 60)
        message = f"Too many failed attempts. Try again in {minutes} minute" + (
            "s." if minutes != 1 else ".")
    else:
        message = _REFUSED
    return _page(session, target, message, status, headers)
