"""`GET /v1/downloads/{token}`: the file of a file grant, for a signed, unexpired token.

| answer | when |
|---|---|
| 200 with the file (local) or 302 to a presigned S3 URL | the token is good and the grant is active |
| 403 `invalid download link` | the token was altered, is malformed, or was signed with another key |
| 403 `download no longer available` | the grant is revoked or suspended (a suspension can end, so not 410) |
| 404 `not found` | no such grant, not a file grant, the file left the catalog, or links are not configured |
| 410 `download link expired` | the token's time is up; the read API hands out a fresh link |

Every download served adds one to the grant's `downloads` (one atomic UPDATE, which also
re-checks that the grant is still active). `HEAD` answers the headers of `GET` and counts
nothing. A single `Range: bytes=a-b` (or `a-`, `-n`) is answered 206 with `Content-Range`
(416 when it starts past the end); it counts as a download only when it starts at byte 0, so a
resumed download is not a new one. Several ranges in one header are answered with the whole
file (200), as HTTP allows. Tokens are never logged.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

import anyio
from litestar import HttpMethod, Request, Response, route
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import File, Redirect, Stream
from sqlalchemy import update

from integrations.storage import S3Presigner, media_type
from worker.entitlements import tokens
from worker.entitlements.catalog import Catalog
from worker.entitlements.models import GrantKind, GrantRow, GrantStatus
from worker.runtime import Runtime
from worker.settings import Settings
from worker.web.responses import STORE_ERRORS, error

log = logging.getLogger("dodo_worker.downloads")

NO_STORE = {"cache-control": "no-store", "referrer-policy": "no-referrer"}
presigner = S3Presigner()  # its boto3 client is made on the first S3 download


async def _active_file_grant(runtime: Runtime, grant_id: str) -> GrantRow | Response[Any]:
    async with runtime.db.sessions() as session:
        grant = await session.get(GrantRow, grant_id)
    if grant is None or grant.kind != GrantKind.FILE:
        return error(404, "not found")
    if grant.status != GrantStatus.ACTIVE:
        return error(403, "download no longer available")
    return grant


async def _count(runtime: Runtime, grant_id: str) -> bool:
    """Add one download, in one UPDATE that re-checks the status: a revocation committed since
    the grant was read wins."""
    async with runtime.db.sessions() as session, session.begin():
        result = await session.execute(
            update(GrantRow).where(GrantRow.id == grant_id, GrantRow.status == GrantStatus.ACTIVE)
            .values(downloads=GrantRow.downloads + 1))
        return bool(getattr(result, "rowcount", 0) == 1)


_RANGE = re.compile(r"bytes=(\d*)-(\d*)")
CHUNK = 64 * 1024


def byte_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """`(first, last)` of a single `Range: bytes=a-b` (or `a-`, `-n`); None to serve the whole
    file (no Range, several ranges or a malformed one, which RFC 9110 lets a server ignore);
    "unsatisfiable" when the range starts past the end."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":  # the last n bytes
        suffix = int(last_text)
        return (max(0, size - suffix), size - 1) if suffix and size else "unsatisfiable"
    first = int(first_text)
    last = min(int(last_text), size - 1) if last_text else size - 1
    if last_text and int(last_text) < first:
        return None
    return (first, last) if first < size else "unsatisfiable"


def _resumes(header: str | None) -> bool:
    """A single range that does not start at byte 0 (the rest of a download already counted)."""
    match = _RANGE.fullmatch(header.strip()) if header else None
    return match is not None and (match.group(1) == "" or int(match.group(1)) > 0)


async def _slice(path: str, first: int, last: int) -> AsyncIterator[bytes]:
    async with await anyio.open_file(path, "rb") as handle:
        await handle.seek(first)
        left = last - first + 1
        while left > 0:
            chunk = await handle.read(min(CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
            yield chunk


@route("/v1/downloads/{token:str}", http_method=[HttpMethod.GET, HttpMethod.HEAD], exception_handlers=STORE_ERRORS)
async def download(token: FromPath[str], state: State, request: Request[Any, Any, Any]) -> Response[Any]:
    """GET serves (and counts) the file; HEAD answers the same headers with no body and counts
    nothing; a Range request not starting at byte 0 is the rest of a download, not a new one."""
    settings: Settings = state.settings
    runtime: Runtime = state.runtime
    catalog: Catalog = state.catalog
    key = tokens.signing_key(settings)
    if key is None:
        return error(404, "not found")
    try:
        grant_id, expiry = tokens.read_claims(key, token)
    except tokens.TokenError as exc:
        if exc.reason == "expired":
            return error(410, "download link expired")
        return error(403, "invalid download link")

    grant = await _active_file_grant(runtime, grant_id)
    if isinstance(grant, Response):
        return grant
    spec = catalog.file(grant.item)
    s3 = spec is not None and spec.bucket is not None and spec.key is not None
    if spec is None or not (s3 or (spec.path is not None and spec.path.is_file())):
        log.error("download of grant %s: file %r is not in the catalog or not on disk", grant_id, grant.item)
        return error(404, "not found")
    head = request.method == HttpMethod.HEAD
    size = 0 if s3 or spec.path is None else spec.path.stat().st_size
    wanted = None if s3 else byte_range(request.headers.get("range"), size)
    if wanted == "unsatisfiable":
        return Response(content=b"", status_code=416, headers={**NO_STORE, "content-range": f"bytes */{size}"})
    # S3 answers the range itself after the redirect: only its first byte tells a resumed download.
    continuing = (isinstance(wanted, tuple) and wanted[0] > 0) if not s3 else _resumes(request.headers.get("range"))
    if not head and not continuing and not await _count(runtime, grant_id):
        return error(403, "download no longer available")
    name = grant.file_name or spec.name
    if s3:
        url = await presigner.presign(str(spec.bucket), str(spec.key), expiry - time.time(), name)
        log.info("download of grant %s: redirect to %s", grant_id, spec.ref)
        return Redirect(url, status_code=302, headers=NO_STORE)
    path = str(spec.path)
    headers = {**NO_STORE, "accept-ranges": "bytes"}
    if isinstance(wanted, tuple):
        first, last = wanted
        log.info("download of grant %s: %s bytes %d-%d", grant_id, spec.ref, first, last)
        partial = {**headers, "content-range": f"bytes {first}-{last}/{size}",
                   "content-length": str(last - first + 1),
                   "content-disposition": f'attachment; filename="{quote(name)}"'}
        if head:
            return Response(content=b"", status_code=206, media_type=media_type(name), headers=partial)
        return Stream(_slice(path, first, last), status_code=206, media_type=media_type(name), headers=partial)
    if not head:
        log.info("download of grant %s: %s", grant_id, spec.ref)
    return File(path=path, filename=name, media_type=media_type(name),
                content_disposition_type="attachment", headers=headers)
