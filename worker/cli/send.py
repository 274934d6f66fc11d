"""`dodo-worker send TYPE`: sign a sample (or your own) payload and post it to a receiver."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import typer

from worker.cli.common import console, fail, print_json, settings_or_exit
from worker.samples import load_sample, sample_types
from worker.signing import signed_headers


def send_command(
    event_type: str = typer.Argument(..., help="Event type, e.g. payment.succeeded."),
    url: str | None = typer.Option(None, "--url", help="Receiver URL (default: this machine's PORT)."),
    file: Path | None = typer.Option(None, "--file", exists=True, dir_okay=False, help="JSON body to send."),
    message_id: str | None = typer.Option(None, "--id", help="webhook-id to use (default: a new one)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Sign an event with DODO_PAYMENTS_WEBHOOK_KEY and POST it, the way Dodo does."""
    settings = settings_or_exit()
    if not settings.webhook_secrets:
        fail("DODO_PAYMENTS_WEBHOOK_KEY is not set (dodo-worker dev writes one to .env)")
    if file is not None:
        try:
            payload = json.loads(file.read_text())
        except ValueError as exc:
            fail(f"{file} is not JSON: {exc}")
    else:
        try:
            payload = load_sample(event_type)
        except KeyError:
            fail(f"no sample for {event_type!r}; use --file, or one of: {', '.join(sample_types())}")
    if isinstance(payload, dict):
        payload["type"] = event_type
    body = json.dumps(payload)
    headers = signed_headers(settings.webhook_secrets[0], body, message_id)
    target = url or f"http://127.0.0.1:{settings.PORT}/webhooks/dodo"
    try:
        response = httpx.post(target, content=body.encode(), headers=headers, timeout=15)
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


def _body(response: httpx.Response) -> object:
    try:
        return response.json()
    except ValueError:
        return response.text
