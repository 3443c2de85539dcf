"""Session strategies: where the truth of a session lives.

``SESSION_STRATEGY`` names one of :data:`STRATEGIES` or gives a :class:`SessionStrategy`
subclass (or its import string).
"""

from __future__ import annotations

from .base import RequestInfo, SessionInfo, SessionStrategy
from .database import DatabaseStrategy
from .jwt import JWTStrategy
from .redis import RedisStrategy

#: The shipped strategies by ``SESSION_STRATEGY`` name.
STRATEGIES: dict[str, type[SessionStrategy]] = {
    "database": DatabaseStrategy,
    "jwt": JWTStrategy,
    "redis": RedisStrategy,
}

__all__ = [
    "STRATEGIES",
    "DatabaseStrategy",
    "JWTStrategy",
    "RedisStrategy",
    "RequestInfo",
    "SessionInfo",
    "SessionStrategy",
]
