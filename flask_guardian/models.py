"""Database tables. They live in the application's ``db`` metadata, so ``db.create_all()``
and Flask-Migrate/Alembic see them.

- ``guardian_sessions``: one row per session of either strategy (device list, revocation).
- ``guardian_revocations``: the feed other processes poll to learn of revoked JWTs.
- ``guardian_login_attempts``: failed sign-in counters, shared by every process.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    TypeDecorator,
    event,
    false,
    literal_column,
    null,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Mapped, MappedColumn, mapped_column, validates
from sqlalchemy.orm.attributes import flag_modified

EMAIL_MAX_LENGTH = 320
USER_AGENT_MAX_LENGTH = 512
UNIQUIFIER_LENGTH = 32


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC, returns timezone-aware UTC, the same on SQLite, PostgreSQL and
    MariaDB (whose DATETIME types disagree about time zones)."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            # MySQL/MariaDB DATETIME drops microseconds unless asked for them.
            from sqlalchemy.dialects.mysql import DATETIME

            return dialect.type_descriptor(DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("UTCDateTime needs a timezone-aware datetime")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC)


def exact_string(length: int) -> Any:
    """A VARCHAR compared byte for byte everywhere. MySQL/MariaDB's default collations
    ignore case and accents ("josé@x" = "jose@x", session id "aB" = "Ab"); emails are
    normalised in Python, so the database must compare them exactly."""
    from sqlalchemy.dialects.mysql import VARCHAR

    binary = VARCHAR(length, charset="utf8mb4", collation="utf8mb4_bin")
    return String(length).with_variant(binary, "mysql", "mariadb")


def utcnow() -> datetime:
    """``datetime.now(UTC)``: every time check is made in Python, never with SQL ``now()``."""
    return datetime.now(UTC)


def new_uniquifier() -> str:
    """128 random bits as 32 hex digits: a user's :attr:`UserMixin.uniquifier`."""
    return secrets.token_hex(16)


def normalize_email(email: str) -> str:
    """NFKC, trimmed and lower-cased: the form emails are stored, looked up and counted in,
    so ``Ann@Example.com`` and ``ann@example.com`` are one account and one lockout."""
    return unicodedata.normalize("NFKC", email).strip().lower()


class UserMixin:
    """Columns flask-guardian needs on the application's user model.

    ``class User(db.Model, UserMixin): __tablename__ = "users"`` gives ``id``, ``email``
    (unique, stored normalised), ``name``, ``role``, ``password_hash``, ``is_active``,
    ``session_version`` (bumped on every change that must reach live sessions),
    ``created_at`` and ``uniquifier``. docs/existing-users-table.md says why each is
    needed and how to map them onto a table of your own.

    ``uniquifier`` is a random identifier made once per account and never reused: every
    session records it and is only valid while the user row carries the same one. An id
    can come back (SQLite hands the highest one out again after a delete made outside the
    ORM, where no cascade removed the sessions); a uniquifier cannot, so a new account can
    never adopt a deleted one's cookie or token.

    A table with no names or no roles keeps none: ``name = None`` on the model (every
    user's name is None) and ``role = "user"`` (every user has that role; ``set_role``
    refuses). Other column names map with SQLAlchemy's own means:
    ``password_hash = db.Column("password", db.String(255))``.

    Every NOT NULL column but ``email`` and ``id`` has a server default, so a migration
    that adds them to a table that already has rows runs as generated; the rows it gives
    an empty ``uniquifier`` get a random one when first loaded (:func:`build_models`).
    """

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(
        exact_string(EMAIL_MAX_LENGTH), unique=True, nullable=False
    )
    name: Mapped[str | None] = mapped_column(String(200), nullable=True)
    role: Mapped[str] = mapped_column(
        String(64), nullable=False, default="user", server_default="user"
    )
    password_hash: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # '1' and '0' rather than true(): the same text is a valid default on every database,
    # so a migration generated on one runs on the others.
    is_active: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default="1"
    )
    session_version: Mapped[int] = mapped_column(
        Integer, nullable=False, default=0, server_default="0"
    )
    # NULL for rows that predate flask-guardian: when they were made is not known.
    created_at: Mapped[datetime | None] = mapped_column(
        UTCDateTime, nullable=True, default=utcnow
    )
    # '' (never a session's: see _give_uniquifier) for rows a migration adds it to.
    uniquifier: Mapped[str] = mapped_column(
        exact_string(UNIQUIFIER_LENGTH), nullable=False, default=new_uniquifier,
        server_default="",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Key a column declared under another name by its attribute: with
        ``password_hash = db.Column("password", ...)`` the table's ``c.password_hash`` is
        that column (SQLAlchemy keys it ``password`` otherwise), as every query of
        flask-guardian names it. Runs before the declarative scan builds the table."""
        super().__init_subclass__(**kwargs)
        for attribute, value in list(vars(cls).items()):
            column = value.column if isinstance(value, MappedColumn) else value
            if (isinstance(column, Column) and column.name not in (None, attribute)
                    and column.key == column.name):
                column.key = attribute

    @validates("email")
    def _normalize_email(self, key: str, value: str) -> str:
        return normalize_email(value)

    # Flask-Login's names, so ``current_user`` reads the same signed in or not
    # (``is_active`` is the column above).
    @property
    def is_authenticated(self) -> bool:
        """True: a user object stands for a signed-up account (Flask-Login's name)."""
        return True

    @property
    def is_anonymous(self) -> bool:
        """False (Flask-Login's name; ``AnonymousUser`` says True)."""
        return False

    def get_id(self) -> str:
        """The id as a string, as Flask-Login's ``UserMixin.get_id``."""
        return str(self.id)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} {self.email!r} role={self.role!r}>"


def resolve_user_model(spec: Any) -> Any:
    """The user model named by ``spec``: the class itself, or an import string
    (``"app.models:User"`` or ``"app.models.User"``) imported now, so an
    application-factory app can create ``Guardian(db=db, user_model="app.models:User")``
    before its models module (which imports that ``db``) exists. Raises
    :class:`ConfigurationError` naming ``user_model`` when it cannot be imported or is not
    a model mixing in :class:`UserMixin`."""
    if not isinstance(spec, str):
        return spec
    import importlib

    from .errors import ConfigurationError

    module_name, colon, attribute = spec.partition(":")
    if not colon:
        module_name, _, attribute = spec.rpartition(".")
    hint = ("give 'package.module:ClassName' of a model mixing in flask_guardian.UserMixin, "
            "importable when init_app runs")
    try:
        model = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError, ValueError) as exc:
        # ValueError: an empty module name. The cause is kept: a models module that
        # fails on its own import error says which name it missed.
        raise ConfigurationError(
            "user_model", f"cannot import {spec!r} ({type(exc).__name__}: {exc}); {hint}"
        ) from exc
    if not (isinstance(model, type) and issubclass(model, UserMixin)
            and hasattr(model, "__table__")):
        raise ConfigurationError(
            "user_model", f"{spec!r} is {model!r}, not a model mixing in flask_guardian.UserMixin"
        )
    return model


