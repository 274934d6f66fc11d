"""`GET /v1/downloads/{token}`: a paid file is served from the link the read API hands out, and
refused once revoked, tampered with or expired; S3 files redirect to a presigned URL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from tests.entitlements.conftest import (
    FILE_ONLY,
    GUIDE_BYTES,
    PRODUCT,
    entitlements,
    payment,
    refund,
    send_and_wait,
    write_catalog,
)
from tests.support import Stack
from worker.entitlements import tokens
from worker.entitlements.models import GrantRow
from worker.testing.kit import Dodo

S3_PRODUCT = "pdt_s3_book"
S3_CATALOG = f'[products.{S3_PRODUCT}]\nfiles = ["s3://dodo-test-bucket/books/Book v2.epub"]\n'


async def file_grant(stack: Stack | Dodo, payment_id: str, product: str = FILE_ONLY) -> dict[str, Any]:
    await send_and_wait(stack, "payment.succeeded", payment(payment_id, [(product, 1)]))
    return next(g for g in await entitlements(stack, payment_id=payment_id) if g["kind"] == "file")


async def downloads(stack: Stack | Dodo, grant_id: str) -> int:
    async with stack.db.sessions() as session:
        grant = await session.get(GrantRow, grant_id)
        assert grant is not None
        return grant.downloads


def signing_key(stack: Stack | Dodo) -> bytes:
    key = tokens.signing_key(stack.settings)
    assert key is not None
    return key


async def test_file_is_served_and_counted(dodo: Dodo) -> None:
    grant = await file_grant(dodo, "pay_dl")
    assert grant["file"]["name"] == "guide.pdf"
    url = grant["file"]["download_url"]
    assert url.startswith(f"{dodo.url}/v1/downloads/")

    response = await dodo.http.get(url)
    assert response.status_code == 200
    assert response.content == GUIDE_BYTES
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="guide.pdf"'
    assert response.headers["cache-control"] == "no-store"

    answers = await asyncio.gather(*(dodo.http.get(url) for _ in range(6)))
    assert [r.status_code for r in answers] == [200] * 6
    assert await downloads(dodo, grant["id"]) == 7


async def test_refused_after_revoke_tamper_and_expiry(dodo: Dodo) -> None:
    grant = await file_grant(dodo, "pay_dl", PRODUCT)
    url = grant["file"]["download_url"]
    token = url.rsplit("/", 1)[1]
    base = f"{dodo.url}/v1/downloads"

    payload, mac = token.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    for bad in (f"{payload}.{flipped}", f"{payload[:-1]}x.{mac}", "not-a-token",
                tokens.make_token(b"another key" * 3, grant["id"], 600)):
        response = await dodo.http.get(f"{base}/{bad}")
        assert (response.status_code, response.json()) == (403, {"error": "invalid download link"})

    expired = tokens.make_token(signing_key(dodo), grant["id"], 60, now=time.time() - 3600)
    response = await dodo.http.get(f"{base}/{expired}")
    assert (response.status_code, response.json()) == (410, {"error": "download link expired"})

    licence = next(g for g in await entitlements(dodo, payment_id="pay_dl") if g["kind"] == "license_key")
    for grant_id in (licence["id"], "grt_does_not_exist"):  # signed, but no file behind it
        response = await dodo.http.get(f"{base}/{tokens.make_token(signing_key(dodo), grant_id, 600)}")
        assert (response.status_code, response.json()) == (404, {"error": "not found"})

    assert (await dodo.http.get(url)).status_code == 200
    await send_and_wait(dodo, "refund.succeeded", refund("pay_dl", "ref_dl"))
    response = await dodo.http.get(url)
    assert (response.status_code, response.json()) == (403, {"error": "download no longer available"})
    revoked = next(g for g in await entitlements(dodo, payment_id="pay_dl") if g["kind"] == "file")
    assert (revoked["status"], revoked["file"]["download_url"]) == ("revoked", None)
    assert await downloads(dodo, grant["id"]) == 1


@pytest.fixture
def fake_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Credentials and a region so boto3 can presign; presigning never touches the network."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAIOSFODNN7EXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")


async def test_s3_file_redirects_to_a_presigned_url(stack_factory: Any, tmp_path: Path, fake_aws: None) -> None:
    catalog = write_catalog(tmp_path, extra=S3_CATALOG)
    stack: Stack = await stack_factory(ENTITLEMENTS_FILE=str(catalog), DOWNLOAD_TOKEN_TTL_SECONDS=300)
    grant = await file_grant(stack, "pay_s3", S3_PRODUCT)
    assert grant["file"]["name"] == "Book v2.epub"

    response = await stack.http.get(grant["file"]["download_url"])
    assert response.status_code == 302
    location = urlsplit(response.headers["location"])
    query = parse_qs(location.query)
    assert location.scheme == "https"
    assert "dodo-test-bucket" in location.netloc + location.path
    assert unquote(location.path).endswith("/books/Book v2.epub")
    assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"]
    assert query["X-Amz-Signature"][0]
    assert query["X-Amz-Credential"][0].startswith("AKIAIOSFODNN7EXAMPLE/")
    assert 250 <= int(query["X-Amz-Expires"][0]) <= 300  # the token's remaining life, not more
    assert query["response-content-disposition"][0].startswith('attachment; filename="Book v2.epub"')
    assert response.headers["cache-control"] == "no-store"
    assert await downloads(stack, grant["id"]) == 1
