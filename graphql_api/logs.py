"""Logging: one line per event, `event key=value ...` as text, or JSON objects with LOG_FORMAT=json."""

from __future__ import annotations

import logging
import sys

import orjson

from graphql_api.config import Settings


_logged_once: set[tuple[str, str]] = set()


def log_once(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """Log a fact about the process (its database, its analyzer) the first time it is true only.

    `run` opens the services for each of its steps; the facts they state stay the same.
    """
    key = (logger.name, msg % args if args else msg)
    if key not in _logged_once:
        _logged_once.add(key)
        logger.log(level, msg, *args)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        event, _, rest = message.partition(" ")
        entry: dict[str, object] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": event,
        }
        for part in rest.split(" "):
            key, sep, value = part.partition("=")
            if sep and key.isidentifier():
                entry[key] = value
        entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in ("databases", "httpx", "httpx2", "httpcore", "google_genai", "pgserver"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
