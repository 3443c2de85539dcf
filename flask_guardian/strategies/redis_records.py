"""How the redis strategy stores a session: one string of fields joined by a separator
no field holds, versioned, parsed back into a :class:`Record`; and what a failing Redis
becomes (:func:`down`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple

from ..errors import StorageUnavailable
from ..session import Session, SessionUser
from ..storage import unavailable
from .base import Loaded

#: Separates the fields of a record: a control character, which no stored field holds
#: (emails, names, roles and user agents are printable by the time they are stored).
_SEP = "\x1f"
#: Version 2 adds the "remember me" flag as a last field, version 3 the two-factor flag after
#: it; older records (written before them) are still read, as sessions without them.
_VERSION = "3"
#: How many flag fields follow the 13 fields every version has, by version.
_FLAGS = {"1": 0, "2": 1, _VERSION: 2}
#: What a revoked session's record becomes until its deadline: no record parses as it.
GONE = b"gone"


class Record(NamedTuple):
    """A session record, parsed once and kept while the stored bytes stay the same
    (``loaded``: what ``load`` returns for it)."""

    loaded: Loaded
    uniquifier: str
    refresh_at: float
    expires: float
    absolute: float
    ip: str | None
    agent: str | None


#: Where the last-seen time stands among a record's fields (see :func:`encode_record`).
LAST_SEEN = 8


def _opt(value: str | None) -> str:
    return "" if value is None else "+" + value


def _unopt(value: str) -> str | None:
    return value[1:] if value else None


def encode_record(session_id: str, user: Any, uniquifier: str, created: float,
                  last_seen: float, expires: float, absolute: float, ip: str | None,
                  agent: str | None, remember: bool = False, two_factor: bool = False) -> str:
    """The stored form of a session: its fields joined by a separator no field holds."""
    return _SEP.join((
        _VERSION, session_id, str(user.id), uniquifier, user.email, _opt(user.name),
        user.role, repr(created), repr(last_seen), repr(expires), repr(absolute),
        _opt(ip), _opt(agent), "1" if remember else "", "1" if two_factor else "",
    ))


def parse_record(raw: bytes, strategy_name: str, update_age: float) -> Record | None:
    """The record stored as ``raw``, or None for bytes this module did not write."""
    try:
        fields = raw.decode("utf-8").split(_SEP)
        flags = fields[13:]
        if len(flags) != _FLAGS.get(fields[0]):
            return None
        remember, two_factor = flags[:1] == ["1"], flags[1:2] == ["1"]
        (_version, sid, user_id, uniquifier, email, name, role, created, last_seen,
         expires, absolute, ip, agent) = fields[:13]
        expires_at = float(expires)
        session = Session(
            sid, SessionUser(int(user_id), email, _unopt(name), role),
            datetime.fromtimestamp(expires_at, UTC), strategy_name,
            datetime.fromtimestamp(float(created), UTC), remember, two_factor,
        )
        return Record(Loaded(session), uniquifier, float(last_seen) + update_age,
                      expires_at, float(absolute), _unopt(ip), _unopt(agent))
    except (ValueError, UnicodeDecodeError, OverflowError, OSError):
        return None


def refresh_due(raw: bytes) -> str:
    """The record ``raw`` as if last seen long ago, so its next request refreshes it
    (re-reading the user): how a user change reaches the user's sessions."""
    fields = raw.decode("utf-8").split(_SEP)
    fields[LAST_SEEN] = repr(0.0)
    return _SEP.join(fields)


def down(exc: BaseException) -> StorageUnavailable:
    """Redis could not be used (refused, cut, timed out): a 503 for this request, logged
    as one line at most every few seconds, never a signed-in answer from stale data."""
    return unavailable(exc, "redis")
