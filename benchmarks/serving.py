"""Serving an app with gunicorn on loopback, for the benchmarks that need a real server
(``load_and_fault.py``, the server section)."""

from __future__ import annotations

import contextlib
import http.client
import socket
import time


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(port: int, limit: float = 30, path: str = "/", *, any_status: bool = False) -> None:
    """Return once ``GET path`` on ``port`` answers 200 (any status with ``any_status``);
    exit the run after ``limit`` s."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            status = conn.getresponse().status
            if status == 200 or any_status:
                return
        time.sleep(0.2)
    raise SystemExit(f"gunicorn did not answer on port {port} within {limit} s")
