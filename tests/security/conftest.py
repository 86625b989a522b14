"""The attacks of tests/security run against the same real platform as the integration suite: a
`suanli serve` subprocess on loopback over a fresh SQLite file or a fresh PostgreSQL database,
and `suanli agent` subprocesses (see tests/integration/platform/conftest.py)."""

from tests.integration.platform.conftest import database_url, platform

__all__ = ["database_url", "platform"]
