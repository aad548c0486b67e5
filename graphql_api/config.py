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

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            database_url=os.environ.get("DATABASE_URL") or None,
            data_dir=Path(os.environ.get("DATA_DIR") or ROOT / ".data"),
            host=os.environ.get("HOST") or "127.0.0.1",
            port=_int("PORT", 8000),
            gemini_api_key=os.environ.get("GEMINI_API_KEY") or None,
            gemini_base_url=os.environ.get("GEMINI_BASE_URL") or None,
            analysis_concurrency=max(1, _int("ANALYSIS_CONCURRENCY", 8)),
            run_workers=os.environ.get("RUN_WORKERS", "1").lower() not in ("0", "false", "no"),
            db_pool_max=max(2, _int("DB_POOL_MAX", 20)),
            log_level=(os.environ.get("LOG_LEVEL") or "INFO").upper(),
            log_format=(os.environ.get("LOG_FORMAT") or "text").lower(),
            access_log=os.environ.get("ACCESS_LOG", "0").lower() in ("1", "true", "yes"),
            lease_s=_float("RERUN_LEASE_SECONDS", 30.0),
            gemini_max_attempts=max(1, _int("GEMINI_MAX_ATTEMPTS", 5)),
            gemini_retry_base_delay_s=_float("GEMINI_RETRY_BASE_DELAY_S", 0.5),
            gemini_timeout_s=_float("GEMINI_TIMEOUT_S", 60.0),
        )
