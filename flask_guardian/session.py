"""The values a request sees: :class:`Session` and :class:`SessionUser`.

They are plain frozen objects, detached from the database, so reading ``g.session`` or
``session_user`` in a template never triggers a query.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The signed-in user as the session knows it: id, email, name and role."""

    id: int
    email: str
    name: str | None
    role: str

    def to_dict(self) -> dict[str, Any]:
        """``{"id", "email", "name", "role"}``."""
        return {"id": self.id, "email": self.email, "name": self.name, "role": self.role}


@dataclass(frozen=True, slots=True)
class Session:
    """An authenticated session, as loaded into ``g.session``.

    ``id`` is the public session id (never the secret cookie value). ``expires`` is a
    timezone-aware UTC datetime: when the session ends if no further request comes, the
    earlier of the idle and the absolute deadline.
    """

    id: str
    user: SessionUser
    expires: datetime
    strategy: str
    #: When the user authenticated (sign-in time), timezone-aware UTC.
    auth_time: datetime
    #: Signed in with "remember me": the cookie outlives the browser and the session has
    #: the ``GUARDIAN_REMEMBER_*`` lifetimes.
    remember: bool = False
    #: Signed in with a second factor (a TOTP or recovery code) besides the password.
    two_factor: bool = False

    def to_dict(self) -> dict[str, Any]:
        """``{"user": {...}, "expires": "<ISO 8601>", "twoFactor": bool}``, the body of
        ``GET /auth/session``."""
        return {"user": self.user.to_dict(), "expires": self.expires.isoformat(),
                "twoFactor": self.two_factor}
