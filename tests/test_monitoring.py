"""Session monitoring and the security signals: a change of User-Agent (and, when enabled,
of IP network) within a session sends ``suspicious_session``;
``GUARDIAN_ON_SUSPICIOUS_SESSION`` decides whether the session is kept ("log") or ended
("revoke"); ``sign_in_failed`` carries the reason; ``session_revoked`` is sent whenever
sessions are ended. Both strategies, every database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from flask import Flask, g, request
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    csrf_token,
    db_of,
    guardian_of,
    sign_in,
    sign_in_ok,
    store_config,
)
from sqlalchemy import select

from flask_guardian import login_required, signals
from flask_guardian.state import get_state

# The full database matrix: last-seen and client fields written to session rows.
pytestmark = pytest.mark.databases

FIRST_AGENT = "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0"
OTHER_AGENT = "curl/8.5.0"
JSON = {"Accept": "application/json"}


@contextmanager
def received(signal: Any, app: Flask) -> Iterator[list[dict[str, Any]]]:
    """The keyword arguments of every ``signal`` sent by ``app`` inside the block."""
    calls: list[dict[str, Any]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        if sender is app:
            calls.append(kwargs)

    signal.connect(receiver)
    try:
        yield calls
    finally:
        signal.disconnect(receiver)


def browser(app: Flask, agent: str = FIRST_AGENT, ip: str = "198.51.100.10") -> Any:
    client = app.test_client()
    client.environ_base.update(HTTP_USER_AGENT=agent, REMOTE_ADDR=ip)
    return client


def current_session_id(client: Any) -> str:
    sessions = client.get("/auth/sessions", headers=JSON).get_json()["sessions"]
    (current,) = [s["id"] for s in sessions if s["current"]]
    return str(current)


def signed_in(client: Any, **environ: str) -> bool:
    response = client.get("/auth/session", environ_base=environ)
    return response.get_json() is not None


# -- User-Agent -------------------------------------------------------------------------


def test_user_agent_change_within_a_session_is_reported(app: Flask) -> None:
    client = browser(app)
    sign_in_ok(client)
    session_id = current_session_id(client)
    with received(signals.suspicious_session, app) as calls:
        assert signed_in(client)  # same agent: nothing to report
        assert calls == []
        signed_in(client, HTTP_USER_AGENT=OTHER_AGENT)
    assert len(calls) == 1
    assert calls[0]["session"].id == session_id
    assert calls[0]["session"].user.email == USER[0]
    assert calls[0]["reasons"] == ["user_agent"]
    assert calls[0]["action"] == "log"


def test_first_request_after_sign_in_with_another_agent_is_reported(app: Flask) -> None:
    """A stolen cookie's first use (in this process) comes from the thief's client."""
    client = browser(app)
    sign_in_ok(client)
    with received(signals.suspicious_session, app) as calls:
        signed_in(client, HTTP_USER_AGENT=OTHER_AGENT)
    assert [c["reasons"] for c in calls] == [["user_agent"]]


def test_log_action_keeps_the_session(app: Flask) -> None:
    client = browser(app)
    sign_in_ok(client)
    session_id = current_session_id(client)
    with received(signals.session_revoked, app) as revoked:
        assert signed_in(client, HTTP_USER_AGENT=OTHER_AGENT)
        assert signed_in(client, HTTP_USER_AGENT=OTHER_AGENT)
    assert signed_in(client)
    assert current_session_id(client) == session_id
    assert revoked == []


def test_revoke_action_ends_the_session(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_ON_SUSPICIOUS_SESSION="revoke")
    client = browser(app)
    sign_in_ok(client)
    session_id = current_session_id(client)
    with received(signals.suspicious_session, app) as suspicious, \
            received(signals.session_revoked, app) as revoked:
        assert not signed_in(client, HTTP_USER_AGENT=OTHER_AGENT)
    assert [c["action"] for c in suspicious] == ["revoke"]
    assert revoked == [{"session_ids": [session_id], "user_id": 2, "reason": "suspicious"}]
    # Ended server-side, not merely refused once: the original browser is signed out too.
    assert not signed_in(client)
    with app.app_context():
        users = guardian_of(app).user_model
        user = db_of(app).session.execute(
            select(users).where(users.email == USER[0])
        ).scalar_one()
        assert guardian_of(app).list_sessions(user) == []


def test_unchanged_agent_is_never_reported_or_revoked(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_ON_SUSPICIOUS_SESSION="revoke")
    client = browser(app)
    sign_in_ok(client)
    with received(signals.suspicious_session, app) as calls:
        assert [signed_in(client) for _ in range(3)] == [True] * 3
    assert calls == []


# -- IP network -------------------------------------------------------------------------


def test_ip_network_change_is_reported_when_enabled(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_MONITOR_IP_NETWORK=True)
    client = browser(app, ip="198.51.100.10")
    sign_in_ok(client)
    with received(signals.suspicious_session, app) as calls:
        assert signed_in(client, REMOTE_ADDR="198.51.100.200")  # same /24
        assert calls == []
        assert signed_in(client, REMOTE_ADDR="203.0.113.5")  # another /24
    assert [c["reasons"] for c in calls] == [["ip_network"]]
    assert calls[0]["action"] == "log"


def test_ip_network_change_with_revoke_ends_the_session(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_MONITOR_IP_NETWORK=True, GUARDIAN_ON_SUSPICIOUS_SESSION="revoke")
    client = browser(app, ip="198.51.100.10")
    sign_in_ok(client)
    assert signed_in(client, REMOTE_ADDR="198.51.100.77")
    assert not signed_in(client, REMOTE_ADDR="203.0.113.5")
    assert not signed_in(client)


def test_ip_change_is_not_monitored_by_default(app: Flask) -> None:
    client = browser(app, ip="198.51.100.10")
    sign_in_ok(client)
    with received(signals.suspicious_session, app) as calls:
        assert signed_in(client, REMOTE_ADDR="203.0.113.5")
    assert calls == []


def test_agent_and_network_change_together_give_both_reasons(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_MONITOR_IP_NETWORK=True)
    client = browser(app, ip="198.51.100.10")
    sign_in_ok(client)
    assert signed_in(client)
    with received(signals.suspicious_session, app) as calls:
        signed_in(client, REMOTE_ADDR="203.0.113.5", HTTP_USER_AGENT=OTHER_AGENT)
    assert [sorted(c["reasons"]) for c in calls] == [["ip_network", "user_agent"]]


# -- sign_in_failed ---------------------------------------------------------------------


def test_sign_in_failed_carries_the_reason(make_app: AppFactory) -> None:
    app = make_app(GUARDIAN_MAX_LOGIN_ATTEMPTS=2, GUARDIAN_PASSWORD_MAX_LENGTH=64)
    with app.app_context():
        inactive = guardian_of(app).create_user("inactive@example.com", "inactive-pass-123")
        inactive.is_active = False
        db_of(app).session.commit()
    attempts = [
        ("Nobody@Example.com", "whatever-password", "unknown_email", "nobody@example.com"),
        (ADMIN[0], "x" * 65, "password_too_long", ADMIN[0]),
        ("inactive@example.com", "inactive-pass-123", "inactive", "inactive@example.com"),
        (USER[0], "wrong-password-000", "invalid_credentials", USER[0]),
        (USER[0], "wrong-password-000", "invalid_credentials", USER[0]),
        (USER[0], USER[1], "too_many_attempts", USER[0]),
    ]
    client = browser(app, ip="192.0.2.44")
    with received(signals.sign_in_failed, app) as calls:
        for email, password, _, _ in attempts:
            assert sign_in(client, email, password, json=True).status_code in (401, 429)
    assert calls == [
        {"email": normalized, "reason": reason, "ip": "192.0.2.44"}
        for _, _, reason, normalized in attempts
    ]


def test_successful_sign_in_sends_no_failure(app: Flask) -> None:
    with received(signals.sign_in_failed, app) as calls:
        sign_in_ok(browser(app))
    assert calls == []


# -- session_revoked --------------------------------------------------------------------


def add_password_route(app: Flask) -> None:
    guardian, db = guardian_of(app), db_of(app)

    @app.post("/test/set-password")
    @login_required
    def set_password() -> str:
        user = db.session.get(guardian.user_model, g.session.user.id)
        guardian.set_password(user, request.form["password"])
        return "ok"


def user_of(app: Flask, email: str) -> Any:
    users = guardian_of(app).user_model
    return db_of(app).session.execute(select(users).where(users.email == email)).scalar_one()


def test_revoking_one_session_sends_session_revoked(app: Flask) -> None:
    client = browser(app)
    sign_in_ok(client)
    session_id = current_session_id(client)
    with received(signals.session_revoked, app) as calls, app.app_context():
        assert guardian_of(app).revoke_session(session_id) is True
        assert guardian_of(app).revoke_session(session_id) is False  # already ended
    assert calls == [{"session_ids": [session_id], "user_id": None, "reason": "revoked"}]


def test_revoking_a_users_sessions_sends_session_revoked(app: Flask) -> None:
    first, second = browser(app), browser(app)
    sign_in_ok(first)
    sign_in_ok(second)
    ids = {current_session_id(first), current_session_id(second)}
    with received(signals.session_revoked, app) as calls, app.app_context():
        assert guardian_of(app).revoke_user_sessions(user_of(app, USER[0])) == 2
    assert len(calls) == 1
    assert set(calls[0]["session_ids"]) == ids
    assert (calls[0]["user_id"], calls[0]["reason"]) == (2, "all")


def test_sign_out_everywhere_else_sends_session_revoked(app: Flask) -> None:
    current, other = browser(app), browser(app)
    sign_in_ok(current)
    sign_in_ok(other)
    other_id = current_session_id(other)
    with received(signals.session_revoked, app) as calls:
        response = current.post(
            "/auth/sessions/revoke-others", json={"csrfToken": csrf_token(current)}
        )
        assert response.get_json() == {"ok": True, "revoked": 1}
    assert calls == [{"session_ids": [other_id], "user_id": 2, "reason": "others"}]


def test_password_change_sends_session_revoked_for_the_sessions_it_ends(
    make_app: AppFactory,
) -> None:
    app = make_app()
    add_password_route(app)
    current, other = browser(app), browser(app)
    sign_in_ok(current)
    sign_in_ok(other)
    current_id, other_id = current_session_id(current), current_session_id(other)
    with received(signals.session_revoked, app) as calls:
        response = current.post("/test/set-password", data={"password": "new-password-4567"})
        assert response.status_code == 200
    by_reason = {c["reason"]: c for c in calls}
    assert by_reason["password_changed"]["session_ids"] == [other_id]
    assert by_reason["password_changed"]["user_id"] == 2
    assert by_reason["rotated"]["session_ids"] == [current_id]


@pytest.mark.parametrize("suspicious_action", ["log", "revoke"])
def test_suspicious_session_signal_names_the_configured_action(
    make_app: AppFactory, suspicious_action: str
) -> None:
    app = make_app(GUARDIAN_ON_SUSPICIOUS_SESSION=suspicious_action)
    client = browser(app)
    sign_in_ok(client)
    assert signed_in(client)
    with received(signals.suspicious_session, app) as calls:
        signed_in(client, HTTP_USER_AGENT=OTHER_AGENT)
    assert [c["action"] for c in calls] == [suspicious_action]


def test_first_use_of_a_stolen_token_in_a_process_is_compared_by_network(
    make_app: AppFactory, strategy: str
) -> None:
    """With IP-network monitoring and "revoke", a credential copied with its User-Agent and
    replayed from another network is refused on its very first use in a process (a jwt
    process that has not seen the token yet included)."""
    app = make_app(GUARDIAN_MONITOR_IP_NETWORK=True, GUARDIAN_ON_SUSPICIOUS_SESSION="revoke")
    victim = browser(app)
    response = sign_in(victim, *USER, json=True)
    assert response.status_code == 200
    stolen = victim.get_cookie(get_state(app).settings.cookie_name).value
    # A second app process on the same database has never seen this credential.
    other = make_app(GUARDIAN_MONITOR_IP_NETWORK=True, GUARDIAN_ON_SUSPICIOUS_SESSION="revoke",
                     **store_config(app))
    thief = other.test_client()
    thief.environ_base.update(HTTP_USER_AGENT=FIRST_AGENT, REMOTE_ADDR="203.0.113.99")
    name = get_state(other).settings.cookie_name
    thief.set_cookie(name, stolen)
    with received(signals.suspicious_session, other) as calls:
        assert thief.get("/auth/session").get_json() is None
    assert [c["reasons"] for c in calls] == [["ip_network"]]
