"""Settings of the suanli server and clients, from flags, `SUANLI_*` environment variables or a
TOML file (`SUANLI_CONFIG`, default `$SUANLI_HOME/suanli.toml` when it exists).

Owns the defaults: an embedded SQLite file in `$SUANLI_HOME` (default `./.suanli/`) in WAL mode,
127.0.0.1:8000 over plain HTTP (TLS with `tls_cert` and `tls_key`), a 30 s lease renewed by 5 s
heartbeats (a lease shorter than three heartbeats is refused), a scheduling pass every 2 s
that ends a task still unplaced after 7 days (`max_queue_wait_s`),
429 for an address after 20 failed authentications within 10 s, request bodies up to 1 MiB
(`max_body_bytes`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from suanli.errors import InvalidValue


def suanli_home() -> Path:
    """`$SUANLI_HOME` (default `./.suanli`) as an absolute path."""
    return Path(os.environ.get("SUANLI_HOME", ".suanli")).absolute()


def _toml_defaults() -> dict[str, Any]:
    path = os.environ.get("SUANLI_CONFIG")
    if path is None:
        candidate = suanli_home() / "suanli.toml"
        if not candidate.exists():
            return {}
        path = str(candidate)
    with open(path, "rb") as handle:
        data = tomllib.load(handle)
    section = data.get("suanli", data)
    return dict(section) if isinstance(section, dict) else {}


class Settings(BaseSettings):
    """Server settings; every field can be set as SUANLI_<FIELD> or in the TOML file."""

    model_config = SettingsConfigDict(env_prefix="SUANLI_", extra="ignore")

    home: Path = Path(".suanli")
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    lease_s: float = Field(default=30.0, gt=0)
    heartbeat_s: float = Field(default=5.0, gt=0)
    schedule_interval_s: float = Field(default=2.0, gt=0)
    policy: str = "balanced"
    # a queued task still unplaced after this long is ended SYSTEM_ERROR ("waited too long")
    max_queue_wait_s: float = Field(default=7 * 86400.0, gt=0)
    # pricing rules set by the operator (basis points: 1000 = 10%)
    platform_fee_bp: int = Field(default=1000, ge=0, le=10_000)
    network_fen_per_gb: int = Field(default=0, ge=0)
    preemptible_discount_bp: int = Field(default=3000, ge=0, le=10_000)
    sla_credit_bp: int = Field(default=1000, ge=0, le=10_000)
    # a task's maximum run time when its spec sets none (`max_run_s`); agents enforce it
    default_max_run_s: float = Field(default=86_400.0, gt=0)
    # a preempted task gets SIGTERM, then SIGKILL after this grace period
    preempt_grace_s: float = Field(default=30.0, ge=0)
    # budget alerts at these fractions of a budget (basis points), unless the budget says others
    budget_alert_bp: list[int] = Field(default_factory=lambda: [5000, 8000, 10_000])
    # the largest request body accepted (413 above it; an agent's report may be 16x this)
    max_body_bytes: int = Field(default=1_048_576, ge=1024, le=1 << 30)
    # TLS: serve https with this certificate chain and key (PEM files), both or neither
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # failed authentication: more than `auth_failures_max` 401s from one address within
    # `auth_failures_window_s` refuse that address with 429 for `auth_block_s` (per process)
    auth_failures_max: int = Field(default=20, ge=1)
    auth_failures_window_s: float = Field(default=10.0, gt=0)
    auth_block_s: float = Field(default=30.0, gt=0)
    # addresses of reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed
    # (comma-separated, as uvicorn's --forwarded-allow-ips); empty: none, so no local process
    # can pose as another client address to dodge the throttle or as https to the console
    forwarded_allow_ips: str = ""

    @model_validator(mode="after")
    def _lease_outlives_heartbeats(self) -> Settings:
        """A lease must survive at least three heartbeats, or one late beat re-queues (and so
        duplicates) running work. Raised as a SuanliError, which pydantic does not wrap."""
        if self.lease_s < 3 * self.heartbeat_s:
            raise InvalidValue(
                "lease_s",
                self.lease_s,
                f"at least 3 x heartbeat_s = {3 * self.heartbeat_s:g} s: raise SUANLI_LEASE_S "
                "or lower SUANLI_HEARTBEAT_S",
                f"不短于 3 × heartbeat_s = {3 * self.heartbeat_s:g} 秒：请调大 SUANLI_LEASE_S "
                "或调小 SUANLI_HEARTBEAT_S",
            )
        return self

    @property
    def url(self) -> str:
        """The database URL: the configured one, else SQLite in `home`."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'suanli.db').resolve()}"


def load_settings(**overrides: Any) -> Settings:
    """Settings from the TOML file, then the environment, then explicit overrides."""
    values = _toml_defaults()
    values.update({k: v for k, v in overrides.items() if v is not None})
    environment = Settings()
    merged = {**values}
    for name in Settings.model_fields:
        if f"SUANLI_{name.upper()}" in os.environ and name not in overrides:
            merged[name] = getattr(environment, name)
    return Settings(**merged)
