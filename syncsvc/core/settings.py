"""Configuration: environment (``SYNCSVC_*``), then ``syncsvc.toml``, then defaults.

Secrets are never configuration values: a provider names the *environment variable* that holds
its API key (``api_key_env``), so the key itself is never written to files, logs or the database.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from syncsvc.core.errors import ConfigurationError

CONFIG_FILE_ENV = "SYNCSVC_CONFIG"
DEFAULT_CONFIG_FILE = "syncsvc.toml"


class ProviderSettings(BaseModel):
    """How to reach one embeddings API account."""

    model_config = ConfigDict(extra="forbid")

    profile: str = Field(description="Name of a shipped provider profile, e.g. 'dashscope-intl'.")
    base_url: str | None = None
    api_key_env: str | None = Field(
        default=None, description="Environment variable holding the API key."
    )
    rpm: int | None = Field(default=None, description="Client-side requests-per-minute budget.")
    tpm: int | None = Field(default=None, description="Client-side tokens-per-minute budget.")
    concurrency: int = Field(default=8, ge=1, description="HTTP requests in flight.")
    timeout_seconds: float = Field(default=30.0, gt=0)
    max_inputs_per_request: int | None = None
    max_tokens_per_input: int | None = None
    dimensions: list[int] | None = None
    space: str | None = Field(
        default=None,
        description="Declare this host's model the same vector space as another (e.g. gateways).",
    )
    overlong: Literal["truncate", "chunk"] = "truncate"


class WorkerSettings(BaseModel):
    """How the daemon claims, retries and sweeps."""

    model_config = ConfigDict(extra="forbid")

    claim_size: int = Field(
        default=320,
        ge=1,
        description="Queue items claimed per round: four full waves of 8 requests x 10 inputs. "
        "Each round costs a fixed handful of statements, so small rounds cost throughput.",
    )
    lease_seconds: float = Field(default=120.0, gt=0)
    poll_interval_seconds: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=6, ge=1)
    backoff_base_seconds: float = Field(default=2.0, gt=0)
    backoff_max_seconds: float = Field(default=600.0, gt=0)
    shutdown_timeout_seconds: float = Field(default=30.0, ge=0)
    sweep_interval_seconds: float = Field(default=300.0, gt=0)
    sweep_chunk_rows: int = Field(default=5000, ge=1)
    progress_log_seconds: float = Field(
        default=10.0,
        gt=0,
        description="While rows are being embedded, log progress (rate, waiting, ETA) this often.",
    )
    rounds_in_flight: int = Field(
        default=4,
        ge=1,
        description="Claimed rounds processed at once; one more is kept for live edits.",
    )
    write_linger_seconds: float = Field(
        default=0.1,
        ge=0,
        description="How long a backfill's returned vectors may wait for more replies to "
        "share one write (live edits never wait): fewer, larger transactions when replies "
        "trickle in one by one. 0 writes each reply as it returns.",
    )
    write_linger_rows: int = Field(
        default=40,
        ge=1,
        description="Rows waiting to be written that end the wait at once.",
    )


class SearchSettings(BaseModel):
    """Similarity search: HNSW index parameters and when the daemon builds the index."""

    model_config = ConfigDict(extra="forbid")

    hnsw_m: int = Field(default=16, ge=2, le=100, description="HNSW graph degree (m).")
    hnsw_ef_construction: int = Field(default=64, ge=4, le=1000)
    index_build_fraction: float = Field(
        default=0.9,
        ge=0,
        le=1,
        description="Build a generation's index once this share of source rows has vectors.",
    )
    index_check_interval_seconds: float = Field(default=30.0, gt=0)
    maintenance_work_mem: str | None = Field(
        default=None, description="Session maintenance_work_mem for index builds, e.g. '1GB'."
    )
    query_text_retention_seconds: float = Field(
        default=0.0,
        ge=0,
        description="How long the daemon keeps the text of a query filed from SQL after "
        "answering it (0: erased at once; the cached vector is keyed by a hash).",
    )


class JobSettings(BaseModel):
    """How re-embedding jobs share the embedding API with live edits."""

    model_config = ConfigDict(extra="forbid")

    max_queued_rows: int = Field(
        default=1000,
        ge=1,
        description="Rows of one job queued or in flight at once: its share of API capacity.",
    )
    chunk_rows: int = Field(default=2000, ge=1, description="Source rows scanned per statement.")
    poll_seconds: float = Field(default=1.0, gt=0, description="How often jobs are fed.")
    progress_seconds: float = Field(default=5.0, gt=0, description="Progress refresh interval.")
    unpromoted_grace_seconds: float = Field(
        default=3600.0,
        ge=0,
        description="Warn (status, admin page, metric) when a complete generation is neither "
        "promoted nor dropped this long after its job finished.",
    )
    promote_max_failed: int = Field(
        default=0,
        ge=0,
        description="Promote (by hand or --auto-promote) a generation with up to this many "
        "rows failed for good without --accept-failed.",
    )


class ScheduleEntry(BaseModel):
    """One cron-style schedule: ``[schedules.NAME]`` with ``cron`` and ``action``."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field(description="5 fields (minute first) or 6 fields (second first).")
    action: str = Field(description="sweep, retry_failed or reembed.")
    timezone: str = "UTC"
    target: str | None = None
    model: str | None = None
    dimensions: int | None = None
    provider: str | None = None
    auto_promote: bool = False


