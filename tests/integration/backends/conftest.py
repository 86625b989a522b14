"""The real engines behind the backend tests, started at most once per test process.

`slurm_partition` and `ray_dashboard` run `scripts/slurm.sh start` / `scripts/ray.sh start`
(each reuses an engine that is already up) and give what a backend needs: the partition name,
the dashboard URL. When a script fails, every test that needs its engine FAILS with the
script's message, unless SUANLI_SKIP_SLURM=1 / SUANLI_SKIP_RAY=1 is set: then those tests are
skipped with that message, which `-ra` prints in the summary. Nothing passes silently.

An engine is stopped at the end of the session only when this process started it (it did not
answer before) and the process is not an xdist worker: workers share the engines and cannot
tell when the last of them is done, so under `-n` (and under `make test`, which starts and
stops the engines around the whole run) they are left as they are.
"""

from __future__ import annotations

import os
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SCRIPTS = ROOT / "scripts"
RAY_DASHBOARD = "http://127.0.0.1:8265"


@dataclass(frozen=True)
class _Engine:
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


SLURM = _Engine("slurm", "SUANLI_SKIP_SLURM", start_timeout_s=900)
RAY = _Engine("ray", "SUANLI_SKIP_RAY", start_timeout_s=180)


def _slurm_up() -> bool:
    try:
        done = subprocess.run(
            ["scontrol", "ping"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and "UP" in done.stdout


def _ray_up() -> bool:
    try:
        urllib.request.urlopen(f"{RAY_DASHBOARD}/api/version", timeout=2)
    except urllib.error.HTTPError:
        return True  # 401: token authentication is on, but a dashboard answers
    except OSError:
        return False
    return True


def _may_stop(was_up: bool) -> bool:
    return not was_up and "PYTEST_XDIST_WORKER" not in os.environ


@pytest.fixture(scope="session")
def slurm_partition() -> Iterator[str]:
    """The partition of the single-node cluster that scripts/slurm.sh starts (or reuses)."""
    was_up = _slurm_up()
    partition = SLURM.start()
    yield partition
    if _may_stop(was_up):
        SLURM.stop()


@pytest.fixture(scope="session")
def ray_dashboard() -> Iterator[str]:
    """The dashboard URL of the local Ray head that scripts/ray.sh starts (or reuses)."""
    was_up = _ray_up()
    url = RAY.start()
    yield url
    if _may_stop(was_up):
        RAY.stop()
