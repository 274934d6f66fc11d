"""Agreement with Standard Webhooks: the spec, the reference libraries' test vectors (the same in
the Python, JavaScript, Go, Java, Ruby, PHP and C# suites of github.com/standard-webhooks) and the
installed `standardwebhooks` package, checked as requests to the real receiver.

Where the references disagree, the spec and the Go library decide (worker/whsec.py says why).
"""

from __future__ import annotations

import base64
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from tests.support import Stack
from worker import whsec
from worker.settings import ConfigError, load_settings
from worker.signing import signed_headers
from worker.web.webhooks import MAX_DEPTH

# The reference suites' own vectors.
REF_SECRET = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # 24 bytes, the smallest the spec allows
REF_MSG_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
REF_PAYLOAD = '{"test": 2432232314}'
REF_SIGN = (1614265330, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
REF_WRONG = "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc="
# The receiver stores only bodies with a `type`, so the reference payload gains one.
BODY = '{"test": 2432232314, "type": "conformance.test"}'


def key_bytes(n: int) -> bytes:
    return bytes(range(n))


def b64(n: int, padded: bool = True) -> str:
    text = base64.b64encode(key_bytes(n)).decode()
    return text if padded else text.rstrip("=")


# -- secrets ---------------------------------------------------------------------------------------

ACCEPTED_SECRETS = [
    pytest.param(f"whsec_{b64(32)}", 32, id="32-padded"),
    pytest.param(f"whsec_{b64(32, padded=False)}", 32, id="32-unpadded"),
    pytest.param(b64(32), 32, id="32-no-prefix"),
    pytest.param(f"whsec_{b64(24)}", 24, id="24"),
    pytest.param(f"whsec_{b64(25)}", 25, id="25-padded-twice"),
    pytest.param(f"whsec_{b64(25, padded=False)}", 25, id="25-unpadded"),
    pytest.param(f"whsec_{b64(64)}", 64, id="64-padded"),
    pytest.param(f"whsec_{b64(64, padded=False)}", 64, id="64-unpadded"),
    pytest.param(f"whsec_{REF_SECRET}", 24, id="reference"),
    pytest.param("whsec_AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=", 32, id="issue-12"),
]

REFUSED_SECRETS = [
    pytest.param(f"whsec_{b64(23)}", id="23-bytes"),
    pytest.param(f"whsec_{b64(65)}", id="65-bytes"),
    pytest.param(f"whsec_{b64(16)}", id="16-bytes"),
    pytest.param("whsec_" + b64(32)[:-1] + "==", id="wrong-padding"),
    pytest.param("whsec_" + b64(33) + "A", id="length-1-mod-4"),
    pytest.param("whsec_" + b64(32).replace("+", "-").replace("/", "_") + "-_", id="url-safe-alphabet"),
    pytest.param("whsec_" + b64(16) + "**" + b64(16), id="outside-alphabet"),
    pytest.param("whsec_", id="empty"),
]


@pytest.mark.parametrize(("secret", "size"), ACCEPTED_SECRETS)
def test_every_secret_the_spec_allows_is_accepted_at_start(secret: str, size: int) -> None:
    settings = load_settings(DODO_PAYMENTS_WEBHOOK_KEY=secret)
    assert settings.webhook_secrets == [secret]
    key = whsec.decode_secret(secret)
    assert len(key) == size
    assert Webhook(secret)._whsecret == key  # the Python reference reads the same key


@pytest.mark.parametrize("secret", REFUSED_SECRETS)
def test_other_secrets_stop_start_with_one_line_naming_the_variable(secret: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(DODO_PAYMENTS_WEBHOOK_KEY=secret)
    text = str(caught.value)
    assert text.startswith("DODO_PAYMENTS_WEBHOOK_KEY: ") and "\n" not in text
    body = secret.removeprefix("whsec_")
    assert not body or body not in text


def test_the_hooks_signing_key_follows_the_same_rule() -> None:
    assert load_settings(HOOKS_SIGNING_KEY=f"whsec_{b64(64, padded=False)}").HOOKS_SIGNING_KEY is not None
    with pytest.raises(ConfigError, match="HOOKS_SIGNING_KEY"):
        load_settings(HOOKS_SIGNING_KEY=f"whsec_{b64(20)}")


def test_signing_matches_the_reference_vector_and_the_reference_library() -> None:
    timestamp, expected = REF_SIGN
    ours = whsec.signature(whsec.decode_secret(REF_SECRET), REF_MSG_ID, timestamp, REF_PAYLOAD.encode())
    assert f"v1,{ours}" == expected
    reference = Webhook(f"whsec_{REF_SECRET}").sign(REF_MSG_ID, datetime.fromtimestamp(timestamp, UTC), REF_PAYLOAD)
    assert reference == expected
    headers = signed_headers(f"whsec_{REF_SECRET}", REF_PAYLOAD, REF_MSG_ID, datetime.fromtimestamp(timestamp, UTC))
    assert headers["webhook-signature"] == expected
    assert headers["webhook-timestamp"] == str(timestamp)


# -- requests to the real receiver -----------------------------------------------------------------


def reference_headers(body: str = BODY, timestamp: int | None = None, secret: str = REF_SECRET) -> dict[str, str]:
    """Headers signed by the reference library itself, as every suite builds its test payload."""
    seconds = int(time.time()) if timestamp is None else timestamp
    signature = Webhook(secret).sign(REF_MSG_ID, datetime.fromtimestamp(seconds, UTC), body)
    return {"webhook-id": REF_MSG_ID, "webhook-timestamp": str(seconds), "webhook-signature": signature,
            "content-type": "application/json"}


@pytest.fixture
async def ref(stack_factory) -> Stack:
    """A receiver configured with the reference suites' secret (no `whsec_`, as they use it)."""
    return await stack_factory(worker=False, DODO_PAYMENTS_WEBHOOK_KEY=REF_SECRET)


async def answer(stack: Stack, headers: dict[str, str], body: str = BODY) -> int:
    """POST and return the status, checking a refusal stored nothing and an acceptance did."""
    response = await stack.post(body, headers)
    stored = await stack.event(headers.get("webhook-id", REF_MSG_ID))
    assert (stored is not None) == (response.status_code == 200), response.text
    if response.status_code != 200:
        assert "error" in response.json()
    return response.status_code


def _without(name: str) -> dict[str, str]:
    headers = reference_headers()
    del headers[name]
    return headers


def _signature(value: str) -> dict[str, str]:
    return reference_headers() | {"webhook-signature": value}


def _valid() -> str:
    return reference_headers()["webhook-signature"]


# (name, headers builder, accepted?) -- the reference suites' cases first, then the edges.
REFERENCE_CASES = [
    ("valid signature", reference_headers, True),
    ("unbranded headers", reference_headers, True),
    ("missing id", lambda: _without("webhook-id"), False),
    ("missing timestamp", lambda: _without("webhook-timestamp"), False),
    ("missing signature", lambda: _without("webhook-signature"), False),
    ("invalid signature (go, js)", lambda: _signature(REF_WRONG), False),
    ("invalid signature (js, php)", lambda: _signature("v1,dawfeoifkpqwoekfpqoekf"), False),
    ("invalid signature (ruby, c#)", lambda: _signature("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLawdd"), False),
    ("invalid signature (python)", lambda: _signature("v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OA="), False),
    ("partial signature (js)", lambda: _signature(_valid()[:8]), False),
    ("empty v1 (js)", lambda: _signature("v1,"), False),
    ("invalid timestamp (python, js)", lambda: reference_headers() | {"webhook-timestamp": "hello"}, False),
    ("old timestamp", lambda: reference_headers(timestamp=int(time.time()) - 301), False),
    ("new timestamp", lambda: reference_headers(timestamp=int(time.time()) + 301), False),
    ("negative timestamp (php)", lambda: reference_headers() | {"webhook-timestamp": "-161426533"}, False),
    ("multi signature", lambda: _signature(" ".join([REF_WRONG, "v2," + REF_WRONG[3:], _valid(), REF_WRONG])),
     True),
]


@pytest.mark.parametrize(("name", "build", "accepted"), REFERENCE_CASES, ids=[c[0] for c in REFERENCE_CASES])
async def test_reference_suite_vectors(ref: Stack, name: str, build, accepted: bool) -> None:
    assert await answer(ref, build()) == (200 if accepted else 401)


async def test_the_reference_secret_with_and_without_prefix(stack_factory) -> None:
    stack = await stack_factory(worker=False, DODO_PAYMENTS_WEBHOOK_KEY=f"whsec_{REF_SECRET}")
    assert await answer(stack, reference_headers()) == 200


@pytest.mark.parametrize(
    "secret", [f"whsec_{b64(32)}", f"whsec_{b64(32, padded=False)}", f"whsec_{b64(64)}"],
    ids=["32-padded", "32-unpadded", "64-padded"])
async def test_the_receiver_runs_with_each_secret_size(stack_factory, secret: str) -> None:
    stack = await stack_factory(worker=False, DODO_PAYMENTS_WEBHOOK_KEY=secret)
    assert await answer(stack, signed_headers(secret, BODY)) == 200


def _after(prefix: str) -> dict[str, str]:
    headers = reference_headers()
    return headers | {"webhook-signature": f"{prefix} {headers['webhook-signature']}"}


# Malformed entries before the valid one are skipped, as the Go and JavaScript libraries do
# (the Python package raises on the first one).
MALFORMED_ENTRIES = {
    "no comma": "invalid_signature",
    "empty entry": REF_WRONG + " ",  # two spaces: an empty entry between two others
    "bad padding": "v1,abc",
    "three parts": "v1,AAAA,BBBB",
    "other version": "v2,AAAA",
    "only a comma": ",",
}


@pytest.mark.parametrize("entry", MALFORMED_ENTRIES.values(), ids=MALFORMED_ENTRIES.keys())
async def test_malformed_signature_entries_are_skipped(ref: Stack, entry: str) -> None:
    assert await answer(ref, _after(entry)) == 200


async def test_a_valid_value_as_second_part_of_a_three_part_entry_counts_like_go(ref: Stack) -> None:
    valid = _valid().removeprefix("v1,")
    assert await answer(ref, _signature(f"v1,{valid},trailing")) == 200


def _timestamp(spelling: str) -> dict[str, str]:
    """Signed over the integer T, sent as another spelling of T."""
    return reference_headers() | {"webhook-timestamp": spelling.replace("T", reference_headers()["webhook-timestamp"])}


# (Spaces around the value are HTTP's optional white space: they never reach the receiver. A
# leading zero is still integer seconds, and Go's ParseInt takes it: accepted.)
FORBIDDEN_TIMESTAMPS = {"fraction": "T.9", "zero fraction": "T.0", "plus sign": "+T", "hex": "0xT"}


@pytest.mark.parametrize("spelling", FORBIDDEN_TIMESTAMPS.values(), ids=FORBIDDEN_TIMESTAMPS.keys())
async def test_only_integer_seconds_are_a_timestamp(ref: Stack, spelling: str) -> None:
    assert await answer(ref, _timestamp(spelling)) == 401


async def test_exponent_and_underscore_timestamps_are_refused(ref: Stack) -> None:
    now = int(time.time())
    signed = reference_headers(timestamp=now - now % 1000)  # T = k * 1000, so "ke3" means T
    exponent = f"{(now - now % 1000) // 1000}e3"
    assert float(exponent) == float(signed["webhook-timestamp"])
    assert await answer(ref, signed | {"webhook-timestamp": exponent}) == 401
    digits = signed["webhook-timestamp"]
    underscored = digits[:4] + "_" + digits[4:]
    assert float(underscored) == float(digits)  # what the Python package reads it as
    assert await answer(ref, signed | {"webhook-timestamp": underscored}) == 401


FORBIDDEN_SIGNATURES = {
    "characters outside base64": lambda v: v[:10] + "**" + v[10:],
    "unpadded": lambda v: v.rstrip("="),
    "url-safe alphabet": lambda v: v.replace("+", "-").replace("/", "_") + ("" if "+" in v or "/" in v else "-"),
    "white space inside": lambda v: v[:10] + "\t" + v[10:],
}


@pytest.mark.parametrize("spoil", FORBIDDEN_SIGNATURES.values(), ids=FORBIDDEN_SIGNATURES.keys())
async def test_a_signature_is_its_canonical_base64_only(ref: Stack, spoil) -> None:
    value = _valid().removeprefix("v1,")
    assert await answer(ref, _signature("v1," + spoil(value))) == 401


async def test_a_rotated_secret_is_still_checked_after_a_malformed_entry(stack_factory) -> None:
    old, new = f"whsec_{b64(32)}", f"whsec_{b64(48)}"
    stack = await stack_factory(worker=False, DODO_PAYMENTS_WEBHOOK_KEY=f"{new},{old}")
    headers = signed_headers(old, BODY)
    headers["webhook-signature"] = "v1,abc " + headers["webhook-signature"]
    assert await answer(stack, headers) == 200


# -- bodies the parser cannot take -----------------------------------------------------------------


def nested(depth: int) -> str:
    """An envelope whose nesting (the envelope itself counted) is exactly `depth`."""
    inner = "[" * (depth - 2) + "]" * (depth - 2)
    return '{"type": "payment.succeeded", "data": {"metadata": ' + inner + "}}" if depth > 2 else \
        '{"type": "payment.succeeded", "data": {}}'


@pytest.mark.parametrize("depth", [1_000, 100_000, MAX_DEPTH + 1])
async def test_a_signed_body_nested_too_deep_is_400_and_logged(ref: Stack, depth: int,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    body = nested(depth)
    assert len(body) < ref.settings.WEBHOOK_MAX_BYTES  # the nesting, not the size, is under test
    caplog.set_level(logging.WARNING, logger="dodo_worker.receiver")
    response = await ref.post(body, reference_headers(body))
    assert response.status_code == 400
    assert response.json() == {"error": f"body is nested more than {MAX_DEPTH} levels deep"}
    assert await ref.event(REF_MSG_ID) is None
    assert any("webhook refused: 400" in r.getMessage() and REF_MSG_ID in r.getMessage() for r in caplog.records)


async def test_a_body_at_the_nesting_limit_is_stored(ref: Stack) -> None:
    body = nested(MAX_DEPTH)
    assert json.loads(body)["type"] == "payment.succeeded"
    assert await answer(ref, reference_headers(body), body) == 200


def test_the_tolerance_is_five_minutes_each_way() -> None:
    from worker.verify import SignatureError, Verifier

    verifier = Verifier([REF_SECRET])
    now = 1_800_000_000
    for offset, ok in ((-300, True), (300, True), (-301, False), (301, False)):
        headers = reference_headers(timestamp=now + offset)
        if ok:
            verifier.verify(BODY.encode(), headers, now=now)
        else:
            with pytest.raises(SignatureError) as caught:
                verifier.verify(BODY.encode(), headers, now=now)
            assert caught.value.reason == "timestamp"
    assert timedelta(seconds=whsec.TOLERANCE_SECONDS) == timedelta(minutes=5)
