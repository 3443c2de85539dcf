"""CSRF tokens: the signed double-submit pattern (OWASP CSRF cheat sheet).

A random seed lives in an HttpOnly cookie (``<cookie name>-csrf``, same attributes as the
session cookie); a token is ``nonce.HMAC(key, seed|nonce)``. A forged request can neither
read the seed nor compute a token for it. The seed is replaced at sign-in and sign-out, so
a token planted before sign-in is useless after it (and login CSRF is covered because the
sign-in form needs a token too).
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

    def _seed(self) -> str:
        seed: str | None = g.get("_guardian_csrf_seed")
        if seed is None:
            seed = request.cookies.get(self.settings.csrf_cookie_name)
            if seed is None or len(seed) != 43 or not seed.isascii():
                seed = self.rotate()
        return seed

    def rotate(self) -> str:
        """Start a new seed (set in the response); tokens of the old one stop working."""
        seed = secrets.token_urlsafe(32)
        g._guardian_csrf_seed = seed
        return seed

    def token(self) -> str:
        """A token for the current client, to put in a form or a header."""
        nonce = secrets.token_urlsafe(12)
        return f"{nonce}.{self._sign(self._seed(), nonce)}"

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
        seed = req.cookies.get(self.settings.csrf_cookie_name)
        if (
            not isinstance(token, str) or len(token) > 200 or not token.isascii()
            or not seed or len(seed) != 43 or not seed.isascii()
        ):
            raise CSRFError()
        nonce, _, mac = token.partition(".")
        if not nonce or not hmac.compare_digest(mac, self._sign(seed, nonce)):
            raise CSRFError()
