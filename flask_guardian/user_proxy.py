"""``current_user``: Flask-Login's name for the signed-in user's model instance, for apps
moving from it. A lazy proxy: a request that never touches it pays nothing (not even a
function call), and the first use loads the user with one primary-key query; later uses
in the request reuse it. ``g.session.user`` stays the
cheap, query-free snapshot."""

from __future__ import annotations

from typing import Any

from flask import g
from werkzeug.local import LocalProxy

from .state import get_state


class AnonymousUser:
    """What ``current_user`` is when nobody is signed in, with Flask-Login's names
    (``AnonymousUserMixin``)."""

    __slots__ = ()

    #: Always False: nobody is signed in.
    is_authenticated = False
    #: Always True.
    is_anonymous = True
    #: Always False.
    is_active = False

    def get_id(self) -> None:
        """None: an anonymous user has no id."""
        return None

    def __repr__(self) -> str:
        return "<AnonymousUser>"


#: The one anonymous user (it holds nothing).
ANONYMOUS = AnonymousUser()
#: The ``db.session.info`` key of ``(Session, user)`` loaded in this app context.
_LOADED = "flask_guardian.current_user"


def load_current_user() -> Any:
    """The signed-in user's model instance (in this request's ``db.session``), or
    :data:`ANONYMOUS`. A user deleted or deactivated since the session was loaded is
    anonymous."""
    session = g.get("session")  # the public g.session: only read when the proxy is used
    if session is None:
        return ANONYMOUS
    state = get_state()
    db_session = state.db.session
    # Kept with db.session, which lives as long as the app context: the identity map
    # holds objects weakly, so without this a second use could query again.
    loaded = db_session.info.get(_LOADED)
    if loaded is not None and loaded[0] is session:
        return loaded[1]
    user = db_session.get(state.models.user, session.user.id)
    if user is None or not user.is_active:
        user = ANONYMOUS
    db_session.info[_LOADED] = (session, user)
    return user


#: The signed-in user (your model instance) or :class:`AnonymousUser`; also a Jinja
#: global. Loaded on first use in a request.
current_user: Any = LocalProxy(load_current_user)
