"""`dodo-worker reconcile`: find what webhooks missed through Dodo's API and repair it now."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from worker.cli.common import console, fail, print_json, run, settings_or_exit
from worker.cli.text import FEW, VERBOSE_HELP, counted, say, wrapped
from worker.settings import Settings

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(value: str, option: str) -> datetime:
    """ISO-8601 (`2026-11-20`, `2026-11-20T08:00:00Z`) or an age like `90m`, `24h`, `7d`."""
    text = value.strip()
    match = _RELATIVE.match(text)
    if match:
        return datetime.now(UTC) - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        fail(f"{option} {value!r}: use ISO-8601 (2026-11-20T08:00:00Z) or an age like 90m, 24h, 7d")
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_metadata(pairs: list[str]) -> dict[str, str]:
    wanted: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--metadata {pair!r}: use KEY=VALUE, e.g. --metadata order_id=1234")
        wanted[key.strip()] = value
    return wanted


def reconcile_command(
    since: str | None = typer.Option(None, "--since", metavar="TIME",
                                     help="Window start: ISO-8601 or an age (24h, 7d)."),
    until: str | None = typer.Option(None, "--until", metavar="TIME", help="Window end (default: now)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Report what is missing; change nothing."),
    metadata: list[str] = typer.Option([], "--metadata", metavar="KEY=VALUE",
                                       help="Only objects whose metadata matches (repeatable)."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help=VERBOSE_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout and nothing else."),
) -> None:
    """Find what webhooks missed and repair it now.

    Reads Dodo's payments, refunds, lost and accepted disputes and subscriptions, and injects an
    event for each one the inbox lacks, through the same handlers as webhooks.

    Without --since the window starts at the last scan's mark, less the overlap. With
    --metadata only the payments and subscriptions whose checkout metadata matches are
    repaired, and those payments' refunds and disputes.

    Prints a summary (counts per kind, the first few ids); --verbose lists every object,
    --json everything as one JSON object.
    """
    wanted = parse_metadata(metadata)
    start = parse_time(since, "--since") if since else None
    end = parse_time(until, "--until") if until else None
    settings = settings_or_exit()
    if settings.DODO_PAYMENTS_API_KEY is None:
        fail("DODO_PAYMENTS_API_KEY is not set: reconciliation reads Dodo's API (a read-only key is enough)")
    if start is not None and end is not None and start >= end:
        fail("--since must be before --until")
    result = run(_reconcile(settings, start, end, dry_run, wanted, show_progress=console.is_terminal))
    if as_json:
        print_json(result)
        return
    _print_summary(result, verbose)


async def _reconcile(settings: Settings, since: datetime | None, until: datetime | None, dry_run: bool,
                     metadata: dict[str, str], show_progress: bool) -> dict[str, Any]:
    from sqlalchemy.exc import SQLAlchemyError

    from integrations.dodo import DodoAPIError, DodoReader, create_client
    from worker import queue
    from worker.reconcile.service import EmptyWindow, Request, ScanBusy, reconcile
    from worker.store import Database

    client = create_client(settings)
    assert client is not None
    db = Database(settings.DATABASE_URL)
    # A dry run writes nothing, so it needs neither the lock nor the queue.
    redis = queue.connect(settings.REDIS_URL) if settings.REDIS_URL and not dry_run else None
    progress = _progress() if show_progress else None
    tasks: dict[str, Any] = {}

    def advance(kind: str, scanned: int, pages: int) -> None:
        assert progress is not None
        if kind not in tasks:
            tasks[kind] = progress.add_task(kind, total=None)
        progress.update(tasks[kind], completed=scanned, description=f"{kind}s ({pages} page(s))")

    request = Request(trigger="cli", since=since, until=until, dry_run=dry_run, metadata=metadata or None,
                      require_lock=False)
    try:
        if progress is not None:
            progress.start()
        # Fewer tries than the worker on a dead connection: someone is waiting at the terminal.
        report = await reconcile(settings, db, DodoReader(client, transient_tries=3), redis, request,
                                 progress=advance if progress is not None else None)
    except ScanBusy:
        fail("another reconciliation scan is running (a worker's scheduled one?); try again in a few minutes",
             code=1)
    except DodoAPIError as exc:
        fail(f"could not read Dodo's API at {_api_host(settings)}: {exc}", code=1)
    except EmptyWindow as exc:
        fail(str(exc))
    except (SQLAlchemyError, OSError) as exc:  # the URL may hold a password: name the error only
        fail(f"could not use the database (DATABASE_URL): {type(exc).__name__}", code=1)
    finally:
        if progress is not None:
            progress.stop()
        await client.close()
        await db.dispose()
        if redis is not None:
            await redis.aclose(close_connection_pool=True)
    return report.as_json()


def _api_host(settings: Settings) -> str:
    if settings.DODO_PAYMENTS_BASE_URL:
        return settings.DODO_PAYMENTS_BASE_URL
    return "live.dodopayments.com" if settings.DODO_PAYMENTS_ENVIRONMENT == "live_mode" else "test.dodopayments.com"


def _progress() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                    TextColumn("{task.completed} read"), TimeElapsedColumn(), console=console, transient=True)


def _print_summary(result: dict[str, Any], verbose: bool) -> None:
    window = result["window"]
    verb = "would repair" if result["dry_run"] else "repaired"
    since, until = (re.sub(r"\.\d+", "", window[end]) for end in ("since", "until"))  # whole seconds
    say(wrapped(f"scanned {result['scanned']} object(s) from {since} to {until} "
                f"in {result['api_calls']} API call(s); {verb} {len(result['repaired'])}", ""))
    if verbose:
        _print_every_row(result)
    else:
        _print_counts(result)
    if result["not_enqueued"]:
        say("Redis unreachable: the worker's sweeper will queue the repaired events.")


def _by_kind(items: list[dict[str, Any]]) -> dict[str, list[str]]:
    kinds: dict[str, list[str]] = {}
    for item in items:
        kinds.setdefault(item["kind"], []).append(item["id"])
    return kinds


def _print_counts(result: dict[str, Any]) -> None:
    """Per kind: how many, and the first few ids. Dead and 404'd objects, which ask for a look,
    one line each while they are few."""
    for kind, ids in _by_kind(result["repaired"]).items():
        say(wrapped(counted(ids, kind), "  "))
    dead, gone = result["dead"], result["not_found"]
    if 0 < len(dead) <= FEW:
        for item in dead:
            say(wrapped(_dead_row(item), "  "))
    elif dead:
        say(wrapped(f"{len(dead)} object(s) whose event is dead: run `dodo-worker events replay ID` "
                    "once its handler is fixed (or `events replay --dead`):", ""))
        for kind, ids in _by_kind(dead).items():
            say(wrapped(counted(ids, kind), "  "))
    if 0 < len(gone) <= FEW:
        for item in gone:
            say(wrapped(_gone_row(item), "  "))
    elif gone:
        whys: dict[str, list[dict[str, Any]]] = {}
        for item in gone:
            whys.setdefault(item.get("why", LISTED_404), []).append(item)
        for why, items in whys.items():
            say(wrapped(f"{len(items)} object(s): {why} (404); left as they are:", ""))
            for kind, ids in _by_kind(items).items():
                say(wrapped(counted(ids, kind), "  "))
    if result["repaired"] or len(dead) > FEW or len(gone) > FEW:
        say("--verbose lists every one.")


LISTED_404 = "listed, but 404 when fetched"


def _dead_row(dead: dict[str, Any]) -> str:
    return (f"{dead['kind']} {dead['id']}: event {dead['event_id']} is dead; run `dodo-worker events "
            f"replay {dead['event_id']}` once its handler is fixed")


def _gone_row(gone: dict[str, Any]) -> str:
    return f"{gone['kind']} {gone['id']}: {gone.get('why', LISTED_404)} (404); left as it is"


def _print_every_row(result: dict[str, Any]) -> None:
    for item in result["repaired"]:
        meta = ", ".join(f"{k}={v}" for k, v in item["metadata"].items())
        say(wrapped(f"{item['kind']} {item['id']} -> event {item['event_id']}" + (f" ({meta})" if meta else ""),
                    "  "))
    for dead in result["dead"]:
        say(wrapped(_dead_row(dead), "  "))
    for gone in result["not_found"]:
        say(wrapped(_gone_row(gone), "  "))
