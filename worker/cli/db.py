"""`dodo-worker db upgrade`."""

from __future__ import annotations

import typer

from worker.cli.common import console, fail, run, settings_or_exit
from worker.store.migrate import upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(revision: str = typer.Argument("head", help="Target revision.")) -> None:
    """Create or upgrade the tables (safe to run on every deploy)."""
    settings = settings_or_exit()
    try:
        run(upgrade(settings.DATABASE_URL, revision))
    except Exception as exc:
        fail(f"database upgrade failed: {type(exc).__name__}: {exc}")
    console.print(f"database is at revision {revision}")
