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
import re
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from flask import Request

from ..clients import client_agent
from ..cookies import read_cookie
from ..session import Session, SessionUser
from .monitoring import ClientMonitor

if TYPE_CHECKING:
    from ..config import Settings
    from ..state import AppState


class Loaded(NamedTuple):
    """What :meth:`SessionStrategy.load` found for a valid token: the session, and a new
    token to send back when the strategy re-issued it (``None`` when the current one
    stays). ``load`` returns ``None`` instead for a token that is invalid, expired or
    revoked, and the request cycle then clears the cookie that carried it.

    A strategy may keep one ``Loaded`` per cached session and return it on every request:
    it is immutable."""

    session: Session
    token: str | None = None


class Ended(NamedTuple):
    """What :meth:`SessionStrategy.load` returns instead of None for a credential of ours
    whose session it knows ended: ``reason`` is ``"expired"`` (past its deadline) or
    ``"revoked"`` (a sign-out elsewhere, the device list, a password change...). The
    request cycle clears the cookie and tells the sign-in page why. ``session`` and
    ``token`` are there so the cycle reads a result the same way whatever it is."""

    reason: str
    session: None = None
    token: None = None


#: The two ends a strategy knows of (return them as they are).
EXPIRED = Ended("expired")
REVOKED = Ended("revoked")


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


def is_session_id(value: object) -> bool:
    """True for a string shaped like an id :func:`new_session_id` makes; anything else is
    refused before it reaches a query."""
    return isinstance(value, str) and _SESSION_ID_RE.fullmatch(value) is not None


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
    #: Signed in with a second factor besides the password.
    two_factor: bool = False

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
            "twoFactor": self.two_factor,
        }


class SessionStrategy(ABC):
    """The contract of a session strategy: subclass it (or
    :class:`~flask_guardian.strategies.registry.RegistryStrategy`, for sessions kept in
    the SQL registry) and set ``SESSION_STRATEGY`` to the class or its import string."""

    #: The value of ``Session.strategy`` and of the registry's ``strategy`` column.
    name: ClassVar[str]
    #: This strategy's own configuration keys and their defaults (name them
    #: ``GUARDIAN_<STRATEGY>_*``). ``init_app`` knows them (a typo among them fails like
    #: any other) and fills the defaults in before :meth:`read_options` reads them.
    config_keys: ClassVar[Mapping[str, Any]] = {}

    @classmethod
    def read_options(cls, config: Mapping[str, Any], settings: Settings) -> Any:
        """Validate this strategy's own keys and return what the constructor will find as
        ``settings.strategy_options``. ``config`` holds every key with its default filled
        in; ``settings`` the common ones, already validated. Raise
        :class:`~flask_guardian.errors.ConfigurationError` naming the key: this runs in
        ``init_app``, before anything is registered. The readers of
        :mod:`flask_guardian.config_values` do the usual checks."""
        return None

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.settings = state.settings
        self.models = state.models
        self.db = state.db
        self.users = state.models.user.__table__
        #: ``check_client(session, request, agent_changed, signed_network)``: compare the
        #: request with what the session was signed in with (``monitoring.py``); False when
        #: the session must not be used. ``load`` calls it when the User-Agent changed or
        #: ``GUARDIAN_MONITOR_IP_NETWORK`` is on.
        self.check_client = ClientMonitor(self).check
        self._cookie_name = state.settings.cookie_name
        self._token_max_length = state.settings.token_max_length
        st = state.settings
        #: ``remember`` -> (absolute lifetime, idle timeout).
        self._lifetimes = {
            False: (timedelta(seconds=st.max_age), timedelta(seconds=st.idle_timeout)),
            True: (timedelta(seconds=st.remember_max_age),
                   timedelta(seconds=st.remember_idle_timeout)),
        }

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
    def load(self, token: str, request: Request) -> Loaded | Ended | None:
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
        remember: bool = False,
        two_factor: bool = False,
    ) -> tuple[Session, str]:
        """Start a session for ``user`` (store it) and return it with the token for the
        cookie. ``auth_time`` keeps the absolute deadline when a session is
        rotated rather than newly signed in; ``remember`` gives it the
        ``GUARDIAN_REMEMBER_*`` lifetimes (:meth:`deadlines`); ``two_factor`` is stored
        and comes back as ``Session.two_factor`` (the caller passes it only when True, so
        a strategy written before it keeps working for password-only sign-ins)."""

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

    def deadlines(
        self, now: datetime, auth_time: datetime, remember: bool = False,
        absolute: datetime | None = None,
    ) -> tuple[datetime, datetime]:
        """``(expires, absolute)``: the idle deadline capped by the absolute one, with the
        "remember me" lifetimes when ``remember``. A refresh passes the ``absolute``
        deadline stored at sign-in, which activity never moves."""
        max_age, idle = self._lifetimes[remember]
        if absolute is None:
            absolute = auth_time + max_age
        return min(now + idle, absolute), absolute



def sha256_hex(value: str) -> str:
    """SHA-256 hex digest: how the database and redis strategies store cookie tokens."""
    return hashlib.sha256(value.encode("ascii")).hexdigest()
