"""The storage-only contract every session strategy fills in (as Flask-Session's
backends do), and the small helpers they share.

A strategy answers: which token does this request carry (:meth:`read_token`), which
session is it (:meth:`load`, the hot path), what token starts a new session
(:meth:`issue`), how sessions end (:meth:`revoke`, :meth:`revoke_user`), which sessions a
user has (:meth:`list`), what a user change means for them (:meth:`on_user_changed`) and
what to tidy (:meth:`purge_expired`). The extension never asks which strategy it runs.
Strategies that keep a row per session in the SQL registry share
:class:`~flask_guardian.strategies.registry.RegistryStrategy`; one that keeps its sessions
elsewhere fills the contract in itself (``redis.py``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from flask import Request, current_app

from .. import signals
from ..cookies import read_cookie
from ..models import USER_AGENT_MAX_LENGTH
from ..session import Session, SessionUser

if TYPE_CHECKING:
    from ..state import AppState

logger = logging.getLogger("flask_guardian")


class Loaded(NamedTuple):
    """What :meth:`SessionStrategy.load` found for a valid token: the session, and a new
    token to send back when the strategy re-issued it (``None`` when the current one
    stays). ``load`` returns ``None`` instead for a token that is invalid, expired or
    revoked, and the request cycle then clears the cookie that carried it.

    A strategy may keep one ``Loaded`` per cached session and return it on every request:
    it is immutable."""

    session: Session
    token: str | None = None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What the registry records about the client that signed in."""

    ip: str | None
    user_agent: str | None

    @classmethod
    def from_request(cls, request: Request | None) -> RequestInfo:
        if request is None:
            return cls(None, None)
        return cls(request.remote_addr, client_agent(request))


def client_agent(request: Request) -> str | None:
    """The User-Agent as sessions record and compare it: printable characters only (a NUL
    would be refused by PostgreSQL), at most 512 of them."""
    agent: str | None = request.environ.get("HTTP_USER_AGENT")
    if not agent:
        return None
    if not agent.isprintable():
        agent = "".join(c for c in agent if c.isprintable())
    return agent[:USER_AGENT_MAX_LENGTH] or None


def is_session_id(value: object) -> bool:
    """True for a string shaped like an id :func:`new_session_id` makes; anything else is
    refused before it reaches a query."""
    return isinstance(value, str) and _SESSION_ID_RE.fullmatch(value) is not None


def client_address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a client really has. An IPv4 client seen through a dual-stack socket
    (``gunicorn -b [::]:80``) arrives as ``::ffff:a.b.c.d``, a 6to4 or Teredo one inside an
    IPv6 address: each is unwrapped to its IPv4 address, so it is counted and monitored as
    itself rather than lumped into one ``::/64`` with every other IPv4 client."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]  # (server, client): the client's public IPv4
    return address


def ip_network(ip: str | None) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) network of ``ip``: a change of network, not of address,
    is what session monitoring reports (mobile clients hop addresses within one).
    Loopback is its own network."""
    address = client_address(ip)
    if address is None:
        return None
    prefix = 24 if address.version == 4 else 64
    if address.is_loopback:
        prefix = address.max_prefixlen
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def throttle_key(ip: str | None) -> str:
    """The per-address sign-in counter's key: an IPv4 address (unwrapped as in
    :func:`client_address`) or, for IPv6, its /64 (one host holds a whole /64, so
    counting single addresses would never bite)."""
    address = client_address(ip)
    if address is None:
        return "ip:" + (ip or "unknown")
    if address.version == 4 or address.is_loopback:
        return f"ip:{address}"
    return f"ip:{ip_network(str(address))}"


_SESSION_ID_RE = re.compile(r"[A-Za-z0-9_-]{22}")


def new_session_id() -> str:
    """A public session id: 128 random bits. It names a session in URLs and lists; it is
    never a credential (the cookie token or JWT signature is)."""
    return secrets.token_urlsafe(16)


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A row of the device list (:meth:`Guardian.list_sessions`)."""

    id: str
    user_id: int
    strategy: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool

    def to_dict(self) -> dict[str, Any]:
        from ..devices import describe_user_agent

        return {
            "id": self.id,
            "strategy": self.strategy,
            "created": self.created_at.isoformat(),
            "lastSeen": self.last_seen_at.isoformat(),
            "expires": self.expires_at.isoformat(),
            "ip": self.ip,
            "userAgent": self.user_agent,
            "device": describe_user_agent(self.user_agent),
            "current": self.current,
        }


