"""What every request pays, as counts (never times): queries and writes per request in
steady state, hash computations per sign-in, nothing for static files."""

from __future__ import annotations

import ctypes
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import time_machine
import werkzeug.sansio.request
from flask import Flask
from helpers import (
    READS_PER_REQUEST,
    USER,
    QueryCounter,
    build_app,
    sign_in,
    sign_in_ok,
    strategy_config,
)
from werkzeug.sansio.http import parse_cookie

import flask_guardian
from flask_guardian import login_required
from flask_guardian.state import get_state
from flask_guardian.strategies import database

# The full database matrix: the statements each store runs per request.
pytestmark = pytest.mark.databases


def test_steady_state_is_one_read_per_request_and_no_write(app: Flask, strategy: str) -> None:
    client = app.test_client()
    sign_in_ok(client)
    client.get("/dashboard")
    with QueryCounter(app) as queries:
        for _ in range(50):
            assert client.get("/dashboard").status_code == 200
    expected = 50 * READS_PER_REQUEST[strategy]
    assert queries.count == expected, queries.statements[:3]
    assert queries.writes == []


def test_refresh_writes_once_when_due(app: Flask, strategy: str) -> None:
    client = app.test_client()
    start = datetime.now(UTC)
    with time_machine.travel(start, tick=False):
        sign_in_ok(client)
        client.get("/dashboard")
    update_age = get_state(app).settings.update_age
    with time_machine.travel(start + timedelta(seconds=update_age + 1), tick=False):
        with QueryCounter(app) as queries:
            assert client.get("/dashboard").status_code == 200
        assert len(queries.writes) == 1, queries.writes
        with QueryCounter(app) as queries:
            for _ in range(5):
                assert client.get("/dashboard").status_code == 200
        assert queries.writes == []


def test_sign_in_costs_one_hash(app: Flask, client: Any) -> None:
    hasher = get_state(app).hasher
    sign_in(client, "nobody@example.com", "whatever-password")  # warm the dummy hash
    before = hasher.hash_computations
    sign_in_ok(client, USER)
    assert hasher.hash_computations - before == 1


def test_static_files_cost_nothing(app: Flask, client: Any) -> None:
    sign_in_ok(client)
    with QueryCounter(app) as queries:
        response = client.get("/static/missing.css")
    assert response.status_code == 404
    assert queries.count == 0


def test_signed_in_request_never_parses_all_cookies(make_app: Any, monkeypatch: Any) -> None:
    """The session cookie is read from the raw header: ``request.cookies`` (which walks the
    whole environ and parses every cookie) is left to the app. Flask's own session would
    parse them, so the app here has only ``GUARDIAN_SECRET_KEY``."""
    app = make_app(SECRET_KEY=None, GUARDIAN_SECRET_KEY="k" * 32)
    parsed: list[str] = []

    def counting_parse_cookie(header: Any, *args: Any, **kwargs: Any) -> Any:
        parsed.append(header)
        return parse_cookie(header, *args, **kwargs)

    @app.get("/probe")
    @login_required
    def probe() -> str:
        return "ok"

    client = app.test_client()
    sign_in_ok(client)
    client.set_cookie("analytics", "a b c")
    client.set_cookie("theme", "dark")
    # The parser behind ``request.cookies``, counted: every call is a whole-header parse.
    monkeypatch.setattr(werkzeug.sansio.request, "parse_cookie", counting_parse_cookie)
    for _ in range(3):  # the refresh-free steady state as well as the first request
        response = client.get("/probe")
        assert response.status_code == 200
    assert parsed == []


@pytest.mark.parametrize("fork", ["os.fork", "C fork"])
def test_forked_child_reads_on_its_own_connection(database_url: str, fork: str) -> None:
    """The database strategy's per-thread read connection is never shared with a forked
    child (a pre-forking server), also when the fork happens in C and Python's fork hooks
    never run (uWSGI by default): the child opens its own."""
    app = build_app(database_url, "database")
    reader = get_state(app).strategy.reader
    client = app.test_client()
    sign_in_ok(client)
    assert client.get("/dashboard").status_code == 200
    parent_connection = reader._connection()
    read_end, write_end = os.pipe()
    pid = os.fork() if fork == "os.fork" else ctypes.CDLL(None).fork()
    if pid == 0:  # the child: report, never return into pytest
        code = 1
        try:
            ok = client.get("/dashboard").status_code == 200
            fresh = reader._connection() is not parent_connection
            os.write(write_end, f"{ok} {fresh}".encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_end)
    _, status = os.waitpid(pid, 0)
    report = os.read(read_end, 100).decode()
    os.close(read_end)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report == "True True"
    assert reader._connection() is parent_connection  # the parent keeps its own
    assert client.get("/dashboard").status_code == 200
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


