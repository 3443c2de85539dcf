"""Two-factor authentication (SPEC §10): the checks other parts of flask-guardian call.

- :func:`two_factor_enabled` and :func:`enrolment_generation`: one indexed read each.
- :func:`verify_second_factor`: a TOTP code (once: the step is stored) or an unused
  recovery code (once: it is deleted), under the same per-identifier and per-address
  lockout as a password (``throttle.py``).
- :func:`recovery_codes_left`.

Enrolling, disabling and regenerating codes are ``two_factor_enrolment.py``; the tables
``two_factor_models.py``; the secret's encryption ``two_factor_crypto.py``.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from flask import current_app, has_app_context
from sqlalchemy import delete, func, or_, select, update

from . import signals
from .clients import throttle_key
from .errors import InvalidCode, TooManyAttempts
from .identifiers import lockout_key
from .models import normalize_email, utcnow
from .state import AppState
from .storage import bounded, is_storage_error, is_timeout, rollback_quietly, unavailable
from .two_factor_codes import Code, matching_step, read_code, recovery_digest
from .two_factor_crypto import SecretBox
from .two_factor_models import TwoFactorModels, build_two_factor_models

__all__ = [
    "enrolment_generation",
    "recovery_codes_left",
    "two_factor_enabled",
    "verify_second_factor",
]

T = TypeVar("T")


def tables(state: AppState) -> TwoFactorModels:
    """The two-factor models of ``state``'s ``db`` (declared when Guardian was made)."""
    return build_two_factor_models(state.db, state.models.user)


def secret_box(state: AppState) -> SecretBox:
    """The box that seals and opens ``state``'s TOTP secrets (built at ``init_app``)."""
    two_factor = state.settings.two_factor
    if two_factor is None:  # a Settings made by hand, not by load_settings
        raise RuntimeError("these settings were not made by load_settings: no 2FA keys")
    return two_factor.box


def _enrolment(state: AppState, user: Any) -> Any | None:
    """The user's enrolment row (``secret``, ``last_step``, ``enabled_at``,
    ``generation``) when 2FA is on for this very account, else None. One read by primary
    key."""
    table = tables(state).enrolment.__table__
    row = state.db.session.execute(
        select(table.c.secret, table.c.last_step, table.c.enabled_at, table.c.generation,
               table.c.user_uniquifier).where(table.c.user_id == user.id)
    ).first()
    if row is None or row.enabled_at is None or row.secret is None:
        return None
    if row.user_uniquifier != user.uniquifier:  # left by a deleted account with this id
        return None
    return row


def two_factor_enabled(state: AppState, user: Any) -> bool:
    """Whether ``user`` has two-factor authentication on. One indexed read; False for a
    user who never enrolled, or only set up without enabling."""
    return _enrolment(state, user) is not None


def enabled_since(state: AppState, user: Any) -> datetime | None:
    """When ``user`` turned two-factor authentication on, or None when it is off."""
    row = _enrolment(state, user)
    return None if row is None else row.enabled_at


def enrolment_generation(state: AppState, user: Any) -> int | None:
    """A number that changes on every enable, disable and recovery-code regeneration of
    ``user`` (bind a "trust this browser" cookie to it), or None when 2FA is off."""
    row = _enrolment(state, user)
    return None if row is None else int(row.generation)


def recovery_codes_left(state: AppState, user: Any) -> int:
    """How many unused recovery codes ``user`` has (0 when 2FA is off)."""
    table = tables(state).recovery_code.__table__
    count = state.db.session.execute(
        select(func.count()).select_from(table).where(table.c.user_id == user.id)
    ).scalar_one()
    return int(count)


def user_lockout_keys(state: AppState, user: Any) -> list[str]:
    """The lockout counters of ``user``'s identifiers: one per ``GUARDIAN_LOGIN_FIELDS``
    column (a username form counts under the username, a JSON client under the email):
    a wrong code locks every way of signing in to the account, as a wrong password does."""
    keys = []
    for field in state.settings.login_fields:
        value = getattr(user, field, None)
        if isinstance(value, str) and value:
            key = lockout_key(normalize_email(value))  # the form auth.py counts under
            if key not in keys:
                keys.append(key)
    return keys


def code_lockout_key(user: Any) -> str:
    """The counter of ``user``'s wrong second-factor codes alone. The identifier's counter
    is reset by every right password, so without this one a thief who knows the password
    could alternate: a few wrong codes, the password again (count back to zero), more
    codes, for ever. Only a right code resets this one. A digest of the id and the
    uniquifier: a new account with a reused id starts with its own count."""
    raw = f"{user.id}:{getattr(user, 'uniquifier', '')}".encode()
    return "2fa:" + hashlib.sha256(raw).hexdigest()