class SessionStrategy(ABC):
    """The contract of a session strategy: subclass it (or
    :class:`~flask_guardian.strategies.registry.RegistryStrategy`, for sessions kept in
    the SQL registry) and set ``SESSION_STRATEGY`` to the class or its import string."""

    #: The value of ``Session.strategy`` and of the registry's ``strategy`` column.
    name: ClassVar[str]
    #: Whether ``init_app`` must find JWT keys in the configuration.
    needs_jwt_keys: ClassVar[bool] = False

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.settings = state.settings
        self.models = state.models
        self.db = state.db
        self.users = state.models.user.__table__
        self._flagged: dict[str, None] = {}
        self._cookie_name = state.settings.cookie_name
        self._token_max_length = state.settings.token_max_length

    # -- the hot path ----------------------------------------------------------------

    def read_token(self, request: Request) -> str | None:
        """The credential the request carries, or None. Oversized or non-ASCII values are
        dropped here, before any parsing or query."""
        return self.cookie_token(request.environ)

    def sent_by_header(self, request: Request) -> bool:
        """Whether the request's credential comes from a header rather than the cookie
        (an API client): its re-issued token then goes back in the ``X-Guardian-Token``
        header, and a cookie beside a refused header is left alone. Asked only off the
        steady path (a refresh, a refusal). The cookie-only strategies keep this default."""
        return False

    def cookie_token(self, environ: Any) -> str | None:
        """The session cookie's value, or None when absent, oversized or not ASCII."""
        token = read_cookie(environ, self._cookie_name)
        if token is None or len(token) > self._token_max_length or not token.isascii():
            return None
        return token

    @abstractmethod
    def load(self, token: str, request: Request) -> Loaded | None:
        """The session ``token`` belongs to, or None when it is invalid, expired or
        revoked. Runs on every request: one lookup at most, no write unless a refresh is
        due."""

    # -- starting and ending sessions ------------------------------------------------

    @abstractmethod
    def issue(
        self,
        user: Any,
        info: RequestInfo,
        *,
        auth_time: datetime | None = None,
    ) -> tuple[Session, str]:
        """Start a session for ``user`` (store it) and return it with the token for the
        cookie. ``auth_time`` keeps the absolute deadline when a session is
        rotated rather than newly signed in."""

    @abstractmethod
    def revoke(self, session_ids: Iterable[str], user_id: int | None = None) -> list[str]:
        """End the named sessions (those of ``user_id`` only, when given); the ids of those
        that were live. Where the store is the application's database, the caller
        commits."""

    @abstractmethod
    def revoke_user(self, user_id: int, *, except_id: str | None = None) -> list[str]:
        """End every session of ``user_id`` but ``except_id``; the ids that ended."""

    @abstractmethod
    def on_user_changed(
        self, db_session: Any, user_id: int, version: int, *, end: str | None,
        keep: str | None = None,
    ) -> list[str]:
        """A user's role, password, identity or active flag changed, or the user was
        deleted (user_changes.py decides; ``version`` is the new ``session_version``).
        ``end`` is ``"all"`` (end every session), ``"others"`` (all but ``keep``) or None
        (the sessions must see the change). Called from the ORM flush, inside the
        application's transaction; returns the ids of the sessions it ends."""

    def purge_expired(self) -> int:
        """Delete what this strategy keeps and no longer needs, beyond the registry rows
        ``guardian.purge_expired`` deletes itself; returns how many entries went."""
        return 0

    @abstractmethod
    def list(self, user_id: int, current_id: str | None) -> list[SessionInfo]:
        """The live sessions of ``user_id`` (the device list), most recent activity
        first; ``current_id`` is marked current."""

    # -- helpers for every strategy ---------------------------------------------------

    def session_user(self, user: Any) -> SessionUser:
        """The snapshot of ``user`` a session carries (id, email, name, role)."""
        return SessionUser(user.id, user.email, user.name, user.role)

    def deadlines(self, now: datetime, auth_time: datetime) -> tuple[datetime, datetime]:
        """``(expires, absolute)``: the idle deadline capped by the absolute one."""
        absolute = auth_time + timedelta(seconds=self.settings.max_age)
        return min(now + timedelta(seconds=self.settings.idle_timeout), absolute), absolute

    # -- monitoring ------------------------------------------------------------------

    def check_client(
        self, session: Session, request: Request, agent_changed: bool, signed_network: str | None
    ) -> bool:
        """Compare the request with what the session was signed in with; on a change send
        ``suspicious_session`` and, with ``GUARDIAN_ON_SUSPICIOUS_SESSION = "revoke"``, end
        the session. Returns False when the session must not be used."""
        reasons = ["user_agent"] if agent_changed else []
        if self.settings.monitor_ip_network and ip_network(request.remote_addr) != signed_network:
            reasons.append("ip_network")
        if not reasons:
            return True
        action = self.settings.on_suspicious_session
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if action == "revoke" or session.id not in self._flagged:
            # "log" reports a session once per process, not on every request it makes.
            if len(self._flagged) >= 10_000:
                self._flagged.clear()
            self._flagged[session.id] = None
            logger.warning(
                "suspicious session %s of user %s: %s changed",
                session.id, session.user.id, " and ".join(reasons),
            )
            signals.suspicious_session.send(app, session=session, reasons=reasons, action=action)
        if action == "revoke":
            self.revoke([session.id], session.user.id)
            self.db.session.commit()
            signals.session_revoked.send(
                app, session_ids=[session.id], user_id=session.user.id, reason="suspicious"
            )
            return False
        return True


def sha256_hex(value: str) -> str:
    """SHA-256 hex digest: how the database and redis strategies store cookie tokens."""
    return hashlib.sha256(value.encode("ascii")).hexdigest()