@dataclass(frozen=True, slots=True)
class Models:
    """The model classes of one ``db``: the user model and guardian's own tables."""

    user: Any
    session: Any
    revocation: Any
    login_attempt: Any


def declared_on(db: Any) -> dict[str, Any]:
    """What flask-guardian declared on ``db`` (its models and tables, by name), kept in the
    ``info`` of ``db``'s metadata: it lives and dies with ``db``. (A module-level
    ``WeakKeyDictionary`` keyed by ``db`` would keep every ``db`` alive for ever: its values,
    declared on ``db.Model``, refer back to their key.)"""
    info: dict[str, dict[str, Any]] = db.metadata.info
    return info.setdefault("flask_guardian", {})


def build_models(db: Any, user_model: Any | None) -> Models:
    """Declare guardian's tables on ``db`` (once per ``db``) and return the classes."""
    cache: dict[int, Models] = declared_on(db).setdefault("models", {})
    key = id(user_model)
    if key in cache:
        return cache[key]
    if cache:
        raise ValueError(
            "flask-guardian tables are already declared on this db with another user model"
        )

    if user_model is None:

        class User(db.Model, UserMixin):  # type: ignore[misc]
            """The ready user model used when the application brings none."""

            __tablename__ = "guardian_users"
            # SQLite would otherwise hand a deleted user's id to the next account.
            __table_args__ = ({"sqlite_autoincrement": True},)

        user_model = User
    elif not issubclass(user_model, UserMixin):
        raise TypeError("user_model must mix in flask_guardian.UserMixin")

    user_table = user_model.__table__
    _check_keys(user_model)
    _check_profile(user_model)
    # A row without a uniquifier (added by a migration to existing rows, or inserted
    # outside the ORM) gets one when loaded, before any session can record it.
    # Once per db, marked on the db (not by ``event.contains``: it goes by ``id()``, which
    # a new db or model may reuse once an old one is freed).
    declared = declared_on(db)
    if not declared.get("uniquifier_listeners"):
        declared["uniquifier_listeners"] = True
        event.listen(user_model, "load", _give_uniquifier)
        event.listen(db.session, "before_commit", _write_uniquifiers)
        event.listen(db.session, "after_rollback", _forget_uniquifiers)

    class SessionRecord(db.Model):  # type: ignore[misc]
        """One session of either strategy."""

        __tablename__ = "guardian_sessions"

        id: Mapped[str] = mapped_column(exact_string(32), primary_key=True)
        user_id: Mapped[int] = mapped_column(
            Integer, ForeignKey(user_table.c.id, ondelete="CASCADE"), nullable=False
        )
        # The user's uniquifier at sign-in: the session is valid only while they match.
        user_uniquifier: Mapped[str] = mapped_column(
            exact_string(UNIQUIFIER_LENGTH), nullable=False
        )
        # SHA-256 hex of the database strategy's cookie token; NULL for JWT sessions.
        token_hash: Mapped[str | None] = mapped_column(
            exact_string(64), nullable=True, unique=True
        )
        strategy: Mapped[str] = mapped_column(String(16), nullable=False)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
        last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
        expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
        absolute_expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)
        revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
        # Signed in with "remember me": the GUARDIAN_REMEMBER_* lifetimes apply. The server
        # default fills the rows of a table that existed before the column.
        remember: Mapped[bool] = mapped_column(
            Boolean, nullable=False, default=False, server_default=false()
        )
        # Signed in with a second factor besides the password (same server default).
        two_factor: Mapped[bool] = mapped_column(
            Boolean, nullable=False, default=False, server_default=false()
        )
        ip: Mapped[str | None] = mapped_column(String(45), nullable=True)
        user_agent: Mapped[str | None] = mapped_column(
            String(USER_AGENT_MAX_LENGTH), nullable=True
        )

        __table_args__ = (
            Index("ix_guardian_sessions_user_id", "user_id"),
            Index("ix_guardian_sessions_expires_at", "expires_at"),
        )

    class Revocation(db.Model):  # type: ignore[misc]
        """A revoked JWT session (``session_id``) or a user whose tokens below
        ``user_version`` must be re-checked against the database."""

        __tablename__ = "guardian_revocations"

        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        session_id: Mapped[str | None] = mapped_column(exact_string(32), nullable=True)
        user_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
        user_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)
        # After this no token it concerns can still be valid: purge may delete the row.
        expires_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False, index=True)

    class LoginAttempt(db.Model):  # type: ignore[misc]
        """Sign-in attempts for one key: ``email:<SHA-256 of the normalised email>`` or
        ``ip:<address>`` (``ip:<network>/64`` for IPv6)."""

        __tablename__ = "guardian_login_attempts"

        key: Mapped[str] = mapped_column(exact_string(400), primary_key=True)
        failures: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
        window_started_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

    models = Models(user_model, SessionRecord, Revocation, LoginAttempt)
    cache[key] = models
    return models


