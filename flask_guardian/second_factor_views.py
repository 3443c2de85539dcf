"""The routes of the sign-in code step, on the ``guardian`` blueprint (imported by
``extension.py`` so they exist before the blueprint is registered):

- ``GET /auth/2fa/verify``: the code form while a pending sign-in is valid (JSON
  ``{"pending": bool}``), else back to the sign-in page.
- ``POST /auth/2fa/verify``: ``code`` (TOTP or recovery code), optional ``trust``, CSRF;
  finishes the sign-in and answers as ``POST /auth/signin`` does.
- ``POST /auth/sessions/trusted/<id>/revoke``: stop trusting one of the user's browsers.
"""

from __future__ import annotations

from typing import Any

from flask import g, jsonify, redirect, render_template, url_for

from . import second_factor, trusted_browsers
from .errors import BadRequest, InvalidCode, NotFound, TooManyAttempts
from .protection import login_required
from .state import get_state
from .views import _check_csrf, _login_label, _payload, blueprint, storage_guard, wants_json

#: What a verify without a valid pending sign-in answers: nothing happened.
NO_PENDING = "no_pending_sign_in"
_NO_PENDING_MESSAGE = "Your sign-in expired or was not started in this browser. Sign in again."


def code_form(error: str | None = None, *, trust: bool = False, status: int = 200,
              headers: dict[str, str] | None = None) -> Any:
    """The code step's page (``guardian/signin_code.html``)."""
    days = get_state().settings.second_factor.trust_days
    return (render_template("guardian/signin_code.html", error=error, trust_days=days,
                            trust=trust), status, headers or {})


def _signin_again() -> Any:
    """The sign-in page again, saying why (401): the password step must be done again."""
    state = get_state()
    return render_template(
        "guardian/signin.html", redirect_url=state.settings.default_redirect,
        error=_NO_PENDING_MESSAGE, email="", login_label=_login_label()), 401


@blueprint.get("/2fa/verify")
@storage_guard
def signin_code_page() -> Any:
    found = second_factor.pending_user(get_state())
    if wants_json():
        return jsonify(pending=found is not None)
    if found is None:
        return redirect(url_for("guardian.signin_page"), 303)
    return code_form()


@blueprint.post("/2fa/verify")
def verify_code() -> Any:
    data = _payload()
    _check_csrf(data, always=True)  # anonymous: bound to this browser's CSRF seed
    trust = second_factor.wants_trust(data.get("trust"))
    if trust is None:
        raise BadRequest("'trust' must be true or false.")
    try:
        done = second_factor.verify(get_state(), data.get("code"), trust=trust)
    except (InvalidCode, TooManyAttempts) as error:
        if wants_json():
            raise
        headers = ({"Retry-After": str(error.retry_after)}
                   if isinstance(error, TooManyAttempts) else {})
        return code_form(error.message, trust=trust, status=error.status_code,
                         headers=headers)
    if done is None:
        if wants_json():
            return jsonify(ok=False, error=NO_PENDING, message=_NO_PENDING_MESSAGE), 401
        return _signin_again()
    state = get_state()
    if wants_json():
        body: dict[str, Any] = {"ok": True, "redirectUrl": done.redirect_url,
                                "session": done.session.to_dict(),
                                "csrfToken": state.csrf.token()}
        if done.recovery_codes_left is not None:
            body["recoveryCodesLeft"] = done.recovery_codes_left
        return jsonify(body)
    if done.recovery_codes_left is not None:
        # Signed in; the page says how many recovery codes are left before going on.
        return render_template("guardian/signin_recovery_used.html",
                               left=done.recovery_codes_left, redirect_url=done.redirect_url,
                               two_factor_url=state.settings.url_prefix + "/2fa")
    return redirect(done.redirect_url, 303)


@blueprint.post("/sessions/trusted/<browser_id>/revoke")
@login_required
@storage_guard
def revoke_trusted_browser(browser_id: str) -> Any:
    data = _payload()
    _check_csrf(data)
    state = get_state()
    if not trusted_browsers.revoke_trusted(state, g.session.user.id, browser_id):
        raise NotFound("No such trusted browser.")
    state.db.session.commit()
    if wants_json():
        return jsonify(ok=True)
    return redirect(url_for("guardian.sessions_page"), 303)
