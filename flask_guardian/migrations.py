"""Alembic / Flask-Migrate support: generated migrations that run as generated.

Alembic writes a column type it does not know as ``<its module>.<repr>()``, so
``UTCDateTime`` would come out as ``flask_guardian.models.UTCDateTime()`` in a script that
never imports ``flask_guardian`` (``NameError`` at ``flask db upgrade``). :func:`render_item`
writes it as the plain SQLAlchemy types it stores, which is all a migration needs (the
time-zone handling happens in Python, not in the schema). And a generated downgrade
drops a table's indexes before the table, which MariaDB/MySQL refuse for the index that
backs a foreign key (error 1553): :func:`process_revision_directives` leaves those drops
to ``DROP TABLE``, which removes the indexes with the table everywhere. ``init_app`` hands
both to Flask-Migrate when the app uses it (:func:`configure_flask_migrate`).
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from .models import UTCDateTime

#: What ``UTCDateTime`` is in the schema: DATETIME, with microseconds on MySQL/MariaDB.
UTC_DATETIME_DDL = "sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb')"


def render_item(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Alembic's ``render_item`` hook: flask-guardian's own column types as plain
    SQLAlchemy types (adding the import they need), anything else left to Alembic
    (``False``). Pass it yourself where ``init_app`` cannot:
    ``Migrate(app, db, render_item=flask_guardian.migrations.render_item)``."""
    if type_ == "type" and isinstance(obj, UTCDateTime):
        autogen_context.imports.add("from sqlalchemy.dialects import mysql")
        return UTC_DATETIME_DDL
    return False


def process_revision_directives(context: Any, revision: Any, directives: list[Any]) -> None:
    """Alembic's ``process_revision_directives`` hook: no index drop for a table the same
    script drops; and, as Flask-Migrate's own ``env.py`` does, no script at all when
    autogenerate finds no change."""
    from alembic.operations import ops

    cmd_opts = getattr(context.config, "cmd_opts", None)
    if directives and getattr(cmd_opts, "autogenerate", False) and (
        directives[0].upgrade_ops.is_empty()
    ):
        directives[:] = []
        return
    for script in directives:
        for container in (script.upgrade_ops, script.downgrade_ops):
            dropped = {(op.schema, op.table_name) for op in container.ops
                       if isinstance(op, ops.DropTableOp)}
            for op in container.ops:
                if isinstance(op, ops.ModifyTableOps) and (op.schema, op.table_name) in dropped:
                    op.ops = [o for o in op.ops if not isinstance(o, ops.DropIndexOp)]
            container.ops = [op for op in container.ops
                             if not (isinstance(op, ops.DropIndexOp)
                                     and (op.schema, op.table_name) in dropped)
                             and not (isinstance(op, ops.ModifyTableOps) and not op.ops)]


def configure_flask_migrate(app: Flask) -> None:
    """Give Flask-Migrate (``app.extensions["migrate"]``, when ``Migrate`` was set up
    before ``init_app``) our :func:`render_item` and :func:`process_revision_directives`,
    unless the app passed its own (then pass ours on from yours)."""
    migrate = app.extensions.get("migrate")
    args = getattr(migrate, "configure_args", None)
    if not isinstance(args, dict):
        return
    args.setdefault("process_revision_directives", process_revision_directives)
    theirs = args.get("render_item")
    if theirs is None or getattr(theirs, "_guardian_render_item", False):
        args["render_item"] = render_item
        return

    def chained(type_: str, obj: Any, autogen_context: Any) -> str | bool:
        ours = render_item(type_, obj, autogen_context)
        return ours if ours is not False else theirs(type_, obj, autogen_context)

    chained._guardian_render_item = True  # type: ignore[attr-defined]
    args["render_item"] = chained
