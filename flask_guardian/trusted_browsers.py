""""Trust this browser" (SPEC §10): after a second factor, a browser may skip the code for
``GUARDIAN_TWO_FACTOR_TRUST_DAYS`` days.

The browser keeps a random token (256 bits, :mod:`secrets`) in an HttpOnly cookie
(``<session cookie name>-2fa-trust``); the server keeps only its SHA-256 in
``guardian_trusted_browsers``, with the user, the user's enrolment generation at the time
(``two_factor.enrolment_generation``), when it ends, and the browser's address and
User-Agent for the sessions page. It counts only for that user, while the row exists (the
sessions page ends it), before it ends, and while the user's generation is the same:
disabling 2FA, enrolling again or regenerating recovery codes changes the generation and
so voids every trusted browser of the user. A leaked table gives no usable cookie.

It skips the code only: the password is still asked, the lockout still counts.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from flask import Response, after_this_request, request
from sqlalchemy import ForeignKey, Index, Integer, String, delete, select, update
from sqlalchemy.orm import Mapped, mapped_column

from .clients import client_agent
from .models import USER_AGENT_MAX_LENGTH, UTCDateTime, declared_on, exact_string, utcnow
from .state import AppState
from .two_factor import enrolment_generation

#: The trust cookie is ``<session cookie name>-2fa-trust``.
COOKIE_SUFFIX = "-2fa-trust"
#: ``secrets.token_urlsafe(32)``: 43 URL-safe characters; anything else is not ours.
_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")
_ID_RE = re.compile(r"[0-9a-f]{32}")

def build_trusted_browser_model(db: Any, user_model: Any) -> Any:
    """Declare ``guardian_trusted_browsers`` on ``db`` (once per ``db``) and return its
    model, so ``db.create_all()`` and Flask-Migrate see it like guardian's other tables."""
    known = declared_on(db).get("trusted_browser")
    if known is not None:
        return known
    user_key = user_model.__table__.c.id

    class TrustedBrowser(db.Model):  # type: ignore[misc]
        """A browser that skips the sign-in code of one user (see the module docstring)."""

        __tablename__ = "guardian_trusted_browsers"

        id: Mapped[str] = mapped_column(exact_string(32), primary_key=True)
        user_id: Mapped[int] = mapped_column(
            Integer, ForeignKey(user_key, ondelete="CASCADE"), nullable=False
        )
        # SHA-256 hex of the cookie's token.
        token_hash: Mapped[str] = mapped_column(exact_string(64), nullable=False, unique=True)
        # The user's enrolment generation when trusted: any other generation voids it.
        generation: Mapped[int] = mapped_column(Integer, nullable=False)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
        last_used_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
        expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
        ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
        user_agent: Mapped[str | None] = mapped_column(
            String(USER_AGENT_MAX_LENGTH), nullable=True
        )

        __table_args__ = (Index("ix_guardian_trusted_browsers_user_id", "user_id"),)

    declared_on(db)["trusted_browser"] = TrustedBrowser
    return TrustedBrowser


@dataclass(frozen=True, slots=True)
class TrustedBrowserInfo:
    """A row of the sessions page's "trusted browsers" list."""

    id: str
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    #: The browser this request came from.
    current: bool

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``GET /auth/sessions``'s ``trustedBrowsers``)."""
        from .devices import describe_user_agent

        return {
            "id": self.id,
            "created": self.created_at.isoformat(),
            "lastUsed": self.last_used_at.isoformat(),
            "expires": self.expires_at.isoformat(),
            "ip": self.ip,
            "userAgent": self.user_agent,
            "device": describe_user_agent(self.user_agent),
            "current": self.current,
        }


def _table(state: AppState) -> Any:
    return build_trusted_browser_model(state.db, state.models.user).__table__


def cookie_name(state: AppState) -> str:
    """The trust cookie's name: ``<session cookie name>-2fa-trust``."""
    return state.settings.cookie_name + COOKIE_SUFFIX


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii")).hexdigest()


def _cookie_digest(state: AppState) -> str | None:
    """The digest of the trust cookie this request carries, or None (no cookie, or a value
    that cannot be ours: no query is made for it)."""
    token = request.cookies.get(cookie_name(state))
    if token is None or not _TOKEN_RE.fullmatch(token):
        return None
    return _digest(token)


