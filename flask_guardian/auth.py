"""The public functions: :func:`sign_in`, :func:`sign_out`, password checks
(:func:`authenticate`, and :func:`check_credentials` under the lockout), and the session
management behind the :class:`Guardian` methods. Creating and changing users is
``users.py``; signing in a user the application authenticated itself is ``external.py``.

Every state change commits the application's ``db.session``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NamedTuple, ParamSpec, TypeVar

from flask import current_app, g, has_request_context, request
from sqlalchemy import delete, select, update
from sqlalchemy.orm.attributes import set_committed_value

from . import signals
from .clients import throttle_key
from .credentials import hash_kind
from .identifiers import find_user, lockout_key
from .models import EMAIL_MAX_LENGTH, normalize_email, utcnow
from .per_request import outgoing
from .redirects import safe_redirect
from .session import Session
from .state import AppState, get_state
from .storage import bounded, is_storage_error, is_timeout, rollback_quietly, unavailable
from .strategies.base import RequestInfo, is_session_id
from .throttle import Attempts
from .trusted_browsers import build_trusted_browser_model


@dataclass(frozen=True, slots=True)
class SignInResult:
    """Outcome of :func:`sign_in`. ``error`` is None or a code such as
    ``"invalid_credentials"`` or ``"too_many_attempts"``; ``redirect_url`` is already
    checked (same-origin relative path or the default)."""

    ok: bool
    error: str | None
    session: Session | None
    redirect_url: str
    #: With ``"too_many_attempts"``: seconds until the lock ends (the ``Retry-After``).
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class SignOutResult:
    """Outcome of :func:`sign_out`; ``redirect_url`` is already checked."""

    redirect_url: str


def _state() -> AppState:
    return get_state()


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


# -- credentials ------------------------------------------------------------------------


def authenticate(state: AppState, email: object, password: object) -> tuple[Any | None, str]:
    """``(user, reason)``: the active user with this identifier (matched against
    ``GUARDIAN_LOGIN_FIELDS``, see :func:`~flask_guardian.identifiers.find_user`) and
    password, or None and why. Counts nothing: :func:`check_credentials` is the same check
    under the lockout. Unknown identifier, wrong password and inactive user each cost
    exactly one hash."""
    if not isinstance(email, str) or not isinstance(password, str):
        return None, "invalid_credentials"
    if state.hasher.too_long(password):
        return None, "password_too_long"  # refused before hashing
    if not password.isascii():
        try:
            password.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from JSON: no hash can take it
            return None, "invalid_credentials"
    normalized = normalize_email(email)
    user_model = state.models.user
    hasher = state.hasher
    hasher.kinds_in_use(state.db.session, user_model.__table__.c.password_hash)
    if len(normalized) > EMAIL_MAX_LENGTH or not normalized.isprintable():
        hasher.burn(password)  # cannot be a stored identifier: no query, same cost
        return None, "unknown_email"
    user = find_user(state.db.session, user_model, state.settings.login_fields, email)
    if user is None:
        hasher.burn(password)
        return None, "unknown_email"
    ok, new_hash = hasher.verify(password, user.password_hash)
    if not ok:
        return None, "invalid_credentials"
    if not user.is_active:
        # The right password of an inactive account must look like any failure.
        hasher.burn(password, checked=hash_kind(user.password_hash))
        return None, "inactive"
    if new_hash is not None:
        # A re-hash of the same password is not a password change: write it with Core so
        # the ORM change events (which end other sessions) do not fire.
        table = user_model.__table__
        state.db.session.execute(
            update(table).where(table.c.id == user.id).values(password_hash=new_hash)
        )
        set_committed_value(user, "password_hash", new_hash)
    return user, "ok"


P = ParamSpec("P")
R = TypeVar("R")


def _bounded(func: Callable[P, R]) -> Callable[P, R]:
    """Run ``func`` with the extension's statements on the app's pool bounded by
    ``GUARDIAN_DB_STATEMENT_TIMEOUT`` each (a stalled database yields a 503 in bounded
    time, not a hung worker)."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with bounded(_state().settings.db_statement_timeout):
            return func(*args, **kwargs)

    return wrapper


def _client_ip() -> str:
    return (request.remote_addr or "unknown") if has_request_context() else "local"


@_bounded
def sign_in(
    provider: str, *, email: object = None, password: object = None,
    redirect_url: object = None, login: object = None, remember: bool = False,
) -> SignInResult:
    """Sign a user in with ``provider="credentials"``: ``email`` (or ``login``, the same
    thing under the name a username form uses) is matched against ``GUARDIAN_LOGIN_FIELDS``.
    On success a new session is issued (any session the request carried ends first: no
    fixation) and the cookie is set on this request's response. ``remember`` ("remember
    me") makes the cookie outlive the browser and gives the session the
    ``GUARDIAN_REMEMBER_*`` lifetimes. Failures give a generic code; the reason goes to the
    ``sign_in_failed`` signal."""
    if provider != "credentials":
        raise ValueError(f"unknown sign-in provider {provider!r}; expected 'credentials'")
    state = _state()
    target = safe_redirect(redirect_url, state.settings.default_redirect)
    identifier = login if login is not None else email
    checked = _check_credentials(state, identifier, password, start=True,
                                 remember=remember is True, target=target)
    return SignInResult(checked.error is None, checked.error, checked.session, target,
                        checked.retry_after)