class Settings(BaseSettings):
    """All syncsvc settings."""

    model_config = SettingsConfigDict(
        env_prefix="SYNCSVC_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    database_url: str | None = Field(
        default=None,
        description="PostgreSQL URL; libpq PG* variables are honoured when it is unset.",
    )
    state_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("syncsvc")),
        description="Where the embedded PostgreSQL keeps its data when no database is configured.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    providers: dict[str, ProviderSettings] = Field(default_factory=dict)
    jobs: JobSettings = Field(default_factory=JobSettings)
    schedules: dict[str, ScheduleEntry] = Field(default_factory=dict)
    search: SearchSettings = Field(default_factory=SearchSettings)
    metrics_address: str | None = Field(
        default=None, description="host:port to serve /metrics, /healthz, /readyz (off if unset)."
    )
    admin_enabled: bool = Field(
        default=False,
        description="Also serve the admin page on metrics_address (needs a token off loopback).",
    )
    admin_allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names the admin page answers to (besides loopback and the bound "
        "address); set it when the page is reached through a proxy or DNS name.",
    )
    admin_token_env: str = Field(
        default="SYNCSVC_ADMIN_TOKEN",
        description="Environment variable holding the admin page's bearer token.",
    )
    admin_sample_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Seconds between the daemon's samples for the admin page's charts of the "
        "last hour (rows/s, lag, queue depth, API errors).",
    )
    admin_stall_seconds: float = Field(
        default=60.0,
        gt=0,
        # The samples cover the last hour: a longer wait could never be seen.
        le=3600,
        description="A target or job with work waiting and no progress for this long shows "
        "as stalled on the admin page, with the reason.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = config_file()
        explicit = os.environ.get(CONFIG_FILE_ENV)
        if explicit and not toml_path.is_file():
            # Named on purpose: running without it would silently use other settings.
            raise ConfigurationError(f"config file {explicit} ({CONFIG_FILE_ENV}) does not exist")
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    def database_configured(self) -> bool:
        """True when a database is named (URL or libpq variables), not the embedded default."""
        return bool(self.database_url) or self.libpq_configured()

    def libpq_configured(self) -> bool:
        """True when the user points at a server through libpq's own variables."""
        return any(os.environ.get(v) for v in ("PGHOST", "PGSERVICE", "PGDATABASE", "PGPORT"))


def config_file() -> Path:
    """The TOML file settings are read from (``SYNCSVC_CONFIG``, else ./syncsvc.toml)."""
    return Path(os.environ.get(CONFIG_FILE_ENV, DEFAULT_CONFIG_FILE)).absolute()


def masked_url(url: str) -> str:
    """A connection string fit to print: any password replaced by ``***``."""
    if "://" in url:
        url = re.sub(r"^([a-z]+://[^:/@?]*):[^@/?]*@", r"\1:***@", url)
        return re.sub(r"([?&]password=)[^&]*", r"\1***", url)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", url)
