"""Data by URL for staging: `s3://` objects through boto3, `http(s)://` sources through httpx.

Why these libraries: boto3 is AWS's own SDK, kept in step with the S3 API; given an
`endpoint_url` it speaks to any S3-compatible store (MinIO, Ceph RGW, the S3 gateways of Chinese
clouds), signs every request (SigV4), retries what can be retried and moves large objects in
parts (s3transfer). httpx is already the project's HTTP client; a download is streamed to disk,
never held in memory.

The S3 configuration is the provider's, never the task's (`S3Config`): the endpoint and region
of the store the site uses, the keys the agent signs with, and the buckets tasks may name
(`buckets`). Those keys reach no task: a task's environment is built from scratch
(`backends.task_environment`), and the agent drops `AWS_*` keys from its own environment once
read (`runner.s3_config`). Because the agent signs with the provider's keys, a task may only
name the buckets the provider lists (a confused deputy otherwise: a task could read any bucket
the keys can); with none listed every `s3://` URL is refused, as every `file://` URL is with no
file roots.

An `http(s)://` input is never fetched from a link-local address (169.254.0.0/16, fe80::/10,
AWS's fd00:ec2::), at the first hop or after a redirect: cloud metadata services answer there
with the agent host's credentials, which a task must not obtain through its agent.

Failures name the URL: an unreachable endpoint, a missing bucket or object, a refused
signature, an HTTP error all raise `TransferFailed` with the URL and the field it came from.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import httpx

from suanli.errors import InvalidValue, SuanliError

__all__ = ["Remote", "S3Config", "TransferFailed", "is_remote", "split_s3"]

REMOTE_SCHEMES = frozenset({"s3", "http", "https"})
HTTP_TIMEOUT_S = 60.0
CHUNK_BYTES = 1 << 20
# below boto3's multipart threshold one plain GET or PUT moves an object: 3-4x faster for small
# objects than the transfer manager, which sets up its thread pool per call
SMALL_OBJECT_BYTES = 8 << 20


class TransferFailed(SuanliError):
    """A file could not be read from, or written to, its URL."""

    def __init__(self, field: str, url: str, detail: str, *, writing: bool = False) -> None:
        self.field, self.url, self.detail = field, url, detail
        verb, verb_zh = ("write", "写入") if writing else ("read", "读取")
        super().__init__(
            f"could not {verb} {url} ({field}): {detail}",
            f"无法{verb_zh} {url}（{field}）：{detail}",
        )


def is_remote(url: str) -> bool:
    """Whether a URL names object storage or the web rather than a local file."""
    return urlparse(url).scheme in REMOTE_SCHEMES


def split_s3(url: str) -> tuple[str, str]:
    """(bucket, key) of an `s3://bucket/key` URL; the key without its leading '/'."""
    parsed = urlparse(url)
    return parsed.netloc, parsed.path.lstrip("/")


@dataclass(frozen=True)
class S3Config:
    """How this agent reaches object storage: the endpoint (None: AWS), the region, the keys
    (None: boto3's own chain on the provider's machine) and the buckets tasks may name."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    buckets: tuple[str, ...] = ()
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)

    def client(self) -> Any:
        import boto3  # heavy: imported when a task first names an s3:// URL
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            aws_session_token=self.session_token,
            region_name=self.region,
        )
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(
                connect_timeout=5,
                read_timeout=60,
                retries={"max_attempts": 3, "mode": "standard"},
                s3={"addressing_style": "path"} if self.endpoint_url else {},
            ),
        )


# what a bare HTTP status means when S3 answers without a body (HEAD requests)
_BARE_STATUS = {
    "301": "the bucket lives in another region (HTTP 301): set --s3-region",
    "400": "bad request (HTTP 400)",
    "403": "access denied (HTTP 403): check the agent's S3 keys",
    "404": "not found (HTTP 404)",
}


