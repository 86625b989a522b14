"""Staging by s3:// URL against the real S3-compatible test server (moto's standalone server), and
the agent's S3 configuration: allowed buckets, keys that leave the environment, all-or-nothing
outputs, object keys that try to leave their directory."""

from __future__ import annotations

import http.server
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from suanli.agent.objects import Remote, S3Config, TransferFailed
from suanli.agent.runner import s3_config
from suanli.agent.staging import stage_in, stage_out
from suanli.errors import InvalidValue
from tests.objects import S3, S3_KEYS


def _remote(s3: S3, *buckets: str) -> Remote:
    return Remote(
        S3Config(
            endpoint_url=s3.endpoint,
            buckets=buckets,
            access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        )
    )


def test_inputs_from_objects_and_prefixes(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket("in")
    s3.client.put_object(Bucket=bucket, Key="one.txt", Body=b"one\n")
    s3.client.put_object(Bucket=bucket, Key="tree/a.txt", Body=b"a\n")
    s3.client.put_object(Bucket=bucket, Key="tree/sub/b.txt", Body=b"b\n")
    s3.client.put_object(Bucket=bucket, Key="tree/sub/", Body=b"")  # a "folder" marker
    task = tmp_path / "task"
    inputs = [
        {"path": "/data/one.txt", "url": f"s3://{bucket}/one.txt", "type": "FILE"},
        {"path": "/data/tree", "url": f"s3://{bucket}/tree/", "type": "DIRECTORY"},
        {"path": "/data/empty", "url": f"s3://{bucket}/nothing", "type": "DIRECTORY"},
    ]
    stage_in(task, inputs, [], [], _remote(s3, bucket))
    assert (task / "data" / "one.txt").read_text() == "one\n"
    assert (task / "data" / "tree" / "a.txt").read_text() == "a\n"
    assert (task / "data" / "tree" / "sub" / "b.txt").read_text() == "b\n"
    assert (task / "data" / "empty").is_dir() and not any((task / "data" / "empty").iterdir())


def test_a_bucket_the_provider_does_not_serve_is_refused_before_any_request(
    s3: S3, tmp_path: Path
) -> None:
    bucket = s3.bucket("private")
    s3.client.put_object(Bucket=bucket, Key="secret.txt", Body=b"not yours\n")
    inputs = [{"path": "/s", "url": f"s3://{bucket}/secret.txt"}]
    with pytest.raises(InvalidValue, match="--s3-bucket") as caught:
        stage_in(tmp_path / "task", inputs, [], [], _remote(s3))  # serves no bucket
    assert caught.value.field == "inputs[0].url"
    with pytest.raises(InvalidValue, match="other"):
        stage_in(tmp_path / "task", inputs, [], [], _remote(s3, "other"))
    assert not (tmp_path / "task" / "s").exists()


def test_an_object_key_cannot_lead_out_of_the_input_directory(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket("hostile")
    s3.client.put_object(Bucket=bucket, Key="tree/ok.txt", Body=b"ok\n")
    s3.client.put_object(Bucket=bucket, Key="tree/../../../escape.txt", Body=b"gotcha\n")
    task = tmp_path / "task"
    inputs = [{"path": "/data/tree", "url": f"s3://{bucket}/tree", "type": "DIRECTORY"}]
    with pytest.raises(TransferFailed, match="leaves its prefix"):
        stage_in(task, inputs, [], [], _remote(s3, bucket))
    assert not list(tmp_path.rglob("escape.txt"))


def test_a_missing_object_names_the_url(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket("in")
    url = f"s3://{bucket}/absent.txt"
    with pytest.raises(TransferFailed) as caught:
        stage_in(tmp_path / "task", [{"path": "/x", "url": url}], [], [], _remote(s3, bucket))
    assert url in str(caught.value) and "inputs[0].url" in str(caught.value)


def test_outputs_go_to_objects_and_a_missing_bucket_writes_nothing_anywhere(
    s3: S3, tmp_path: Path
) -> None:
    results = s3.bucket("results")
    task, shared = tmp_path / "task", tmp_path / "shared"
    (task / "out" / "many").mkdir(parents=True)
    shared.mkdir()
    (task / "out" / "a.txt").write_text("a\n")
    (task / "out" / "many" / "x.csv").write_text("x\n")
    (task / "out" / "many" / "y.csv").write_text("yy\n")
    remote = _remote(s3, results, "missing-bucket")
    outputs = [
        {"path": "/out/a.txt", "url": f"file://{shared}/a.txt"},
        {"path": "/out/a.txt", "url": f"s3://{results}/run/a.txt"},
        {"path": "/out/many/*.csv", "path_prefix": "/out/many", "url": f"s3://{results}/csv"},
        {"path": "/out/a.txt", "url": "s3://missing-bucket/a.txt"},
    ]
    with pytest.raises(TransferFailed, match="no such bucket") as caught:
        stage_out(task, outputs, [shared], remote)
    assert "s3://missing-bucket/a.txt" in str(caught.value)
    assert "outputs[3].url" in str(caught.value)
    assert s3.keys(results) == [] and not (shared / "a.txt").exists()

    logs = stage_out(task, outputs[:3], [shared], remote)
    assert sorted(s3.keys(results)) == ["csv/x.csv", "csv/y.csv", "run/a.txt"]
    assert s3.read(results, "csv/y.csv") == b"yy\n"
    assert {"url": f"s3://{results}/csv/y.csv", "path": "/out/many/y.csv", "size_bytes": "3"} in (
        logs
    )


def test_a_copy_that_fails_midway_removes_what_it_wrote(s3: S3, tmp_path: Path) -> None:
    first, second = s3.bucket("first"), s3.bucket("second")

    class BucketGoesAway(Remote):
        """The second bucket is deleted (for real) as soon as the first object is written."""

        def put(self, field_name: str, source: Path, url: str) -> None:
            super().put(field_name, source, url)
            if url.startswith(f"s3://{first}/"):
                s3.client.delete_bucket(Bucket=second)

    remote = BucketGoesAway(_remote(s3, first, second).s3)
    task, shared = tmp_path / "task", tmp_path / "shared"
    (task / "out").mkdir(parents=True)
    shared.mkdir()
    (task / "out" / "a.txt").write_text("a\n")
    outputs = [
        {"path": "/out/a.txt", "url": f"file://{shared}/a.txt"},
        {"path": "/out/a.txt", "url": f"s3://{first}/a.txt"},
        {"path": "/out/a.txt", "url": f"s3://{second}/a.txt"},
    ]
    with pytest.raises(TransferFailed, match=f"s3://{second}/a.txt"):
        stage_out(task, outputs, [shared], remote)
    assert s3.keys(first) == []  # uploaded, then removed again
    assert not (shared / "a.txt").exists()  # created, then removed again


def test_s3_config_takes_keys_out_of_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "from-env")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    config = s3_config("http://127.0.0.1:9000", None, ["data"])
    assert (config.access_key_id, config.secret_access_key) == ("from-env", "env-secret")
    assert "AWS_ACCESS_KEY_ID" not in os.environ and "AWS_SECRET_ACCESS_KEY" not in os.environ
    assert "env-secret" not in repr(config)

    keys = tmp_path / "s3-keys"
    keys.write_text("[default]\naws_access_key_id = AKIA1\naws_secret_access_key = s2\n")
    from_file = s3_config(None, "cn-north-1", [], keys)
    assert (from_file.access_key_id, from_file.secret_access_key) == ("AKIA1", "s2")
    assert from_file.region == "cn-north-1"

    keys.write_text("access_key_id = only-half\n")
    with pytest.raises(InvalidValue, match="secret_access_key") as caught:
        s3_config(None, None, [], keys)
    assert caught.value.field == "--s3-credentials-file"
    with pytest.raises(InvalidValue) as caught:
        s3_config("s3.example.org", None, [])
    assert caught.value.field == "--s3-endpoint"
    with pytest.raises(InvalidValue) as caught:
        s3_config(None, None, ["a/b"])
    assert caught.value.field == "--s3-bucket"


@pytest.fixture
def redirector() -> Iterator[str]:
    """A real HTTP server on loopback that answers every GET with a redirect to the cloud
    metadata address; its base URL."""

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_http_input_never_reaches_the_cloud_metadata_service(
    tmp_path: Path, redirector: str
) -> None:
    """A task must not obtain its agent host's cloud credentials through its agent: link-local
    addresses are refused before any connection, also at the end of a redirect."""
    for url in (
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[fe80::1]/",
        f"{redirector}/innocent.txt",
    ):
        with pytest.raises(TransferFailed, match="link-local") as caught:
            stage_in(tmp_path / "task", [{"path": "/x", "url": url}], [], [], Remote())
        assert url in str(caught.value)
    assert not (tmp_path / "task" / "x").exists()