def _give_uniquifier(user: Any, context: Any) -> None:
    if not user.uniquifier:
        # A change made while loading is taken as loaded state: it is marked changed
        # when the session commits (the sign-in's own commit writes it).
        user.uniquifier = new_uniquifier()
        context.session.info.setdefault(_UNIQUIFIERS_KEY, []).append(user)


_UNIQUIFIERS_KEY = "guardian_new_uniquifiers"


def _forget_uniquifiers(db_session: Any) -> None:
    db_session.info.pop(_UNIQUIFIERS_KEY, None)


def _write_uniquifiers(db_session: Any) -> None:
    for user in db_session.info.pop(_UNIQUIFIERS_KEY, ()):
        if user in db_session:
            flag_modified(user, "uniquifier")


def _check_keys(user_model: Any) -> None:
    """Every column flask-guardian queries must be reachable by its attribute's name."""
    for attribute in ("id", "email", "password_hash", "is_active", "session_version",
                      "uniquifier"):
        if attribute not in user_model.__table__.c:
            raise TypeError(
                f"{user_model.__name__}.__table__ has no column keyed {attribute!r}: declare "
                f"it as db.Column(\"<column name>\", ..., key={attribute!r})"
            )


def _check_profile(user_model: Any) -> None:
    """A model may leave out ``name`` (``name = None``) and ``role`` (a constant string):
    record the role for :func:`profile_columns`."""
    table = user_model.__table__
    if "role" not in table.c:
        role = getattr(user_model, "role", None)
        # Written into the SQL as a literal (a bind parameter would cost the hot path's
        # one-parameter lookup): plain word characters only.
        if not isinstance(role, str) or not re.fullmatch(r"[\w.-]{1,64}", role, re.ASCII):
            raise TypeError(
                f"{user_model.__name__} has no role column: give every user one role with "
                "a class attribute of letters, digits, '_', '.' or '-' (role = \"user\"), "
                "or keep UserMixin's column"
            )
        table.info["guardian_role"] = role
    if "name" not in table.c and getattr(user_model, "name", None) is not None:
        raise TypeError(f"{user_model.__name__} has no name column: set name = None")


def profile_columns(users: Any) -> tuple[Any, Any]:
    """The ``name`` and ``role`` of a user row in a Core select: the table's columns, or,
    for a model that has none, NULL and its one role, under the same labels."""
    name = users.c.name if "name" in users.c else null().label("name")
    role = users.c.role if "role" in users.c else literal_column(
        f"'{users.info['guardian_role']}'", String(64)
    ).label("role")
    return name, role
