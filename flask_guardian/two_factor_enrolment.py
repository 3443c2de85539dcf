"""Turning two-factor authentication on and off (SPEC §10): :func:`begin_setup` (a pending
secret), :func:`enable` (confirmed by a code; 10 recovery codes), :func:`disable` and
:func:`regenerate_codes` (each behind the password), and :func:`admin_reset` (the CLI's
way out for a user who lost their device).

Every change but the setup ends the user's other sessions, rotates the current one, and
moves the enrolment's generation on (a "trust this browser" cookie bound to the old one
stops working). Each call commits.
"""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any, NamedTuple

from flask import current_app, g, has_request_context
from sqlalchemy import delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import signals
from .auth import start_session
from .errors import InvalidCode, InvalidPassword, TwoFactorStateError
from .models import utcnow
from .session import Session
from .state import AppState
from .two_factor import secret_box, tables, two_factor_enabled, under_lockout
from .two_factor_codes import (
    matching_step,
    new_recovery_codes,
    new_secret,
    otpauth_url,
    read_code,
    recovery_digest,
)

#: How long a setup waits for its confirming code: ample time to scan and type, and a
#: secret shown on an abandoned page (a screenshot, a photo) does not stay good for
#: turning 2FA on days later.
PENDING_MAX_AGE = timedelta(hours=1)


class Setup(NamedTuple):
    """A pending enrolment: the secret (base32, for typing in) and its ``otpauth://`` URL
    (for the QR code)."""

    secret: str
    otpauth_url: str


def _app() -> Any:
    return current_app._get_current_object()  # type: ignore[attr-defined]


def _row(state: AppState, user: Any) -> Any | None:
    table = tables(state).enrolment.__table__
    return state.db.session.execute(
        select(table).where(table.c.user_id == user.id)
    ).first()


def _own_row(state: AppState, user: Any) -> Any | None:
    """The user's row, unless it was left by an account deleted before this one got its
    id (then None: it is not theirs)."""
    row = _row(state, user)
    return row if row is not None and row.user_uniquifier == user.uniquifier else None


def _pending(row: Any) -> bool:
    """The row holds a setup still waiting for its code (:data:`PENDING_MAX_AGE`)."""
    return (row.pending_secret is not None and row.pending_at is not None
            and utcnow() - row.pending_at < PENDING_MAX_AGE)


def begin_setup(state: AppState, user: Any, *, issuer: str) -> Setup:
    """Make a new pending secret for ``user`` (replacing an unconfirmed one) and return it;
    nothing is enabled until :func:`enable` gets a code for it. Refused while 2FA is on
    (turn it off first: a second secret would silently replace the enrolled device)."""
    if two_factor_enabled(state, user):
        raise TwoFactorStateError("Two-factor authentication is already on.")
    secret = new_secret()
    sealed = secret_box(state).seal(secret, user.id)
    table = tables(state).enrolment.__table__
    db_session = state.db.session
    pending = {"pending_secret": sealed, "pending_at": utcnow()}
    row = _row(state, user)
    if row is not None and row.user_uniquifier != user.uniquifier:  # a deleted account's
        pending.update(user_uniquifier=user.uniquifier, secret=None, enabled_at=None,
                       last_step=None, generation=row.generation + 1)
    if row is not None:
        db_session.execute(update(table).where(table.c.user_id == user.id).values(**pending))
    else:
        try:
            with db_session.begin_nested():
                db_session.execute(insert(table).values(
                    user_id=user.id, user_uniquifier=user.uniquifier,
                    # Random start: a generation is never repeated for a user id.
                    generation=secrets.randbelow(2**30), **pending))
        except IntegrityError:  # a setup racing this one made the row: take it over
            db_session.execute(
                update(table).where(table.c.user_id == user.id).values(**pending))
    db_session.commit()
    account = getattr(user, "email", None) or str(user.id)
    return Setup(secret, otpauth_url(secret, account, issuer))


def pending_setup(state: AppState, user: Any, *, issuer: str) -> Setup | None:
    """The setup :func:`begin_setup` made and :func:`enable` has not confirmed yet (the
    enrolment page shows it again on reload), or None."""
    row = _own_row(state, user)
    if row is None or row.enabled_at is not None or not _pending(row):
        return None
    opened = secret_box(state).open(row.pending_secret, user.id)
    if opened is None:
        return None
    account = getattr(user, "email", None) or str(user.id)
    return Setup(opened[0], otpauth_url(opened[0], account, issuer))


def enable(state: AppState, user: Any, code: object) -> list[str]:
    """Confirm the pending secret with a current ``code`` from the app: 2FA is on, the
    code's step counts as used, 10 new recovery codes are stored (hashed) and returned
    (show them once). Ends the user's other sessions and rotates the current one.
    :class:`InvalidCode` for a wrong code (the setup stays pending, nothing is written),
    :class:`TwoFactorStateError` without a setup or when already on."""
    row = _own_row(state, user)
    if row is not None and row.enabled_at is not None:
        raise TwoFactorStateError("Two-factor authentication is already on.")
    if row is None or row.pending_secret is None:
        raise TwoFactorStateError("Start the setup first.")
    if not _pending(row):
        raise TwoFactorStateError("The setup expired: start it again.")
    canonical = read_code(code)
    opened = secret_box(state).open(row.pending_secret, user.id)
    step = None
    if canonical is not None and canonical.kind == "totp" and opened is not None:
        step = matching_step(opened[0], canonical.value, utcnow())
    if step is None:
        raise InvalidCode()
    table = tables(state).enrolment.__table__
    db_session = state.db.session
    confirmed = db_session.execute(
        update(table)
        .where(table.c.user_id == user.id, table.c.pending_secret == row.pending_secret,
               table.c.enabled_at.is_(None))
        .values(secret=row.pending_secret, pending_secret=None, pending_at=None,
                enabled_at=utcnow(), last_step=step, generation=table.c.generation + 1)
    ).rowcount
    if confirmed != 1:  # another request enabled or replaced it meanwhile
        db_session.rollback()
        raise TwoFactorStateError("The setup changed meanwhile: start it again.")
    codes = _replace_codes(state, user)
    _renew_sessions(state, user, two_factor=True)
    signals.two_factor_enabled.send(_app(), user=user)
    return codes


