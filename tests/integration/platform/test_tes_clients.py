"""TES clients as they ship, unchanged: HTTP Basic with the token as the password (what
conformance suites and `user:pass@host` clients send), and py-tes 0.4.2 (the client Toil 5.12
pins, in its own environment) reading the legacy service-info and running a task."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import textwrap
from pathlib import Path

import httpx
import pytest
import tes

from .conftest import Platform
from .test_tes import running  # noqa: F401 (a fixture)

TES = "/ga4gh/tes/v1"
TOIL_ENV = Path(os.environ.get("SUANLI_TOIL_VENV", "/var/tmp/suanli/venv-toil"))


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_http_basic_with_the_token_as_password(running: tuple[Platform, str]) -> None:  # noqa: F811
    platform, token = running
    client = tes.HTTPClient(platform.url, user="anyone", password=token, timeout=30)
    task_id = client.create_task(
        tes.Task(executors=[tes.Executor(image="alpine", command=["echo", "basic"])])
    )
    done = client.wait(task_id, timeout=60)
    assert done.state == "COMPLETE"
    assert client.get_task(task_id, "FULL").logs[0].logs[0].stdout == "basic\n"
    # the same credentials as a URL's user:pass@host
    host = platform.url.removeprefix("http://")
    listed = httpx.get(f"http://someone:{token}@{host}{TES}/tasks", timeout=30)
    assert listed.status_code == 200 and task_id in [t["id"] for t in listed.json()["tasks"]]

    wrong = httpx.get(f"{platform.url}{TES}/tasks", headers={"Authorization": _basic("u", "x")})
    assert wrong.status_code == 401
    for malformed in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic"):
        answer = httpx.get(f"{platform.url}{TES}/tasks", headers={"Authorization": malformed})
        assert answer.status_code == 401, malformed
        assert "HTTP Basic with the token as the password" in answer.json()["error"]["message"]
    # Basic is for TES clients: the native API asks for the bearer token
    native = httpx.get(f"{platform.url}/v1/tasks", headers={"Authorization": _basic("u", token)})
    assert native.status_code == 401


PY_TES_042 = """
import json, sys, tes
client = tes.HTTPClient(sys.argv[1], token=sys.argv[2], timeout=30)
info = client.get_service_info()
task_id = client.create_task(tes.Task(
    executors=[tes.Executor(image="alpine", command=["echo", "old client"])]))
done = client.wait(task_id, timeout=60)
full = client.get_task(task_id, "FULL")
print(json.dumps({"version": tes.__version__, "name": info.name, "storage": info.storage,
                  "state": done.state, "stdout": full.logs[0].logs[0].stdout}))
"""


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_py_tes_042_reads_the_legacy_service_info_and_runs_a_task(
    running: tuple[Platform, str],  # noqa: F811
) -> None:
    platform, token = running
    python = TOIL_ENV / "bin" / "python"
    assert python.exists(), f"no {python}: run the suite with 'make test' (it builds it)"
    done = subprocess.run(
        [str(python), "-c", textwrap.dedent(PY_TES_042), f"{platform.url}/ga4gh/tes", token],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["version"] == "0.4.2"
    assert seen["name"] == "suanli" and "s3://" in seen["storage"]
    assert seen["state"] == "COMPLETE" and seen["stdout"] == "old client\n"
    # the 1.1 clients keep the 1.1 service-info
    assert httpx.get(f"{platform.url}{TES}/service-info", timeout=30).json()["type"] == {
        "group": "org.ga4gh",
        "artifact": "tes",
        "version": "1.1.0",
    }
