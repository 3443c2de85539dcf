"""The jwt strategy: a signed JWT (PyJWT) in the HttpOnly cookie, or in
``Authorization: Bearer`` for API clients.

An ordinary request is verified without touching the database: the signature and claims
are checked once per token and the result kept in a bounded cache keyed by the exact token
(expiry is still checked on every use). Revocation is real: each revoked session (and each
user whose role, password or status changed) is written to ``guardian_revocations``; the
revoking process applies it at once, every other process reads the feed when
``GUARDIAN_JWT_REVOCATION_INTERVAL`` seconds have passed, so a revoked token dies
everywhere within that delay; with ``GUARDIAN_REDIS_URL`` set, Redis brings it to the
other processes at once and the feed stays the bound (``revocation_feed.py``).

The bound holds during an outage too (fail closed): a process that has not read the feed
successfully for the interval plus ``FEED_GRACE`` accepts no token as signed in and
answers 503 until it reads it again, unless ``GUARDIAN_JWT_FAIL_OPEN`` trades the bound
for availability.
"""

from __future__ import annotations

import contextlib
import hashlib
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import jwt
from flask import Request
from sqlalchemy import bindparam, select, update

from ..clients import client_agent, ip_network
from ..config_values import read_bool, read_int, read_seconds
from ..jwt_keys import read_jwt_keys
from ..models import profile_columns, utcnow
from ..session import Session, SessionUser
from ..storage import bounded, unavailable
from .base import EXPIRED, REVOKED, Ended, Loaded, RequestInfo, new_session_id
from .registry import bound_to_user
from .revocation_feed import RevocationFeedStrategy

if TYPE_CHECKING:
    from ..config import Settings

#: Claims every token must carry; PyJWT refuses a token missing any of them.
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "sub", "jti", "iss", "aud", "sid", "auth_time"]
#: The registered claim ``amr`` (RFC 8176 authentication methods) by ``two_factor``: the
#: password, and a one-time code too. A token whose ``amr`` is neither is refused.
AMR: dict[bool, list[str]] = {False: ["pwd"], True: ["pwd", "otp"]}


def agent_digest(agent: str | None) -> str:
    """A short digest of the User-Agent the session was signed in with (claim ``uah``):
    enough to notice a change, without putting the string itself into every token."""
    return hashlib.sha256((agent or "").encode("utf-8", "replace")).hexdigest()[:16]


_UNCHECKED: Any = object()


class _Verified:
    """A token whose signature and claims were checked, kept in the cache."""

    __slots__ = ("agent", "exp", "iat", "ipn", "loaded", "uah", "ver")

    def __init__(self, session: Session, exp: float, iat: float, ver: int, uah: str,
                 ipn: str | None, agent: Any) -> None:
        self.loaded = Loaded(session)  # what every later request with this token returns
        self.exp = exp
        self.iat = iat
        self.ver = ver
        self.uah = uah
        self.ipn = ipn
        self.agent = agent


class JWTOptions(NamedTuple):
    """The jwt strategy's own settings (its ``config_keys``), validated at ``init_app``."""

    revocation_interval: float
    cache_size: int
    fail_open: bool