def _check_password(state: AppState, user: Any, password: object, client_ip: str) -> None:
    """The user's password, asked again before a sensitive change: one attempt under the
    sign-in lockout (:func:`~flask_guardian.two_factor.under_lockout`)."""

    def check() -> None:
        if not isinstance(password, str) or state.hasher.too_long(password):
            raise InvalidPassword()
        ok, _ = state.hasher.verify(password, user.password_hash)
        if not ok:
            raise InvalidPassword()

    under_lockout(state, user, client_ip, check, where="two-factor password check")


def disable(state: AppState, user: Any, password: object, *, client_ip: str) -> None:
    """Turn 2FA off for ``user`` after checking ``password``: the secret and the recovery
    codes are deleted. Ends the user's other sessions and rotates the current one."""
    if not two_factor_enabled(state, user):
        raise TwoFactorStateError("Two-factor authentication is not on.")
    _check_password(state, user, password, client_ip)
    _turn_off(state, user)
    _renew_sessions(state, user, two_factor=False)
    signals.two_factor_disabled.send(_app(), user=user, by="user")


def regenerate_codes(state: AppState, user: Any, password: object, *, client_ip: str
                     ) -> list[str]:
    """Replace ``user``'s recovery codes with 10 new ones after checking ``password``;
    the old ones stop working. Ends the user's other sessions, rotates the current one."""
    if not two_factor_enabled(state, user):
        raise TwoFactorStateError("Two-factor authentication is not on.")
    _check_password(state, user, password, client_ip)
    table = tables(state).enrolment.__table__
    state.db.session.execute(
        update(table).where(table.c.user_id == user.id)
        .values(generation=table.c.generation + 1))
    codes = _replace_codes(state, user)
    current: Session | None = g.get("session") if has_request_context() else None
    _renew_sessions(state, user, two_factor=bool(getattr(current, "two_factor", False)))
    return codes


def admin_reset(state: AppState, user: Any) -> tuple[bool, int]:
    """Turn 2FA off for ``user`` without their password and end all their sessions (a
    lost device; ``flask guardian 2fa-reset``). Returns (whether it was on, how many
    sessions ended)."""
    was_on = two_factor_enabled(state, user)
    _turn_off(state, user)
    ended = state.strategy.revoke_user(user.id)
    state.db.session.commit()
    if ended:
        signals.session_revoked.send(_app(), session_ids=ended, user_id=user.id,
                                     reason="two_factor")
    if was_on:
        signals.two_factor_disabled.send(_app(), user=user, by="admin")
    return was_on, len(ended)


def _turn_off(state: AppState, user: Any) -> None:
    """Forget the secret, the pending one and the codes; the row (and its generation,
    moved on) stays, so a later enrolment never repeats a generation. No commit."""
    models = tables(state)
    table = models.enrolment.__table__
    db_session = state.db.session
    db_session.execute(
        update(table).where(table.c.user_id == user.id)
        .values(secret=None, pending_secret=None, pending_at=None, enabled_at=None,
                last_step=None, generation=table.c.generation + 1))
    codes = models.recovery_code.__table__
    db_session.execute(delete(codes).where(codes.c.user_id == user.id))


def _replace_codes(state: AppState, user: Any) -> list[str]:
    """Delete ``user``'s recovery codes and store the digests of 10 new ones. No commit."""
    table = tables(state).recovery_code.__table__
    db_session = state.db.session
    db_session.execute(delete(table).where(table.c.user_id == user.id))
    codes = new_recovery_codes()
    now = utcnow()
    db_session.execute(insert(table), [
        {"user_id": user.id, "code_hash": recovery_digest(user.id, c.replace("-", "")),
         "created_at": now} for c in codes])
    return codes


def _renew_sessions(state: AppState, user: Any, *, two_factor: bool) -> None:
    """End the user's other sessions and give the current request (when it is theirs) a
    new session id and token; commit; then send ``session_revoked``. ``two_factor`` is
    what the new session says it passed (``Session.two_factor``)."""
    current: Session | None = g.get("session") if has_request_context() else None
    mine = current is not None and current.user.id == user.id
    keep = current.id if mine and current is not None else None
    others = state.strategy.revoke_user(user.id, except_id=keep)
    rotated: list[str] = []
    if mine and current is not None:
        rotated = state.strategy.revoke([current.id], user.id)
        start_session(state, user, auth_time=current.auth_time, remember=current.remember,
                      two_factor=two_factor)
    state.db.session.commit()
    if others:
        signals.session_revoked.send(_app(), session_ids=others, user_id=user.id,
                                     reason="two_factor")
    if rotated:
        signals.session_revoked.send(_app(), session_ids=rotated, user_id=user.id,
                                     reason="rotated")
