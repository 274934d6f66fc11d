"""A handler module with a Python entitlement hook, named in HANDLER_MODULES by
`test_cli_change_is_left_to_the_worker`, which shows that the CLI never imports it."""

from __future__ import annotations

from typing import Any

from worker import on_entitlement


@on_entitlement("entitlement.revoked")
async def tell_crm(event_type: str, grant: dict[str, Any]) -> None:
    return None
