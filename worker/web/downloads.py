"""`GET /v1/downloads/{token}`: the file of a file grant, for a signed, unexpired token.

| answer | when |
|---|---|
| 200 with the file (local) or 302 to a presigned S3 URL | the token is good and the grant is active |
| 403 `invalid download link` | the token was altered, is malformed, or was signed with another key |
| 403 `download no longer available` | the grant is revoked or suspended (a suspension can end, so not 410) |
| 404 `not found` | no such grant, not a file grant, the file left the catalog, or links are not configured |
| 410 `download link expired` | the token's time is up; the read API hands out a fresh link |

Every download served adds one to the grant's `downloads` (one atomic UPDATE, which also
re-checks that the grant is still active). Tokens are never logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from litestar import Response, get
from litestar.datastructures import State
from litestar.response import File, Redirect
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


@get("/v1/downloads/{token:str}", exception_handlers=STORE_ERRORS)
async def download(token: str, state: State) -> Response[Any]:
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
    if not await _count(runtime, grant_id):
        return error(403, "download no longer available")
    name = grant.file_name or spec.name
    if s3:
        url = await presigner.presign(str(spec.bucket), str(spec.key), expiry - time.time(), name)
        log.info("download of grant %s: redirect to %s", grant_id, spec.ref)
        return Redirect(url, status_code=302, headers=NO_STORE)
    log.info("download of grant %s: %s", grant_id, spec.ref)
    return File(path=str(spec.path), filename=name, media_type=media_type(name),
                content_disposition_type="attachment", headers=NO_STORE)
