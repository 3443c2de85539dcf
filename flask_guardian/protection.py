"""Route protection: the ``login_required`` and ``roles_required`` decorators, and the
``GUARDIAN_PROTECTED_ROUTES`` rules checked in ``before_request``."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from .config import RouteRule
from .errors import Forbidden, Unauthorized
from .per_request import get_session

F = TypeVar("F", bound=Callable[..., Any])


def login_required(view: F) -> F:
    """Let the view run only for a signed-in request. Anonymous browser requests are
    redirected to the sign-in page (with ``redirectUrl``); JSON requests get 401."""

    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if get_session() is None:
            raise Unauthorized()
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def roles_required(*roles: str) -> Callable[[F], F]:
    """Like :func:`login_required`, and the user's role must be one of ``roles``
    (any one passes); otherwise 403."""
    if not roles or not all(isinstance(r, str) for r in roles):
        raise TypeError("roles_required() takes one or more role names")
    allowed = frozenset(roles)

    def decorator(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            check_access(get_session(), allowed)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator


def check_access(session: Any, roles: frozenset[str]) -> None:
    """Raise :class:`Unauthorized` or :class:`Forbidden` unless ``session`` may pass."""
    if session is None:
        raise Unauthorized()
    if roles and session.user.role not in roles:
        raise Forbidden()


def match_rule(rules: tuple[RouteRule, ...], path: str) -> RouteRule | None:
    """The longest rule whose prefix matches ``path`` at a segment boundary: ``/admin``
    matches ``/admin`` and ``/admin/x``, never ``/administrator``."""
    if "//" in path:
        path = "/" + "/".join(p for p in path.split("/") if p)
    for rule in rules:  # sorted longest first at start-up
        prefix = rule.prefix
        if prefix == "/" or path == prefix or path.startswith(prefix + "/"):
            return rule
    return None
