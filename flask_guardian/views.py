"""The ``guardian`` blueprint (SPEC §4). Views are thin: they read the request, call the
public functions and pick HTML or JSON; errors are raised as types and rendered by
:func:`render_error`."""

from __future__ import annotations

import math
from typing import Any

from flask import Blueprint, Response, g, jsonify, redirect, render_template, request, url_for

from .access_tokens import challenge
from .auth import revoke, revoke_user, sign_in, sign_out
from .cookies import ENDED_COOKIE_SUFFIX
from .devices import current_first
from .errors import (
    AuthError,
    BadRequest,
    NotFound,
    StorageUnavailable,
    TooManyAttempts,
    Unauthorized,
)
from .fresh import ReauthenticationRequired, reauthenticate_url
from .openapi import openapi_json
from .per_request import OUTGOING, Outgoing
from .protection import login_required
from .redirects import current_path, safe_redirect
from .signin_view import signin_url
from .state import get_state
from .storage import translate
from .trusted_browsers import list_trusted

blueprint = Blueprint("guardian", __name__, template_folder="templates")
# The OpenAPI document of the JSON routes below (openapi.py).
blueprint.add_url_rule("/openapi.json", "openapi_json", openapi_json, methods=["GET"])


#: The device-list views read and write the registry: bounded, and an outage is a 503.
storage_guard = translate("device list", get_state)


def wants_json() -> bool:
    """True for a JSON request (JSON body, or ``Accept`` preferring JSON to HTML)."""
    if request.is_json:
        return True
    best = request.accept_mimetypes.best_match(["text/html", "application/json"])
    return best == "application/json"


def _payload() -> dict[str, Any]:
    if request.is_json:
        try:
            data = request.get_json(silent=True)
        except RecursionError:  # deeply nested JSON: json raises this, not ValueError
            data = None
        if not isinstance(data, dict):
            raise BadRequest("Expected a JSON object.")
        return data
    return request.form.to_dict()


