"""CSRF tokens (OWASP CSRF cheat sheet).

A token is ``nonce.HMAC(key, binding|nonce)``. For a signed-in request the binding is the
session's id (the synchronizer-token pattern: the token belongs to that session, so a
token minted anywhere else is refused, and a new session after sign-in or rotation needs a
new token). For an anonymous request (the sign-in form: login CSRF) it is a random seed in
an HttpOnly cookie (``<cookie name>-csrf``, same attributes as the session cookie), the
signed double-submit pattern. Someone able to plant cookies (a sibling subdomain, when the
names lack ``__Host-``) can plant a seed with a token minted for it, but such a pair acts
only for an anonymous browser, never for a signed-in one.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from flask import Flask, Request, g, request
from markupsafe import Markup, escape

from .config import Settings
from .errors import CSRFError
from .per_request import outgoing
from .state import get_state

FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"
#: The methods :func:`csrf_protect` checks (RFC 9110's unsafe ones).
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: Set on a view wrapped by :func:`csrf_protect`, so Flask-WTF's check can leave it to ours.
PROTECTED_MARK = "_guardian_csrf_protected"

P = ParamSpec("P")
R = TypeVar("R")


class CSRFProtect:
    """Issues and checks CSRF tokens for one app."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.key = hmac.new(settings.secret_key, b"flask-guardian csrf", hashlib.sha256).digest()

    def _sign(self, seed: str, nonce: str) -> str:
        mac = hmac.new(self.key, f"{seed}|{nonce}".encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(mac).rstrip(b"=").decode("ascii")

    def _binding(self) -> str:
        """What this client's tokens are bound to: its session, else its seed cookie."""
        session = g.get("session")
        if session is not None:
            return f"session:{session.id}"
        seed: str | None = outgoing().csrf_seed
        if seed is None:
            seed = request.cookies.get(self.settings.csrf_cookie_name)
            if seed is None or len(seed) != 43 or not seed.isascii():
                seed = self.rotate()
        return seed

    def rotate(self) -> str:
        """Start a new seed (set in the response); tokens of the old one stop working."""
        seed = secrets.token_urlsafe(32)
        outgoing().csrf_seed = seed
        return seed

    def token(self) -> str:
        """A token for the current client, to put in a form or a header."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._sign(self._binding(), nonce)}"

    def field(self) -> Markup:
        """``<input type="hidden" name="csrf_token" value="...">`` for a form."""
        return Markup('<input type="hidden" name="%s" value="%s">') % (
            FORM_FIELD, escape(self.token())
        )

    def validate(self, req: Request, submitted: object = None) -> None:
        """Raise :class:`CSRFError` unless the request carries a valid token: header
        ``X-CSRF-Token``, or ``submitted`` (the form field ``csrf_token`` or the JSON body's
        ``csrfToken``, read by the view)."""
        if not self.settings.csrf_enabled:
            return
        token = req.headers.get(HEADER) or submitted
        if not isinstance(token, str) or len(token) > 200 or not token.isascii():
            raise CSRFError()
        session = g.get("session")
        if session is not None:
            binding = "session:" + session.id
        else:
            binding = req.cookies.get(self.settings.csrf_cookie_name) or ""
            if len(binding) != 43 or not binding.isascii():
                raise CSRFError()
        nonce, _, mac = token.partition(".")
        if not nonce or not hmac.compare_digest(mac, self._sign(binding, nonce)):
            raise CSRFError()


def submitted_token() -> object:
    """The token the current request submits in its body: form field ``csrf_token``, or a
    JSON object's ``csrfToken`` / ``csrf_token`` (the ``X-CSRF-Token`` header is read by
    :meth:`CSRFProtect.validate`)."""
    if request.is_json:
        data = request.get_json(silent=True)
        if isinstance(data, dict):
            return data.get("csrfToken") or data.get(FORM_FIELD)
        return None
    return request.form.get(FORM_FIELD)


def check_csrf() -> None:
    """Raise :class:`CSRFError` (403, ``csrf_failed``) unless the current request carries
    a valid flask-guardian token, for an application's own views. Checks whatever the
    method and whether or not anyone is signed in: an anonymous form is bound to the CSRF
    seed cookie (login CSRF is CSRF too). Nothing is checked when
    ``GUARDIAN_CSRF_ENABLED`` is False."""
    state = get_state()
    if state.settings.csrf_enabled:
        state.csrf.validate(request, submitted_token())


def csrf_protect(view: Callable[P, R]) -> Callable[P, R]:
    """Decorator: check flask-guardian's CSRF token (:func:`check_csrf`) on the view's
    POST, PUT, PATCH and DELETE requests. With Flask-WTF's ``CSRFProtect`` in the same app,
    Flask-WTF leaves such a view to this check (see :func:`defer_flask_wtf`)."""

    @functools.wraps(view)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        if request.method in UNSAFE_METHODS:
            check_csrf()
        return view(*args, **kwargs)

    setattr(wrapper, PROTECTED_MARK, True)
    return wrapper


def defer_flask_wtf(app: Flask, blueprint_name: str) -> None:
    """Have Flask-WTF's ``CSRFProtect`` (``app.extensions["csrf"]``), when the app uses it,
    leave the blueprint ``blueprint_name`` and every :func:`csrf_protect` view to our own
    check: both read the form field ``csrf_token`` and the ``X-CSRF-Token`` header, so
    otherwise each refuses the other's token and the sign-in form can never be posted.
    Our check still runs on each of them, so nothing is left unchecked.

    ``CSRFProtect(app)`` may come before or after ``init_app`` and views are added later,
    so the exemption is made by a hook that runs first on the app's first request, before
    Flask-WTF's, and then takes itself out: later requests pay nothing for it."""

    def defer_once() -> None:
        funcs = app.before_request_funcs
        # A new list, not a removal: Flask is iterating over the old one right now.
        funcs[None] = [f for f in funcs.get(None, []) if f is not defer_once]
        wtf: Any = app.extensions.get("csrf")
        if wtf is None or not callable(getattr(wtf, "exempt", None)):
            return
        wtf.exempt(app.blueprints[blueprint_name])
        for view in app.view_functions.values():
            if getattr(view, PROTECTED_MARK, False):
                wtf.exempt(view)

    app.before_request_funcs.setdefault(None, []).insert(0, defer_once)
