"""`dodo-worker db upgrade`."""

from __future__ import annotations

import typer

from worker.cli.common import console, fail, run, settings_or_exit
from worker.settings import Settings
from worker.store.database import short_reason
from worker.store.migrate import upgrade

app = typer.Typer(help="Database schema.", no_args_is_help=True)


@app.command("upgrade")
def upgrade_command(
    revision: str = typer.Argument("head", help="Target revision (default: head, the newest)."),
) -> None:
    """Create or upgrade the tables (safe to run on every deploy)."""
    upgrade_or_exit(settings_or_exit(), revision)
    console.print(f"database is at revision {revision}")


def upgrade_or_exit(settings: Settings, revision: str = "head") -> None:
    """`db upgrade`, and `dev` before it starts: one line and exit 2 when it fails."""
    try:  # an unreachable database is one line from `run`; anything else is said here
        run(upgrade(settings.DATABASE_URL, revision), check_database=False)
    except typer.Exit:
        raise
    except Exception as exc:
        fail(f"database upgrade failed: {short_reason(exc)}")
