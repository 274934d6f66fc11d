"""`dodo-worker send TYPE`: sign a sample (or your own) payload and post it to a receiver."""

from __future__ import annotations

import json
import textwrap
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import typer

from worker.cli.common import console, fail, print_json, settings_or_exit
from worker.samples import sample_types, stamped_sample
from worker.signing import signed_headers


def send_command(
    event_type: str = typer.Argument(..., metavar="TYPE", help="Event type, e.g. payment.succeeded."),
    url: str | None = typer.Option(None, "--url", metavar="URL",
                                   help="Receiver URL (default: http://127.0.0.1:$PORT/webhooks/dodo)."),
    file: Path | None = typer.Option(None, "--file", metavar="FILE", exists=True, dir_okay=False,
                                     help="JSON body to send, its type set to TYPE."),
    message_id: str | None = typer.Option(None, "--id", metavar="ID", help="webhook-id to use (default: a new one)."),
    as_json: bool = typer.Option(False, "--json", help="Print the receiver's answer as JSON on stdout."),
) -> None:
    settings = settings_or_exit()
    if not settings.webhook_secrets:
        fail("DODO_PAYMENTS_WEBHOOK_KEY is not set (dodo-worker dev writes one to .env)")
    body = _file_body(file, event_type) if file is not None else _sample_body(event_type)
    headers = signed_headers(settings.webhook_secrets[0], body, message_id)
    target = url or f"http://127.0.0.1:{settings.PORT}/webhooks/dodo"
    try:
        response = httpx.post(target, content=body, headers=headers, timeout=15)
    except httpx.HTTPError as exc:
        fail(f"could not reach {target}: {exc}")
    result = {"id": headers["webhook-id"], "type": event_type, "url": target,
              "status_code": response.status_code, "response": _body(response)}
    if as_json:
        print_json(result)
    else:
        console.print(f"{event_type} {headers['webhook-id']} -> {response.status_code} {response.text}",
                      highlight=False)
    if response.status_code >= 400:
        raise typer.Exit(1)


def _sample_body(event_type: str) -> bytes:
    """The bundled sample for `event_type`, stamped with the current time."""
    try:
        payload = stamped_sample(event_type)
    except KeyError:
        fail(f"no sample for {event_type!r}; use --file, or one of: {', '.join(sample_types())}")
    return json.dumps(payload).encode()


def _file_body(file: Path, event_type: str) -> bytes:
    """The file's JSON with `type` set to `event_type`; its bytes unchanged when Python cannot
    parse them for nesting too deep (the receiver is the one to judge such a body)."""
    raw = file.read_bytes()
    try:
        payload: Any = json.loads(raw)
    except RecursionError:
        console.print(f"note: {file} nests too deeply to parse here; sending it unchanged, "
                      f"without setting its type to {event_type!r}", highlight=False, soft_wrap=True)
        return raw
    except ValueError as exc:
        fail(f"{file} is not JSON: {exc}")
    if isinstance(payload, dict):
        payload["type"] = event_type
    return json.dumps(payload).encode()


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text


def _help(width: int = 76) -> str:
    """The command's help: what it does, then every type with a sample, grouped by family."""
    lines = ["Sign an event with DODO_PAYMENTS_WEBHOOK_KEY and POST it, the way Dodo does.", "",
             "Samples (their timestamp set to now) for these types; --file sends any type:", "",
             "\b"]  # click keeps this paragraph's lines as they are
    for family, types in groupby(sample_types(), key=lambda t: t.split(".", 1)[0]):
        names = ", ".join(t.split(".", 1)[1] for t in types)
        lines += textwrap.wrap(names, width, initial_indent=f"{family}: ",
                               subsequent_indent=" " * (len(family) + 2), break_on_hyphens=False)
    return "\n".join(lines)


send_command.__doc__ = _help()