def test_database_strategy_keeps_a_bounded_number_of_rows(
    database_url: str, monkeypatch: Any
) -> None:
    """The database strategy works each registry row out once (the row repeats on every
    request until a refresh); what it keeps is bounded, and a full cache only costs the
    work again, never a wrong answer."""
    monkeypatch.setattr(database, "_KNOWN_MAX", 2)
    app = build_app(database_url, "database")
    strategy = get_state(app).strategy
    clients = [app.test_client() for _ in range(3)]
    for client in clients:
        sign_in_ok(client)
    for _ in range(2):
        for client in clients:
            assert client.get("/dashboard").text == f"hello {USER[0]}"
            assert len(strategy._known) <= 2
    with app.app_context():
        app.extensions["sqlalchemy"].engine.dispose()


# -- a guard against regressions: calls per request, counted ----------------------------

#: Calls flask-guardian's own code makes (and runs) on one steady-state request, by
#: strategy: the committed budget. A change that adds a call to the path fails here;
#: when the path gets cheaper, lower the budget to the new count (the message says it).
CALL_BUDGET = {
    # (anonymous, signed-in page, signed-in page behind @login_required)
    "database": (16, 45, 50),
    "jwt": (17, 33, 38),
    "redis": (16, 38, 43),  # +1: the kept-connection lookup (saves ~75 of redis-py's calls)
}
PACKAGE = os.path.dirname(flask_guardian.__file__)


def guardian_calls(client: Any, path: str) -> int:
    """Python and C calls made by, or into, flask_guardian's code during one ``GET path``
    (after three warm-up requests). The library's own inner calls are not counted, so the
    figure does not move with a Flask, Werkzeug or driver release; only our code's."""
    for _ in range(3):
        client.get(path)
    count = 0

    def profile(frame: Any, event: str, arg: Any) -> None:
        nonlocal count
        ours = frame.f_code.co_filename.startswith(PACKAGE)
        if event == "call":
            caller = frame.f_back
            if ours or (caller is not None and caller.f_code.co_filename.startswith(PACKAGE)):
                count += 1
        elif event == "c_call" and ours:
            count += 1

    sys.setprofile(profile)
    try:
        response = client.get(path)
    finally:
        sys.setprofile(None)
    assert response.status_code == 200
    return count


def test_steady_state_calls_stay_within_the_committed_budget(
    strategy: str, tmp_path: Any
) -> None:
    """Deterministic, unlike time: the number of calls our code makes per request."""
    app = build_app(f"sqlite:///{tmp_path / 'calls.db'}", strategy,
                    **strategy_config(strategy))
    client = app.test_client()
    anonymous = guardian_calls(client, "/")
    sign_in_ok(client)
    measured = (anonymous, guardian_calls(client, "/"), guardian_calls(client, "/dashboard"))
    budget = CALL_BUDGET[strategy]
    assert all(m <= b for m, b in zip(measured, budget, strict=True)), (
        f"{strategy}: {measured} calls per request, budget {budget}: a change added work "
        "to the steady-state path"
    )
    assert measured == budget, (
        f"{strategy}: the path got cheaper ({measured} < {budget}): lower CALL_BUDGET"
    )


#: What two-factor needs and only two-factor uses: imported on its first use.
TWO_FACTOR_ONLY = ("pyotp", "segno", "cryptography.hazmat.primitives.ciphers.aead",
                   "cryptography.hazmat.primitives.kdf.hkdf")
_IMPORT_PROBE = """
import sys
sys.path.insert(0, "tests")
from helpers import USER, build_app, sign_in_ok
app = build_app(sys.argv[1], "jwt")
client = app.test_client()
sign_in_ok(client, USER)
assert client.get("/dashboard").status_code == 200
print(",".join(sorted(m for m in {modules} if m in sys.modules)))
"""


def test_an_app_that_does_not_use_two_factor_never_imports_its_libraries(
    tmp_path: Any,
) -> None:
    """A new feature costs nothing to an app that does not use it: not even the memory of
    pyotp, segno and cryptography's AES-GCM (a bigger heap makes every full garbage
    collection dearer, which showed in the instruction counts per request)."""
    import subprocess

    probe = _IMPORT_PROBE.replace("{modules}", repr(TWO_FACTOR_ONLY))
    done = subprocess.run([sys.executable, "-c", probe, f"sqlite:///{tmp_path}/p.db"],
                          capture_output=True, text=True, timeout=120, check=False,
                          cwd=os.path.dirname(PACKAGE))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
