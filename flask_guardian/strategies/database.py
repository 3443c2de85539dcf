"""The database strategy: the cookie holds an opaque random token (256 bits from
``secrets``); the database stores only its SHA-256, so a leaked table gives no live
session. One indexed query loads session and user together."""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from flask import Request
from sqlalchemy import bindparam, select, update

from ..models import USER_AGENT_MAX_LENGTH, utcnow
from ..session import Session, SessionUser
from .base import Loaded, RequestInfo, SessionStrategy, ip_network, new_session_id, sha256_hex

# secrets.token_urlsafe(32): 43 characters of the URL-safe alphabet. Anything else is
# refused before it reaches the database.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


class DatabaseStrategy(SessionStrategy):
    """Server-side sessions: revocation is immediate in every process."""

    name = "database"

    def __init__(self, state: Any) -> None:
        super().__init__(state)
        s, u = self.sessions, self.users
        self._lookup = (
            select(
                s.c.id, s.c.user_id, s.c.created_at, s.c.last_seen_at, s.c.expires_at,
                s.c.absolute_expires_at, s.c.ip, s.c.user_agent,
                u.c.email, u.c.name, u.c.role,
            )
            .select_from(s.join(u, u.c.id == s.c.user_id))
            .where(
                s.c.token_hash == bindparam("token_hash"),
                s.c.revoked_at.is_(None),
                u.c.is_active.is_(True),
            )
        )
        self._touch = (
            update(s)
            .where(s.c.id == bindparam("sid"), s.c.revoked_at.is_(None))
            .values(last_seen_at=bindparam("now"), expires_at=bindparam("expires"))
        )
        self._update_age = timedelta(seconds=self.settings.update_age)
        self._idle = timedelta(seconds=self.settings.idle_timeout)

    def load(self, token: str, request: Request) -> Loaded | None:
        if _TOKEN_RE.fullmatch(token) is None:
            return None  # cannot be a token we issued: no query
        row = self.db.session.execute(self._lookup, {"token_hash": sha256_hex(token)}).first()
        if row is None:
            return None
        now = utcnow()
        if row.expires_at <= now:
            return None
        expires: datetime = row.expires_at
        if now - row.last_seen_at >= self._update_age:
            expires = min(now + self._idle, row.absolute_expires_at)
            self.db.session.execute(
                self._touch, {"sid": row.id, "now": now, "expires": expires}
            )
            self.db.session.commit()
        session = Session(
            row.id,
            SessionUser(row.user_id, row.email, row.name, row.role),
            expires,
            self.name,
            row.created_at,
        )
        agent = request.headers.get("User-Agent")
        agent_changed = (agent[:USER_AGENT_MAX_LENGTH] if agent else None) != row.user_agent
        if (agent_changed or self.settings.monitor_ip_network) and not self.check_client(
            session, request, agent_changed, ip_network(row.ip)
        ):
            return None
        return session, None

    def issue(
        self,
        user: Any,
        info: RequestInfo,
        *,
        auth_time: datetime | None = None,
    ) -> tuple[Session, str]:
        token = secrets.token_urlsafe(32)
        now = utcnow()
        session_id = new_session_id()
        auth_time = auth_time or now
        expires, _ = self._insert_record(user, info, session_id, sha256_hex(token), now, auth_time)
        return Session(session_id, self._session_user(user), expires, self.name, auth_time), token
