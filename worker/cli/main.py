"""The `dodo-worker` command."""

from __future__ import annotations

import typer

from worker.cli import db, events, grants, hooks, reconcile
from worker.cli.send import send_command
from worker.cli.serve import dev_command, web_command, worker_command

app = typer.Typer(
    name="dodo-worker",
    help="Verify, store and act on Dodo Payments webhooks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.command("web")(web_command)
app.command("worker")(worker_command)
app.command("dev")(dev_command)
app.command("send")(send_command)
app.command("reconcile")(reconcile.reconcile_command)
app.add_typer(db.app, name="db")
app.add_typer(events.app, name="events")
app.add_typer(grants.app, name="grants")
app.add_typer(hooks.app, name="hooks")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
