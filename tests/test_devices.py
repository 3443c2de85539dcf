"""Every device: a user sees each of their sessions (Python API, HTML and JSON), ends any
one of them or all but the current one, and an admin ends all of a user's sessions. Both
strategies, every database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask, jsonify
from helpers import (
    ADMIN,
    USER,
    AppFactory,
    csrf_token,
    db_of,
    guardian_of,
    needs_sql_registry,
    session_cookie,
    sign_in_ok,
)
from sqlalchemy import select
from werkzeug.middleware.proxy_fix import ProxyFix

from flask_guardian import roles_required
from flask_guardian.devices import describe_user_agent
from flask_guardian.state import get_state

# The full database matrix: session rows listed and ended.
pytestmark = pytest.mark.databases

FIREFOX_LINUX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
CHROME_WINDOWS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)
JSON = {"Accept": "application/json"}


def device(app: Flask, agent: str, ip: str = "127.0.0.1") -> Any:
    """A test client that behaves as one browser: the same User-Agent and address on every
    request."""
    client = app.test_client()
    client.environ_base.update(HTTP_USER_AGENT=agent, REMOTE_ADDR=ip)
    return client


def signed_in_device(
    app: Flask, agent: str, who: tuple[str, str] = USER, ip: str = "127.0.0.1"
) -> Any:
    client = device(app, agent, ip)
    sign_in_ok(client, who)
    return client


def user_by_email(app: Flask, email: str) -> Any:
    model = guardian_of(app).user_model
    with app.app_context():
        user = db_of(app).session.execute(
            select(model).where(model.email == email)
        ).scalar_one()
        db_of(app).session.expunge(user)
    return user


def listed(client: Any) -> list[dict[str, Any]]:
    response = client.get("/auth/sessions", headers=JSON)
    assert response.status_code == 200, response.get_data(as_text=True)
    sessions = response.get_json()["sessions"]
    assert isinstance(sessions, list)
    return sessions


def current_id(client: Any) -> str:
    (mine,) = [s for s in listed(client) if s["current"]]
    return str(mine["id"])


def is_signed_in(client: Any) -> bool:
    return client.get("/auth/session").get_json() is not None


def revoke(client: Any, session_id: str, *, json: bool = False) -> Any:
    token = csrf_token(client)
    if json:
        return client.post(
            f"/auth/sessions/{session_id}/revoke", json={}, headers={"X-CSRF-Token": token}
        )
    return client.post(f"/auth/sessions/{session_id}/revoke", data={"csrf_token": token})


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.utcoffset() == timedelta(0), f"{value!r} is not timezone-aware UTC"
    return moment


# -- the readable device summary ----------------------------------------------------------


@pytest.mark.parametrize(
    ("agent", "summary"),
    [
        (FIREFOX_LINUX, "Firefox on Linux"),
        (SAFARI_IPHONE, "Safari on iPhone"),
        (CHROME_WINDOWS, "Chrome on Windows"),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko)"
            " Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge on macOS",
        ),
        # iOS: every browser is WebKit and says Safari; its own marker names it.
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) CriOS/126.0.6478.54 Mobile/15E148 Safari/604.1",
            "Chrome on iPhone",
        ),
        (
            "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) FxiOS/127.0 Mobile/15E148 Safari/605.1.15",
            "Firefox on iPad",
        ),
        (
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15"
            " (KHTML, like Gecko) Version/17.0 EdgiOS/126.2592.56 Mobile/15E148 Safari/605.1.15",
            "Edge on iPhone",
        ),
        ("curl/8.5.0", "curl"),
        ("", "Unknown device"),
        (None, "Unknown device"),
        ("\x00<script>", "Unknown device"),
    ],
)
def test_device_summary_is_readable(agent: str | None, summary: str) -> None:
    assert describe_user_agent(agent) == summary


# -- listing ------------------------------------------------------------------------------


def test_list_sessions_returns_every_device_of_the_user(app: Flask, strategy: str) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    signed_in_device(app, FIREFOX_LINUX, ip="198.51.100.4")
    signed_in_device(app, SAFARI_IPHONE, ip="203.0.113.9")
    signed_in_device(app, CHROME_WINDOWS, who=ADMIN)
    user = user_by_email(app, USER[0])
    with app.app_context():
        sessions = guardian_of(app).list_sessions(user)
    assert len(sessions) == 2
    assert len({s.id for s in sessions}) == 2
    assert {(s.user_agent, s.ip) for s in sessions} == {
        (FIREFOX_LINUX, "198.51.100.4"), (SAFARI_IPHONE, "203.0.113.9"),
    }
    for s in sessions:
        assert s.user_id == user.id
        assert s.strategy == strategy
        assert s.current is False  # no request, so no current session
        for moment in (s.created_at, s.last_seen_at, s.expires_at):
            assert moment.tzinfo is not None and moment.utcoffset() == timedelta(0)
        assert before <= s.created_at <= s.last_seen_at < s.expires_at
        assert s.expires_at <= s.created_at + timedelta(minutes=31)  # idle deadline


def test_list_sessions_marks_the_current_session_in_a_request(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    signed_in_device(app, SAFARI_IPHONE)
    name = get_state(app).settings.cookie_name
    user = user_by_email(app, USER[0])
    with app.test_request_context(
        "/", headers={"Cookie": f"{name}={session_cookie(firefox, app)}",
                      "User-Agent": FIREFOX_LINUX},
    ):
        app.preprocess_request()
        sessions = guardian_of(app).list_sessions(user)
    assert [s.user_agent for s in sessions if s.current] == [FIREFOX_LINUX]
    assert [s.current for s in sessions].count(True) == 1


def test_sessions_json_shows_both_devices_and_which_is_current(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX, ip="198.51.100.4")
    iphone = signed_in_device(app, SAFARI_IPHONE, ip="203.0.113.9")
    signed_in_device(app, CHROME_WINDOWS, who=ADMIN)

    seen_by_firefox = listed(firefox)
    seen_by_iphone = listed(iphone)
    assert len(seen_by_firefox) == 2
    assert {s["id"] for s in seen_by_firefox} == {s["id"] for s in seen_by_iphone}
    for entry in seen_by_firefox:
        assert {"id", "created", "lastSeen", "expires", "ip", "device", "current"} <= set(entry)
        created, last_seen = parse_time(entry["created"]), parse_time(entry["lastSeen"])
        assert created <= last_seen < parse_time(entry["expires"])
    by_device = {s["device"]: s for s in seen_by_firefox}
    assert set(by_device) == {"Firefox on Linux", "Safari on iPhone"}
    assert by_device["Firefox on Linux"]["ip"] == "198.51.100.4"
    assert by_device["Safari on iPhone"]["ip"] == "203.0.113.9"
    assert by_device["Firefox on Linux"]["current"] is True
    assert by_device["Safari on iPhone"]["current"] is False
    assert [s["device"] for s in seen_by_iphone if s["current"]] == ["Safari on iPhone"]


def test_sessions_html_shows_each_device_with_times_address_and_current(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX, ip="198.51.100.4")
    signed_in_device(app, SAFARI_IPHONE, ip="203.0.113.9")
    entries = listed(firefox)
    response = firefox.get("/auth/sessions", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "Firefox on Linux" in page and "Safari on iPhone" in page
    assert "198.51.100.4" in page and "203.0.113.9" in page
    assert page.count("This device") == 1
    for entry in entries:
        assert entry["id"] in page
        for key in ("created", "lastSeen", "expires"):
            moment = parse_time(entry[key])
            shown = (entry[key], moment.strftime("%Y-%m-%d %H:%M"))
            assert any(text in page for text in shown), f"{key} of {entry['id']} not shown"


def test_sessions_are_listed_current_first_then_by_latest_activity_and_expired_ones_drop_out(
    make_app: AppFactory,
) -> None:
    app = make_app(GUARDIAN_SESSION_UPDATE_AGE=60)
    with time_machine.travel(datetime.now(UTC)) as traveller:
        firefox = signed_in_device(app, FIREFOX_LINUX)
        traveller.shift(timedelta(seconds=10))
        iphone = signed_in_device(app, SAFARI_IPHONE)
        traveller.shift(timedelta(seconds=10))
        chrome = signed_in_device(app, CHROME_WINDOWS)
        # This device first, though it is the one least recently active; then the others.
        assert [s["device"] for s in listed(firefox)] == [
            "Firefox on Linux", "Chrome on Windows", "Safari on iPhone"]
        assert [s["current"] for s in listed(firefox)] == [True, False, False]

        traveller.shift(timedelta(minutes=20))
        assert iphone.get("/dashboard").status_code == 200  # activity refreshes last seen
        assert [s["device"] for s in listed(firefox)] == [
            "Firefox on Linux", "Safari on iPhone", "Chrome on Windows"]
        # (that listing was Firefox's activity: it refreshed Firefox's last seen)
        assert [s["device"] for s in listed(iphone)] == [
            "Safari on iPhone", "Firefox on Linux", "Chrome on Windows"]

        traveller.shift(timedelta(minutes=11))  # Chrome idle for over 31 minutes
        assert [s["device"] for s in listed(iphone)] == ["Safari on iPhone", "Firefox on Linux"]
        assert not is_signed_in(chrome)


def test_sessions_page_puts_this_device_first(app: Flask) -> None:
    iphone = signed_in_device(app, SAFARI_IPHONE)
    signed_in_device(app, FIREFOX_LINUX)  # signed in later: more recent activity
    page = iphone.get("/auth/sessions", headers={"Accept": "text/html"}).get_data(as_text=True)
    assert page.index("This device") < page.index("Firefox on Linux")
    assert page.index("Safari on iPhone") < page.index("Firefox on Linux")


def test_sessions_page_needs_a_signed_in_user(client: Any) -> None:
    response = client.get("/auth/sessions", headers=JSON)
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    response = client.get("/auth/sessions")
    assert response.status_code == 303
    assert response.headers["Location"].startswith("/auth/signin?redirectUrl=")


# -- ending sessions through the routes -----------------------------------------------------


def test_revoking_another_own_session_makes_that_device_anonymous(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    iphone_id = current_id(iphone)

    response = revoke(firefox, iphone_id)
    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/sessions"

    assert not is_signed_in(iphone)
    assert iphone.get("/dashboard").status_code == 303
    assert is_signed_in(firefox)
    assert [s["device"] for s in listed(firefox)] == ["Firefox on Linux"]


def test_revoking_a_session_answers_json(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    response = revoke(firefox, current_id(iphone), json=True)
    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    assert not is_signed_in(iphone)


def test_revoking_the_current_session_signs_this_device_out(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    stolen = session_cookie(firefox, app)
    response = revoke(firefox, current_id(firefox))
    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/signin"
    assert session_cookie(firefox, app) is None
    assert not is_signed_in(firefox)
    assert is_signed_in(iphone)
    replay = device(app, FIREFOX_LINUX)
    replay.set_cookie(get_state(app).settings.cookie_name, stolen or "")
    assert not is_signed_in(replay)


@pytest.mark.parametrize("as_json", [False, True])
def test_revoking_another_users_session_is_404_and_ends_nothing(
    app: Flask, as_json: bool
) -> None:
    attacker = signed_in_device(app, FIREFOX_LINUX)
    admin = signed_in_device(app, CHROME_WINDOWS, who=ADMIN)
    response = revoke(attacker, current_id(admin), json=as_json)
    assert response.status_code == 404
    if as_json:
        assert response.get_json()["error"] == "not_found"
    assert is_signed_in(admin)
    assert is_signed_in(attacker)
    assert len(listed(admin)) == 1


@pytest.mark.parametrize(
    "session_id",
    ["unknown-session-id", "1' OR '1'='1", "%27%20OR%201=1--", "x" * 300, "%00"],
)
def test_revoking_an_unknown_session_is_404(app: Flask, session_id: str) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    other = signed_in_device(app, SAFARI_IPHONE)
    response = revoke(firefox, session_id, json=True)
    assert response.status_code == 404
    assert is_signed_in(firefox) and is_signed_in(other)


def test_revoke_others_ends_every_session_but_the_current(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    windows = signed_in_device(app, CHROME_WINDOWS)
    admin = signed_in_device(app, FIREFOX_LINUX, who=ADMIN)

    response = firefox.post(
        "/auth/sessions/revoke-others", json={}, headers={"X-CSRF-Token": csrf_token(firefox)}
    )
    assert response.status_code == 200
    assert response.get_json() == {"ok": True, "revoked": 2}
    assert is_signed_in(firefox)
    assert not is_signed_in(iphone)
    assert not is_signed_in(windows)
    assert is_signed_in(admin)  # another user's sessions are not touched
    assert [s["device"] for s in listed(firefox)] == ["Firefox on Linux"]


def test_revoke_others_form_redirects_to_the_list(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    response = firefox.post(
        "/auth/sessions/revoke-others", data={"csrf_token": csrf_token(firefox)}
    )
    assert response.status_code == 303
    assert response.headers["Location"] == "/auth/sessions"
    assert is_signed_in(firefox) and not is_signed_in(iphone)


@pytest.mark.parametrize("token", [None, "", "forged.token", "x" * 500])
def test_revoke_routes_need_a_csrf_token(app: Flask, token: str | None) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    csrf_token(firefox)  # the seed cookie is there; only the token is missing or wrong
    data = {} if token is None else {"csrf_token": token}
    one = firefox.post(f"/auth/sessions/{current_id(iphone)}/revoke", data=data)
    others = firefox.post("/auth/sessions/revoke-others", data=data)
    others_json = firefox.post("/auth/sessions/revoke-others", json=data, headers=JSON)
    assert (one.status_code, others.status_code, others_json.status_code) == (403, 403, 403)
    assert others_json.get_json()["error"] == "csrf_failed"
    assert is_signed_in(firefox) and is_signed_in(iphone)


def test_a_csrf_token_of_another_client_is_refused(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    response = firefox.post(
        "/auth/sessions/revoke-others", data={"csrf_token": csrf_token(iphone)}
    )
    assert response.status_code == 403
    assert is_signed_in(iphone)


# -- ending sessions from Python -------------------------------------------------------------


def test_a_row_marked_revoked_ends_its_session_even_with_its_token_hash_kept(
    make_app: AppFactory, strategy: str
) -> None:
    """``revoked_at`` is checked for itself, not only through the token hash a revocation
    clears: a registry row marked revoked by other means (an operator's UPDATE, a
    migration, an older version that kept the hash) ends its session. Database: at once;
    jwt: at the token's next refresh (GUARDIAN_SESSION_UPDATE_AGE), as any change made
    outside the revocation feed."""
    needs_sql_registry(strategy)
    app = make_app(GUARDIAN_SESSION_UPDATE_AGE=60)
    sessions = get_state(app).models.session.__table__
    start = datetime(2030, 1, 7, 9, 0, 0, tzinfo=UTC)
    with time_machine.travel(start, tick=False) as clock:
        client = app.test_client()
        sign_in_ok(client)
        assert client.get("/auth/session").get_json() is not None
        with app.app_context():
            db = db_of(app)
            marked = db.session.execute(
                sessions.update().values(revoked_at=start)  # token_hash left as it was
            ).rowcount
            db.session.commit()
        assert marked == 1
        if strategy == "database":
            assert client.get("/auth/session").get_json() is None
        clock.move_to(start + timedelta(seconds=61))
        assert client.get("/auth/session").get_json() is None
        assert client.get("/dashboard", headers=JSON).status_code == 401


def test_revoke_session_returns_whether_it_was_live(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    iphone_id = current_id(iphone)
    guardian = guardian_of(app)
    with app.app_context():
        assert guardian.revoke_session(iphone_id) is True
        assert guardian.revoke_session(iphone_id) is False
        assert guardian.revoke_session("no-such-session") is False
    assert not is_signed_in(iphone)
    assert is_signed_in(firefox)


def test_revoke_user_sessions_returns_how_many_ended(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    admin = signed_in_device(app, CHROME_WINDOWS, who=ADMIN)
    user = user_by_email(app, USER[0])
    guardian = guardian_of(app)
    with app.app_context():
        assert guardian.revoke_user_sessions(user) == 2
        assert guardian.revoke_user_sessions(user) == 0
        assert guardian.list_sessions(user) == []
    assert not is_signed_in(firefox) and not is_signed_in(iphone)
    assert is_signed_in(admin)


def test_revoke_user_sessions_except_current_keeps_the_requesting_session(app: Flask) -> None:
    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    windows = signed_in_device(app, CHROME_WINDOWS)
    name = get_state(app).settings.cookie_name
    user = user_by_email(app, USER[0])
    with app.test_request_context(
        "/", headers={"Cookie": f"{name}={session_cookie(firefox, app)}",
                      "User-Agent": FIREFOX_LINUX},
    ):
        app.preprocess_request()
        assert guardian_of(app).revoke_user_sessions(user, except_current=True) == 2
    assert is_signed_in(firefox)
    assert not is_signed_in(iphone) and not is_signed_in(windows)


def test_admin_ends_all_sessions_of_a_user(make_app: AppFactory) -> None:
    app = make_app()
    guardian = guardian_of(app)

    @app.post("/admin/users/<int:user_id>/sessions/revoke")
    @roles_required("admin")
    def admin_revoke(user_id: int) -> Any:
        user = db_of(app).session.get(guardian.user_model, user_id)
        return jsonify(revoked=guardian.revoke_user_sessions(user, except_current=True))

    firefox = signed_in_device(app, FIREFOX_LINUX)
    iphone = signed_in_device(app, SAFARI_IPHONE)
    admin = signed_in_device(app, CHROME_WINDOWS, who=ADMIN)
    user = user_by_email(app, USER[0])
    target = f"/admin/users/{user.id}/sessions/revoke"

    response = firefox.post(target, headers={"X-CSRF-Token": csrf_token(firefox)}, json={})
    assert response.status_code == 403  # a plain user may not
    assert is_signed_in(iphone)

    response = admin.post(target, headers={"X-CSRF-Token": csrf_token(admin)}, json={})
    assert response.status_code == 200
    assert response.get_json() == {"revoked": 2}
    assert not is_signed_in(firefox) and not is_signed_in(iphone)
    assert is_signed_in(admin)
    with app.app_context():
        assert guardian.list_sessions(user) == []


# -- API clients and proxies ---------------------------------------------------------------


@pytest.mark.parametrize("strategy", ["jwt"])  # Authorization: Bearer is the jwt strategy's
def test_a_bearer_api_client_lists_and_ends_sessions_without_csrf(
    app: Flask, strategy: str
) -> None:
    browser = signed_in_device(app, FIREFOX_LINUX)
    api = device(app, "curl/8.5.0")
    sign_in_ok(api)
    token = session_cookie(api, app)
    api.delete_cookie(get_state(app).settings.cookie_name)
    bearer = {"Authorization": f"Bearer {token}", **JSON}

    sessions = api.get("/auth/sessions", headers=bearer).get_json()["sessions"]
    assert [s["device"] for s in sessions if s["current"]] == ["curl"]
    response = api.post("/auth/sessions/revoke-others", headers=bearer, json={})
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json() == {"ok": True, "revoked": 1}
    assert not is_signed_in(browser)
    assert api.get("/api/me", headers=bearer).status_code == 200


def test_behind_a_proxy_the_device_list_shows_the_client_address(make_app: AppFactory) -> None:
    app = make_app()
    app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1)  # type: ignore[method-assign]
    client = device(app, FIREFOX_LINUX, ip="10.0.0.2")  # the load balancer
    client.environ_base.update(HTTP_X_FORWARDED_FOR="203.0.113.50", HTTP_X_FORWARDED_PROTO="https")
    sign_in_ok(client)
    assert [s["ip"] for s in listed(client)] == ["203.0.113.50"]
