"""A handler module with a Python entitlement hook, imported only through HANDLER_MODULES
(by `test_cli_change_reaches_python_hooks`), so the CLI must load it to see the hook."""

from __future__ import annotations

from typing import Any

from worker import on_entitlement


@on_entitlement("entitlement.revoked")
async def tell_crm(event_type: str, grant: dict[str, Any]) -> None:
    return None
