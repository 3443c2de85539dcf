"""Signals, as Flask's own (blinker). Each is sent with the app as sender.

- ``user_signed_in``: ``user`` (the model instance), ``session`` (:class:`Session`).
- ``user_signed_out``: ``session`` (the :class:`Session` that ended).
- ``sign_in_failed``: ``email`` (normalised), ``reason`` (``"invalid_credentials"``,
  ``"too_many_attempts"``, ``"inactive"``, ``"unknown_email"``, ``"password_too_long"``)
  and ``ip``. The reason is for your logs; the client always gets the generic answer.
- ``session_revoked``: ``session_ids`` (list), ``user_id``, ``reason`` (``"revoked"``,
  ``"others"``, ``"all"``, ``"password_changed"``, ``"deactivated"``, ``"deleted"``,
  ``"replaced"``, ``"suspicious"``, ``"rotated"``). Revocations made by a user change
  are sent after the transaction commits.
- ``suspicious_session``: ``session``, ``reasons`` (``["user_agent"]`` and/or
  ``["ip_network"]``), ``action`` (``"log"`` or ``"revoke"``).
- ``two_factor_enabled``: ``user``.
- ``two_factor_disabled``: ``user``, ``by`` (``"user"``, or ``"admin"`` for
  ``flask guardian 2fa-reset``).
- ``recovery_code_used``: ``user``, ``remaining`` (unused codes left).
"""

from __future__ import annotations

from blinker import Namespace

_signals = Namespace()

user_signed_in = _signals.signal("user-signed-in")
user_signed_out = _signals.signal("user-signed-out")
sign_in_failed = _signals.signal("sign-in-failed")
session_revoked = _signals.signal("session-revoked")
suspicious_session = _signals.signal("suspicious-session")
two_factor_enabled = _signals.signal("two-factor-enabled")
two_factor_disabled = _signals.signal("two-factor-disabled")
recovery_code_used = _signals.signal("recovery-code-used")

__all__ = [
    "recovery_code_used",
    "session_revoked",
    "sign_in_failed",
    "suspicious_session",
    "two_factor_disabled",
    "two_factor_enabled",
    "user_signed_in",
    "user_signed_out",
]
