"""One app process for ``tests/test_multiprocess.py``: the test starts two of these on one
database, as a load balancer would run them, and talks HTTP to both.

Configuration comes from the environment: ``GUARDIAN_MP_CONFIG`` is a JSON object merged
into ``app.config`` (database URL, strategy, secrets, ...). The tables and users must exist
already (the test creates them). The server listens on 127.0.0.1 on a free port and prints
that port, alone on one line, on stdout once it accepts connections; its request log goes
to stderr. It runs until terminated.
"""

from __future__ import annotations

import json
import os
from typing import Any

from flask import Flask, g, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from werkzeug.serving import make_server

from flask_guardian import Guardian, login_required, roles_required


def create_app(config: dict[str, Any]) -> Flask:
    app = Flask("guardian_multiprocess_app")
    app.config.update(config)
    db = SQLAlchemy(app)
    guardian = Guardian(app, db=db)

    @app.get("/pid")
    def pid() -> Any:
        return jsonify(pid=os.getpid())

    @app.get("/api/me")
    @login_required
    def api_me() -> Any:
        return jsonify(g.session.to_dict())

    @app.get("/admin")
    @roles_required("admin")
    def admin() -> Any:
        return jsonify(ok=True)

    # Admin actions a real app would build on the management API. (No CSRF check here:
    # this server only ever listens on loopback for the test that started it.)
    @app.post("/admin/users/<int:user_id>/role")
    @roles_required("admin")
    def set_role(user_id: int) -> Any:
        user = db.get_or_404(guardian.user_model, user_id)
        guardian.set_role(user, str((request.get_json(silent=True) or {}).get("role")))
        return jsonify(ok=True)

    @app.post("/admin/users/<int:user_id>/revoke")
    @roles_required("admin")
    def revoke_all(user_id: int) -> Any:
        user = db.get_or_404(guardian.user_model, user_id)
        return jsonify(revoked=guardian.revoke_user_sessions(user, except_current=True))

    return app


def main() -> None:
    app = create_app(json.loads(os.environ["GUARDIAN_MP_CONFIG"]))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    print(server.server_port, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