def _attributes(state: AppState) -> dict[str, Any]:
    settings = state.settings
    return {"path": settings.cookie_path, "domain": settings.cookie_domain,
            "secure": settings.cookie_secure, "httponly": True,
            "samesite": settings.cookie_samesite}


def is_trusted(state: AppState, user: Any) -> bool:
    """Whether this request's browser is trusted by ``user`` now (same generation, not
    ended). No query without a well-formed trust cookie. Does not commit."""
    digest = _cookie_digest(state)
    if digest is None:
        return False
    table = _table(state)
    row = state.db.session.execute(
        select(table.c.id, table.c.generation, table.c.expires_at)
        .where(table.c.token_hash == digest, table.c.user_id == user.id)
    ).first()
    if row is None:
        return False
    now = utcnow()
    if row.expires_at <= now or row.generation != enrolment_generation(state, user):
        # Void for good (2FA disabled, re-enrolled, codes regenerated, or past its days).
        state.db.session.execute(delete(table).where(table.c.id == row.id))
        return False
    state.db.session.execute(update(table).where(table.c.id == row.id)
                             .values(last_used_at=now))
    return True


def trust(state: AppState, user: Any, generation: int) -> None:
    """Trust this request's browser for ``user`` (a second factor just passed): store the
    token's digest, set the cookie on the response. Does not commit."""
    days = state.settings.second_factor.trust_days
    if days <= 0:
        return
    token = secrets.token_urlsafe(32)
    now = utcnow()
    expires = now + timedelta(days=days)
    agent = client_agent(request)
    table = _table(state)
    # The user's ended ones go now (the list also tidies them): rows cannot pile up.
    state.db.session.execute(delete(table).where(table.c.user_id == user.id,
                                                 table.c.expires_at <= now))
    state.db.session.execute(table.insert().values(
        id=secrets.token_hex(16), user_id=user.id, token_hash=_digest(token),
        generation=generation, created_at=now, last_used_at=now, expires_at=expires,
        ip=request.remote_addr, user_agent=agent,
    ))
    name, attrs = cookie_name(state), _attributes(state)

    @after_this_request
    def _set(response: Response) -> Response:
        response.set_cookie(name, token, expires=expires, **attrs)
        return response


def list_trusted(state: AppState, user_id: int) -> list[TrustedBrowserInfo]:
    """The user's trusted browsers that still count, most recently used first. Rows that
    no longer count (ended, or of another generation) are deleted on the way. One query
    for a user who trusts no browser. Does not commit."""
    table = _table(state)
    db_session = state.db.session
    rows = db_session.execute(
        select(table.c.id, table.c.token_hash, table.c.generation, table.c.created_at,
               table.c.last_used_at, table.c.expires_at, table.c.ip, table.c.user_agent)
        .where(table.c.user_id == user_id).order_by(table.c.last_used_at.desc())
    ).all()
    if not rows:
        return []
    user = db_session.get(state.models.user, user_id)
    generation = None if user is None else enrolment_generation(state, user)
    now = utcnow()
    live = [r for r in rows if r.generation == generation and r.expires_at > now]
    if len(live) < len(rows):
        ended = [r.id for r in rows if r not in live]
        db_session.execute(delete(table).where(table.c.id.in_(ended)))
    digest = _cookie_digest(state)
    return [TrustedBrowserInfo(r.id, r.created_at, r.last_used_at, r.expires_at, r.ip,
                               r.user_agent, digest is not None and r.token_hash == digest)
            for r in live]


def revoke_trusted(state: AppState, user_id: int, browser_id: object) -> bool:
    """End one of the user's trusted browsers by its id (this browser's cookie is cleared
    too when it is the one). True when there was one. Does not commit."""
    if not isinstance(browser_id, str) or not _ID_RE.fullmatch(browser_id):
        return False
    table = _table(state)
    row = state.db.session.execute(
        select(table.c.token_hash).where(table.c.id == browser_id, table.c.user_id == user_id)
    ).first()
    if row is None:
        return False
    state.db.session.execute(delete(table).where(table.c.id == browser_id))
    if row.token_hash == _cookie_digest(state):
        name, attrs = cookie_name(state), _attributes(state)

        @after_this_request
        def _clear(response: Response) -> Response:
            response.delete_cookie(name, **attrs)
            return response

    return True
