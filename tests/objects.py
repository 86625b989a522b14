"""The S3-compatible server `make test` starts (scripts/s3.sh: moto's standalone server, its URL
in SUANLI_TEST_S3_URL), for the tests of data by URL; started here the same way when a test runs
outside `make test`."""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

S3_KEYS = {"AWS_ACCESS_KEY_ID": "suanli-test-key", "AWS_SECRET_ACCESS_KEY": "suanli-test-secret"}


@dataclass
class S3:
    """The server's endpoint and a boto3 client of it signed with `S3_KEYS`."""

    endpoint: str
    client: Any

    def bucket(self, stem: str) -> str:
        """A new, empty bucket of this test's own (a fresh name: the server outlives tests)."""
        name = f"{stem}-{secrets.token_hex(4)}"
        self.client.create_bucket(Bucket=name)
        return name

    def read(self, bucket: str, key: str) -> bytes:
        return bytes(self.client.get_object(Bucket=bucket, Key=key)["Body"].read())

    def keys(self, bucket: str) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=bucket)
        return [item["Key"] for item in listed.get("Contents") or []]


def s3_server() -> S3:
    import boto3

    endpoint = os.environ.get("SUANLI_TEST_S3_URL")
    if not endpoint:
        script = Path(__file__).parents[1] / "scripts" / "s3.sh"
        started = subprocess.run(
            [str(script), "start"], capture_output=True, text=True, check=False, timeout=600
        )
        assert started.returncode == 0, f"scripts/s3.sh start failed: {started.stderr}"
        endpoint = started.stdout.strip()
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
    )
    return S3(endpoint, client)
