"""Logs: our events and the standard library's records (uvicorn, asyncio) through one handler, as `event key=value`
text or as one JSON object a line with every field its own key."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from graphql_api.logs import formatter
from graphql_api.testing.processes import cli

LOGGER = "graphql_api.test_logs"


@pytest.fixture
def capture() -> Iterator[tuple[io.StringIO, logging.Handler]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger(LOGGER)
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield stream, handler
    logger.removeHandler(handler)
    logger.propagate = True


def _emit() -> None:
    log = structlog.stdlib.get_logger(LOGGER)
    log.info("rerun_item_failed", job="rerun_1", error="gemini failed after 5 attempts: 503 UNAVAILABLE", empty="")
    logging.getLogger(LOGGER + ".uvicorn").info("Started server process [%d]", 42, extra={"color_message": "x", "peer": "127.0.0.1 port 5"})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("request_failed_unexpectedly", key="abc")


def test_json_lines_keep_every_field_whole_and_the_extra_of_standard_library_records(capture) -> None:
    stream, handler = capture
    handler.setFormatter(formatter("json"))
    _emit()
    ours, theirs, failed = [json.loads(line) for line in stream.getvalue().splitlines() if line.startswith("{")]
    assert ours["event"] == "rerun_item_failed" and ours["level"] == "info" and ours["logger"] == LOGGER and ours["time"]
    assert (ours["job"], ours["error"], ours["empty"]) == ("rerun_1", "gemini failed after 5 attempts: 503 UNAVAILABLE", "")
    assert theirs["event"] == "Started server process [42]" and theirs["peer"] == "127.0.0.1 port 5"
    assert "color_message" not in theirs
    assert failed["level"] == "error" and failed["key"] == "abc" and "ValueError: boom" in failed["exception"]


def test_text_lines_read_event_then_fields(capture) -> None:
    stream, handler = capture
    handler.setFormatter(formatter("text"))
    _emit()
    text = stream.getvalue()
    assert f'INFO {LOGGER} rerun_item_failed job=rerun_1 error="gemini failed after 5 attempts: 503 UNAVAILABLE" empty=""\n' in text
    assert f"INFO {LOGGER}.uvicorn Started server process [42]" in text
    assert f"ERROR {LOGGER} request_failed_unexpectedly key=abc\nTraceback" in text and "ValueError: boom" in text


def test_records_carry_the_fields_for_any_handler(caplog) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        structlog.stdlib.get_logger(LOGGER).info("rerun_job_finished", job="rerun_2", status="SUCCEEDED", succeeded=3)
    [record] = [r for r in caplog.records if r.name == LOGGER]
    assert record.getMessage() == "rerun_job_finished job=rerun_2 status=SUCCEEDED succeeded=3"
    assert (record.job, record.status, record.succeeded) == ("rerun_2", "SUCCEEDED", 3)  # type: ignore[attr-defined]


def test_the_cli_logs_json_when_asked(db_url, tmp_path) -> None:
    done = cli("create-api-key", "--workspace", "logs", db_url=db_url, data_dir=tmp_path, env={"LOG_FORMAT": "json"})
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stderr.splitlines()]
    selected = next(e for e in entries if e["event"] == "analyzer_selected")
    assert selected["analyzer"] == "offline" and selected["reason"].startswith("GEMINI_API_KEY unset; results come from")
    assert any(e["event"] == "database_connected" for e in entries)
