"""``flask guardian ...``: create users, change roles, list and end sessions, purge."""

from __future__ import annotations

from typing import Any

import click
from flask.cli import with_appcontext
from sqlalchemy import func, or_, select

from .credentials import is_werkzeug_kind, read_hash_kinds
from .state import get_state
from .two_factor import enabled_since, recovery_codes_left
from .two_factor_enrolment import admin_reset


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


@guardian_cli.command("password-report")
@with_appcontext
def password_report_command() -> None:
    """Count the users' password hashes by scheme: how many still wait for the upgrade
    to the current argon2id parameters (each is upgraded at its next sign-in; while any
    remain, every failed sign-in checks one throw-away hash of each kind, see
    docs/security.md)."""
    state = get_state()
    db_session = state.db.session
    column = state.models.user.__table__.c.password_hash
    current = state.hasher.current_kind
    counts: dict[str, int] = {}
    for kind in read_hash_kinds(db_session, column, current):
        if kind == current:
            label = "argon2id (current parameters)"
        elif kind.startswith("$2"):
            label = "bcrypt"
        elif is_werkzeug_kind(kind):
            label = f"werkzeug {kind.rstrip('$')}"
        else:
            variant, _version, params = kind.strip("$").split("$")
            label = f"{variant} ({params})"
        counted = db_session.execute(
            select(func.count()).where(column.startswith(kind, autoescape=True))
        ).scalar_one()
        counts[label] = counts.get(label, 0) + counted
    total = db_session.execute(select(func.count()).select_from(column.table)).scalar_one()
    empty = db_session.execute(
        select(func.count()).where(or_(column.is_(None), column == ""))
    ).scalar_one()
    for label, counted in counts.items():
        click.echo(f"{label}: {counted}")
    click.echo(f"to upgrade: {sum(counts.values()) - counts['argon2id (current parameters)']}")
    click.echo(f"no password: {empty}")
    click.echo(f"unreadable: {total - empty - sum(counts.values())}")


@guardian_cli.command("2fa-status")
@click.argument("email")
@with_appcontext
def two_factor_status_command(email: str) -> None:
    """Say whether a user has two-factor authentication on, and how many recovery codes
    they have left."""
    state = get_state()
    user = _user(email)
    since = enabled_since(state, user)
    if since is None:
        click.echo(f"{user.email}: two-factor authentication is off")
        return
    left = recovery_codes_left(state, user)
    click.echo(f"{user.email}: two-factor authentication is on (since "
               f"{since.isoformat(timespec='seconds')}), {left} recovery code(s) left")


@guardian_cli.command("2fa-reset")
@click.argument("email")
@with_appcontext
def two_factor_reset_command(email: str) -> None:
    """Turn a user's two-factor authentication off (a lost phone and no recovery code)
    and end all their sessions: they sign in with their password and may enrol again."""
    state = get_state()
    user = _user(email)
    was_on, ended = admin_reset(state, user)
    done = "turned off" if was_on else "was already off"
    click.echo(f"{user.email}: two-factor authentication {done}; ended {ended} session(s)")
