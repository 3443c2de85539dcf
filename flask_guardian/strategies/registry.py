"""The SQL session registry (one ``guardian_sessions`` row per session), shared by the
strategies that keep their sessions there: ``database`` (the row is the session) and
``jwt`` (the row backs the device list and revocation of self-verifying tokens)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, update

from ..models import utcnow
from .base import RequestInfo, SessionInfo, SessionStrategy

if TYPE_CHECKING:
    from ..state import AppState


def bound_to_user(sessions: Any, users: Any) -> Any:
    """The join of a registry row to its user: the same id *and* the same uniquifier, so a
    later account that got the id of a deleted one finds none of its sessions."""
    return and_(users.c.id == sessions.c.user_id,
                users.c.uniquifier == sessions.c.user_uniquifier)


class RegistryStrategy(SessionStrategy):
    """A strategy whose sessions are rows of ``guardian_sessions``: ending, listing and
    user changes are SQL on that table, in the application's transaction."""

    def __init__(self, state: AppState) -> None:
        super().__init__(state)
        self.sessions = state.models.session.__table__

    def on_revoked(self, session_ids: list[str], user_id: int | None) -> None:
        """Called in the revoking transaction, after the registry rows are marked."""

    def on_user_changed(
        self, db_session: Any, user_id: int, version: int, *, end: str | None,
        keep: str | None = None,
    ) -> list[str]:
        if end is None:
            return []
        condition = self.sessions.c.user_id == user_id
        if end == "others" and keep is not None:
            condition = and_(condition, self.sessions.c.id != keep)
        return self._revoke_where(db_session, condition, user_id)

    def insert_record(
        self,
        user: Any,
        info: RequestInfo,
        session_id: str,
        token_hash: str | None,
        now: datetime,
        auth_time: datetime,
        remember: bool = False,
        two_factor: bool = False,
    ) -> tuple[datetime, datetime]:
        """Add the registry row of a new session (``token_hash``: what ``load`` will look
        it up by, or None when the credential is self-contained) and return its
        ``(expires, absolute)`` deadlines; ``remember`` gives it the "remember me"
        lifetimes; ``two_factor`` records a sign-in with a second factor. ``issue`` calls
        it; the caller commits."""
        expires, absolute = self.deadlines(now, auth_time, remember)
        self.db.session.execute(
            self.sessions.insert().values(
                id=session_id,
                user_id=user.id,
                user_uniquifier=user.uniquifier,
                token_hash=token_hash,
                strategy=self.name,
                created_at=auth_time,
                last_seen_at=now,
                expires_at=expires,
                absolute_expires_at=absolute,
                remember=remember,
                two_factor=two_factor,
                ip=info.ip,
                user_agent=info.user_agent,
            )
        )
        return expires, absolute

    def _revoke_where(self, db_session: Any, condition: Any, user_id: int | None) -> list[str]:
        table = self.sessions
        where = and_(condition, table.c.revoked_at.is_(None))
        ids = [row[0] for row in db_session.execute(select(table.c.id).where(where))]
        if ids:
            db_session.execute(
                update(table)
                .where(table.c.id.in_(ids))
                .values(revoked_at=utcnow(), token_hash=None)
            )
            self.on_revoked(ids, user_id)
        return ids

    def revoke(self, session_ids: Iterable[str], user_id: int | None = None) -> list[str]:
        """End the named sessions (those of ``user_id`` only, when given). Does not
        commit. Returns the ids that were live."""
        condition = self.sessions.c.id.in_(list(session_ids))
        if user_id is not None:
            condition = and_(condition, self.sessions.c.user_id == user_id)
        return self._revoke_where(self.db.session, condition, user_id)

    def revoke_user(self, user_id: int, *, except_id: str | None = None) -> list[str]:
        """End every session of ``user_id`` but ``except_id``. Does not commit."""
        condition = self.sessions.c.user_id == user_id
        if except_id is not None:
            condition = and_(condition, self.sessions.c.id != except_id)
        return self._revoke_where(self.db.session, condition, user_id)

    def list(self, user_id: int, current_id: str | None) -> list[SessionInfo]:
        """The live sessions of ``user_id``, newest first."""
        t, u = self.sessions, self.users
        rows = self.db.session.execute(
            select(
                t.c.id, t.c.strategy, t.c.created_at, t.c.last_seen_at, t.c.expires_at,
                t.c.ip, t.c.user_agent, t.c.two_factor,
            )
            .select_from(t.join(u, bound_to_user(t, u)))
            .where(t.c.user_id == user_id, t.c.revoked_at.is_(None), t.c.expires_at > utcnow())
            .order_by(t.c.last_seen_at.desc())
        )
        return [
            SessionInfo(r.id, user_id, r.strategy, r.created_at, r.last_seen_at, r.expires_at,
                        r.ip, r.user_agent, r.id == current_id, r.two_factor)
            for r in rows
        ]
