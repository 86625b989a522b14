"""The real engines (Slurm, Ray) that backend and platform tests run on: start them through
their scripts, fail or skip loudly when they cannot start. See tests/integration/backends/
conftest.py for the fixtures."""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
RAY_DASHBOARD = "http://127.0.0.1:8265"


@dataclass(frozen=True)
class Engine:
    name: str  # as the scripts are named: slurm, ray
    skip_variable: str
    start_timeout_s: float

    def start(self) -> str:
        """Run `scripts/<name>.sh start`; its last stdout line, or fail/skip with its message."""
        script = SCRIPTS / f"{self.name}.sh"
        try:
            done = subprocess.run(
                ["bash", str(script), "start"],
                capture_output=True,
                text=True,
                timeout=self.start_timeout_s,
                check=False,
            )
            ok = done.returncode == 0 and bool(done.stdout.strip())
            message = (
                f"exited with {done.returncode}: "
                f"{(done.stderr.strip() or done.stdout.strip() or '(no output)')[-2000:]}"
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            ok, message = False, str(exc)
        if not ok:
            why = f"{self.name} backend NOT TESTED: scripts/{self.name}.sh start {message}"
            if os.environ.get(self.skip_variable) == "1":
                pytest.skip(f"{why} ({self.skip_variable}=1)")
            pytest.fail(f"{why} (set {self.skip_variable}=1 to skip instead)", pytrace=False)
        return done.stdout.strip().splitlines()[-1]

    def stop(self) -> None:
        subprocess.run(
            ["bash", str(SCRIPTS / f"{self.name}.sh"), "stop"],
            capture_output=True,
            timeout=120,
            check=False,
        )


SLURM = Engine("slurm", "SUANLI_SKIP_SLURM", start_timeout_s=900)
RAY = Engine("ray", "SUANLI_SKIP_RAY", start_timeout_s=180)


def slurm_up() -> bool:
    try:
        done = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "UP" in done.stdout


def ray_up() -> bool:
    try:
        urllib.request.urlopen(f"{RAY_DASHBOARD}/api/version", timeout=2)
    except urllib.error.HTTPError:
        return True  # 401: token authentication is on, but a dashboard answers
    except OSError:
        return False
    return True


def may_stop(was_up: bool) -> bool:
    return not was_up and "PYTEST_XDIST_WORKER" not in os.environ
