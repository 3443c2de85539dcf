"""Client monitoring: a session used from another browser (User-Agent) or, with
``GUARDIAN_MONITOR_IP_NETWORK``, another network than it was signed in from is reported
(log line and ``suspicious_session``) and, with ``GUARDIAN_ON_SUSPICIOUS_SESSION =
"revoke"``, ended. Every strategy's ``load`` asks through ``strategy.check_client``."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from flask import Request, current_app

from .. import signals
from ..clients import ip_network
from ..session import Session

if TYPE_CHECKING:
    from .base import SessionStrategy

logger = logging.getLogger("flask_guardian")

#: Sessions reported per process before the record of them starts again.
_FLAGGED_MAX = 10_000


class ClientMonitor:
    """The monitoring of one strategy's sessions (it ends them through that strategy)."""

    def __init__(self, strategy: SessionStrategy) -> None:
        self.strategy = strategy
        self.settings = strategy.settings
        self._flagged: dict[str, None] = {}

    def check(
        self, session: Session, request: Request, agent_changed: bool, signed_network: str | None
    ) -> bool:
        """Compare the request with what the session was signed in with; on a change send
        ``suspicious_session`` and, with ``GUARDIAN_ON_SUSPICIOUS_SESSION = "revoke"``, end
        the session. Returns False when the session must not be used."""
        reasons = ["user_agent"] if agent_changed else []
        if self.settings.monitor_ip_network and ip_network(request.remote_addr) != signed_network:
            reasons.append("ip_network")
        if not reasons:
            return True
        action = self.settings.on_suspicious_session
        app = current_app._get_current_object()  # type: ignore[attr-defined]
        if action == "revoke" or session.id not in self._flagged:
            # "log" reports a session once per process, not on every request it makes.
            if len(self._flagged) >= _FLAGGED_MAX:
                self._flagged.clear()
            self._flagged[session.id] = None
            logger.warning(
                "suspicious session %s of user %s: %s changed",
                session.id, session.user.id, " and ".join(reasons),
            )
            signals.suspicious_session.send(app, session=session, reasons=reasons, action=action)
        if action == "revoke":
            self.strategy.revoke([session.id], session.user.id)
            self.strategy.db.session.commit()
            signals.session_revoked.send(
                app, session_ids=[session.id], user_id=session.user.id, reason="suspicious"
            )
            return False
        return True
