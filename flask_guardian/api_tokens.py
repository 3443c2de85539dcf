"""Tokens for API clients (SPEC §11): a password sign-in that answers with an access token
and a refresh token instead of a cookie, the refresh with rotation and reuse detection,
and revocation (RFC 7009). The routes are ``token_views.py``; the access token is
``access_tokens.py``; where refresh tokens are kept is ``refresh_stores.py``.

The pair is one session of the app's strategy (``strategy.issue``), so it is in the device
list ("API client"), ends with "sign out everywhere", a password change or a deactivation,
and obeys the session's idle and absolute deadlines; a refresh is the client's activity.

Rotation: a refresh spends the presented token (exactly one of several concurrent refreshes
wins, see the stores) and returns its successor, derived from it with a server key
(``HMAC-SHA256``), so the successor is never stored in clear and a racing duplicate within
``GUARDIAN_REFRESH_REUSE_GRACE`` seconds gets the same pair (a client retrying after a
network error is not punished). A spent token presented after the grace is a stolen one
being replayed (or the victim's, after the thief refreshed): the whole session is revoked
(``session_revoked``, reason ``"refresh_reuse"``), so both parties' tokens stop working.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any, NamedTuple

from flask import Flask, current_app, request

from . import signals
from .access_tokens import AccessTokens, derive_key
from .auth import check_credentials
from .clients import client_agent
from .devices import API_CLIENT
from .errors import (
    InvalidCredentials,
    InvalidGrant,
    InvalidRequest,
    NotFound,
    TooManyAttempts,
    TwoFactorRequired,
)
from .models import USER_AGENT_MAX_LENGTH, utcnow
from .refresh_stores import RefreshStore, SessionState, store_for
from .state import AppState
from .strategies.base import RequestInfo, sha256_hex
from .two_factor import two_factor_enabled, verify_second_factor

#: What a refresh token looks like: 256 bits from ``secrets``, URL-safe base64.
_REFRESH_RE = re.compile(r"[A-Za-z0-9_-]{43}")
#: Longer values are refused before anything else looks at them.
MAX_FIELD_LENGTH = 256


class TokenPair(NamedTuple):
    """What ``POST /auth/token`` and ``/auth/token/refresh`` answer."""

    access_token: str
    expires_in: int
    refresh_token: str
    session_id: str

    def to_dict(self) -> dict[str, Any]:
        """The JSON body (SPEC §11)."""
        return {"accessToken": self.access_token, "tokenType": "Bearer",
                "expiresIn": self.expires_in, "refreshToken": self.refresh_token}


def token_field(data: dict[str, Any], name: str) -> str:
    """A refresh token field: present, a non-empty string, not oversized, no NUL; 400
    otherwise. Its shape is checked by the caller (a forged one is a 401)."""
    value = data.get(name)
    if not isinstance(value, str) or not value or len(value) > MAX_FIELD_LENGTH or (
            "\x00" in value):
        raise InvalidRequest(f"'{name}' must be a non-empty string of at most "
                             f"{MAX_FIELD_LENGTH} characters.")
    return value


def api_agent(req: Any) -> str:
    """How the device list records an API client: ``API client; <User-Agent>``."""
    agent = client_agent(req) if req is not None else None
    return (API_CLIENT + (agent or "unknown"))[:USER_AGENT_MAX_LENGTH]


class ApiTokens:
    """The API tokens of one app: its :class:`AccessTokens` and :class:`RefreshStore`."""

    def __init__(self, state: AppState, app: Flask) -> None:
        self.state = state
        self.access = AccessTokens(state, app)
        #: None when the strategy keeps its sessions where no refresh store exists.
        self.store: RefreshStore | None = store_for(state)
        self._successor_key = derive_key(state.settings.secret_key, "refresh-successor")
        self._jti_key = derive_key(state.settings.secret_key, "refresh-jti")

    def _store(self) -> RefreshStore:
        if self.store is None:
            raise NotFound("API tokens are not available with this session strategy.")
        return self.store

    # -- the three operations ----------------------------------------------------------

    def sign_in(self, identifier: object, password: object, code: object = None) -> TokenPair:
        """Check the password under the sign-in lockout (the same counters) and, for a user
        with two-factor authentication on, ``code`` (a TOTP or recovery code, counted on the
        same lockout); then start a session of the strategy with no cookie and answer with
        its first pair."""
        store = self._store()
        state = self.state
        checked = check_credentials(state, identifier, password)
        if checked.error == "too_many_attempts":
            raise TooManyAttempts(retry_after=checked.retry_after or 1)
        if checked.user is None:
            raise InvalidCredentials()
        user = checked.user
        two_factor = False
        if two_factor_enabled(state, user):
            if code is None:
                state.db.session.commit()  # the password counters were reset: keep that
                raise TwoFactorRequired()
            verify_second_factor(state, user, code, client_ip=request.remote_addr or "unknown")
            two_factor = True
        info = RequestInfo(request.remote_addr, api_agent(request))
        # Passed only when True, as start_session does: a strategy written before the
        # two_factor flag existed keeps working for users without 2FA.
        session, _ = (state.strategy.issue(user, info, two_factor=True) if two_factor
                      else state.strategy.issue(user, info))
        _, absolute = state.strategy.deadlines(utcnow(), session.auth_time)
        refresh = secrets.token_urlsafe(32)
        store.add(sha256_hex(refresh), session.id, user.id, absolute)
        state.db.session.commit()
        signals.user_signed_in.send(_app(), user=user, session=session, method="api_token")
        access, exp = self.access.sign(
            session.id, session.user, version=user.session_version or 0,
            auth_time=session.auth_time, issued_at=int(time.time()), limit=absolute)
        return TokenPair(access, max(exp - int(time.time()), 0), refresh, session.id)

    def refresh(self, token: str) -> TokenPair:
        """Spend ``token`` and return its successor pair; see the module docstring."""
        store = self._store()
        db_session = self.state.db.session
        if _REFRESH_RE.fullmatch(token) is None:
            raise InvalidGrant()  # cannot be one we issued: nothing is read
        now_ms = int(time.time() * 1000)
        now = datetime.fromtimestamp(now_ms / 1000, UTC)
        digest = sha256_hex(token)
        found = store.find(digest, lock=True)  # racing refreshes of this token queue here
        if found is None:
            db_session.rollback()
            raise InvalidGrant()
        sid, uid, spent_ms = found
        won = False
        if spent_ms is None:
            # The session first: a dead one's token is refused with nothing written.
            live = store.session_state(sid, uid, now, touch=False)
            if live is None:
                db_session.rollback()
                raise InvalidGrant()
            won = store.spend(digest, now_ms)
            if won:
                spent_ms = now_ms
                live = store.session_state(sid, uid, now, touch=True)
                if live is None:  # ended in between
                    db_session.rollback()
                    raise InvalidGrant()
                store.add(sha256_hex(self._successor(token)), sid, uid, live.absolute)
                db_session.commit()
            else:  # another refresh spent it in between (no row lock: SQLite, Redis)
                db_session.rollback()
                again = store.find(digest)
                spent_ms = None if again is None else again.spent_ms
                if spent_ms is None:
                    raise InvalidGrant()
        if not won:
            db_session.rollback()  # ends the read (and its row lock)
            if now_ms - spent_ms > self.state.settings.api_tokens.reuse_grace * 1000:
                self._reused(sid, uid)
                raise InvalidGrant()
            # A racing duplicate inside the grace: the same pair again, nothing written.
            live = store.session_state(sid, uid, now, touch=False)
            db_session.rollback()
        if live is None:
            raise InvalidGrant()
        return self._pair(sid, live, self._successor(token), token, spent_ms)

    def revoke(self, token: str) -> None:
        """RFC 7009: end the session of a refresh token (spent or not). An unknown or
        malformed-but-well-typed token is not an error (§2.2): nothing happens."""
        store = self._store()
        if _REFRESH_RE.fullmatch(token) is None:
            return
        found = store.find(sha256_hex(token))
        if found is None:
            self.state.db.session.rollback()
            return
        self._end(found.session_id, found.user_id, "token_revoked")

    # -- helpers -----------------------------------------------------------------------

    def _successor(self, token: str) -> str:
        digest = hmac.new(self._successor_key, token.encode("ascii"), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")

    def _pair(self, session_id: str, live: SessionState, successor: str, spent: str,
              spent_ms: int) -> TokenPair:
        """The pair a refresh answers: the same arguments give the same tokens."""
        jti = hmac.new(self._jti_key, spent.encode("ascii"), hashlib.sha256).hexdigest()[:32]
        access, exp = self.access.sign(
            session_id, live.user, version=live.version, auth_time=live.auth_time,
            issued_at=spent_ms // 1000, limit=live.absolute, jti=jti)
        return TokenPair(access, max(exp - int(time.time()), 0), successor, session_id)

    def _reused(self, session_id: str, user_id: int) -> None:
        """A spent refresh token came back after the grace: theft. End the session."""
        self._end(session_id, user_id, "refresh_reuse")

    def _end(self, session_id: str, user_id: int, reason: str) -> None:
        state = self.state
        ended = state.strategy.revoke([session_id], user_id)
        if ended:  # (an ended session's tokens are already useless: nothing to write)
            self._store().forget(session_id)
        state.db.session.commit()
        if ended:  # the signal also refuses its access tokens (access_tokens.py)
            signals.session_revoked.send(_app(), session_ids=ended, user_id=user_id,
                                         reason=reason)


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]
