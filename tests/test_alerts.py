"""Alerts through the real stack: a local Slack-compatible receiver over HTTP counts one message
per incident, none when an incident resolves, and a new one when it recurs."""

from __future__ import annotations

import json
from typing import Any

from tests.entitlements.receiver import HookEndpoint, serve
from tests.support import Stack, free_port, wait_until
from worker import Context, Event
from worker.alerts import alerter
from worker.registry import Registry
from worker.signing import generate_secret

FAST = {"ALERT_CHECK_SECONDS": 1}


def texts(receiver: HookEndpoint) -> list[str]:
    return [json.loads(call.body)["text"] for call in receiver.calls]


async def settled(stack: Stack, runtime: Any = None) -> None:
    """Every alert the stack's processes had started is sent (no sleep: their tasks are awaited)."""
    await alerter(runtime or stack.worker_runtime).drain()


async def open_kinds(stack: Stack) -> list[str]:
    return sorted(i.kind for i in await alerter(stack.worker_runtime).incidents.all_open())


async def test_a_burst_of_dead_events_is_one_message_and_a_recurrence_after_the_fix_another(
        stack_factory: Any, registry: Registry) -> None:
    broken = {"grant": True}

    @registry.on("payment.succeeded")
    async def grant(event: Event, ctx: Context) -> None:
        if broken["grant"]:
            raise ValueError("licence server <down> & `unreachable`")

    @registry.on("refund.succeeded")
    async def revoke(event: Event, ctx: Context) -> None:
        raise RuntimeError("other bug")

    receiver = HookEndpoint(status=200)
    async with serve(receiver) as base:
        stack = await stack_factory(ALERT_WEBHOOK_URL=f"{base}/services/T0/B0/tok", **FAST)
        ids = [(await stack.send("payment.succeeded"))[0] for _ in range(3)]
        for event_id in ids:
            await stack.wait_status(event_id, "dead")
        await settled(stack)
        assert len(texts(receiver)) == 1
        [text] = texts(receiver)
        assert "grant" in text and "payment.succeeded" in text and "events replay --dead" in text
        assert "&lt;down&gt; &amp; 'unreachable'" in text  # escaped for mrkdwn
        assert stack.secret not in text

        # An unrelated incident while the first is open: its own message.
        refund_id, _ = await stack.send("refund.succeeded")
        await stack.wait_status(refund_id, "dead")
        await settled(stack)
        assert len(texts(receiver)) == 2 and "revoke" in texts(receiver)[1]

        broken["grant"] = False  # the fix is deployed, the dead events replayed
        for event_id in ids:
            code, _, err = await stack.cli("events", "replay", event_id)
            assert code == 0, err
        for event_id in ids:
            await stack.wait_status(event_id, "processed")
        await wait_until(lambda: _only(stack, ["dead"]), what="the grant incident to resolve")
        assert len(texts(receiver)) == 2  # quiet when resolved

        broken["grant"] = True  # it breaks again: a new incident
        again, _ = await stack.send("payment.succeeded")
        await stack.wait_status(again, "dead")
        await wait_until(lambda: _count(receiver, 3), what="the recurrence's message")
        await settled(stack)
        assert len(texts(receiver)) == 3 and again in texts(receiver)[2]


async def _only(stack: Stack, kinds: list[str]) -> bool:
    return await open_kinds(stack) == kinds


async def _count(receiver: HookEndpoint, n: int) -> bool:
    return len(receiver.calls) >= n