def _field(data: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = data.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise BadRequest(f"'{name}' must be a string.")
    return value


_TRUE, _FALSE = ("on", "1", "true", "yes"), ("", "0", "false", "off", "no")


def _remember(data: dict[str, Any]) -> bool:
    """The "remember me" choice: JSON ``true``/``false`` (or absent), a form checkbox."""
    value = data.get("remember")
    if value is None or isinstance(value, bool):
        return value is True
    if not request.is_json and isinstance(value, str) and value.lower() in _TRUE + _FALSE:
        return value.lower() in _TRUE
    raise BadRequest("'remember' must be true or false.")


def _ended_reason() -> str | None:
    """Why the last session of this browser ended ("expired" or "revoked"), if this request
    found its cookie dead or an earlier one left the short-lived note; consumed here."""
    out: Outgoing | None = g.get(OUTGOING)
    reason = None
    if out is not None:  # this very request found it dead: said here, no note needed
        reason, out.ended = out.ended, None
    reason = reason or request.cookies.get(
        get_state().settings.cookie_name + ENDED_COOKIE_SUFFIX)
    return reason if reason in ("expired", "revoked") else None


def _check_csrf(data: dict[str, Any] | None = None, *, always: bool = False) -> None:
    """CSRF applies when the request carries a cookie credential (and always for sign-in:
    login CSRF). Bearer-only API requests carry no ambient credential."""
    state = get_state()
    if always or state.settings.cookie_name in request.cookies:
        submitted = (data or {}).get("csrf_token") or (data or {}).get("csrfToken")
        state.csrf.validate(request, submitted)


def render_error(error: AuthError) -> Any:
    """Turn a flask-guardian error into a redirect, an HTML page or a JSON body."""
    # An outage or a lockout is temporary: say when to come back (RFC 9110 §10.2.3).
    headers = {"Retry-After": str(error.retry_after)} if isinstance(
        error, StorageUnavailable | TooManyAttempts) else {}
    if wants_json():
        body = {"ok": False, "error": error.code, "message": error.message}
        if isinstance(error, Unauthorized):  # RFC 6750 §3: how to authenticate, or why not
            headers["WWW-Authenticate"] = challenge(request, get_state().settings.jwt_issuer)
        return jsonify(body), error.status_code, headers
    if isinstance(error, Unauthorized):
        settings = get_state().settings
        target = safe_redirect(current_path(), settings.default_redirect)
        if isinstance(error, ReauthenticationRequired):  # signed in, not recently enough
            return redirect(reauthenticate_url(target), 303)
        return redirect(signin_url(settings.signin_view, target), 303)
    return render_template("guardian/error.html", error=error), error.status_code, headers


@blueprint.after_request
def _guardian_headers(response: Response) -> Response:
    headers = response.headers
    headers["Cache-Control"] = "no-store"
    frame = get_state().settings.frame_headers
    if frame is not None:  # an app's own framing policy wins
        headers.setdefault("X-Frame-Options", frame[0])
        headers.setdefault("Content-Security-Policy", frame[1])
    return response


@blueprint.get("/signin")
def signin_page() -> Any:
    state = get_state()
    try:
        asked = request.args.get("redirectUrl") or request.args.get("next")
    except UnicodeDecodeError:  # Werkzeug decodes the query strictly: not ours to guess
        asked = None
    target = safe_redirect(asked, state.settings.default_redirect)
    ended = _ended_reason()
    response = Response(render_template("guardian/signin.html", redirect_url=target,
                                        error=None, email="", ended=ended,
                                        login_label=_login_label()))
    if ended is not None:  # said once
        settings = state.settings
        response.delete_cookie(settings.cookie_name + ENDED_COOKIE_SUFFIX,
                               path=settings.cookie_path, domain=settings.cookie_domain,
                               secure=settings.cookie_secure, httponly=True,
                               samesite=settings.cookie_samesite)
    return response


def _login_label() -> str:
    """The sign-in form's label for the identifier: "Email", or the login fields."""
    fields = get_state().settings.login_fields
    if fields == ("email",):
        return "Email"
    return " or ".join(f.replace("_", " ") for f in fields).capitalize()


def _redirect_field(data: dict[str, Any]) -> str | None:
    """``redirectUrl``, or ``next`` (the name Flask apps send); checked by the caller."""
    value = _field(data, "redirectUrl", required=False)
    return value if value is not None else _field(data, "next", required=False)


@blueprint.post("/signin")
def signin() -> Any:
    data = _payload()
    _check_csrf(data, always=True)
    # "login" for a username form, "email" otherwise: both are matched against
    # GUARDIAN_LOGIN_FIELDS.
    email = _field(data, "login" if data.get("login") is not None else "email")
    password = _field(data, "password")
    redirect_url = _redirect_field(data)
    remember = _remember(data)
    result = sign_in("credentials", email=email, password=password, redirect_url=redirect_url,
                     remember=remember)
    if result.error == "two_factor_required":  # password right; the code step is next
        if wants_json():
            return jsonify(ok=False, error=result.error)
        return render_template("guardian/signin_code.html", error=None, trust=False,
                               trust_days=get_state().settings.second_factor.trust_days)
    status = 429 if result.error == "too_many_attempts" else 401
    # RFC 9110: a 429 says when to come back.
    headers = {"Retry-After": str(result.retry_after)} if result.retry_after else {}
    if wants_json():
        if result.ok and result.session is not None:
            return jsonify(
                ok=True,
                redirectUrl=result.redirect_url,
                session=result.session.to_dict(),
                csrfToken=get_state().csrf.token(),
            )
        return jsonify(ok=False, error=result.error), status, headers
    if result.ok:
        return redirect(result.redirect_url, 303)
    if result.retry_after:
        minutes = math.ceil(result.retry_after / 60)
        wait = f"{minutes} minute{'s' if minutes != 1 else ''}"
        message = f"Too many failed attempts. Try again in {wait}."
    else:
        message = f"The {_login_label().lower()} or password is incorrect."
    return (
        render_template(
            "guardian/signin.html", redirect_url=result.redirect_url, error=message,
            email=email if email and len(email) <= 320 else "", login_label=_login_label(),
            remember=remember,
        ),
        status,
        headers,
    )


@blueprint.get("/signout")
def signout_page() -> Any:
    """A confirmation page: GET changes nothing."""
    return render_template("guardian/signout.html")


@blueprint.post("/signout")
def signout() -> Any:
    data = _payload()
    if g.get("session") is not None:
        # Signing out nobody (an expired or ended session) changes nothing worth forging,
        # and its form's token, bound to the dead session, could never pass.
        _check_csrf(data)
    result = sign_out(redirect_url=data.get("redirectUrl") or data.get("next"))
    if wants_json():
        return jsonify(ok=True, redirectUrl=result.redirect_url)
    return redirect(result.redirect_url, 303)


@blueprint.get("/session")
def session_json() -> Any:
    session = g.get("session")
    return jsonify(session.to_dict() if session else None)


@blueprint.get("/csrf")
def csrf_json() -> Any:
    return jsonify(csrfToken=get_state().csrf.token())


@blueprint.get("/sessions")
@login_required
@storage_guard
def sessions_page() -> Any:
    state = get_state()
    current = g.session
    sessions = current_first(state.strategy.list(current.user.id, current.id))
    trusted = list_trusted(state, current.user.id)  # "trust this browser" (two-factor)
    state.db.session.commit()  # the ones that no longer count were deleted
    if wants_json():
        return jsonify(sessions=[s.to_dict() for s in sessions],
                       trustedBrowsers=[t.to_dict() for t in trusted])
    return render_template("guardian/sessions.html", sessions=sessions, trusted=trusted)


@blueprint.post("/sessions/<session_id>/revoke")
@login_required
@storage_guard
def revoke_one(session_id: str) -> Any:
    data = _payload()
    _check_csrf(data)
    current = g.session
    if not revoke(get_state(), [session_id], current.user.id, reason="revoked"):
        raise NotFound("No such session.")
    if session_id == current.id:
        sign_out()
    if wants_json():
        return jsonify(ok=True)
    return redirect(url_for("guardian.sessions_page" if g.session else "guardian.signin_page"),
                    303)


@blueprint.post("/sessions/revoke-others")
@login_required
@storage_guard
def revoke_others() -> Any:
    data = _payload()
    _check_csrf(data)
    count = revoke_user(get_state(), g.session.user.id, except_current=True)
    if wants_json():
        return jsonify(ok=True, revoked=count)
    return redirect(url_for("guardian.sessions_page"), 303)
