"""Attacks on set-up, as a newcomer's busy machine makes them: another apt-get holding dpkg's
lock, a browser already installed that must not be upgraded, a throw-away database that must not
outlive `make test`. Real scripts, real apt-get and a real PostgreSQL; only the browser test puts
recording stand-ins for apt-get and fc-list first on PATH, since it checks what the script asks
for, not what Debian does."""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DPKG_LOCK = Path("/var/lib/dpkg/lock-frontend")
needs_root_and_apt = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("apt-get") is None,
    reason="installs through apt-get as root (as make test does on a fresh machine)",
)


@needs_root_and_apt
def test_an_install_waits_for_the_package_managers_lock() -> None:
    """Another apt-get holds dpkg's lock for 3 s: the install script waits instead of failing."""
    taken, release = threading.Event(), threading.Event()

    def hold() -> None:
        with DPKG_LOCK.open("a") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)  # the same kind of lock apt-get and dpkg take
            taken.set()
            release.wait(3)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    try:
        started = time.monotonic()
        done = subprocess.run(  # an installed package: nothing changes once the lock is free
            ["bash", "-c", f". {ROOT}/scripts/apt.sh && apt_install coreutils"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        waited = time.monotonic() - started
    finally:
        release.set()
        holder.join()
    assert done.returncode == 0, done.stderr
    assert waited >= 2.5  # it really waited for the holder


def test_the_browser_set_up_installs_fonts_without_touching_an_installed_browser(
    tmp_path: Path,
) -> None:
    calls = tmp_path / "apt-calls"
    for name, body in (
        ("apt-get", f'echo "$@" >> {calls}'),
        ("fc-list", "exit 0"),  # no CJK font yet
    ):
        stand_in = tmp_path / name
        stand_in.write_text(f"#!/bin/sh\n{body}\n")
        stand_in.chmod(0o755)
    done = subprocess.run(
        [str(ROOT / "scripts" / "chromium.sh")],
        env={
            **os.environ,
            "PATH": f"{tmp_path}:{os.environ['PATH']}",
            "SUANLI_CHROMIUM": "/bin/true",  # a browser is installed already
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    installs = [line.split() for line in calls.read_text().splitlines() if "install" in line]
    assert installs, "the fonts were not installed"
    for words in installs:
        assert "chromium" not in words
        assert "--no-upgrade" in words
        assert any("Lock::Timeout" in word for word in words)
        assert "fonts-wqy-microhei" in words


@needs_root_and_apt
def test_make_test_stops_the_database_it_started() -> None:
    """run-tests.sh with its own throw-away PostgreSQL (another port and directory): once it
    ends, that server is no longer running."""
    folder = Path(f"/tmp/suanli-pg-test-{secrets.token_hex(4)}")  # the pgtest user must reach it
    env = {**os.environ, "SUANLI_PG_PORT": "55433", "SUANLI_PG_DIR": str(folder)}
    try:
        _run_suite_and_check_the_database_stopped(env)
    finally:  # whatever happened, leave no server behind
        stop = [str(ROOT / "scripts" / "postgres.sh"), "stop"]
        subprocess.run(stop, env=env, timeout=60, check=False)
        shutil.rmtree(folder, ignore_errors=True)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _run_suite_and_check_the_database_stopped(env: dict[str, str]) -> None:
    assert not _listening(55433)
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "run-tests.sh"),
            "-p",
            "no:xdist",
            "-q",
            "tests/unit/catalog/test_places_latency.py",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:]
    assert "passed" in done.stdout  # the database was up for the run
    assert not _listening(55433)
