"""The `dodo-worker` command."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import typer

from worker.cli import db, events, grants, hooks, reconcile
from worker.cli.handlers import handlers_command
from worker.cli.init import init_command
from worker.cli.send import send_command
from worker.cli.serve import dev_command, web_command, worker_command

app = typer.Typer(
    name="dodo-worker",
    help="Verify, store and act on Dodo Payments webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    # Plain click help: it wraps at the terminal's width and shows flags as flags (typer's rich
    # help printed `--json <bool>` as if the flag took a value).
    rich_markup_mode=None,
)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"dodo-worker {version('dodo-worker')}")
        except PackageNotFoundError:
            typer.echo("dodo-worker (not installed as a distribution)")
        raise typer.Exit()


@app.callback()
def _options(
    _show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit."),
) -> None:
    """Verify, store and act on Dodo Payments webhooks."""
app.command("web")(web_command)
app.command("worker")(worker_command)
app.command("dev")(dev_command)
app.command("send")(send_command)
app.command("reconcile")(reconcile.reconcile_command)
app.command("handlers")(handlers_command)
app.command("init")(init_command)
app.add_typer(db.app, name="db")
app.add_typer(events.app, name="events")
app.add_typer(grants.app, name="grants")
app.add_typer(hooks.app, name="hooks")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
