"""Attack: a consumer's task steals the credential of the agent that runs it.

Reported: executors inherited the agent's environment, so `echo $SUANLI_TOKEN` in a task printed
the provider's token, and with `--token` it was in `/proc/$PPID/cmdline`. Here a real task on a
real `suanli agent` dumps everything it can read (its environment, its parent's command line and
environment, every /proc/*/cmdline and /proc/*/environ, `ps`) into its own directory, and the
token must appear nowhere: not there, not in the output tails the API returns, and not in the
agent's own /proc entries as the test (any local user) reads them. The agent refuses `--token`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from suanli.services.core import Role
from tests.integration.platform.conftest import Platform, submit_body

TERMINAL = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}

# Everything a task can read about the processes around it, into files in its own directory.
DUMP = r"""
env > env.txt
tr '\0' ' ' < /proc/$PPID/cmdline > parent-cmdline.txt 2>&1
tr '\0' '\n' < /proc/$PPID/environ > parent-environ.txt 2>&1
for p in /proc/[0-9]*; do
  echo "== $p"; tr '\0' ' ' < $p/cmdline; echo; tr '\0' '\n' < $p/environ
done > all-proc.txt 2>/dev/null
ps -eo pid,args > ps.txt 2>&1
cat env.txt parent-cmdline.txt
echo dumped
"""


@pytest.fixture
def outside_tmp() -> Iterator[Path]:
    """A work root outside /tmp: each task gets a private /tmp, which would hide one there."""
    path = Path(tempfile.mkdtemp(prefix="suanli-creds-", dir="/var/tmp"))
    try:
        yield path
    finally:
        subprocess.run(["rm", "-rf", str(path)], check=False)


def _run_dump(platform: Platform, consumer: str) -> dict[str, object]:
    with platform.client(consumer) as http:
        created = http.post("/v1/tasks", json=submit_body("sh", "-c", DUMP, name="thief"))
        assert created.status_code == 201, created.text
        task_id = created.json()["id"]
    task = platform.wait_for(consumer, task_id, TERMINAL, timeout=60)
    assert task["state"] == "COMPLETE", task
    with platform.client(consumer) as http:
        logs = http.get(f"/v1/tasks/{task_id}/logs")
        assert logs.status_code == 200, logs.text
    return dict(logs.json())


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_task_cannot_read_agent_token(platform: Platform, outside_tmp: Path) -> None:
    provider = platform.token(Role.PROVIDER, "victim provider")
    consumer = platform.token(Role.CONSUMER, "thief")
    site = platform.site_with_pool(provider, count=2)
    agent = platform.agent(provider, site, 1, work_root=outside_tmp)

    logs = _run_dump(platform, consumer)  # the output tails, through the API
    assert "dumped" in str(logs["stdout_tail"])
    assert provider not in str(logs["stdout_tail"]) + str(logs["stderr_tail"])

    dumps = sorted(outside_tmp.glob("*/*.txt"))
    names = {path.name for path in dumps}
    assert {"env.txt", "parent-cmdline.txt", "parent-environ.txt", "all-proc.txt"} <= names
    everything = b"".join(path.read_bytes() for path in dumps)
    assert b"HOME=" in everything and b"== /proc/" in everything  # the dump did run
    assert provider.encode() not in everything
    assert b"SUANLI_TOKEN" not in (outside_tmp.glob("*/env.txt").__next__()).read_bytes()

    # any local user reading the agent's process entries (ps, /proc) finds no token either
    for entry in ("cmdline", "environ"):
        assert provider.encode() not in Path(f"/proc/{agent.pid}/{entry}").read_bytes()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_agent_refuses_a_token_on_its_command_line(platform: Platform) -> None:
    provider = platform.token(Role.PROVIDER, "careless provider")
    site = platform.site_with_pool(provider, count=1)
    argv = [sys.executable, "-m", "suanli", "agent", "--server", platform.url, "--site", site]
    try:
        done = subprocess.run(
            [*argv, "--token", provider],
            env=platform.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the agent ran with its token on the command line")
    assert done.returncode == 2, done.stderr
    assert "--token-file" in done.stderr and "SUANLI_TOKEN" in done.stderr
    assert "令牌" in done.stderr


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_agent_takes_its_token_from_a_file(platform: Platform, outside_tmp: Path) -> None:
    provider = platform.token(Role.PROVIDER, "careful provider")
    consumer = platform.token(Role.CONSUMER, "thief")
    site = platform.site_with_pool(provider, count=1)
    token_file = outside_tmp / "agent.token"
    token_file.write_text(provider + "\n")
    token_file.chmod(0o644)  # readable by others: the agent warns
    env = {k: v for k, v in platform.env.items() if k != "SUANLI_TOKEN"}
    log = platform.home / "file-agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "suanli",
                "agent",
                "--server",
                platform.url,
                "--site",
                site,
                "--token-file",
                str(token_file),
                "--work-root",
                str(outside_tmp / "work"),
            ],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    platform.agents.append(agent)  # stopped by the fixture
    _run_dump(platform, consumer)
    everything = b"".join(path.read_bytes() for path in (outside_tmp / "work").glob("*/*.txt"))
    assert provider.encode() not in everything
    assert f"chmod 600 {token_file}" in log.read_text()
    assert os.stat(token_file).st_mode & 0o777 == 0o644  # the agent only warns
