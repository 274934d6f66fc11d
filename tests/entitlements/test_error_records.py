"""A failed grant's recorded error (the run's, its attempts', the event's) holds no SQL
parameters, licence key or e-mail address: `events show --json` prints it to whoever asks."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy import text

from tests.entitlements.conftest import EMAIL, PRODUCT, payment
from tests.support import Stack

# A database that refuses the grant and says why, quoting the row (as a trigger or a check may).
REFUSE_GRANTS = [
    """CREATE FUNCTION refuse_grant() RETURNS trigger AS $$
       BEGIN
         RAISE EXCEPTION 'grant refused for % with key %', NEW.email, NEW.license_key
           USING DETAIL = format('row %s', NEW), HINT = NEW.license_key;
       END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER refuse_grant BEFORE INSERT ON entitlement_grants
       FOR EACH ROW EXECUTE FUNCTION refuse_grant()""",
]


async def test_a_failed_grant_records_no_parameters_key_or_email(
        ent_stack: Stack, backend: str, caplog: pytest.LogCaptureFixture) -> None:
    if backend != "postgresql":
        pytest.skip("a trigger that quotes the row: PostgreSQL")
    caplog.set_level(logging.INFO)
    async with ent_stack.db.engine.begin() as connection:
        for statement in REFUSE_GRANTS:
            await connection.execute(text(statement))
    event_id, response = await ent_stack.send("payment.succeeded", payment("pay_refused", [(PRODUCT, 1)]))
    assert response.status_code == 200
    await ent_stack.wait_status(event_id, "dead")
    code, out, _ = await ent_stack.cli("events", "show", event_id, "--json")
    assert code == 0
    assert "grant refused for" in out  # the driver's message is kept
    body_free = out.split('"body"')[0]  # the stored webhook body itself holds the e-mail, as sent
    for leak in (EMAIL, "ACME-", "[parameters:", "[SQL", "DETAIL", "row ("):
        assert leak not in body_free, leak
        assert leak not in caplog.text, leak