def _s3_reason(exc: Exception, missing: str = "") -> str:
    """A short reason from a botocore error: the S3 error code and message where it has one;
    `missing` says what a bare 404 means for the call."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code, message = str(error.get("Code") or ""), error.get("Message")
        if code == "404" and missing:
            return f"{missing} (HTTP 404)"
        if code in _BARE_STATUS:
            return _BARE_STATUS[code]
        if code:
            return f"{code}: {message}" if message and message != code else code
    return f"{type(exc).__name__}: {exc}"


def _link_local(host: str) -> str | None:
    """The link-local address `host` names or resolves to (169.254.0.0/16, fe80::/10: where
    cloud metadata services answer, with the host's credentials), or None. A name that does not
    resolve is left to the request, which then fails on its own."""
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except (OSError, UnicodeError):
        return None
    for address in sorted(found):
        ip = ipaddress.ip_address(address.split("%", 1)[0])
        if ip.is_link_local or (ip.version == 6 and ip in _METADATA_V6):
            return str(ip)
    return None


_METADATA_V6 = ipaddress.ip_network("fd00:ec2::/64")  # AWS's IPv6 instance metadata


def _download(client: Any, bucket: str, key: str, target: Path, size: int | None) -> None:
    """One object to a file: a plain streamed GET when it is known to be small, else boto3's
    transfer manager (ranged GETs in parallel)."""
    if size is not None and size < SMALL_OBJECT_BYTES:
        body = client.get_object(Bucket=bucket, Key=key)["Body"]
        with open(target, "wb") as out:
            for chunk in body.iter_chunks(CHUNK_BYTES):
                out.write(chunk)
    else:
        client.download_file(bucket, key, str(target))


class Remote:
    """Reads and writes the remote URLs of one agent's tasks."""

    def __init__(self, s3: S3Config | None = None, *, http_timeout_s: float = HTTP_TIMEOUT_S):
        self.s3 = s3 or S3Config()
        self.http_timeout_s = http_timeout_s
        self._client: Any = None

    # s3 ---------------------------------------------------------------------------------------

    def _s3_client(self) -> Any:
        if self._client is None:
            self._client = self.s3.client()
        return self._client

    def _bucket(self, field_name: str, url: str) -> tuple[str, str]:
        bucket, key = split_s3(url)
        if bucket not in self.s3.buckets:
            allowed = ", ".join(self.s3.buckets) or "none (start the agent with --s3-bucket NAME)"
            raise InvalidValue(
                field_name,
                url,
                f"a bucket this agent serves: {allowed}",
                f"代理允许的存储桶：{allowed}",
            )
        return bucket, key

    def _s3_call(
        self, field_name: str, url: str, call: Any, *, writing: bool = False, missing: str = ""
    ) -> Any:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return call()
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            reason = _s3_reason(exc, missing)
            raise TransferFailed(field_name, url, reason, writing=writing) from None

    def check_bucket(self, field_name: str, url: str) -> None:
        """Raise unless the bucket of `url` is allowed and answers (before anything is written)."""
        bucket, _ = self._bucket(field_name, url)
        client = self._s3_client()
        self._s3_call(
            field_name,
            url,
            lambda: client.head_bucket(Bucket=bucket),
            writing=True,
            missing=f"no such bucket: {bucket}",
        )

    def put(self, field_name: str, source: Path, url: str) -> None:
        bucket, key = self._bucket(field_name, url)
        if not key:
            raise InvalidValue(field_name, url, "s3://bucket/key with a key", "带对象键的 s3 网址")
        client = self._s3_client()

        def put() -> None:
            if source.stat().st_size < SMALL_OBJECT_BYTES:
                with open(source, "rb") as body:
                    client.put_object(Bucket=bucket, Key=key, Body=body)
            else:
                client.upload_file(str(source), bucket, key)

        self._s3_call(field_name, url, put, writing=True)

    def delete(self, urls: Sequence[str]) -> None:
        """Remove objects written by a staging that then failed (best effort)."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._s3_client()
        for url in urls:
            bucket, key = split_s3(url)
            with contextlib.suppress(BotoCoreError, ClientError):
                client.delete_object(Bucket=bucket, Key=key)

    def _get_s3(self, field_name: str, url: str, target: Path, directory: bool) -> None:
        bucket, key = self._bucket(field_name, url)
        client = self._s3_client()
        if not directory:
            if not key:
                raise InvalidValue(
                    field_name, url, "s3://bucket/key with a key", "带对象键的 s3 网址"
                )
            self._s3_call(
                field_name,
                url,
                lambda: client.download_file(bucket, key, str(target)),
                missing="no such object (or bucket)",
            )
            return
        prefix = key.rstrip("/") + "/" if key else ""
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        found = 0
        for page in self._s3_call(field_name, url, lambda: list(pages)):
            for item in page.get("Contents") or []:
                name = str(item["Key"])[len(prefix) :]
                if not name or name.endswith("/"):
                    continue  # a "folder" marker
                parts = PurePosixPath(name).parts
                if any(part in ("..", ".") for part in parts) or name.startswith("/"):
                    raise TransferFailed(
                        field_name, url, f"object key {item['Key']!r} leaves its prefix"
                    )
                into = target.joinpath(*parts)
                into.parent.mkdir(parents=True, exist_ok=True)
                key_of, size = str(item["Key"]), int(item.get("Size") or 0)
                self._s3_call(
                    field_name,
                    url,
                    lambda key_of=key_of, into=into, size=size: _download(
                        client, bucket, key_of, into, size
                    ),
                )
                found += 1
        if not found:
            target.mkdir(parents=True, exist_ok=True)  # an empty prefix is an empty directory

    # http(s) ----------------------------------------------------------------------------------

    def _get_http(self, field_name: str, url: str, target: Path) -> None:
        def guard(request: httpx.Request) -> None:  # every hop, redirects included
            refused = _link_local(request.url.host)
            if refused is not None:
                raise TransferFailed(
                    field_name,
                    url,
                    f"{request.url.host} is a link-local address ({refused}): cloud metadata "
                    "services live there, and an agent never fetches from them for a task",
                )

        try:
            with (
                httpx.Client(
                    follow_redirects=True,
                    timeout=self.http_timeout_s,
                    event_hooks={"request": [guard]},
                ) as client,
                client.stream("GET", url) as answer,
            ):
                if answer.status_code != 200:
                    raise TransferFailed(
                        field_name, url, f"HTTP {answer.status_code} {answer.reason_phrase}"
                    )
                with open(target, "wb") as out:
                    for chunk in answer.iter_bytes(CHUNK_BYTES):
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise TransferFailed(field_name, url, f"{type(exc).__name__}: {exc}") from None

    # either -----------------------------------------------------------------------------------

    def get(self, field_name: str, url: str, target: Path, *, directory: bool = False) -> None:
        """Copy the object (or, as a directory, every object under the prefix) at `url` to
        `target`; http(s) URLs name one file."""
        scheme = urlparse(url).scheme
        if scheme == "s3":
            self._get_s3(field_name, url, target, directory)
        elif directory:
            raise InvalidValue(
                field_name, url, "an s3:// or file:// URL for a DIRECTORY input", "目录输入"
            )
        else:
            self._get_http(field_name, url, target)
