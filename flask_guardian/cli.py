"""``flask guardian ...``: create users, change roles, list and end sessions, purge."""

from __future__ import annotations

from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from .extension import get_state


@click.group("guardian")
def guardian_cli() -> None:
    """Manage flask-guardian users and sessions."""


def _user(email: str) -> Any:
    state = get_state()
    from .models import normalize_email

    model = state.models.user
    user = state.db.session.execute(
        select(model).where(model.email == normalize_email(email))
    ).scalar_one_or_none()
    if user is None:
        raise click.ClickException(f"no user with the email {email!r}")
    return user


@guardian_cli.command("create-user")
@click.argument("email")
@click.option("--role", default="user", show_default=True, help="The user's role.")
@click.option("--name", default=None, help="Display name.")
@click.password_option(help="Asked for twice, hidden, when not given.")
@with_appcontext
def create_user_command(email: str, role: str, name: str | None, password: str) -> None:
    """Create a user (the password is asked for twice, hidden)."""
    state = get_state()
    try:
        user = state.guardian.create_user(email, password, name=name, role=role)
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"created user {user.id} {user.email} (role {user.role})")


@guardian_cli.command("set-role")
@click.argument("email")
@click.argument("role")
@with_appcontext
def set_role_command(email: str, role: str) -> None:
    """Change a user's role; their live sessions see it on their next request."""
    state = get_state()
    user = _user(email)
    try:
        state.guardian.set_role(user, role)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{user.email} now has the role {role}")


@guardian_cli.command("sessions")
@click.argument("email")
@with_appcontext
def sessions_command(email: str) -> None:
    """List a user's live sessions."""
    state = get_state()
    sessions = state.guardian.list_sessions(_user(email))
    if not sessions:
        click.echo("no live sessions")
    for s in sessions:
        info = s.to_dict()
        click.echo(
            f"{s.id}  {s.strategy:8}  created {info['created']}  last seen {info['lastSeen']}"
            f"  expires {info['expires']}  {s.ip or '-'}  {info['device']}"
        )


@guardian_cli.command("revoke")
@click.argument("email")
@with_appcontext
def revoke_command(email: str) -> None:
    """End every session of a user."""
    count = get_state().guardian.revoke_user_sessions(_user(email))
    click.echo(f"ended {count} session(s)")


@guardian_cli.command("purge")
@with_appcontext
def purge_command() -> None:
    """Delete expired sessions, revocations and lockout counters."""
    count = get_state().guardian.purge_expired()
    click.echo(f"purged {count} row(s)")
