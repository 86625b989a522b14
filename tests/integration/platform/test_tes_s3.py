"""Data by URL, for real: tasks read `s3://` and `http://` inputs and write `s3://` outputs through
a live server and a real agent, against the S3-compatible server `make test` starts (moto's
standalone server, scripts/s3.sh) and a real HTTP server on loopback.

The agent signs with the provider's keys (AWS_* in its environment, dropped once read) and
serves only the buckets it is given (`--s3-bucket`); tasks never see the keys. A bucket that
stops answering at run time ends the task SYSTEM_ERROR naming the URL, and nothing is left
half-written. A site that declares a bucket (`buckets`) is where that bucket's data lives, so a
task that reads much of it lands there when moving the data elsewhere costs more.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import tes

from suanli.services.core import Role
from tests.objects import S3, S3_KEYS

from .conftest import FAST, SLOW_S, Platform

TES = "/ga4gh/tes/v1"
TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def _s3_agent(platform: Platform, provider: str, site: str, s3: S3, *buckets: str) -> None:
    options = ["--s3-endpoint", s3.endpoint]
    for bucket in buckets:
        options += ["--s3-bucket", bucket]
    platform.agent(provider, site, 2, *options, env=dict(S3_KEYS))


def _run(platform: Platform, token: str, document: dict[str, Any]) -> dict[str, Any]:
    """Create a TES task and wait for its end; its FULL view."""
    with platform.client(token) as http:
        created = http.post(f"{TES}/tasks", json=document)
        assert created.status_code == 200, created.text
        task_id = created.json()["id"]
    platform.wait_for(token, task_id, TERMINAL, timeout=90)
    with platform.client(token) as http:
        return dict(http.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_task_reads_s3_and_http_and_writes_s3_and_never_sees_the_keys(
    platform: Platform, s3: S3, web_root: tuple[Path, str]
) -> None:
    data, results = s3.bucket("data"), s3.bucket("results")
    s3.client.put_object(Bucket=data, Key="genome/chr1.txt", Body=b"ACGT\n")
    s3.client.put_object(Bucket=data, Key="reads/a.txt", Body=b"read a\n")
    s3.client.put_object(Bucket=data, Key="reads/deep/b.txt", Body=b"read b\n")
    root, base = web_root
    (root / "greeting.txt").write_text("hello from the web\n")

    provider = platform.token(Role.PROVIDER, "s3 provider")
    site = platform.site_with_pool(provider, count=4)
    _s3_agent(platform, provider, site, s3, data, results)
    token = platform.token(Role.CONSUMER, "s3 consumer")

    full = _run(
        platform,
        token,
        {
            "name": "s3 and web",
            "inputs": [
                {"path": "/in/chr1.txt", "url": f"s3://{data}/genome/chr1.txt"},
                {"path": "/in/reads", "url": f"s3://{data}/reads", "type": "DIRECTORY"},
                {"path": "/in/greeting.txt", "url": f"{base}/greeting.txt"},
            ],
            "outputs": [
                {"path": "/out/joined.txt", "url": f"s3://{results}/run-1/joined.txt"},
                {"path": "/out/env.txt", "url": f"s3://{results}/run-1/env.txt"},
            ],
            "executors": [
                {
                    "image": "alpine",
                    "command": [
                        "sh",
                        "-c",
                        "mkdir -p out && cat in/chr1.txt in/reads/a.txt in/reads/deep/b.txt "
                        "in/greeting.txt > out/joined.txt && env > out/env.txt",
                    ],
                }
            ],
        },
    )
    assert full["state"] == "COMPLETE", full["logs"]
    assert s3.read(results, "run-1/joined.txt") == b"ACGT\nread a\nread b\nhello from the web\n"
    logged = {(o["url"], o["path"], o["size_bytes"]) for o in full["logs"][0]["outputs"]}
    assert (f"s3://{results}/run-1/joined.txt", "/out/joined.txt", "38") in logged
    # the provider's keys never reached the task
    environment = s3.read(results, "run-1/env.txt").decode()
    assert "AWS_" not in environment
    assert S3_KEYS["AWS_SECRET_ACCESS_KEY"] not in environment

    # a bucket the provider does not serve is never touched with its keys
    foreign = s3.bucket("foreign")
    s3.client.put_object(Bucket=foreign, Key="secret.txt", Body=b"not yours\n")
    refused = _run(
        platform,
        token,
        {
            "inputs": [{"path": "/in/secret.txt", "url": f"s3://{foreign}/secret.txt"}],
            "executors": [{"image": "alpine", "command": ["cat", "in/secret.txt"]}],
        },
    )
    assert refused["state"] == "SYSTEM_ERROR"
    reason = refused["logs"][0]["system_logs"][-1]
    assert f"s3://{foreign}/secret.txt" in reason and "代理允许的存储桶" in reason

    # a missing object and a web page that is not there both end SYSTEM_ERROR naming the URL
    for url in (f"s3://{data}/genome/none.txt", f"{base}/none.txt"):
        missing = _run(
            platform,
            token,
            {
                "inputs": [{"path": "/in/x", "url": url}],
                "executors": [{"image": "alpine", "command": ["cat", "in/x"]}],
            },
        )
        assert missing["state"] == "SYSTEM_ERROR", url
        assert url in missing["logs"][0]["system_logs"][-1]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_bucket_gone_at_run_time_ends_the_task_naming_it_with_nothing_half_written(
    platform: Platform, s3: S3
) -> None:
    results, doomed = s3.bucket("results"), s3.bucket("doomed")
    provider = platform.token(Role.PROVIDER, "s3 provider")
    site = platform.site_with_pool(provider, count=4)
    _s3_agent(platform, provider, site, s3, results, doomed)
    token = platform.token(Role.CONSUMER, "s3 consumer")
    flag = "/in/go"
    with platform.client(token) as http:
        created = http.post(
            f"{TES}/tasks",
            json={
                "outputs": [
                    {"path": "/out/a.txt", "url": f"s3://{results}/a.txt"},
                    {"path": "/out/b.txt", "url": f"s3://{doomed}/b.txt"},
                ],
                "inputs": [{"path": flag, "content": "x"}],
                "executors": [
                    {
                        "image": "alpine",
                        # runs long enough for the bucket to go while it runs
                        "command": [
                            "sh",
                            "-c",
                            "mkdir -p out && echo a > out/a.txt && echo b > out/b.txt; sleep 3",
                        ],
                    }
                ],
            },
        )
        assert created.status_code == 200, created.text
        task_id = created.json()["id"]
    running = platform.wait_for(token, task_id, {"RUNNING", *TERMINAL}, timeout=60)
    assert running["state"] == "RUNNING", running
    s3.client.delete_bucket(Bucket=doomed)  # gone while the task runs

    ended = platform.wait_for(token, task_id, TERMINAL, timeout=60)
    assert ended["state"] == "SYSTEM_ERROR", ended
    with platform.client(token) as http:
        full = http.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json()
    reason = full["logs"][0]["system_logs"][-1]
    assert f"s3://{doomed}/b.txt" in reason and "no such bucket" in reason, reason
    assert full["logs"][0].get("outputs") in (None, [])
    # nothing half-written: the output for the bucket that still answers was not left behind
    assert s3.keys(results) == []


@pytest.mark.server_env(SUANLI_NETWORK_FEN_PER_GB="5")  # the network's price of moving a GB
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_task_lands_where_its_bucket_lives_when_moving_the_data_costs_more(
    platform: Platform, s3: S3
) -> None:
    genomes = s3.bucket("genomes")
    s3.client.put_object(Bucket=genomes, Key="chr1.txt", Body=b"ACGT\n")
    provider = platform.token(Role.PROVIDER, "two-site provider")
    near = platform.site_with_pool(provider, count=4, province="上海", price=1)
    with platform.client(provider) as http:
        made = http.post(
            "/v1/sites", json={"name": "data site", "province": "贵州", "buckets": [genomes]}
        )
        assert made.status_code == 201, made.text
        home = made.json()["id"]
        pool = http.post(
            "/v1/pools",
            json={"site_id": home, "device": "cpu", "count": 4, "price_fen_per_device_hour": 2},
        )
        assert pool.status_code == 201, pool.text
    for site in (near, home):
        _s3_agent(platform, provider, site, s3, genomes)
    token = platform.token(Role.CONSUMER, "data consumer")
    client = tes.HTTPClient(platform.url, token=token, timeout=30)

    def placed(inputs: list[tes.Input]) -> str:
        task_id = client.create_task(
            tes.Task(
                inputs=inputs,
                executors=[tes.Executor(image="alpine", command=["true"])],
                resources=tes.Resources(backend_parameters={"policy": "cost", "data_gb": "200"}),
            )
        )
        client.wait(task_id, timeout=90)
        task = client.get_task(task_id, view="BASIC")
        assert task.state == "COMPLETE", task.logs
        return str(task.logs[0].metadata["site"])

    # no s3 input: its data is at its origin, and the cheaper pool wins
    assert placed([]) == near
    # 200 GB in the bucket the Guizhou site serves: moving it to Shanghai costs more than the
    # dearer Guizhou pool
    assert placed([tes.Input(path="/in/chr1.txt", url=f"s3://{genomes}/chr1.txt")]) == home


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_download_longer_than_the_lease_keeps_the_task_and_can_be_canceled(
    platform: Platform, web_root: tuple[Path, str]
) -> None:
    """Inputs move in a worker thread while the agent keeps heartbeating: a download that takes
    twice the lease neither loses the task nor runs it twice, and a cancel that arrives during
    the download ends the task CANCELED without running it."""
    assert 1.5 * float(FAST["SUANLI_LEASE_S"]) < SLOW_S
    root, base = web_root
    (root / "slow").mkdir()
    (root / "slow" / "big.txt").write_text("a lot of data\n")
    provider = platform.token(Role.PROVIDER, "web provider")
    site = platform.site_with_pool(provider, count=4)
    platform.agent(provider, site, 2)
    token = platform.token(Role.CONSUMER, "web consumer")
    document = {
        "inputs": [{"path": "/in/big.txt", "url": f"{base}/slow/big.txt"}],
        "executors": [{"image": "alpine", "command": ["cat", "in/big.txt"]}],
    }
    full = _run(platform, token, document)
    assert full["state"] == "COMPLETE", full["logs"]
    assert full["logs"][0]["logs"][0]["stdout"] == "a lot of data\n"
    with platform.client(token) as http:
        native = http.get(f"/v1/tasks/{full['id']}").json()
    assert native["requeues"] == 0, native  # the lease held: it ran once, here

    with platform.client(token) as http:
        created = http.post(f"{TES}/tasks", json=document)
        task_id = created.json()["id"]
        leased = platform.wait_for(token, task_id, {"INITIALIZING", *TERMINAL}, timeout=30)
        assert leased["state"] == "INITIALIZING", leased  # the agent has it: downloading
        assert http.post(f"{TES}/tasks/{task_id}:cancel").status_code == 200
    ended = platform.wait_for(token, task_id, TERMINAL, timeout=60)
    assert ended["state"] == "CANCELED", ended
    assert ended["exit_code"] is None  # it never ran