async def test_bad_signatures_over_the_threshold_alert_once_and_below_it_not(
        stack_factory: Any) -> None:
    receiver = HookEndpoint(status=200)
    async with serve(receiver) as base:
        stack = await stack_factory(ALERT_WEBHOOK_URL=f"{base}/hook", ALERT_REJECTIONS_THRESHOLD=5, **FAST)
        web = stack.app
        web_runtime = web.state.runtime
        wrong = generate_secret()  # the secret before a rotation
        for _ in range(4):
            _, response = await stack.send("payment.succeeded", secret=wrong)
            assert response.status_code == 401
        await settled(stack, web_runtime)
        assert round(await alerter(web_runtime).rejections.rate()) == 4
        assert texts(receiver) == []

        for _ in range(6):
            await stack.send("payment.succeeded", secret=wrong)
        await settled(stack, web_runtime)
        [text] = texts(receiver)
        assert "bad signature" in text and "DODO_PAYMENTS_WEBHOOK_KEY" in text and "rotated" in text
        assert wrong not in text and stack.secret not in text


async def test_an_alert_endpoint_that_is_down_breaks_nothing(stack_factory: Any, registry: Registry,
                                                              caplog: Any) -> None:
    caplog.set_level("WARNING", logger="dodo_worker.alerts")

    @registry.on("payment.succeeded")
    async def fails(event: Event, ctx: Context) -> None:
        raise ValueError("boom")

    @registry.on("refund.*")
    async def fails_too(event: Event, ctx: Context) -> None:
        raise ValueError("boom")

    @registry.on("dispute.opened")
    async def works(event: Event, ctx: Context) -> None:
        return None

    secret_url = f"http://127.0.0.1:{free_port()}/services/SECRET-TOKEN"
    stack = await stack_factory(ALERT_WEBHOOK_URL=secret_url, **FAST)
    dead, _ = await stack.send("payment.succeeded")
    dead_too, _ = await stack.send("refund.succeeded")
    fine, _ = await stack.send("dispute.opened")
    await stack.wait_status(dead, "dead")
    await stack.wait_status(dead_too, "dead")
    await stack.wait_status(fine, "processed")
    await settled(stack)
    failures = [r for r in caplog.records if "alert not delivered" in r.getMessage()]
    assert len(failures) == 1  # logged once, then only counted
    assert "SECRET-TOKEN" not in caplog.text
    await stack.worker_runtime.metrics.flush()
    snapshot = await stack.worker_runtime.metrics.snapshot()
    assert snapshot.get("dodo_alerts_total|result=failed") == 2


async def test_a_signature_spike_closes_when_rejections_are_back_to_normal_and_a_new_one_alerts_again(
        stack_factory: Any) -> None:
    receiver = HookEndpoint(status=200)
    async with serve(receiver) as base:
        stack = await stack_factory(ALERT_WEBHOOK_URL=f"{base}/hook", ALERT_REJECTIONS_THRESHOLD=4,
                                    ALERT_REJECTIONS_WINDOW_SECONDS=2, **FAST)
        web_runtime = stack.app.state.runtime
        wrong = generate_secret()
        for burst in (1, 2):
            for _ in range(10):
                await stack.send("payment.succeeded", secret=wrong)
            await settled(stack, web_runtime)
            assert len(texts(receiver)) == burst
            if burst == 1:  # under half the threshold again: closed, and no message says so
                await wait_until(lambda: _only(stack, []), what="the spike to be over")


def test_the_alert_url_is_checked_and_never_shown() -> None:
    from worker.settings import ConfigError, load_settings

    settings = load_settings(ALERT_WEBHOOK_URL=" https://hooks.slack.com/services/T0/B0/XYZSECRET\n")
    assert "XYZSECRET" not in repr(settings)
    assert settings.ALERT_WEBHOOK_URL is not None
    assert settings.ALERT_WEBHOOK_URL.get_secret_value() == "https://hooks.slack.com/services/T0/B0/XYZSECRET"
    assert load_settings(ALERT_WEBHOOK_URL="").ALERT_WEBHOOK_URL is None
    try:
        load_settings(ALERT_WEBHOOK_URL="hooks.slack.com/XYZSECRET")
    except ConfigError as exc:
        assert "ALERT_WEBHOOK_URL: give an http(s) URL" in str(exc) and "XYZSECRET" not in str(exc)
    else:
        raise AssertionError("a URL without a scheme was accepted")