class Checked(NamedTuple):
    """What :func:`check_credentials` found: the user, or an error code (with
    ``"too_many_attempts"``, seconds until the lock ends), and the session it started."""

    user: Any | None
    error: str | None
    retry_after: int | None = None
    session: Session | None = None


@_bounded
def check_credentials(state: AppState, identifier: object, password: object) -> Checked:
    """The password check of the sign-in route, lockout included, without a session:
    what ``Guardian.authenticate`` answers with."""
    return _check_credentials(state, identifier, password, start=False)


def _check_credentials(state: AppState, identifier: object, password: object, *,
                       start: bool, remember: bool = False, target: str = "/") -> Checked:
    """Count the attempt per identifier and per address and commit the counts before
    any password is checked (parallel guesses cannot pass the limit), refuse past either
    limit whatever the password, check it (one hash, whatever the outcome) and, on
    success, take the attempts back and, with ``start``, start the session."""
    normalized = normalize_email(identifier) if isinstance(identifier, str) else ""
    ip = _client_ip()
    # Keyed by a digest: any string a client sends fits the column (no NUL reaches the
    # database) and the table holds no identifiers.
    id_key = lockout_key(normalized)
    ip_key = throttle_key(ip)
    db_session = state.db.session
    try:
        state.throttle.settle(state.db)  # attempts owed back since an earlier outage
        attempts = state.throttle.hit(db_session, id_key)
        from_ip = state.throttle.hit(db_session, ip_key)
        db_session.commit()  # counted before any password is checked
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        rollback_quietly(state.db)  # not counted: nothing to give back
        raise unavailable(exc, "sign-in") from exc
    carried = g.get("session") if has_request_context() else None
    try:
        return _check(state, identifier, password, normalized, ip, (attempts, from_ip),
                      (id_key, ip_key), start, remember, target)
    except Exception as exc:
        if not is_storage_error(exc):
            raise
        # The outage is not the user's failure: the attempt counted above is given back
        # (it was counted first, so parallel guesses still cannot pass the limit).
        rollback_quietly(state.db)
        if start:
            forget_started(carried)
        # A stalled database would stall the give-back too: owe it at once instead.
        state.throttle.give_back(state.db, [id_key, ip_key], now=not is_timeout(exc))
        raise unavailable(exc, "sign-in") from exc


def _check(state: AppState, identifier: object, password: object, normalized: str, ip: str,
           counted: tuple[Attempts, Attempts], keys: tuple[str, str], start: bool,
           remember: bool = False, target: str = "/") -> Checked:
    """The part of :func:`_check_credentials` after the attempt is counted."""
    settings = state.settings
    db_session = state.db.session
    attempts, from_ip = counted
    email_key, ip_key = keys
    locked = [a.window_ends for a, limit in ((attempts, settings.max_login_attempts),
                                             (from_ip, settings.ip_max_login_attempts))
              if a.failures > limit]
    if locked:
        signals.sign_in_failed.send(_app(), email=normalized, reason="too_many_attempts", ip=ip)
        wait = math.ceil((max(locked) - utcnow()).total_seconds())
        return Checked(None, "too_many_attempts", max(wait, 1))

    user, reason = authenticate(state, identifier, password)
    if user is None:
        signals.sign_in_failed.send(_app(), email=normalized, reason=reason, ip=ip)
        return Checked(None, "invalid_credentials")

    state.throttle.reset(db_session, email_key)
    state.throttle.release(db_session, ip_key)
    # Two-factor users (second_factor.py): a trusted browser goes on with two_factor; any
    # other gets the code step and no session. (Wrong codes also count on a counter of
    # their own that a right password does not reset: two_factor.code_lockout_key.)
    step = state.second_step(state, user, remember=remember, redirect_url=target) if (
        start and state.second_step is not None) else "none"
    if step == "pending":
        db_session.commit()
        return Checked(user, "two_factor_required")
    if not start:
        db_session.commit()
        return Checked(user, None)
    return Checked(user, None, None, begin_session(state, user, "password", remember=remember,
                                                   two_factor=step == "trusted"))


