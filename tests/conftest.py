"""Suite-wide settings: a `suanli serve` started by a test runs no digital-twin worker process
unless the test asks for one (`@pytest.mark.twin_workers` on the platform fixture, or
SUANLI_TWIN_WORKERS=1 in the server's environment): most tests never replay the twin, and a
worker per server would double every server's start-up on a two-core machine."""

import os

os.environ.setdefault("SUANLI_TWIN_WORKERS", "0")
