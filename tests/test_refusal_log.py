"""A refused webhook leaves one log line: the first real integration step (a tunnel, a pasted
secret) must not fail with 401s that only a Prometheus counter sees."""

from __future__ import annotations

import logging

import pytest

from tests.support import Stack
from worker.signing import generate_secret
from worker.web.refusals import RefusalLog


async def test_a_wrong_secret_is_logged_with_the_webhook_id_client_and_setting_to_check(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    await stack.start_web()
    caplog.set_level(logging.WARNING, logger="dodo_worker.receiver")
    wrong = generate_secret()
    _, response = await stack.send("payment.succeeded", event_id="msg_wrong_secret_1", secret=wrong)
    assert response.status_code == 401
    lines = [r.getMessage() for r in caplog.records if "webhook refused" in r.getMessage()]
    assert len(lines) == 1, lines
    line = lines[0]
    assert "401" in line and "msg_wrong_secret_1" in line and "from 127.0.0.1" in line
    assert "DODO_PAYMENTS_WEBHOOK_KEY" in line
    for secret in (wrong, stack.secret):
        assert secret not in caplog.text and secret.removeprefix("whsec_") not in caplog.text
    assert "payment_id" not in caplog.text, "the body is never logged"


def test_a_forged_log_line_in_the_webhook_id_is_escaped(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dodo_worker.receiver")
    RefusalLog().refused(401, "signature", "no matching signature", "msg_1\nINFO granted everything", "10.0.0.1")
    assert len(caplog.text.strip().splitlines()) == 1
    assert "msg_1\\nINFO granted everything" in caplog.text


def test_a_flood_is_logged_a_burst_at_a_time_then_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="dodo_worker.receiver")
    now = [0.0]
    refusals = RefusalLog(burst=3, window=60, clock=lambda: now[0])
    for n in range(10):
        refusals.refused(401, "signature", "no matching signature", f"msg_{n}", "10.0.0.1")
    assert [r.getMessage().split(" (")[1][:14] for r in caplog.records] == ["signature, web"] * 3
    caplog.clear()
    now[0] = 61.0
    refusals.refused(401, "signature", "no matching signature", "msg_late", "10.0.0.1")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "7 more webhook refusal(s) not logged in the last 61s"
    assert "msg_late" in messages[1]
