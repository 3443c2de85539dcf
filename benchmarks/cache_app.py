"""The other process of the cache section: an app of the benchmark's strategy (database,
or redis with its Redis URL and prefix) on the benchmark's PostgreSQL schema, served by
Werkzeug's single-threaded server on a loopback port.

    python cache_app.py URL OPTIONS_JSON CONFIG_JSON

CONFIG_JSON is the rest of the app's configuration (``SESSION_STRATEGY``, the Redis keys,
``GUARDIAN_SESSION_CACHE``), the same as the benchmark process's own app.

Prints its port on the first line of stdout once it listens. ``GET /protected`` is the
signed-in route; ``GET /ready`` answers 200 once this process's invalidation listener is
up (the cache off: at once), 503 if it does not come up within 30 s.
"""

from __future__ import annotations

import json
import sys

import bench_guardian
from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from werkzeug.serving import make_server


def build(url: str, options: dict[str, object], config: dict[str, object]) -> Flask:
    """The app: the tables and the user are the benchmark process's."""
    fg = bench_guardian.import_guardian()
    app = Flask("bench_cache_other")
    app.config.update(
        SECRET_KEY="guardian-benchmark-secret-" + "k" * 32, SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=options, GUARDIAN_COOKIE_SECURE=False,
        GUARDIAN_CSRF_ENABLED=False, **config)
    fg.Guardian(app, db=SQLAlchemy(app))
    app.add_url_rule("/protected", view_func=fg.login_required(lambda: "ok"))

    def ready() -> tuple[str, int]:
        from flask_guardian.state import get_state

        cached = getattr(get_state(app).strategy, "cache", None)
        if cached is None:
            return "no cache", 200
        cached.listen()
        return ("up", 200) if cached.cache.wait(came_up=1, timeout=30) else ("down", 503)

    app.add_url_rule("/ready", view_func=ready)
    return app


def main(argv: list[str]) -> None:
    url, options, config = argv[0], json.loads(argv[1]), json.loads(argv[2])
    server = make_server("127.0.0.1", 0, build(url, options, config))
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