def begin_session(state: AppState, user: Any, method: str, *, remember: bool = False,
                  two_factor: bool = False) -> Session:
    """End the session the request carried (no fixation), start one for ``user``, commit,
    and send the signals. ``two_factor``: the user gave a second factor too."""
    current: Session | None = g.get("session") if has_request_context() else None
    replaced: list[str] = []
    if current is not None:  # the session the request carried ends here (no fixation)
        replaced = state.strategy.revoke([current.id], current.user.id)
    session = start_session(state, user, remember=remember, two_factor=two_factor)
    state.db.session.commit()
    if current is not None and replaced:
        signals.session_revoked.send(_app(), session_ids=replaced, user_id=current.user.id,
                                     reason="replaced")
    signals.user_signed_in.send(_app(), user=user, session=session, method=method)
    return session


def forget_started(carried: Session | None) -> None:
    """A session started in this request was not stored: send no cookie for it."""
    if has_request_context():
        g.session = carried
        outgoing().forget_token()


def start_session(state: AppState, user: Any, auth_time: Any = None, *,
                  remember: bool = False, two_factor: bool = False) -> Session:
    """Issue a session for ``user`` and make it this request's (cookie, g.session, new
    CSRF seed). Does not commit. ``remember`` is the remember-me choice (SPEC §9), handed
    on to the lifetimes; ``two_factor`` (a second factor was given) is stored with the
    session (``Session.two_factor``)."""
    info = RequestInfo.from_request(request if has_request_context() else None)
    # Passed only when True: a strategy written before the flag still issues password-only
    # sessions, and one that cannot store it fails loudly rather than dropping it.
    extra = {"two_factor": True} if two_factor else {}
    session, token = state.strategy.issue(user, info, auth_time=auth_time, remember=remember,
                                          **extra)
    if has_request_context():
        g.session = session
        outgoing().send_token(token)
        state.csrf.rotate()
    return session


@_bounded
def sign_out(*, redirect_url: object = None) -> SignOutResult:
    """End the current session server-side (every strategy: a replayed cookie or token
    is anonymous afterwards) and clear the cookie."""
    state = _state()
    target = safe_redirect(redirect_url, state.settings.default_redirect)
    current: Session | None = g.get("session")
    if current is not None:
        try:
            state.strategy.revoke([current.id], current.user.id)
            state.db.session.commit()
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            # Not signed out server-side: say so (503), and still make the browser forget
            # the credential, so nobody believes a session ended that lives on.
            rollback_quietly(state.db)
            g.session = None
            outgoing().clear_cookie()
            raise unavailable(exc, "sign-out") from exc
        signals.user_signed_out.send(_app(), session=current)
    g.session = None
    outgoing().clear_cookie()
    state.csrf.rotate()
    return SignOutResult(target)


# -- sessions ---------------------------------------------------------------------------


def revoke(state: AppState, session_ids: list[str], user_id: int | None, *, reason: str) -> int:
    session_ids = [s for s in session_ids if is_session_id(s)]
    if not session_ids:
        return 0
    ended = state.strategy.revoke(session_ids, user_id)
    state.db.session.commit()
    if ended:
        signals.session_revoked.send(_app(), session_ids=ended, user_id=user_id, reason=reason)
    return len(ended)


def revoke_user(state: AppState, user_id: int, *, except_current: bool) -> int:
    current: Session | None = g.get("session") if has_request_context() else None
    mine = current is not None and current.user.id == user_id
    keep = current.id if except_current and mine and current is not None else None
    ended = state.strategy.revoke_user(user_id, except_id=keep)
    state.db.session.commit()
    if ended:
        signals.session_revoked.send(
            _app(), session_ids=ended, user_id=user_id, reason="others" if keep else "all"
        )
    return len(ended)


def purge_expired(state: AppState, *, batch_size: int = 1000) -> int:
    """Delete, in batches of ``batch_size`` (short transactions, no long table lock):
    sessions past their deadline or revoked, revocation rows no token can need, lockout
    counters whose window has ended, and "trust this browser" rows past their end."""
    now = utcnow()
    models = state.models
    sessions = models.session.__table__
    revocations = models.revocation.__table__
    attempts = models.login_attempt.__table__
    trusted = build_trusted_browser_model(state.db, models.user).__table__
    jobs = [
        (sessions, sessions.c.id,
         (sessions.c.expires_at <= now) | sessions.c.revoked_at.is_not(None)),
        (revocations, revocations.c.id, revocations.c.expires_at <= now),
        (attempts, attempts.c.key,
         attempts.c.window_started_at
         <= now - timedelta(seconds=state.settings.lockout_duration)),
        (trusted, trusted.c.id, trusted.c.expires_at <= now),
    ]
    db_session = state.db.session
    total = state.strategy.purge_expired()
    if state.api_tokens is not None and state.api_tokens.store is not None:
        total += state.api_tokens.store.purge_expired()  # before the sessions they name
    for table, key, condition in jobs:
        while True:
            ids = [r[0] for r in db_session.execute(select(key).where(condition).limit(batch_size))]
            if not ids:
                break
            total += db_session.execute(delete(table).where(key.in_(ids))).rowcount
            db_session.commit()
    return total
