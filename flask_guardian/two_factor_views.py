"""The 2FA page and its forms (SPEC §10), on the ``guardian`` blueprint: ``GET /auth/2fa``,
``POST /auth/2fa/setup``, ``/enable``, ``/disable`` and ``/recovery-codes``. Signed-in
users only; every POST checks the CSRF token. HTML or JSON, as the other routes: a bad
code or password gives the form again (HTML) or the error (JSON), never a 500. The sign-in
step (``POST /auth/2fa/verify``) is not here."""

from __future__ import annotations

import re
from typing import Any

from flask import g, jsonify, redirect, render_template, request, url_for
from markupsafe import Markup

from .errors import AuthError, TooManyAttempts, Unauthorized
from .protection import login_required
from .state import AppState, get_state
from .two_factor import recovery_codes_left, two_factor_enabled
from .two_factor_enrolment import (
    Setup,
    begin_setup,
    disable,
    enable,
    pending_setup,
    regenerate_codes,
)
from .views import _check_csrf, _payload, blueprint, storage_guard, wants_json

_PORT = re.compile(r":\d+$")


def _user(state: AppState) -> Any:
    """The signed-in user's model instance (gone since the session was loaded: 401)."""
    user = state.db.session.get(state.models.user, g.session.user.id)
    if user is None:
        raise Unauthorized()
    return user


def _issuer(state: AppState) -> str:
    """``GUARDIAN_TWO_FACTOR_ISSUER``, or the host the page was served from (no port; an
    IPv6 literal, whose colons would split the otpauth label, gives a fixed name)."""
    configured = state.settings.two_factor.issuer if state.settings.two_factor else None
    if configured:
        return configured
    host = _PORT.sub("", request.host)
    if not host or ":" in host or not host.isprintable() or len(host) > 100:
        return "flask-guardian"
    return host


def _client_ip() -> str:
    return request.remote_addr or "unknown"


def _qr_svg(url: str) -> Markup:
    """The otpauth URL as an inline SVG QR code (no image request, no script). Black on
    white whatever the page's colours: scanners need the contrast."""
    import segno  # imported when a user enrols, not by every app at start-up

    # omitsize: a viewBox instead of a fixed size, so the page's CSS scales it whole.
    svg = segno.make(url, error="m").svg_inline(
        dark="#000", light="#fff", omitsize=True, title="QR code for your authenticator app")
    return Markup(svg)  # noqa: S704 - segno's own markup, the URL escaped by it


def _page(state: AppState, user: Any, *, error: str | None = None,
          setup: Setup | None = None, status: int = 200) -> Any:
    """The 2FA page: status (on), the pending setup to confirm, or the start."""
    enabled = two_factor_enabled(state, user)
    if not enabled and setup is None:
        setup = pending_setup(state, user, issuer=_issuer(state))
    return render_template(
        "guardian/two_factor.html", enabled=enabled, error=error, setup=setup,
        qr=_qr_svg(setup.otpauth_url) if setup and not enabled else None,
        codes_left=recovery_codes_left(state, user) if enabled else 0,
    ), status


def _refused(state: AppState, error: AuthError) -> Any:
    """A refused form: JSON as every error, HTML as the page again with the message."""
    if wants_json() or isinstance(error, Unauthorized):
        raise error
    user = _user(state)
    headers = ({"Retry-After": str(error.retry_after)}
               if isinstance(error, TooManyAttempts) else {})
    body, status = _page(state, user, error=error.message, status=error.status_code)
    return body, status, headers


@blueprint.get("/2fa")
@login_required
@storage_guard
def two_factor_page() -> Any:
    state = get_state()
    user = _user(state)
    if wants_json():
        enabled = two_factor_enabled(state, user)
        return jsonify(
            enabled=enabled,
            pending=not enabled and pending_setup(state, user, issuer=_issuer(state))
            is not None,
            recoveryCodesLeft=recovery_codes_left(state, user) if enabled else 0,
        )
    return _page(state, user)


@blueprint.post("/2fa/setup")
@login_required
@storage_guard
def two_factor_setup() -> Any:
    data = _payload()
    _check_csrf(data)
    state = get_state()
    try:
        setup = begin_setup(state, _user(state), issuer=_issuer(state))
    except AuthError as error:
        return _refused(state, error)
    if wants_json():
        return jsonify(secret=setup.secret, otpauthUrl=setup.otpauth_url)
    return redirect(url_for("guardian.two_factor_page"), 303)


@blueprint.post("/2fa/enable")
@login_required
@storage_guard
def two_factor_enable() -> Any:
    data = _payload()
    _check_csrf(data)
    state = get_state()
    try:
        codes = enable(state, _user(state), data.get("code"))
    except AuthError as error:
        return _refused(state, error)
    return _codes_answer(codes, enabled=True)


@blueprint.post("/2fa/disable")
@login_required
@storage_guard
def two_factor_disable() -> Any:
    data = _payload()
    _check_csrf(data)
    state = get_state()
    try:
        disable(state, _user(state), data.get("password"), client_ip=_client_ip())
    except AuthError as error:
        return _refused(state, error)
    if wants_json():
        return jsonify(ok=True)
    return redirect(url_for("guardian.two_factor_page"), 303)


@blueprint.post("/2fa/recovery-codes")
@login_required
@storage_guard
def two_factor_recovery_codes() -> Any:
    data = _payload()
    _check_csrf(data)
    state = get_state()
    try:
        codes = regenerate_codes(state, _user(state), data.get("password"),
                                 client_ip=_client_ip())
    except AuthError as error:
        return _refused(state, error)
    return _codes_answer(codes, enabled=False)


def _codes_answer(codes: list[str], *, enabled: bool) -> Any:
    """The new recovery codes, shown once: JSON, or a page with a download link."""
    if wants_json():
        return jsonify(ok=True, recoveryCodes=codes)
    return render_template("guardian/two_factor_codes.html", codes=codes,
                           just_enabled=enabled)
