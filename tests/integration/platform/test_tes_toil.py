"""Toil 5.12 (the last Toil with a TES batch system) runs a two-job workflow through
`--batchSystem tes` on a live suanli server with a real agent, unchanged.

Toil lives in its own virtual environment (`SUANLI_TOIL_VENV`, default /var/tmp/suanli/venv-toil),
which `make test` builds with scripts/toil-env.sh: Toil pins py-tes 0.4.2, the suite uses py-tes
1.x. py-tes 0.4.2 reads the legacy service-info (`/ga4gh/tes/v1/tasks/service-info`, the shape
it parses). The agent runs each job's Toil worker with that environment on its PATH, as a
provider installs a workflow's software on its hosts; the workflow's job store is a directory
the submitter and the agent share (`--file-root`), outside /tmp, and Toil's worker changes into
its task directory, which must be the same path inside the task's private /tmp.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from suanli.services.core import Role

from .conftest import Platform

ROOT = Path(__file__).parents[3]
TOIL_ENV = Path(os.environ.get("SUANLI_TOIL_VENV", "/var/tmp/suanli/venv-toil"))
WORKFLOW = ROOT / "examples" / "toil" / "shout.py"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_toil_runs_a_two_job_workflow_through_tes(platform: Platform, shared_dir: Path) -> None:
    python = TOIL_ENV / "bin" / "python"
    assert python.exists(), f"no {python}: run the suite with 'make test' (it builds it)"
    provider = platform.token(Role.PROVIDER, "toil provider")
    site = platform.site_with_pool(provider, count=4)
    path = f"{TOIL_ENV / 'bin'}:{os.environ['PATH']}"
    platform.agent(
        provider,
        site,
        2,
        "--file-root",
        str(shared_dir),
        env={"PATH": path},
        work_root=shared_dir / "work",  # outside /tmp, as the agent's own default is
    )
    token = platform.token(Role.CONSUMER, "toil user")

    out = shared_dir / "result.txt"
    command = [
        str(python),
        str(WORKFLOW),
        str(shared_dir / "jobstore"),
        "--batchSystem",
        "tes",
        "--tesEndpoint",
        f"{platform.url}/ga4gh/tes",
        "--tesBearerToken",
        token,
        "--workDir",
        str(shared_dir),
        "--out",
        str(out),
        "--disableChaining",  # the child job runs as a TES task of its own, not in its parent's
    ]
    done = subprocess.run(
        command,
        cwd=shared_dir,
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-6000:]
    assert out.read_text() == "HELLO FROM THE COMPUTE NETWORK\n", log[-3000:]

    # each job ran as a TES task on the network, and ended COMPLETE
    with platform.client(token) as http:
        tasks = http.get("/ga4gh/tes/v1/tasks", params={"view": "BASIC"}).json()["tasks"]
    assert len(tasks) >= 2, tasks
    assert {t["state"] for t in tasks} == {"COMPLETE"}, [t["state"] for t in tasks]
