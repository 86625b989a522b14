"""Attacks on file staging through symbolic links, on a live server with a real agent.

A provider lets tasks read and write one directory (`--file-root`). A consumer who can write
there plants links, or a task leaves links in its outputs, to make the agent copy a host file in
or out, or write a file outside the root. Each must end the task SYSTEM_ERROR with a reason that
names the link, and nothing may cross the bounds."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from suanli.services.core import Role
from tests.integration.platform.conftest import Platform

TES = "/ga4gh/tes/v1"
SECRET = "host secret 8f3a"
# staging happens on the agent: the database behind the server does not matter here
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


@pytest.fixture
def staged(platform: Platform, tmp_path: Path) -> tuple[Platform, str, Path, Path]:
    """A server, a site whose agent may read and write `shared/`, a consumer token, and a host
    file outside every root (`secret.txt`)."""
    shared = tmp_path / "shared"
    shared.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text(SECRET + "\n")
    provider = platform.token(Role.PROVIDER, "staging provider")
    site = platform.site_with_pool(provider, count=2)
    platform.agent(provider, site, 1, "--file-root", str(shared))
    return platform, platform.token(Role.CONSUMER, "staging consumer"), shared, secret


def _run(platform: Platform, token: str, body: dict[str, Any]) -> dict[str, Any]:
    with platform.client(token) as http:
        created = http.post(f"{TES}/tasks", json=body)
        assert created.status_code == 200, created.text
        task_id = created.json()["id"]
    return platform.wait_for(
        token, task_id, {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}, timeout=60
    )


def _reason(platform: Platform, token: str, task_id: str) -> str:
    with platform.client(token) as http:
        full = http.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json()
    return "\n".join(full["logs"][0].get("system_logs") or [])


def test_a_link_in_an_input_directory_cannot_copy_a_host_file_in(
    staged: tuple[Platform, str, Path, Path],
) -> None:
    platform, token, shared, secret = staged
    (shared / "in").mkdir()
    (shared / "in" / "ok.txt").write_text("fine\n")
    os.symlink(secret, shared / "in" / "leak")
    task = _run(
        platform,
        token,
        {
            "inputs": [{"path": "/data", "url": f"file://{shared}/in", "type": "DIRECTORY"}],
            "executors": [{"image": "x", "command": ["sh", "-c", "cat data/leak; true"]}],
        },
    )
    with platform.client(token) as http:
        logs = http.get(f"/v1/tasks/{task['id']}/logs").json()
    assert SECRET not in logs["stdout_tail"] + logs["stderr_tail"]
    assert task["state"] == "SYSTEM_ERROR"
    assert "leak" in _reason(platform, token, task["id"])


def test_a_link_left_in_an_output_directory_cannot_copy_a_host_file_out(
    staged: tuple[Platform, str, Path, Path],
) -> None:
    platform, token, shared, secret = staged
    task = _run(
        platform,
        token,
        {
            "outputs": [{"path": "/out", "url": f"file://{shared}/results", "type": "DIRECTORY"}],
            "executors": [
                {
                    "image": "x",
                    "command": [
                        "sh",
                        "-c",
                        f"mkdir -p out && echo ok > out/a && ln -s {secret} out/leak",
                    ],
                }
            ],
        },
    )
    copied = [p for p in shared.rglob("*") if p.is_file()]
    assert all(SECRET not in p.read_text() for p in copied)
    assert task["state"] == "SYSTEM_ERROR"
    assert "leak" in _reason(platform, token, task["id"])


def test_a_link_planted_in_a_destination_cannot_redirect_a_copy_outside_the_root(
    staged: tuple[Platform, str, Path, Path],
) -> None:
    platform, token, shared, secret = staged
    outside = secret.parent / "outside"
    outside.mkdir()
    (shared / "results").mkdir()
    os.symlink(outside, shared / "results" / "sub")
    task = _run(
        platform,
        token,
        {
            "outputs": [{"path": "/out", "url": f"file://{shared}/results", "type": "DIRECTORY"}],
            "executors": [
                {"image": "x", "command": ["sh", "-c", "mkdir -p out/sub && echo x > out/sub/f"]}
            ],
        },
    )
    assert list(outside.iterdir()) == []
    assert task["state"] == "SYSTEM_ERROR"
    assert "sub" in _reason(platform, token, task["id"])
