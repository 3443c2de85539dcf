"""What a sign-in identifier is matched against: ``GUARDIAN_LOGIN_FIELDS``, the user
columns (``email`` by default; ``username`` and ``email`` for an app that signs in by
either), each with its normalisation, and the lockout key an identifier is counted under.

- ``email``: NFKC, trimmed, lower-cased (:func:`~flask_guardian.models.normalize_email`),
  the form emails are stored in.
- Any other column (``username``, ...): NFKC and trimmed, then compared exactly, case
  included, on every database (a MariaDB column with a case-insensitive collation finds
  ``Ann`` for ``ann``; the comparison made here in Python then refuses it, so the answer is
  the same everywhere).

The lockout counts an identifier NFKC-normalised, trimmed and lower-cased, whatever the
column: ``Ann``, ``ANN`` and ``ann`` share one counter, so changing the case never buys
more guesses.
"""

from __future__ import annotations

import hashlib
import unicodedata
from typing import Any

from sqlalchemy import inspect, or_, select

from .errors import ConfigurationError
from .models import normalize_email


def normalize_login(field: str, value: str) -> str:
    """``value`` as the ``field`` column stores it (see the module docstring)."""
    if field == "email":
        return normalize_email(value)
    return unicodedata.normalize("NFKC", value).strip()


def lockout_key(normalized: str) -> str:
    """The lockout counter's key for an identifier (already ``normalize_email``-ed): a
    digest, so any string a client sends fits the column and the table holds no
    identifiers."""
    return "email:" + hashlib.sha256(normalized.encode("utf-8", "replace")).hexdigest()


def find_user(db_session: Any, user_model: Any, fields: tuple[str, ...], identifier: str
              ) -> Any | None:
    """The user whose column in ``fields`` equals ``identifier`` (normalised per column),
    trying the fields in order (with ``("username", "email")``, a username equal to
    another account's email finds the username's owner). One query whatever the number of
    fields."""
    values = {field: normalize_login(field, identifier) for field in fields}
    if len(fields) == 1:
        field = fields[0]
        candidates = list(db_session.execute(
            select(user_model).where(getattr(user_model, field) == values[field]).limit(2)
        ).scalars())
    else:
        condition = or_(*(getattr(user_model, f) == v for f, v in values.items()))
        candidates = list(db_session.execute(
            select(user_model).where(condition).limit(2 * len(fields))
        ).scalars())
    for field in fields:
        matches = [u for u in candidates if getattr(u, field) == values[field]]
        if len(matches) == 1:
            return matches[0]
        if matches:  # a column that is not unique: no way to tell who is meant
            return None
    return None


def read_login_fields(value: object) -> tuple[str, ...]:
    """Check ``GUARDIAN_LOGIN_FIELDS`` at ``init_app``: a non-empty list of distinct
    attribute names (that they are columns of the user model is checked once the model is
    known, by :func:`check_login_fields`)."""
    if (
        isinstance(value, str | bytes)
        or not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(f, str) and f.isidentifier() for f in value)
        or len(set(value)) != len(value)
    ):
        raise ConfigurationError(
            "GUARDIAN_LOGIN_FIELDS",
            f"expected a non-empty list of distinct column names, such as "
            f"['username', 'email'], got {value!r}",
        )
    return tuple(value)


def check_login_fields(user_model: Any, fields: tuple[str, ...]) -> None:
    """Refuse, at ``init_app``, a ``GUARDIAN_LOGIN_FIELDS`` entry that is not a column
    attribute of the user model."""
    columns = inspect(user_model).column_attrs
    for field in fields:
        if field not in columns:
            known = ", ".join(sorted(c.key for c in columns))
            raise ConfigurationError(
                "GUARDIAN_LOGIN_FIELDS",
                f"{user_model.__name__} has no column attribute {field!r} (it has {known})",
            )
