"""What a change to a user means for their sessions (the user-change policy).

A change made through the ORM reaches the user's sessions however the application makes
it (``user.role = "admin"; db.session.commit()``, or the ``guardian`` methods): a role,
email or name change bumps ``session_version`` so every session sees it; deactivation and
deletion end every session; a password change ends all but the current one. The strategy
carries the decision out (:meth:`SessionStrategy.on_user_changed`), in the same transaction;
``session_revoked`` is sent once it commits. Core SQL bypasses these events (see
docs/security.md, "Not covered").
"""

from __future__ import annotations

from typing import Any

from flask import current_app, g, has_app_context, has_request_context
from sqlalchemy import event, inspect

from . import signals
from .models import declared_on
from .state import get_state

#: User columns whose change must reach live sessions.
WATCHED = ("role", "email", "name", "password_hash", "is_active")


def listen_for_user_changes(db: Any) -> None:
    """Listen to ``db``'s session (once, however many apps share it). The mark is kept on
    ``db`` itself: ``event.contains`` goes by the session object's ``id()``, which a new
    ``db`` may reuse once an old one is freed, and would then answer for the dead one."""
    declared = declared_on(db)
    if not declared.get("user_change_listeners"):
        declared["user_change_listeners"] = True
        event.listen(db.session, "after_commit", _after_commit)
        event.listen(db.session, "after_rollback", _after_rollback)
        event.listen(db.session, "before_flush", _before_flush)


def _before_flush(db_session: Any, flush_context: Any, instances: Any) -> None:
    try:
        state = get_state()
    except RuntimeError:
        return  # no flask-guardian app here (a script, another app sharing the db)
    user_model = state.models.user
    current = g.get("session") if has_request_context() else None
    changes: list[tuple[Any, int, str | None, str | None, str]] = []
    for obj in list(db_session.dirty):
        if not isinstance(obj, user_model) or obj.id is None:
            continue
        attrs = inspect(obj).attrs
        changed = {a for a in WATCHED if a in attrs and attrs[a].history.has_changes()}
        if not changed:
            continue
        obj.session_version = version = (obj.session_version or 0) + 1
        if "is_active" in changed and not obj.is_active:
            changes.append((obj.id, version, "all", None, "deactivated"))
        elif "password_hash" in changed:
            keep = current.id if current is not None and current.user.id == obj.id else None
            changes.append((obj.id, version, "others", keep, "password_changed"))
        else:
            changes.append((obj.id, version, None, None, "user_changed"))
    for obj in list(db_session.deleted):
        if isinstance(obj, user_model) and obj.id is not None:
            changes.append((obj.id, (obj.session_version or 0) + 1, "all", None, "deleted"))
    for user_id, version, end, keep, reason in changes:
        ended = state.strategy.on_user_changed(db_session, user_id, version, end=end,
                                               keep=keep)
        if ended:
            db_session.info.setdefault("guardian_revoked", []).append((ended, user_id, reason))


def _after_commit(db_session: Any) -> None:
    revoked = db_session.info.pop("guardian_revoked", None)
    if revoked and has_app_context():
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        for ended, user_id, reason in revoked:
            signals.session_revoked.send(app, session_ids=ended, user_id=user_id,
                                         reason=reason)


def _after_rollback(db_session: Any) -> None:
    db_session.info.pop("guardian_revoked", None)