class JWTStrategy(RevocationFeedStrategy):
    """Stateless verification with a registry row per session and a revocation feed."""

    name = "jwt"
    config_keys: ClassVar[Mapping[str, Any]] = {
        # How stale another process's view of revocations may be, in seconds.
        "GUARDIAN_JWT_REVOCATION_INTERVAL": 5,
        # Verified tokens kept per process (0: verify every request's signature).
        "GUARDIAN_JWT_CACHE_SIZE": 4096,
        # Fail closed: when the revocation feed could not be read for longer than the
        # interval (plus a grace), tokens are refused with a 503 rather than served
        # unchecked. True trades the revocation bound for availability.
        "GUARDIAN_JWT_FAIL_OPEN": False,
    }

    @classmethod
    def read_options(cls, config: Mapping[str, Any], settings: Settings) -> JWTOptions:
        read_jwt_keys(config, settings.jwt_algorithm, needed=True)  # says which key is missing
        return JWTOptions(
            read_seconds(config, "GUARDIAN_JWT_REVOCATION_INTERVAL", maximum=300),
            read_int(config, "GUARDIAN_JWT_CACHE_SIZE", minimum=0),
            read_bool(config, "GUARDIAN_JWT_FAIL_OPEN"),
        )

    def __init__(self, state: Any) -> None:
        super().__init__(state)
        st = self.settings
        self.options: JWTOptions = st.strategy_options
        signer = st.jwt_keys[0]
        self._signing_key = signer.signing
        self._headers = {"kid": signer.kid} if signer.kid else None
        self._verify_keys = {k.kid: k.verifying for k in st.jwt_keys}
        self._algorithms = [st.jwt_algorithm]
        self._decode_options: Any = {"require": REQUIRED_CLAIMS}
        self._cache: dict[str, _Verified] = {}
        s, u = self.sessions, self.users
        self._registry_lookup = (
            select(
                s.c.created_at, s.c.expires_at, s.c.absolute_expires_at, s.c.ip,
                s.c.user_agent, u.c.id, u.c.email, *profile_columns(u), u.c.session_version,
                s.c.remember, s.c.two_factor,
            )
            .select_from(s.join(u, bound_to_user(s, u)))
            .where(s.c.id == bindparam("sid"), s.c.revoked_at.is_(None), u.c.is_active.is_(True))
        )
        self._touch = (
            update(s)
            .where(s.c.id == bindparam("sid"))
            .values(last_seen_at=bindparam("now"), expires_at=bindparam("expires"))
        )

    # -- the hot path ----------------------------------------------------------------

    def read_token(self, request: Request) -> str | None:
        environ = request.environ
        header = environ.get("HTTP_AUTHORIZATION")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() == "bearer":  # other schemes belong to the app: use the cookie
                token = token.strip()
                if len(token) > self._token_max_length or not token.isascii():
                    return None
                return token or None
        return self.cookie_token(environ)

    def sent_by_header(self, request: Request) -> bool:
        header = request.environ.get("HTTP_AUTHORIZATION")
        return header is not None and header.partition(" ")[0].lower() == "bearer"

    def load(self, token: str, request: Request) -> Loaded | Ended | None:
        entry = self._cache.get(token)
        if entry is None:
            verified = self._verify(token, request)
            if not isinstance(verified, _Verified):
                return verified  # a token we did not sign (or expired) costs no query
            entry = verified
        now = time.time()
        if now >= self._next_poll:
            self._poll(now)
            if now >= self._fresh_until and not self.options.fail_open:
                # The feed is stale: this token may have been revoked meanwhile.
                raise unavailable(ConnectionError("revocation feed not read in time"),
                                  "jwt revocation check")
        if entry.exp <= now:
            self._cache.pop(token, None)
            return EXPIRED
        loaded = entry.loaded
        session = loaded.session
        if session.id in self._revoked:
            return REVOKED
        version = self._versions.get(session.user.id)
        if (version is not None and entry.ver < version) or (
            now - entry.iat >= self.settings.update_age
        ):
            return self._refresh(session, request, token, entry)
        agent = request.environ.get("HTTP_USER_AGENT")
        agent_changed = False
        if agent != entry.agent:  # first use in this process, or another client
            agent_changed = agent_digest(client_agent(request)) != entry.uah
            if not agent_changed:
                entry.agent = agent
        # The network is compared on every use, the first one in this process included:
        # a stolen token with a copied User-Agent is checked like any other request.
        if (agent_changed or self.settings.monitor_ip_network) and not self.check_client(
            session, request, agent_changed, entry.ipn
        ):
            return None
        return loaded

    def _verify(self, token: str, request: Request) -> _Verified | Ended | None:
        """Check signature and every registered claim; None for anything wrong."""
        try:
            header = jwt.get_unverified_header(token)
            key = self._verify_keys.get(header.get("kid"))
            if key is None:
                return None  # unknown kid (or a kid where none is configured): refused
            claims = jwt.decode(
                token,
                key,
                algorithms=self._algorithms,
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                leeway=self.settings.jwt_leeway,
                options=self._decode_options,
            )
            user = SessionUser(
                int(claims["sub"]), claims["email"], claims.get("name"), claims["role"]
            )
            sid, ver, uah = claims["sid"], claims["ver"], claims["uah"]
            exp, iat, auth_time = claims["exp"], claims["iat"], claims["auth_time"]
            ipn, remember = claims.get("ipn"), claims.get("rem", False)
            amr = claims.get("amr", AMR[False])  # a token from before the claim: password
        except jwt.ExpiredSignatureError:  # raised only once the signature checked out
            return EXPIRED
        except (jwt.PyJWTError, KeyError, ValueError, TypeError, OverflowError):
            return None
        if not (
            isinstance(sid, str) and isinstance(ver, int) and isinstance(uah, str)
            and isinstance(user.email, str) and isinstance(user.role, str)
            and isinstance(user.name, (str, type(None))) and isinstance(ipn, (str, type(None)))
            and isinstance(auth_time, int) and isinstance(exp, int) and isinstance(iat, int)
            and isinstance(remember, bool) and amr in AMR.values()
        ):
            return None
        try:
            expires = datetime.fromtimestamp(exp, UTC)
            signed_in = datetime.fromtimestamp(auth_time, UTC)
        except (OverflowError, OSError, ValueError):
            return None
        session = Session(sid, user, expires, self.name, signed_in, remember, "otp" in amr)
        # The agent is compared on first use too: a stolen token is checked at once.
        entry = _Verified(session, float(exp), float(iat), ver, uah, ipn, _UNCHECKED)
        self._remember(token, entry)
        return entry

    def _remember(self, token: str, entry: _Verified) -> None:
        if self.options.cache_size:
            if len(self._cache) >= self.options.cache_size:
                # Bounded: drop the oldest entry (dicts keep insertion order). Another
                # thread may be changing the dict: a missed eviction is harmless.
                with contextlib.suppress(StopIteration, RuntimeError):
                    self._cache.pop(next(iter(self._cache)), None)
            self._cache[token] = entry

    # -- issuing and refreshing ------------------------------------------------------

    def _encode(self, session_id: str, user: SessionUser, version: int, auth_time: datetime,
                expires: datetime, agent: str | None, ip: str | None,
                remember: bool = False, two_factor: bool = False) -> tuple[str, int]:
        """A signed token and its ``iat``."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": str(user.id),
            "sid": session_id,
            "jti": uuid.uuid4().hex,
            "iat": now,
            "nbf": now,
            "exp": int(expires.timestamp()),
            "auth_time": int(auth_time.timestamp()),
            "ver": version,
            "uah": agent_digest(agent),
            "email": user.email,
            "name": user.name,
            "role": user.role,
            "amr": AMR[two_factor],
        }
        if self.settings.monitor_ip_network:
            claims["ipn"] = ip_network(ip)
        if remember:  # absent otherwise: an ordinary token stays as it was
            claims["rem"] = True
        token = jwt.encode(
            claims, self._signing_key, algorithm=self.settings.jwt_algorithm,
            headers=self._headers,
        )
        return token, now

    def issue(
        self,
        user: Any,
        info: RequestInfo,
        *,
        auth_time: datetime | None = None,
        remember: bool = False,
        two_factor: bool = False,
    ) -> tuple[Session, str]:
        now = utcnow().replace(microsecond=0)  # JWT times are whole seconds
        session_id = new_session_id()
        auth_time = (auth_time or now).replace(microsecond=0)
        expires, _ = self.insert_record(user, info, session_id, None, now, auth_time, remember,
                                        two_factor)
        session_user = self.session_user(user)
        token, _ = self._encode(session_id, session_user, user.session_version or 0, auth_time,
                                expires, info.user_agent, info.ip, remember, two_factor)
        session = Session(session_id, session_user, expires, self.name, auth_time, remember,
                          two_factor)
        return session, token

    def _refresh(
        self, session: Session, request: Request, old_token: str, old: _Verified
    ) -> Loaded | Ended | None:
        """Re-read the registry row and the user, and re-issue the token with fresh claims
        and a new idle deadline. Runs when the update age has passed or the user changed."""
        db_session = self.db.session
        with bounded(self.settings.db_statement_timeout):  # a stall: a 503, not a hang
            row = db_session.execute(self._registry_lookup, {"sid": session.id}).first()
            now = utcnow().replace(microsecond=0)
            if row is None or row.expires_at <= now:
                # End the read: no transaction is left for the teardown to roll back.
                db_session.commit()
                self._revoked[session.id] = time.time() + self._longest
                return REVOKED if row is None else EXPIRED
            if self._versions.get(row.id, 0) > row.session_version:
                self._versions[row.id] = row.session_version  # the database is the truth
            expires, _ = self.deadlines(now, row.created_at, row.remember,
                                        row.absolute_expires_at)
            db_session.execute(self._touch, {"sid": session.id, "now": now,
                                             "expires": expires})
            db_session.commit()
        user = SessionUser(row.id, row.email, row.name, row.role)
        token, issued_at = self._encode(session.id, user, row.session_version, row.created_at,
                                        expires, row.user_agent, row.ip, row.remember,
                                        row.two_factor)
        refreshed = Session(session.id, user, expires, self.name, row.created_at, row.remember,
                            row.two_factor)
        agent = client_agent(request)
        if (agent != row.user_agent or self.settings.monitor_ip_network) and not (
            self.check_client(refreshed, request, agent != row.user_agent, ip_network(row.ip))
        ):
            return None
        if self.sent_by_header(request):
            # An API client may keep sending the old token (it gets the new one in a
            # header it can ignore): re-checked now, it needs no refresh until the next
            # update age, and it still ends at its own exp.
            old.loaded = Loaded(Session(session.id, user, old.loaded.session.expires,
                                        self.name, row.created_at, row.remember,
                                        row.two_factor))
            old.iat, old.ver = float(issued_at), row.session_version
            self._remember(old_token, old)
        # The next request brings the new token: verified already, no need to decode it.
        self._remember(token, _Verified(
            refreshed, float(int(expires.timestamp())), float(issued_at),
            row.session_version, agent_digest(row.user_agent),
            ip_network(row.ip) if self.settings.monitor_ip_network else None,
            request.environ.get("HTTP_USER_AGENT"),
        ))
        return Loaded(refreshed, token)
