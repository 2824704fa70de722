"""``assay db``: the store's schema, migrated on purpose.

A PostgreSQL store is shared by every host, so no host migrates it on start-up:
an operator runs ``assay db upgrade`` once per release (any one host; hosts that
run it at the same moment take turns), and servers on an older store refuse to
start, naming this command. An embedded SQLite store upgrades itself.
"""

from __future__ import annotations

import click

from assay.cli import main, settings_from


@main.group("db")
def db_group() -> None:
    """The store's schema: which migration it is at, and bringing it up to date."""


@db_group.command("upgrade")
@click.pass_context
def upgrade(ctx: click.Context) -> None:
    """Run the store's pending migrations (once per release, from any one host)."""
    from assay.store import db

    settings = settings_from(ctx)
    if settings.store_url.startswith("sqlite"):
        settings.home.mkdir(parents=True, exist_ok=True)
    engine = db.create_engine(settings.store_url)
    try:
        before = db.current_revision(engine)
        changed = db.upgrade(engine)
        head = db.head_revision()
    finally:
        engine.dispose()
    if changed:
        click.echo(f"store upgraded from migration {before or 'none (empty)'} to {head}")
    else:
        click.echo(f"store is up to date (migration {head})")


@db_group.command("status")
@click.pass_context
def status(ctx: click.Context) -> None:
    """Print the store's migration and this assay's newest; exit 1 when the store is behind."""
    from assay.store import db

    engine = db.create_engine(settings_from(ctx).store_url)
    try:
        current = db.current_revision(engine)
    finally:
        engine.dispose()
    head = db.head_revision()
    click.echo(f"store: {current or 'none (empty)'}; this assay: {head}")
    if current != head:
        raise SystemExit(1)
