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

from collections.abc import Iterator

import pytest

from tests.integration.engines import RAY, SLURM, may_stop, ray_up, slurm_up


@pytest.fixture(scope="session")
def slurm_partition() -> Iterator[str]:
    """The partition of the two-node test cluster that scripts/slurm.sh starts (or reuses)."""
    was_up = slurm_up()
    partition = SLURM.start()
    yield partition
    if may_stop(was_up):
        SLURM.stop()


@pytest.fixture(scope="session")
def ray_dashboard() -> Iterator[str]:
    """The dashboard URL of the local two-node Ray cluster (a head and a second node on this
    host, each with CPUs and GPUs declared) that scripts/ray.sh starts (or reuses, adding the
    second node when it is missing)."""
    was_up = ray_up()
    url = RAY.start()
    yield url
    if may_stop(was_up):
        RAY.stop()
