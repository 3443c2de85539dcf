"""Access tokens for API clients (SPEC §11): short-lived JWTs sent as
``Authorization: Bearer``, verified without a database read whatever the strategy, and
bound to their session (claim ``sid``) so that revoking the session reaches them.

Keys and claim checks are the jwt strategy's: the configured ``GUARDIAN_JWT_*`` keys (the
first signs, all verify, by ``kid``), the algorithm pinned, ``iss``/``aud``/``exp``/``nbf``/
``iat``/``jti``/``sub``/``sid`` required. Where no JWT key is configured (the database and
redis strategies need none), HS256 with a key derived from the app's secret key
(``GUARDIAN_SECRET_KEY`` or ``SECRET_KEY``) under a label of its own. The JOSE header says
``"typ": "at+jwt"`` (RFC 9068), so an access token is never taken for a jwt-strategy session
token, nor the reverse: the request cycle recognises ours by the exact header segment and
leaves every other bearer value to the strategy.

How a revocation reaches an access token:

- jwt strategy: its own revocation feed (``strategies/revocation_feed.py``: in-process at
  once, other processes within ``GUARDIAN_JWT_REVOCATION_INTERVAL``, at once with Redis,
  fail closed), and the users' versions (a role change refuses the token; the client
  refreshes and gets the new role);
- database and redis strategies: in-process at once (the ``session_revoked`` and
  ``user_signed_out`` signals), other processes at once over a Redis channel
  (``redis_channel.py``) when ``GUARDIAN_REDIS_URL`` is set (always with redis), and
  without Redis within the token's own life, ``GUARDIAN_ACCESS_TOKEN_TTL``.

A cookie request pays nothing for this: ``request_cycle`` asks only when the request has an
``Authorization`` header (a ``in`` test on the environ, no call).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import time
import uuid
from datetime import UTC, datetime
from typing import Any, NamedTuple

import jwt
from flask import Flask, Request

from . import signals
from .redis_channel import RedisChannel
from .session import Session, SessionUser
from .state import AppState
from .storage import unavailable
from .strategies.base import is_session_id
from .strategies.revocation_feed import RevocationFeedStrategy

#: The JOSE ``typ`` of an access token (RFC 9068).
TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
#: Claims an access token must carry; PyJWT refuses a token missing any of them.
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "sub", "jti", "iss", "aud", "sid", "auth_time"]
#: The channel (under ``GUARDIAN_REDIS_PREFIX``) of the database and redis strategies.
CHANNEL = "api:revoked"
#: Verified tokens kept per process.
CACHE_SIZE = 4096


def derive_key(secret: bytes, label: str) -> bytes:
    """A 256-bit key for one purpose, derived from the app's secret key (HMAC-SHA256 of
    the label), so no purpose shares a key with CSRF tokens or another purpose."""
    return hmac.new(secret, b"flask-guardian/" + label.encode("ascii"), hashlib.sha256).digest()


def _header_segment(algorithm: str, kid: str | None) -> str:
    """The first segment PyJWT writes for our header (sorted keys, compact JSON)."""
    header: dict[str, str] = {"alg": algorithm, "typ": TOKEN_TYPE}
    if kid is not None:
        header["kid"] = kid
    raw = json.dumps(header, separators=(",", ":"), sort_keys=True).encode("ascii")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


class _Verified(NamedTuple):
    """An access token whose signature and claims were checked (kept in the cache)."""

    session: Session
    exp: float
    user_id: int
    version: int


class AccessTokens:
    """Signing and verifying one app's access tokens, and what it knows of revocations."""

    def __init__(self, state: AppState, app: Flask) -> None:
        settings = state.settings
        self.settings = settings
        self.ttl = settings.api_tokens.access_ttl
        self._strategy_name = state.strategy.name
        self._max_length = settings.token_max_length
        if settings.jwt_keys:
            self.algorithm = settings.jwt_algorithm
            signer = settings.jwt_keys[0]
            self._signing_key: Any = signer.signing
            kid = signer.kid
            self._verify_keys: dict[str | None, Any] = {
                k.kid: k.verifying for k in settings.jwt_keys}
        else:  # the database and redis strategies: a key of its own from the secret key
            self.algorithm = "HS256"
            self._signing_key = derive_key(settings.secret_key, "access-token")
            kid = None
            self._verify_keys = {None: self._signing_key}
        self._headers: dict[str, str] = {"typ": TOKEN_TYPE}
        if kid is not None:
            self._headers["kid"] = kid
        self._prefixes = tuple(_header_segment(self.algorithm, k) + "."
                               for k in self._verify_keys)
        self._decode_options: Any = {"require": REQUIRED_CLAIMS}
        self._cache: dict[str, _Verified] = {}
        strategy = state.strategy
        #: The jwt strategy's revocation feed, when the strategy keeps one.
        self._feed = strategy if isinstance(strategy, RevocationFeedStrategy) else None
        #: Session id -> when its access tokens are dead anyway (in-process revocations).
        self._revoked: dict[str, float] = {}
        self.channel: RedisChannel | None = None
        if self._feed is None and state.redis is not None:
            self.channel = RedisChannel(state.redis, settings.redis_prefix + CHANNEL,
                                        self._hear)
        # Weak (the default): the receivers go with this object, which goes with its app.
        signals.session_revoked.connect(self._session_revoked, sender=app)
        signals.user_signed_out.connect(self._signed_out, sender=app)

    # -- signing -----------------------------------------------------------------------

    def sign(self, session_id: str, user: SessionUser, *, version: int, auth_time: datetime,
             issued_at: int, limit: datetime, jti: str | None = None) -> tuple[str, int]:
        """An access token for the session and its ``exp``: ``GUARDIAN_ACCESS_TOKEN_TTL``
        after ``issued_at``, never past ``limit`` (the session's absolute deadline). The
        same arguments give the same claims, and with a deterministic algorithm (HMAC,
        RSA PKCS#1, EdDSA) the same bytes: how a racing refresh gets the same token."""
        exp = min(issued_at + self.ttl, int(limit.timestamp()))
        claims: dict[str, Any] = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": str(user.id),
            "sid": session_id,
            "jti": jti or uuid.uuid4().hex,
            "iat": issued_at,
            "nbf": issued_at,
            "exp": exp,
            "auth_time": int(auth_time.timestamp()),
            "ver": version,
            "email": user.email,
            "name": user.name,
            "role": user.role,
        }
        token = jwt.encode(claims, self._signing_key, algorithm=self.algorithm,
                           headers=self._headers)
        return token, exp

    # -- the request cycle ---------------------------------------------------------------

    def load_into(self, request: Request, values: dict[str, Any]) -> bool:
        """Called by ``before_request`` when the request has an ``Authorization`` header.
        True when it carries one of our access tokens: ``values["session"]`` is then its
        session, or stays None when the token is refused (the cookie is not read: the
        client chose the bearer credential). False leaves the request to the strategy."""
        scheme, _, token = request.environ["HTTP_AUTHORIZATION"].partition(" ")
        if scheme.lower() != "bearer":
            return False
        token = token.strip()
        if not token.startswith(self._prefixes):
            return False
        if len(token) <= self._max_length and token.isascii():
            values["session"] = self.load(token)
        return True

    def load(self, token: str) -> Session | None:
        """The session of a valid, unrevoked access token, or None."""
        entry = self._cache.get(token)
        if entry is None:
            entry = self._verify(token)
            if entry is None:
                return None
        now = time.time()
        if entry.exp <= now:
            self._cache.pop(token, None)
            return None
        sid = entry.session.id
        feed = self._feed
        if feed is not None:
            if now >= feed._next_poll:
                feed._poll(now)
                if now >= feed._fresh_until and not getattr(
                        self.settings.strategy_options, "fail_open", False):
                    raise unavailable(ConnectionError("revocation feed not read in time"),
                                      "access token revocation check")
            if sid in feed._revoked:
                return None
            version = feed._versions.get(entry.user_id)
            if version is not None and entry.version < version:
                return None  # the user changed: the client refreshes to see it
        elif self.channel is not None:
            self.channel.listen()  # cheap after the first call (and again after a fork)
        if sid in self._revoked:
            return None
        return entry.session

    def _verify(self, token: str) -> _Verified | None:
        """Check the signature and every registered claim; None for anything wrong."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._verify_keys.get(header.get("kid"))
            if key is None or header.get("typ") != TOKEN_TYPE:
                return None
            claims = jwt.decode(
                token, key, algorithms=[self.algorithm],
                audience=self.settings.jwt_audience, issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway, options=self._decode_options,
            )
            sid, version, email, name, role = (claims["sid"], claims["ver"], claims["email"],
                                                claims["name"], claims["role"])
            exp, auth_time, sub = claims["exp"], claims["auth_time"], claims["sub"]
            if not (is_session_id(sid) and type(version) is int and isinstance(email, str)
                    and isinstance(role, str) and isinstance(name, (str, type(None)))
                    and type(exp) is int and type(auth_time) is int
                    and isinstance(sub, str) and sub.isdigit() and len(sub) < 20):
                return None
            user = SessionUser(int(sub), email, name, role)
            session = Session(sid, user, datetime.fromtimestamp(exp, UTC),
                              self._strategy_name, datetime.fromtimestamp(auth_time, UTC))
        except (jwt.PyJWTError, KeyError, ValueError, TypeError, OverflowError, OSError):
            return None
        entry = _Verified(session, float(exp), user.id, version)
        if len(self._cache) >= CACHE_SIZE:
            with contextlib.suppress(StopIteration, RuntimeError):
                self._cache.pop(next(iter(self._cache)), None)
        self._cache[token] = entry
        return entry

    # -- revocations -------------------------------------------------------------------

    def revoked(self, session_ids: list[str]) -> None:
        """These sessions ended: refuse their access tokens in this process now (until
        they would have expired anyway) and tell the other processes over Redis."""
        dead_after = time.time() + self.ttl + self.settings.jwt_leeway + 1
        for sid in session_ids:
            self._revoked[sid] = dead_after
        if len(self._revoked) > 1024:
            now = time.time()
            for sid, until in list(self._revoked.items()):
                if until <= now:
                    self._revoked.pop(sid, None)
        if self.channel is not None and session_ids:
            try:
                self.channel.publish(json.dumps({"sessions": session_ids}))
            except self.channel.errors as exc:
                # Logged (rate-limited); the other processes' tokens die within their TTL.
                unavailable(exc, "access token revocation channel")

    def _hear(self, data: bytes) -> None:
        """A revocation published by another process: a message can only revoke."""
        try:
            message = json.loads(data)
        except ValueError:
            return
        sessions = message.get("sessions") if isinstance(message, dict) else None
        if isinstance(sessions, list):
            dead_after = time.time() + self.ttl + self.settings.jwt_leeway + 1
            for sid in sessions:
                if is_session_id(sid):
                    self._revoked[sid] = dead_after

    def _session_revoked(self, sender: Any, **extra: Any) -> None:
        ids = extra.get("session_ids") or []
        self.revoked([sid for sid in ids if isinstance(sid, str)])

    def _signed_out(self, sender: Any, **extra: Any) -> None:
        session = extra.get("session")
        if isinstance(session, Session):
            self.revoked([session.id])


def challenge(request: Request, realm: str) -> str:
    """The ``WWW-Authenticate`` value of a 401 (RFC 6750 §3): ``invalid_token`` when the
    request sent a bearer token that was refused, a plain realm challenge otherwise."""
    header = request.environ.get("HTTP_AUTHORIZATION", "")
    quoted = realm.replace('"', "").replace("\\", "")
    if header.partition(" ")[0].lower() == "bearer":
        return f'Bearer realm="{quoted}", error="invalid_token"'
    return f'Bearer realm="{quoted}"'
