"""`/v1/downloads/{token}` taken literally: a token is served only exactly as issued, HEAD answers
the headers and counts nothing, and a Range request gets those bytes (206) without counting a
resumed download twice."""

from __future__ import annotations

from tests.entitlements.conftest import FILE_ONLY, GUIDE_BYTES
from tests.entitlements.test_downloads import downloads, file_grant
from tests.support import Stack


async def test_a_junk_padded_token_is_refused(ent_stack: Stack) -> None:
    grant = await file_grant(ent_stack, "pay_junk", FILE_ONLY)
    url = grant["file"]["download_url"]
    base, token = url.rsplit("/", 1)
    payload, mac = token.split(".")
    # The lenient decoder dropped characters outside the alphabet and accepted padding.
    for junk in (f"{payload[:4]}!!{payload[4:]}.{mac}", f"{payload}.{mac[:6]}~{mac[6:]}",
                 f"{payload}==.{mac}", f"{payload}.{mac}=", f"{payload}.{mac}%20"):
        response = await ent_stack.http.get(f"{base}/{junk}")
        assert (response.status_code, response.json()) == (403, {"error": "invalid download link"}), junk
    assert await downloads(ent_stack, grant["id"]) == 0
    assert (await ent_stack.http.get(url)).status_code == 200


async def test_head_answers_the_headers_and_counts_nothing(ent_stack: Stack) -> None:
    grant = await file_grant(ent_stack, "pay_head", FILE_ONLY)
    url = grant["file"]["download_url"]
    response = await ent_stack.http.head(url)
    assert response.status_code == 200, response.text
    assert response.content == b""
    assert response.headers["content-length"] == str(len(GUIDE_BYTES))
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-disposition"] == 'attachment; filename="guide.pdf"'
    assert await downloads(ent_stack, grant["id"]) == 0


async def test_a_range_request_gets_those_bytes_and_a_resumed_one_is_not_a_new_download(ent_stack: Stack) -> None:
    grant = await file_grant(ent_stack, "pay_range", FILE_ONLY)
    url = grant["file"]["download_url"]
    size = len(GUIDE_BYTES)

    first = await ent_stack.http.get(url, headers={"Range": "bytes=0-9"})
    assert first.status_code == 206, first.text
    assert first.content == GUIDE_BYTES[:10]
    assert first.headers["content-range"] == f"bytes 0-9/{size}"
    assert await downloads(ent_stack, grant["id"]) == 1  # a download starts at byte 0

    rest = await ent_stack.http.get(url, headers={"Range": "bytes=10-"})
    assert rest.status_code == 206
    assert first.content + rest.content == GUIDE_BYTES
    assert rest.headers["content-range"] == f"bytes 10-{size - 1}/{size}"
    tail = await ent_stack.http.get(url, headers={"Range": "bytes=-5"})
    assert (tail.status_code, tail.content) == (206, GUIDE_BYTES[-5:])
    assert await downloads(ent_stack, grant["id"]) == 1  # resumed, not new

    beyond = await ent_stack.http.get(url, headers={"Range": f"bytes={size}-"})
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{size}"
    several = await ent_stack.http.get(url, headers={"Range": "bytes=0-1,5-6"})
    assert (several.status_code, several.content) == (200, GUIDE_BYTES)  # served whole, as HTTP allows
    assert await downloads(ent_stack, grant["id"]) == 2
