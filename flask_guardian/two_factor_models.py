"""The two-factor tables, declared on the application's ``db`` next to guardian's others
(``Guardian(db=db)`` declares them with :func:`~flask_guardian.models.build_models`), so
``db.create_all()`` creates them and Flask-Migrate/Alembic autogenerate sees them.

- ``guardian_two_factor``: one row per user who ever started an enrolment: the TOTP secret
  (AES-GCM encrypted, see ``two_factor_crypto.py``), a pending secret between setup and
  enable, the last time step accepted (a code is good once), when it was enabled, and a
  generation number that changes on every enable, disable and code regeneration (what a
  "trust this browser" cookie is bound to). Disabling keeps the row (secret gone) so the
  generation never repeats.
- ``guardian_recovery_codes``: the unused recovery codes, one row each, as digests.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from .models import UNIQUIFIER_LENGTH, UTCDateTime, declared_on, exact_string

#: Room for the encrypted form of a secret: "v1." + base64url(12-byte nonce + 32-byte
#: base32 secret + 16-byte tag) is 83 characters.
SECRET_COLUMN_LENGTH = 255


@dataclass(frozen=True, slots=True)
class TwoFactorModels:
    """The two-factor model classes of one ``db``."""

    enrolment: Any
    recovery_code: Any


def build_two_factor_models(db: Any, user_model: Any) -> TwoFactorModels:
    """Declare the two-factor tables on ``db`` (once per ``db``) and return the classes."""
    known: TwoFactorModels | None = declared_on(db).get("two_factor")
    if known is not None:
        return known
    users_id = user_model.__table__.c.id

    class TwoFactorEnrolment(db.Model):  # type: ignore[misc]
        """A user's TOTP enrolment (see the module docstring)."""

        __tablename__ = "guardian_two_factor"

        user_id: Mapped[int] = mapped_column(
            Integer, ForeignKey(users_id, ondelete="CASCADE"), primary_key=True
        )
        # The user's uniquifier when the row was made: a row left by a deleted account
        # (no cascade on SQLite without foreign keys) never applies to a new one.
        user_uniquifier: Mapped[str] = mapped_column(
            exact_string(UNIQUIFIER_LENGTH), nullable=False
        )
        secret: Mapped[str | None] = mapped_column(
            String(SECRET_COLUMN_LENGTH), nullable=True
        )
        pending_secret: Mapped[str | None] = mapped_column(
            String(SECRET_COLUMN_LENGTH), nullable=True
        )
        pending_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
        # The TOTP time step (Unix time // 30) of the last accepted code: a code of this
        # step or an earlier one is a replay.
        last_step: Mapped[int | None] = mapped_column(Integer, nullable=True)
        enabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
        # Starts at a random number (not 0), so a row made again for the same user id
        # does not repeat the generations of a deleted one.
        generation: Mapped[int] = mapped_column(Integer, nullable=False)

    class RecoveryCode(db.Model):  # type: ignore[misc]
        """One unused recovery code of a user, as a digest (deleted when used)."""

        __tablename__ = "guardian_recovery_codes"

        id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
        user_id: Mapped[int] = mapped_column(
            Integer, ForeignKey(users_id, ondelete="CASCADE"), nullable=False
        )
        # SHA-256 hex (two_factor_codes.recovery_digest): the codes carry 80 random bits,
        # so a fast digest is as safe as a slow password hash would be (see there).
        code_hash: Mapped[str] = mapped_column(exact_string(64), nullable=False)
        created_at: Mapped[datetime] = mapped_column(UTCDateTime, nullable=False)

        __table_args__ = (
            # Also the index the lookups by user (and MariaDB's foreign key) use.
            UniqueConstraint("user_id", "code_hash", name="uq_guardian_recovery_codes_code"),
        )

    models = TwoFactorModels(TwoFactorEnrolment, RecoveryCode)
    declared_on(db)["two_factor"] = models
    return models