def under_lockout(state: AppState, user: Any, client_ip: str, check: Callable[[], T],
                  *, where: str, extra_keys: tuple[str, ...] = ()) -> T:
    """Run ``check`` (which raises on a wrong answer) as one attempt of ``user``'s: counted
    per identifier and per address and committed before ``check`` runs (parallel guesses
    cannot pass the limit), refused with :class:`TooManyAttempts` past either limit, taken
    back when ``check`` returns. A storage outage is a 503 and gives the attempt back.
    The same rules, counters and limits as a password sign-in (``auth._check_credentials``);
    ``extra_keys`` are counted with the per-identifier limit too, and reset on success."""
    settings = state.settings
    id_keys = [*user_lockout_keys(state, user), *extra_keys]
    ip_key = throttle_key(client_ip)
    db_session = state.db.session
    throttle = state.throttle
    with bounded(settings.db_statement_timeout):
        try:
            throttle.settle(state.db)
            counts = [(throttle.hit(db_session, key), settings.max_login_attempts)
                      for key in id_keys]
            counts.append((throttle.hit(db_session, ip_key), settings.ip_max_login_attempts))
            db_session.commit()
        except Exception as exc:
            if not is_storage_error(exc):
                raise
            rollback_quietly(state.db)
            raise unavailable(exc, where) from exc
        locked = [attempts.window_ends for attempts, limit in counts
                  if attempts.failures > limit]
        if locked:
            _failed(user, "too_many_attempts", client_ip)
            wait = math.ceil((max(locked) - utcnow()).total_seconds())
            raise TooManyAttempts(retry_after=max(wait, 1))
        try:
            result = check()
            for key in id_keys:
                throttle.reset(db_session, key)
            throttle.release(db_session, ip_key)
            db_session.commit()
        except Exception as exc:
            if not is_storage_error(exc):
                rollback_quietly(state.db)  # a wrong answer writes nothing but the count
                raise
            rollback_quietly(state.db)
            throttle.give_back(state.db, [*id_keys, ip_key], now=not is_timeout(exc))
            raise unavailable(exc, where) from exc
    return result


def _failed(user: Any, reason: str, ip: str) -> None:
    if has_app_context():
        email = getattr(user, "email", "") or ""
        signals.sign_in_failed.send(current_app._get_current_object(),  # type: ignore[attr-defined]
                                    email=email, reason=reason, ip=ip)


def verify_second_factor(state: AppState, user: Any, code: object, *, client_ip: str) -> str:
    """Check ``user``'s second factor: ``"totp"`` for a current TOTP code (±1 step; each
    step accepted once), ``"recovery"`` for an unused recovery code (spent now). Spaces and
    dashes are ignored. Anything else (a wrong, replayed or malformed code, or a user
    without 2FA) raises :class:`~flask_guardian.errors.InvalidCode` (401) and counts toward
    the sign-in lockout, which, once reached, raises
    :class:`~flask_guardian.errors.TooManyAttempts` (429) whatever the code. Commits.
    Sends ``recovery_code_used``."""

    def check() -> str:
        canonical = read_code(code)
        kind = None if canonical is None else _accept(state, user, canonical)
        if kind is None:
            _failed(user, "invalid_code", client_ip)
            raise InvalidCode()
        return kind

    kind = under_lockout(state, user, client_ip, check, where="two-factor check",
                         extra_keys=(code_lockout_key(user),))
    if kind == "recovery" and has_app_context():
        signals.recovery_code_used.send(
            current_app._get_current_object(),  # type: ignore[attr-defined]
            user=user, remaining=recovery_codes_left(state, user),
        )
    return kind


def _accept(state: AppState, user: Any, code: Code) -> str | None:
    """Spend ``code`` if it is good (no commit): the TOTP step recorded, or the recovery
    code deleted, each by one conditional statement, so two requests racing with one code
    cannot both pass."""
    row = _enrolment(state, user)
    if row is None:
        return None
    models = tables(state)
    db_session = state.db.session
    if code.kind == "recovery":
        table = models.recovery_code.__table__
        spent = db_session.execute(
            delete(table).where(table.c.user_id == user.id,
                                table.c.code_hash == recovery_digest(user.id, code.value))
        ).rowcount
        return "recovery" if spent == 1 else None
    box = secret_box(state)
    opened = box.open(row.secret, user.id)
    if opened is None:
        return None  # sealed under a key no longer configured: see docs/two-factor.md
    secret, stale = opened
    step = matching_step(secret, code.value, utcnow())
    if step is None or (row.last_step is not None and step <= row.last_step):
        return None  # wrong, or replayed (this step or an older one was already used)
    table = models.enrolment.__table__
    values: dict[str, Any] = {"last_step": step}
    if stale:  # opened with a fallback key: sealed again under the current one
        values["secret"] = box.seal(secret, user.id)
    taken = db_session.execute(
        update(table)
        .where(table.c.user_id == user.id, table.c.generation == row.generation,
               or_(table.c.last_step.is_(None), table.c.last_step < step))
        .values(**values)
    ).rowcount
    return "totp" if taken == 1 else None
