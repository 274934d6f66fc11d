"""`dodo-worker handlers`: what the worker would run, for which event types."""

from __future__ import annotations

import textwrap

import typer

from worker.cli.common import console, fail, print_json, settings_or_exit
from worker.registry import RegistryError, default_registry, known_event_types, load_handler_modules, pattern_matches


def handlers_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON on stdout and nothing else."),
) -> None:
    """List each registered handler, its patterns and the event types they match.

    Loads what the worker loads: the built-in entitlement handlers when a catalog is found, then
    HANDLER_MODULES (from the working directory too)."""
    settings = settings_or_exit()
    try:
        load_handler_modules(settings.handler_modules)
    except RegistryError as exc:
        fail(str(exc))
    known = sorted(known_event_types())
    rows = [
        {"name": h.name, "patterns": list(h.patterns), "batched": h.batched,
         "types": [t for t in known if h.matches(t)]}
        for h in sorted(default_registry, key=lambda h: h.name)
    ]
    if as_json:
        print_json(rows)
        return
    if settings.entitlements_path is None:
        console.print("no catalog (ENTITLEMENTS_FILE or ./entitlements.toml):\n"
                      "  the built-in entitlement handlers are not loaded", highlight=False)
    if not rows:
        console.print("no handlers registered: list your modules in HANDLER_MODULES", highlight=False)
        return
    for row in rows:
        patterns = ", ".join(row["patterns"])
        console.print(f"[bold]{row['name']}[/bold]  {patterns}{'  (batched)' if row['batched'] else ''}",
                      highlight=False)
        types = row["types"]
        wildcard = any(p.endswith("*") for p in row["patterns"])
        if wildcard:
            text = f"matches {len(types)} type(s): {', '.join(types)}"
            console.print(textwrap.fill(text, width=max(40, console.width - 1), initial_indent="  ",
                                        subsequent_indent="    "), highlight=False, soft_wrap=True)
    unhandled = [t for t in known if not any(pattern_matches(p, t) for r in rows for p in r["patterns"])]
    console.print(f"{len(rows)} handler(s); {len(known) - len(unhandled)} of {len(known)} event types "
                  "have at least one", highlight=False)
