"""The database strategy: the cookie holds an opaque random token (256 bits from
``secrets``); the database stores only its SHA-256, so a leaked table gives no live
session. One indexed query loads session and user together."""

from __future__ import annotations

import re
import secrets
import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from flask import Request
from sqlalchemy import bindparam, select, update

from ..clients import client_agent, ip_network
from ..lookup import RowReader, as_utc
from ..models import profile_columns, utcnow
from ..session import Session, SessionUser
from ..storage import bounded
from .base import (
    EXPIRED,
    REVOKED,
    Ended,
    Loaded,
    RequestInfo,
    new_session_id,
    sha256_hex,
)
from .registry import RegistryStrategy, bound_to_user

if TYPE_CHECKING:
    from .cached_sessions import CachedSessions

# secrets.token_urlsafe(32): 43 characters of the URL-safe alphabet. Anything else is
# refused before it reaches the database.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")

class _Known(NamedTuple):
    """A registry row worked out once and kept while the row stays the same: what
    ``load`` returns for it, its deadline and refresh time (epoch seconds), and the
    address and user agent it was signed in with."""

    loaded: Loaded
    expires_at: float
    refresh_at: float
    ip: str | None
    signed_agent: str | None


#: At most this many rows are kept worked out (one per live session that makes requests).
_KNOWN_MAX = 4096


class DatabaseStrategy(RegistryStrategy):
    """Server-side sessions: revocation is immediate in every process."""

    name = "database"
    #: ``GUARDIAN_SESSION_CACHE`` may keep its sessions in memory (``cached_sessions.py``).
    supports_session_cache = True

    def __init__(self, state: Any) -> None:
        super().__init__(state)
        s, u = self.sessions, self.users
        self._lookup = (
            select(
                s.c.id, s.c.user_id, s.c.created_at, s.c.last_seen_at, s.c.expires_at,
                s.c.absolute_expires_at, s.c.ip, s.c.user_agent,
                u.c.email, *profile_columns(u), s.c.remember, s.c.two_factor,
            )
            .select_from(s.join(u, bound_to_user(s, u)))
            .where(
                s.c.token_hash == bindparam("token_hash"),
                s.c.revoked_at.is_(None),
                u.c.is_active.is_(True),
            )
        )
        self.reader = RowReader(self.db, self._lookup, timeout=self.settings.db_statement_timeout,
                                connect_timeout=self.settings.db_connect_timeout)
        self._touch = (
            update(s)
            .where(s.c.id == bindparam("sid"), s.c.revoked_at.is_(None))
            .values(last_seen_at=bindparam("now"), expires_at=bindparam("expires"))
        )
        self._known: dict[Any, _Known] = {}
        #: The session cache (``GUARDIAN_SESSION_CACHE``), or None: then nothing of it runs.
        self.cache: CachedSessions | None = None
        if self.settings.session_cache:
            from .cached_sessions import CachedSessions

            self.cache = CachedSessions(self, self.settings.session_cache)
            self.load = self.cache.make_load()  # type: ignore[method-assign,assignment]

    def load(self, token: str, request: Request) -> Loaded | Ended | None:
        if _TOKEN_RE.fullmatch(token) is None:
            return None  # cannot be a token we issued: no query
        row = self.reader.first_value(sha256_hex(token))
        if row is None:
            # Revoked rows lose their token hash: ended (or never ours, or purged).
            return REVOKED
        known = self._known.get(row)
        if known is None:
            known = self._remember(row)
        loaded, expires_at, refresh_at, ip, signed_agent = known
        now = time.time()
        if expires_at <= now:
            return EXPIRED
        session = loaded.session
        if now >= refresh_at:
            session = self._refresh(session, row)
            loaded = Loaded(session)
        # The raw header equal to the stored (cleaned) one: unchanged, nothing to clean.
        agent_changed = request.environ.get("HTTP_USER_AGENT") != signed_agent and (
            client_agent(request) != signed_agent
        )
        if (agent_changed or self.settings.monitor_ip_network) and not self.check_client(
            session, request, agent_changed, ip_network(ip)
        ):
            return None
        return loaded

    def is_token(self, token: str) -> bool:
        """Whether ``token`` is shaped like one this strategy issues."""
        return _TOKEN_RE.fullmatch(token) is not None

    def known_row(self, row: Any) -> _Known:
        """What a registry row means (kept: :meth:`_remember`)."""
        return self._known.get(row) or self._remember(row)

    def on_revoked(self, session_ids: list[str], user_id: int | None) -> None:
        if self.cache is not None:
            self.cache.announce(self.db.session, session_ids)

    def on_user_changed(
        self, db_session: Any, user_id: int, version: int, *, end: str | None,
        keep: str | None = None,
    ) -> list[str]:
        ended = super().on_user_changed(db_session, user_id, version, end=end, keep=keep)
        if self.cache is not None:  # a cached session carries the user's name and role
            self.cache.announce(db_session, [], user_id)
        return ended

    def _remember(self, row: Any) -> _Known:
        """What a registry row means, worked out once: a session's row is the same on
        every request until its next refresh, so the parsing and the objects are kept
        (keyed by the whole row, so any change to it is a new entry; bounded)."""
        (sid, user_id, created, last_seen, expires, _absolute, ip, signed_agent,
         email, name, role, remember, two_factor) = row
        expires = as_utc(expires)
        session = Session(sid, SessionUser(user_id, email, name, role), expires, self.name,
                          as_utc(created), bool(remember), bool(two_factor))
        refresh_at = as_utc(last_seen).timestamp() + self.settings.update_age
        known = _Known(Loaded(session), expires.timestamp(), refresh_at, ip, signed_agent)
        if len(self._known) >= _KNOWN_MAX:
            self._known.clear()
        self._known[row] = known
        return known

    def _refresh(self, session: Session, row: Any) -> Session:
        """Move the idle deadline on (capped by the absolute one): one UPDATE, committed."""
        now = utcnow()
        expires, _ = self.deadlines(now, session.auth_time, session.remember, as_utc(row[5]))
        with bounded(self.settings.db_statement_timeout):  # a stall: a 503, not a hang
            self.db.session.execute(self._touch, {"sid": session.id, "now": now,
                                                  "expires": expires})
            self.db.session.commit()
        return Session(session.id, session.user, expires, self.name, session.auth_time,
                       session.remember, session.two_factor)

    def issue(
        self,
        user: Any,
        info: RequestInfo,
        *,
        auth_time: datetime | None = None,
        remember: bool = False,
        two_factor: bool = False,
    ) -> tuple[Session, str]:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        session_id = new_session_id()
        auth_time = auth_time or now
        expires, _ = self.insert_record(user, info, session_id, sha256_hex(token), now, auth_time,
                                        remember, two_factor)
        session = Session(session_id, self.session_user(user), expires, self.name, auth_time,
                          remember, two_factor)
        return session, token
