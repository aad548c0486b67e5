"""Settings: one pydantic model, read once from the environment by `Settings.from_env()` (pydantic-settings)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
# A checkout keeps its data beside the code; an installed package (in site-packages) in the working directory.
DEFAULT_DATA_DIR = ROOT / ".data" if (ROOT / "pyproject.toml").exists() else Path.cwd() / ".data"


def _at_least(low: float) -> AfterValidator:
    # A value under a limit's floor is raised to it, not refused: MAX_DEPTH=0 means "as strict as it goes".
    return AfterValidator(lambda value: max(low, value))


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _log_level(value: Any) -> str:
    level = str(value).strip().upper()
    if level not in logging.getLevelNamesMapping():
        raise ValueError("must be DEBUG, INFO, WARNING, ERROR or CRITICAL")
    return level


def _delays(value: tuple[float, ...]) -> tuple[float, ...]:
    if not value or any(delay < 0 for delay in value):
        raise ValueError("must be one or more waits in seconds, zero or more each, separated by commas")
    return value


def _comma_separated(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return value


class Settings(BaseSettings):
    """Every setting, named as its environment variable in lower case (RERUN_LEASE_SECONDS is `lease_s`)."""

    model_config = SettingsConfigDict(frozen=True, extra="forbid", env_ignore_empty=True, validate_by_name=True)

    database_url: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    host: str = "127.0.0.1"
    port: int = 8000
    gemini_api_key: str | None = None
    gemini_base_url: str | None = None
    analysis_concurrency: Annotated[int, _at_least(1)] = 8
    run_workers: bool = True
    db_pool_max: Annotated[int, _at_least(2)] = 20
    log_level: Annotated[str, AfterValidator(_log_level)] = "INFO"
    log_format: Annotated[Literal["text", "json"], BeforeValidator(_lower)] = "text"
    access_log: bool = False
    lease_s: float = Field(30.0, validation_alias="rerun_lease_seconds")
    gemini_max_attempts: Annotated[int, _at_least(1)] = 5
    gemini_retry_base_delay_s: float = 0.5
    gemini_timeout_s: float = 60.0
    # Production posture: introspection and GraphiQL follow ENVIRONMENT unless set explicitly.
    environment: Annotated[Literal["development", "production", "test"], BeforeValidator(_lower)] = "development"
    introspection: bool = True
    graphiql: bool = True
    metrics_token: str | None = None  # when set, /metrics needs `Authorization: Bearer <token>`
    cors_origins: Annotated[tuple[str, ...], NoDecode, BeforeValidator(_comma_separated)] = ()
    # Limits, each refused with LIMIT_EXCEEDED naming it. Sizes in bytes.
    max_body_bytes: Annotated[int, _at_least(1024)] = 1 << 20
    max_ws_message_bytes: Annotated[int, _at_least(1024)] = 1 << 20
    max_document_bytes: Annotated[int, _at_least(1024)] = 100_000
    max_tokens: Annotated[int, _at_least(10)] = 10_000
    max_operations: Annotated[int, _at_least(1)] = 50
    max_depth: Annotated[int, _at_least(2)] = 15
    max_aliases: Annotated[int, _at_least(0)] = 100
    max_cost: Annotated[int, _at_least(1)] = 20_000
    document_cache_bytes: Annotated[int, _at_least(0)] = 32 << 20
    cacheable_document_bytes: Annotated[int, _at_least(0)] = 64 << 10
    statement_timeout_ms: Annotated[int, _at_least(0)] = 10_000
    request_timeout_s: Annotated[float, _at_least(0.1)] = 30.0
    rate_limit_per_s: Annotated[float, _at_least(0.0)] = 50.0
    rate_limit_burst: Annotated[int, _at_least(1)] = 100
    ws_max_sockets: Annotated[int, _at_least(1)] = 2_000
    ws_max_sockets_per_key: Annotated[int, _at_least(1)] = 50
    ws_max_subscriptions: Annotated[int, _at_least(1)] = 100
    ws_init_timeout_s: Annotated[float, _at_least(0.1)] = 10.0
    # off | auto (hash or document) | only (allow-listed hashes only)
    persisted_queries: Annotated[Literal["off", "auto", "only"], BeforeValidator(_lower)] = "auto"
    persisted_queries_file: Path | None = None
    # Webhooks (rerun.finished): attempts before giving up, each request's timeout, the waits between attempts
    # (the last one repeats), and how often a delivery loop looks for due deliveries.
    webhook_max_attempts: Annotated[int, _at_least(1)] = 8
    webhook_timeout_s: Annotated[float, _at_least(0.1)] = 10.0
    webhook_retry_delays_s: Annotated[tuple[float, ...], NoDecode, BeforeValidator(_comma_separated), AfterValidator(_delays)] = (
        5.0, 30.0, 120.0, 600.0, 3600.0, 21600.0, 86400.0)
    webhook_poll_s: Annotated[float, _at_least(0.01)] = 1.0
    # Batch mode (mode: BATCH): how often a provider batch is polled, how many requests go in one batch, and how long
    # a runner holds a batch it works on (submit, poll, record) before another may take it over.
    batch_poll_s: Annotated[float, _at_least(0.01)] = 30.0
    batch_max_requests: Annotated[int, _at_least(1)] = 500
    batch_lease_s: Annotated[float, _at_least(1.0)] = 300.0
    # Queries compiled into one SQL statement (graphql_api/schema/compiler.py); off: every field by its resolver.
    read_engine: bool = True
    # Tests: run every compiled query through the resolvers too and answer INTERNAL when the two differ.
    read_engine_verify: bool = False

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @model_validator(mode="before")
    @classmethod
    def _production_defaults(cls, values: Any) -> Any:
        if isinstance(values, dict):
            off = _lower(values.get("environment")) == "production"
            values = {name: not off for name in ("introspection", "graphiql") if values.get(name) is None} | values
        return values

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Settings(...) holds exactly what it is given, so a test's settings never pick up the shell's; from_env()
        # is the one reader of the environment.
        return (init_settings,)

    @classmethod
    def from_env(cls) -> Settings:
        """The settings of this process; a bad value stops the start with a line naming its variable."""
        try:
            return cls(**EnvSettingsSource(cls)())
        except ValidationError as exc:
            raise SystemExit("\n".join(
                f"{str(error['loc'][0]).upper() if error['loc'] else 'settings'}: {error['msg']}, got {error['input']!r}"
                for error in exc.errors(include_url=False)
            )) from None
