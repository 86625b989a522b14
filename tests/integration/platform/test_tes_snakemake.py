"""Snakemake with its TES executor plugin (`snakemake-executor-plugin-tes`, from PyPI) runs the
example workflow in `examples/snakemake` on a live suanli server with a real agent.

Snakemake and the plugin live in their own virtual environment (`SUANLI_SNAKEMAKE_VENV`,
default /var/tmp/suanli/venv-snakemake), which `make test` builds with scripts/snakemake-env.sh
(the plugin pins py-tes < 0.5, the suite uses py-tes 1.x). The agent runs each job's script
with that environment's `python` on its PATH, as a provider would install the workflow's
software on its hosts; it lies outside /tmp because every task gets a private /tmp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from suanli.services.core import Role
from tests.objects import S3, S3_KEYS

from .conftest import Platform

ROOT = Path(__file__).parents[3]
SNAKEMAKE_ENV = Path(os.environ.get("SUANLI_SNAKEMAKE_VENV", "/var/tmp/suanli/venv-snakemake"))
EXAMPLE = ROOT / "examples" / "snakemake"
EXAMPLE_S3 = ROOT / "examples" / "snakemake-s3"


def _run_workflow(
    platform: Platform,
    example: Path,
    shared_dir: Path,
    agent_options: list[str],
    storage: list[str],
    env: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Copy `example` under `shared_dir` (Snakemake keeps its state beside the Snakefile), start
    an agent whose tasks find Snakemake, and run the workflow through TES with the `storage`
    options; (the consumer's token, Snakemake's log). Asserts that Snakemake succeeded."""
    snakemake = SNAKEMAKE_ENV / "bin" / "snakemake"
    assert snakemake.exists(), f"no {snakemake}: run the suite with 'make test' (it builds it)"
    workflow = shared_dir / "workflow"
    shutil.copytree(example, workflow)
    provider = platform.token(Role.PROVIDER, "snakemake provider")
    site = platform.site_with_pool(provider, count=4)
    path = f"{SNAKEMAKE_ENV / 'bin'}:{os.environ['PATH']}"
    platform.agent(provider, site, 2, *agent_options, env={"PATH": path})
    token = platform.token(Role.CONSUMER, "snakemake user")
    command = [
        str(snakemake),
        "--executor",
        "tes",
        "--tes-url",
        f"{platform.url}/ga4gh/tes",
        "--jobs",
        "2",
        *storage,
        "--latency-wait",
        "5",
        "--seconds-between-status-checks",
        "1",
    ]
    done = subprocess.run(
        command,
        cwd=workflow,
        env={**os.environ, "SNAKEMAKE_TES_TOKEN": token, "PATH": path, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    return token, log


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_snakemake_runs_a_workflow_through_tes(platform: Platform, shared_dir: Path) -> None:
    token, log = _run_workflow(
        platform,
        EXAMPLE,
        shared_dir,
        ["--file-root", str(shared_dir)],
        ["--default-storage-provider", "fs", "--default-storage-prefix", f"{shared_dir}/store"],
    )
    # results go to the default storage (here a directory both sides share)
    result = shared_dir / "store" / "results" / "shout.txt"
    assert result.read_text() == "HELLO FROM THE COMPUTE NETWORK\n", log[-3000:]

    with platform.client(token) as http:
        tasks = http.get("/ga4gh/tes/v1/tasks", params={"view": "BASIC"}).json()["tasks"]
    assert sorted(t["state"] for t in tasks) == ["COMPLETE", "COMPLETE"]  # one task per rule


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_snakemake_reads_and_writes_s3_through_tes(
    platform: Platform, s3: S3, shared_dir: Path
) -> None:
    """The workflow's data lives in a bucket: Snakemake's S3 storage plugin (installed in the same
    environment) moves it inside each TES task, with the workflow's own S3 settings, which the
    plugin passes to each job; the agent needs no file root for it."""
    bucket = s3.bucket("workflow")
    s3.client.put_object(Bucket=bucket, Key="data/name.txt", Body=b"the west\n")
    token, log = _run_workflow(
        platform,
        EXAMPLE_S3,
        shared_dir,
        [],
        [
            "--default-storage-provider",
            "s3",
            "--default-storage-prefix",
            f"s3://{bucket}",
            "--storage-s3-endpoint-url",
            s3.endpoint,
        ],
        {
            "SNAKEMAKE_STORAGE_S3_ACCESS_KEY": S3_KEYS["AWS_ACCESS_KEY_ID"],
            "SNAKEMAKE_STORAGE_S3_SECRET_KEY": S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        },
    )
    assert s3.read(bucket, "results/shout.txt") == b"HELLO FROM THE WEST\n", log[-3000:]
    assert sorted(s3.keys(bucket)) == [
        "data/name.txt",
        "results/greeting.txt",
        "results/shout.txt",
    ]
    with platform.client(token) as http:
        tasks = http.get("/ga4gh/tes/v1/tasks", params={"view": "BASIC"}).json()["tasks"]
    assert sorted(t["state"] for t in tasks) == ["COMPLETE", "COMPLETE"]  # one task per rule
