"""A local HTTP endpoint that catches the worker's outbound hook deliveries (`dodo.hooks`)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class HookDelivery:
    """One POST the catcher received: `type` and `data` from its JSON body, `verified` when its
    Standard Webhooks signature matches HOOKS_SIGNING_KEY."""

    path: str
    headers: dict[str, str]
    body: bytes
    verified: bool
    type: str | None = None
    data: Any = None

    def __repr__(self) -> str:
        return f"<HookDelivery {self.type} {self.path} verified={self.verified}>"


@dataclass
class HookCatcher:
    secret: str | None = None
    url: str = ""
    deliveries: list[HookDelivery] = field(default_factory=list)
    status: int = 200  # what it answers; set 500 to see the worker retry

    @contextlib.asynccontextmanager
    async def serving(self, servers: list[Any] | None = None) -> AsyncIterator[str]:
        from worker.testing.serving import serve_app

        async with serve_app(self, what="the hook catcher to start", servers=servers) as url:
            self.url = f"{url}/hooks"
            yield self.url

    def verify(self, body: bytes, headers: dict[str, str]) -> bool:
        from worker.verify import SignatureError, Verifier

        if not self.secret:
            return False
        try:
            Verifier([self.secret]).verify(body, headers)
        except (SignatureError, ValueError):
            return False
        return True

    def caught(self, path: str, headers: dict[str, str], body: bytes) -> HookDelivery:
        delivery = HookDelivery(path=path, headers=headers, body=body, verified=self.verify(body, headers))
        with contextlib.suppress(ValueError):
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                delivery.type, delivery.data = parsed.get("type"), parsed.get("data")
        if self.status < 300:
            self.deliveries.append(delivery)
        return delivery

    async def __call__(self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]],
                       send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            return
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = bool(message.get("more_body"))
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        self.caught(scope["path"], headers, b"".join(chunks))
        await send({"type": "http.response.start", "status": self.status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"{}"})
