"""Logging: structlog in front of the standard library, so our events and those of uvicorn, asyncio and any other
library go through one handler: `event key=value ...` lines as text, or with LOG_FORMAT=json one JSON object a line
with every field its own key. structlog is configured when the package is imported; setup_logging picks the format."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import orjson
import structlog

if TYPE_CHECKING:
    from graphql_api.config import Settings

# Names a LogRecord has of its own: a field by one of them stays in the event but is not set on the record.
_RECORD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_NOT_FIELDS = frozenset({"event", "exc_info", "stack_info"})
_NOISY = ("databases", "httpx", "httpx2", "httpcore", "google_genai", "pgserver")


def _text(value: object) -> str:
    text = str(value)
    # Quoted when it would not read back as one value: empty, or holding a space, a quote or an equals sign.
    if not text or any(c in text for c in ' "=\n\t'):
        return orjson.dumps(text).decode()
    return text


def render_text(event: Mapping[str, Any]) -> str:
    """`event key=value ...`, the fields in the order they were given."""
    fields = [f"{key}={_text(value)}" for key, value in event.items() if key not in _NOT_FIELDS and not key.startswith("_")]
    return " ".join([str(event.get("event", "")), *fields])


class Event(dict[str, Any]):
    """A structlog event as a log record's message: the formatter reads its fields, and any other handler (pytest's
    caplog, a library's) reads `event key=value ...` from str()."""

    def __str__(self) -> str:
        return render_text(self)


def _to_stdlib(logger: logging.Logger, method_name: str, event: structlog.typing.EventDict) -> tuple[tuple, dict]:
    """The last structlog processor: the standard library's call, with the event as the message and each field also
    set on the record (as `extra=` would), so handlers and tests read them as attributes."""
    stack_info = event.pop("stack_info", False)
    exc_info = event.get("exc_info")
    if exc_info is True:
        exc_info = sys.exc_info()
    elif isinstance(exc_info, BaseException):
        exc_info = (type(exc_info), exc_info, exc_info.__traceback__)
    if exc_info and exc_info[0] is not None:
        event["exc_info"] = exc_info
    else:
        event.pop("exc_info", None)
        exc_info = None
    extra = {key: value for key, value in event.items()
             if key not in _NOT_FIELDS and key not in _RECORD_ATTRIBUTES and not key.startswith("_")}
    extra.update(_logger=logger, _name=method_name)  # how ProcessorFormatter knows a record of ours
    return (Event(event),), {"exc_info": exc_info, "stack_info": stack_info, "extra": extra}


structlog.configure(
    processors=[structlog.stdlib.filter_by_level, _to_stdlib],
    logger_factory=structlog.stdlib.LoggerFactory(),
    wrapper_class=structlog.stdlib.BoundLogger,
    cache_logger_on_first_use=True,
)


def _drop_color_message(_logger: Any, _method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    event.pop("color_message", None)  # uvicorn's message again with terminal colours
    return event


def _render_text(_logger: Any, _method: str, event: structlog.typing.EventDict) -> str:
    return render_text(event)


def _header_first(_logger: Any, _method: str, event: structlog.typing.EventDict) -> structlog.typing.EventDict:
    header = {key: event.pop(key) for key in ("time", "level", "logger", "event") if key in event}
    return header | event


def _json(value: Any, **_: Any) -> str:
    return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def formatter(log_format: str) -> logging.Formatter:
    """The handler's formatter: text lines after a time, level and logger prefix, or JSON objects."""
    foreign = [structlog.stdlib.ExtraAdder(), _drop_color_message]
    if log_format == "json":
        return structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=foreign,
            processors=[
                structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
                structlog.stdlib.add_log_level,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                _header_first,
                structlog.processors.JSONRenderer(serializer=_json),
            ],
        )
    # The standard library appends the traceback, as it always did.
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=foreign,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, _render_text],
        fmt="%(asctime)s %(levelname)s %(name)s %(message)s",
        keep_exc_info=True,
        keep_stack_info=True,
    )


def setup_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings.log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    for noisy in _NOISY:
        logging.getLogger(noisy).setLevel(logging.WARNING)


_logged_once: set[tuple[str, str]] = set()


def log_once(log: Callable[..., Any], event: str, **fields: Any) -> None:
    """Log a fact about the process (its database, its analyzer) the first time it is true only: `log` is a logger's
    method (`log.info`).

    `run` opens the services for each of its steps; the facts they state stay the same.
    """
    key = (event, repr(fields))
    if key not in _logged_once:
        _logged_once.add(key)
        log(event, **fields)
