"""Settings read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw in (None, ""):
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SystemExit(f"{name} must be a number, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = (os.environ.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise SystemExit(f"{name} must be true or false (1/0, yes/no, on/off), got {raw!r}")


def _list(name: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in (os.environ.get(name) or "").split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str | None = None
    data_dir: Path = ROOT / ".data"
    host: str = "127.0.0.1"
    port: int = 8000
    gemini_api_key: str | None = None
    gemini_base_url: str | None = None
    analysis_concurrency: int = 8
    run_workers: bool = True
    db_pool_max: int = 20
    log_level: str = "INFO"
    log_format: str = "text"
    access_log: bool = False
    lease_s: float = 30.0
    gemini_max_attempts: int = 5
    gemini_retry_base_delay_s: float = 0.5
    gemini_timeout_s: float = 60.0
    # Production posture: introspection and GraphiQL follow ENVIRONMENT unless set explicitly.
    environment: str = "development"
    introspection: bool = True
    graphiql: bool = True
    metrics_token: str | None = None  # when set, /metrics needs `Authorization: Bearer <token>`
    cors_origins: tuple[str, ...] = ()
    # Limits, each refused with LIMIT_EXCEEDED naming it. Sizes in bytes.
    max_body_bytes: int = 1 << 20
    max_ws_message_bytes: int = 1 << 20
    max_document_bytes: int = 100_000
    max_tokens: int = 10_000
    max_operations: int = 50
    max_depth: int = 15
    max_aliases: int = 100
    max_cost: int = 20_000
    document_cache_bytes: int = 32 << 20
    cacheable_document_bytes: int = 64 << 10
    statement_timeout_ms: int = 10_000
    request_timeout_s: float = 30.0
    rate_limit_per_s: float = 50.0
    rate_limit_burst: int = 100
    ws_max_sockets: int = 2_000
    ws_max_sockets_per_key: int = 50
    ws_max_subscriptions: int = 100
    ws_init_timeout_s: float = 10.0
    persisted_queries: str = "auto"  # off | auto (hash or document) | only (allow-listed hashes only)
    persisted_queries_file: Path | None = None

    @property
    def production(self) -> bool:
        return self.environment == "production"

    @classmethod
    def from_env(cls) -> Settings:
        environment = (os.environ.get("ENVIRONMENT") or "development").strip().lower()
        if environment not in ("development", "production", "test"):
            raise SystemExit(f"ENVIRONMENT must be development, production or test, got {environment!r}")
        production = environment == "production"
        persisted = (os.environ.get("PERSISTED_QUERIES") or "auto").strip().lower()
        if persisted not in ("off", "auto", "only"):
            raise SystemExit(f"PERSISTED_QUERIES must be off, auto or only, got {persisted!r}")
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            data_dir=Path(os.environ.get("DATA_DIR") or ROOT / ".data"),
            host=os.environ.get("HOST") or "127.0.0.1",
            port=_int("PORT", 8000),
            gemini_api_key=os.environ.get("GEMINI_API_KEY") or None,
            gemini_base_url=os.environ.get("GEMINI_BASE_URL") or None,
            analysis_concurrency=max(1, _int("ANALYSIS_CONCURRENCY", 8)),
            run_workers=_bool("RUN_WORKERS", True),
            db_pool_max=max(2, _int("DB_POOL_MAX", 20)),
            log_level=(os.environ.get("LOG_LEVEL") or "INFO").upper(),
            log_format=(os.environ.get("LOG_FORMAT") or "text").lower(),
            access_log=_bool("ACCESS_LOG", False),
            lease_s=_float("RERUN_LEASE_SECONDS", 30.0),
            gemini_max_attempts=max(1, _int("GEMINI_MAX_ATTEMPTS", 5)),
            gemini_retry_base_delay_s=_float("GEMINI_RETRY_BASE_DELAY_S", 0.5),
            gemini_timeout_s=_float("GEMINI_TIMEOUT_S", 60.0),
            environment=environment,
            introspection=_bool("INTROSPECTION", not production),
            graphiql=_bool("GRAPHIQL", not production),
            metrics_token=os.environ.get("METRICS_TOKEN") or None,
            cors_origins=_list("CORS_ORIGINS"),
            max_body_bytes=max(1024, _int("MAX_BODY_BYTES", 1 << 20)),
            max_ws_message_bytes=max(1024, _int("MAX_WS_MESSAGE_BYTES", 1 << 20)),
            max_document_bytes=max(1024, _int("MAX_DOCUMENT_BYTES", 100_000)),
            max_tokens=max(10, _int("MAX_TOKENS", 10_000)),
            max_operations=max(1, _int("MAX_OPERATIONS", 50)),
            max_depth=max(2, _int("MAX_DEPTH", 15)),
            max_aliases=max(0, _int("MAX_ALIASES", 100)),
            max_cost=max(1, _int("MAX_COST", 20_000)),
            document_cache_bytes=max(0, _int("DOCUMENT_CACHE_BYTES", 32 << 20)),
            cacheable_document_bytes=max(0, _int("CACHEABLE_DOCUMENT_BYTES", 64 << 10)),
            statement_timeout_ms=max(0, _int("STATEMENT_TIMEOUT_MS", 10_000)),
            request_timeout_s=max(0.1, _float("REQUEST_TIMEOUT_S", 30.0)),
            rate_limit_per_s=max(0.0, _float("RATE_LIMIT_PER_S", 50.0)),
            rate_limit_burst=max(1, _int("RATE_LIMIT_BURST", 100)),
            ws_max_sockets=max(1, _int("WS_MAX_SOCKETS", 2_000)),
            ws_max_sockets_per_key=max(1, _int("WS_MAX_SOCKETS_PER_KEY", 50)),
            ws_max_subscriptions=max(1, _int("WS_MAX_SUBSCRIPTIONS", 100)),
            ws_init_timeout_s=max(0.1, _float("WS_INIT_TIMEOUT_S", 10.0)),
            persisted_queries=persisted,
            persisted_queries_file=Path(os.environ["PERSISTED_QUERIES_FILE"]) if os.environ.get("PERSISTED_QUERIES_FILE") else None,
        )
