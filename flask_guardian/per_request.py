"""What one request keeps on ``g``: its session (``g.session``, public) and one
:class:`Outgoing`, what it will send back besides its body (a new session token, a cleared
cookie, a new CSRF seed). Written by the request cycle, sign-in, sign-out and the CSRF
protection; read once by ``after_request``.

Reading ``g`` through its proxy costs ten times a dict lookup, and the hot path reads it
on every request, so :func:`namespace` hands out ``g``'s own namespace once per hook.
"""

from __future__ import annotations

from typing import Any

from flask import g

from .session import Session

#: The key of this request's :class:`Outgoing` in ``g``'s namespace. ``before_request``
#: sets it to None; the object is made on first use, so a steady request makes none.
OUTGOING = "_guardian_outgoing"


def namespace() -> dict[str, Any]:
    """``g``'s namespace itself (``g.session`` is ``namespace()["session"]``): the one
    fast read of ``g`` the hot path makes per hook."""
    return g._get_current_object().__dict__  # type: ignore[no-any-return]


def get_session() -> Session | None:
    """The current request's session (``g.session``), or None when anonymous.
    ``login_required`` asks on every protected request, hence :func:`namespace`'s read
    written out here (a call fewer)."""
    session: Session | None = g._get_current_object().__dict__.get("session")
    return session


class Outgoing:
    """What this request sends back besides its body. ``token``: a session token to set
    as the cookie (or, for an API client, in the ``X-Guardian-Token`` header); ``clear``:
    delete the session cookie, and ``ended``: why its session ended (``"expired"`` or
    ``"revoked"``, for the sign-in page), when the strategy knew; ``csrf_seed``: a new
    CSRF seed cookie to set."""

    __slots__ = ("clear", "csrf_seed", "ended", "token")

    def __init__(self) -> None:
        self.token: str | None = None
        self.clear = False
        self.ended: str | None = None
        self.csrf_seed: str | None = None

    def send_token(self, token: str) -> None:
        """Set ``token`` as the session cookie (it replaces a pending clear)."""
        self.token, self.clear = token, False

    def clear_cookie(self, ended: str | None = None) -> None:
        """Delete the session cookie (it replaces a pending token); ``ended``: why."""
        self.token, self.clear, self.ended = None, True, ended

    def forget_token(self) -> None:
        """Send nothing about the session cookie after all."""
        self.token, self.clear = None, False

    @property
    def pending(self) -> bool:
        """Whether there is anything to send."""
        return self.clear or self.token is not None or self.csrf_seed is not None


def outgoing(values: dict[str, Any] | None = None) -> Outgoing:
    """This request's :class:`Outgoing` (in ``values``, ``g``'s namespace when given),
    made on first use."""
    if values is None:
        values = namespace()
    found: Outgoing | None = values.get(OUTGOING)
    if found is None:
        found = values[OUTGOING] = Outgoing()
    return found
