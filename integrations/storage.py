"""Where granted files live: a local file (streamed by the web process) or an S3 object (the web
process answers with a redirect to a short-lived presigned GET URL; the bytes never pass here).

S3 credentials and region come from boto3's usual places (AWS_ACCESS_KEY_ID, AWS_REGION, an
instance role, ~/.aws); AWS_ENDPOINT_URL_S3 points it at MinIO, R2 or another S3-compatible
store. Presigning is a local computation: no request reaches S3 until the customer follows
the link.
"""

from __future__ import annotations

import asyncio
import mimetypes
import threading
from typing import Any
from urllib.parse import quote

# A presigned URL only has to outlive the redirect the browser follows at once; however long the
# download token still lives, the S3 link lasts at most this long.
PRESIGN_MAX_SECONDS = 900


def media_type(name: str) -> str:
    guessed, _ = mimetypes.guess_type(name)
    return guessed or "application/octet-stream"


def attachment(name: str) -> str:
    """A Content-Disposition value that names the file, safe for any characters in `name`."""
    ascii_name = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in name) or "download"
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name, safe='')}"


class S3Presigner:
    """Presigned GET URLs; the boto3 client is made on first use (importing and configuring boto3
    costs time and memory a process without S3 files should not pay)."""

    def __init__(self, **client_options: Any) -> None:
        self._options = client_options
        self._client: Any = None
        self._lock = threading.Lock()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import boto3
                from botocore.config import Config

                self._client = boto3.session.Session().client(
                    "s3", config=Config(signature_version="s3v4"), **self._options)
            return self._client

    def presign_sync(self, bucket: str, key: str, seconds: int, name: str) -> str:
        params = {
            "Bucket": bucket,
            "Key": key,
            "ResponseContentDisposition": attachment(name),
            "ResponseContentType": media_type(name),
        }
        url: str = self.client().generate_presigned_url("get_object", Params=params, ExpiresIn=seconds)
        return url

    async def presign(self, bucket: str, key: str, remaining_seconds: float, name: str) -> str:
        """A GET URL valid for the token's remaining life, at most PRESIGN_MAX_SECONDS."""
        seconds = max(1, min(PRESIGN_MAX_SECONDS, int(remaining_seconds)))
        return await asyncio.to_thread(self.presign_sync, bucket, key, seconds, name)
