"""Settings of the suanli server and clients, from flags, `SUANLI_*` environment variables or a
TOML file (`SUANLI_CONFIG`, default `$SUANLI_HOME/suanli.toml` when it exists).

Owns the defaults: an embedded SQLite file in `$SUANLI_HOME` (default `./.suanli/`) in WAL mode,
127.0.0.1:8000, a 30 s lease renewed by 5 s heartbeats, a scheduling pass every 2 s.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _toml_defaults() -> dict[str, Any]:
    path = os.environ.get("SUANLI_CONFIG")
    if path is None:
        candidate = Path(os.environ.get("SUANLI_HOME", ".suanli")) / "suanli.toml"
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
    # pricing rules set by the operator (basis points: 1000 = 10%)
    platform_fee_bp: int = Field(default=1000, ge=0, le=10_000)
    network_fen_per_gb: int = Field(default=0, ge=0)
    preemptible_discount_bp: int = Field(default=3000, ge=0, le=10_000)
    sla_credit_bp: int = Field(default=1000, ge=0, le=10_000)

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
