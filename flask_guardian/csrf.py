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
import hashlib
import hmac
import secrets

from flask import Request, g, request
from markupsafe import Markup, escape

from .config import Settings
from .errors import CSRFError
from .per_request import outgoing

FORM_FIELD = "csrf_token"
HEADER = "X-CSRF-Token"


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
