"""`python -m graphql_api import FILE`: Retell's shape in, idempotent by id, bad records reported by line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from graphql_api.importer import import_file
from tests.conftest import data
from tests.factories import call, chat, chat_agent, voice_agent

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "samples" / "retell-export.jsonl"

COUNTS = """{ calls(first: 100) { nodes { id analysis { id trigger } analysisHistory { id } } }
             chats(first: 100) { nodes { id } }
             agents { nodes { id versions { version isPublished } } } }"""


def _cli(*args: str, db_url: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": db_url, "DATA_DIR": str(tmp_path)}
    env.pop("GEMINI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "graphql_api", *args], env=env, capture_output=True, text=True, timeout=120
    )


@pytest.mark.skipif(not SAMPLE.exists(), reason="shared sample not present")
async def test_sample_export_imports_with_its_analysis_as_the_initial_result(api, db_url, tmp_path) -> None:
    result = _cli("import", str(SAMPLE), "--workspace", "acme", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "calls=1 chats=1" in result.stdout and "errors=0" in result.stdout
    key = await api.key_for("acme")
    got = data(await api.gql(
        """{ call(id: "call_9a8b7c6d5e4f") { agentVersion { version isPublished } analysis { trigger summary successful
               userSentiment inVoicemail customData charged } }
             agent(id: "agent_7f3c2a9e1b") { versions { version isPublished } draft { version analysisConfig { model
               summaryPrompt dataFields { name type choices required } } } } }""",
        key=key,
    ))
    analysis = got["call"]["analysis"]
    assert analysis["trigger"] == "INITIAL" and analysis["summary"].startswith("The caller booked")
    assert analysis["userSentiment"] == "POSITIVE" and analysis["customData"]["visit_type"] == "cleaning"
    assert analysis["charged"] is False
    # Version 3 was exported published; version 2 (which handled the call) is kept as a frozen placeholder,
    # and version 4 is the new draft, a copy of 3.
    assert got["call"]["agentVersion"] == {"version": 2, "isPublished": True}
    assert [v["version"] for v in got["agent"]["versions"]] == [4, 3, 2]
    draft = got["agent"]["draft"]
    assert draft["version"] == 4 and draft["analysisConfig"]["model"] == "gemini-2.5-flash"
    assert draft["analysisConfig"]["summaryPrompt"].startswith("Summarize the call in two sentences")
    fields = {f["name"]: f for f in draft["analysisConfig"]["dataFields"]}
    assert fields["visit_type"] == {"name": "visit_type", "type": "ENUM", "choices": ["cleaning", "checkup", "emergency", "other"], "required": True}


async def test_repeated_import_changes_nothing(api, tmp_path) -> None:
    key = await api.key_for("acme")
    ws = await api.workspace_id("acme")
    path = tmp_path / "export.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        voice_agent(version=0), voice_agent(version=1, published=False), chat_agent(), call("call_1"), call("call_2", version=1), chat("chat_1"),
    ]))
    first = await import_file(db=api.db, workspace_id=ws, path=path, analyzer=api.services.analyzer)
    assert (first.calls, first.chats, first.analyses_run, first.errors) == (2, 1, 3, [])
    before = data(await api.gql(COUNTS, key=key))
    again = await import_file(db=api.db, workspace_id=ws, path=path, analyzer=api.services.analyzer)
    assert again.analyses_run == 0 and again.errors == []
    after = data(await api.gql(COUNTS, key=key))
    assert after == before
    assert all(c["analysisHistory"] == [] and c["analysis"]["trigger"] == "INITIAL" for c in after["calls"]["nodes"]), after


async def test_json_array_and_single_object_files(api, tmp_path) -> None:
    ws = await api.workspace_id("acme")
    array = tmp_path / "array.json"
    array.write_text(json.dumps([voice_agent(), call("call_1")], indent=2))
    report = await import_file(db=api.db, workspace_id=ws, path=array, analyzer=api.services.analyzer)
    assert (report.calls, report.errors) == (1, [])
    single = tmp_path / "single.json"
    single.write_text(json.dumps(call("call_2"), indent=2))
    report = await import_file(db=api.db, workspace_id=ws, path=single, analyzer=api.services.analyzer)
    assert (report.calls, report.errors) == (1, [])


async def test_bad_records_are_reported_by_line_and_good_ones_still_import(api, db_url, tmp_path) -> None:
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(voice_agent()),
        json.dumps(call("call_ok")),
        "{not json",
        json.dumps(call("call_bad_status", status="finished")),
        json.dumps(call("call_unknown_agent", agent_id="agent_nope")),
        json.dumps({"hello": "world"}),
        json.dumps(voice_agent("agent_bad_enum", data=[{"type": "enum", "name": "x", "choices": []}])),
        json.dumps(call("call_time", start_timestamp="yesterday")),
        json.dumps(chat("chat_on_voice_agent", agent_id="agent_voice1")),
    ]
    path.write_text("\n".join(lines) + "\n")
    result = _cli("import", str(path), "--workspace", "acme", db_url=db_url, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "calls=1" in result.stdout and "errors=7" in result.stdout
    errors = result.stderr
    for line, reason in [
        (3, "not valid JSON"),
        (4, "call_status"),
        (5, "agent_nope is unknown"),
        (6, "not an agent"),
        (7, "ENUM and needs a non-empty `choices`"),
        (8, "start_timestamp"),
        (9, "VOICE agent"),
    ]:
        assert f"mixed.jsonl:{line}: skipped:" in errors and reason in errors, (line, reason, errors)
    key = await api.key_for("acme")
    assert [n["id"] for n in data(await api.gql("{ calls { nodes { id } } }", key=key))["calls"]["nodes"]] == ["call_ok"]


async def test_a_published_version_imported_again_with_another_config_is_refused(api, tmp_path) -> None:
    ws = await api.workspace_id("acme")
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps(voice_agent(version=0)))
    await import_file(db=api.db, workspace_id=ws, path=path, analyzer=api.services.analyzer)
    changed = voice_agent(version=0, model="gemini-2.5-pro")
    path.write_text(json.dumps(changed))
    report = await import_file(db=api.db, workspace_id=ws, path=path, analyzer=api.services.analyzer)
    assert report.errors and "published" in report.errors[0][1]
    key = await api.key_for("acme")
    versions = data(await api.gql('{ agent(id: "agent_voice1") { versions { version analysisConfig { model } } } }', key=key))
    assert versions["agent"]["versions"][-1]["analysisConfig"]["model"] == "gemini-2.5-flash"
