"""`python -m graphql_api import FILE`: Retell's shape in, idempotent by id, bad records skipped by line
and never allowed to change what is stored, a draft edited here never silently taken back."""

from __future__ import annotations

import json
from pathlib import Path

from graphql_api.importer import Importer, import_file
from graphql_api.testing.processes import cli
from tests.conftest import data
from tests.factories import call, chat, chat_agent, voice_agent

SAMPLES = Path(__file__).resolve().parent / "samples"
SAMPLE = SAMPLES / "retell-export.jsonl"
MALFORMED = SAMPLES / "malformed.jsonl"
VET = "agent_3c9e0b7d52"
VET_NAME = "Maple Street Veterinary Front Desk"

COUNTS = """{ calls(first: 100) { nodes { id analysis { id trigger } analysisHistory { id } } }
             chats(first: 100) { nodes { id } }
             agents { nodes { id versions { version isPublished } } } }"""

# Everything an import could change, as a client sees it.
STATE = """{
  agents { nodes { id name channel versions { version isPublished title
    analysisConfig { summaryPrompt successfulPrompt userSentimentPrompt model dataFields { name type choices required } }
    configChanges { changedFields } } } }
  calls(first: 100) { nodes { id callType callStatus direction fromNumber toNumber startedAt endedAt durationMs
    disconnectionReason transcript metadata agentVersion { version } analysis { id } analysisHistory { id } } }
  chats(first: 100) { nodes { id chatType chatStatus startedAt endedAt transcript metadata agentVersion { version }
    analysis { id } } } }"""

UPDATE = """mutation($agent: ID!, $input: AnalysisConfigInput!) {
  updateDraftPrompts(agentId: $agent, input: $input) { version analysisConfig { summaryPrompt } } }"""
DRAFT = """query($agent: ID!) { agent(id: $agent) { name versions { version isPublished }
  draft { version analysisConfig { summaryPrompt successfulPrompt model dataFields { name } }
          configChanges { changedFields origin before { summaryPrompt model } after { summaryPrompt successfulPrompt model } } } } }"""


def _summary(result) -> str:
    return result.stdout.strip().splitlines()[-1]


def _import(path: Path, db_url: str, tmp_path: Path):
    """`python -m graphql_api import PATH --workspace acme` in a child process."""
    return cli("import", str(path), "--workspace", "acme", db_url=db_url, data_dir=tmp_path)


async def _sample_imported(api, db_url: str, tmp_path: Path) -> str:
    """The sample imported into the workspace acme; returns an API key of it."""
    result = _import(SAMPLE, db_url, tmp_path)
    assert result.returncode == 0, result.stderr
    return await api.key_for("acme")


async def _run(api, workspace: str, records: list) -> object:
    """The Importer on records as they come (malformed ones included), line numbers from 1."""
    ws = await api.workspace_id(workspace)
    return await Importer(db=api.db, workspace_id=ws, analyzer=api.services.analyzer).run(list(enumerate(records, start=1)))


async def test_sample_export_imports_with_its_analysis_as_the_initial_result(api, db_url, tmp_path) -> None:
    result = _import(SAMPLE, db_url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert _summary(result) == (
        f"{SAMPLE}: agents=2 versions=5 calls=4 chats=2 analyses_imported=2 analyses_run=3 analyses_failed=0 "
        "unchanged=0 skipped=0"
    )
    key = await api.key_for("acme")
    got = data(await api.gql(
        """{ call(id: "call_5e0c1a9b7d34") { agentVersion { version isPublished } analysis { trigger summary successful
               userSentiment inVoicemail customData charged } }
             voicemail: call(id: "call_2b8d6f0e1a95") { agentVersion { version isPublished title } analysis { trigger } }
             live: call(id: "call_c4a2e6b8d013") { callStatus analysis { id } }
             chat(id: "chat_7d3b9e1f5a62") { analysis { trigger userSentiment customData charged } }
             sms: chat(id: "chat_0e6a2c8f4b19") { transcript analysis { trigger } }
             agent(id: "agent_3c9e0b7d52") { name channel versions { version isPublished } draft { version
               analysisConfig { model summaryPrompt dataFields { name type choices required } } } }
             chatAgent: agent(id: "agent_e81f4a2c06") { channel versions { version isPublished } } }""",
        key=key,
    ))
    analysis = got["call"]["analysis"]
    assert analysis["trigger"] == "INITIAL" and analysis["summary"].startswith("The caller booked a rabies vaccination")
    assert analysis["userSentiment"] == "POSITIVE" and analysis["customData"]["pet_species"] == "dog"
    assert analysis["successful"] is True and analysis["inVoicemail"] is False and analysis["charged"] is False
    assert got["call"]["agentVersion"] == {"version": 1, "isPublished": True}
    # Version 0 handled the voicemail call but is not in the export: a frozen placeholder copied from version 1.
    assert got["voicemail"]["agentVersion"]["version"] == 0 and got["voicemail"]["agentVersion"]["isPublished"]
    assert got["voicemail"]["agentVersion"]["title"].startswith("placeholder")
    assert got["voicemail"]["analysis"]["trigger"] == "INITIAL"
    assert got["live"]["analysis"] is None  # still in progress: nothing to analyze yet
    assert got["chat"]["analysis"] == {
        "trigger": "INITIAL", "userSentiment": "NEUTRAL", "customData": {"issue_type": "outage", "refund_offered": False},
        "charged": False,
    }
    # The transcript of a chat that came without one is built from its messages, tool calls left out.
    assert got["sms"]["transcript"].startswith("User: I'm moving to a new apartment")
    assert "check_outage" not in got["sms"]["transcript"] and got["sms"]["analysis"]["trigger"] == "INITIAL"
    agent = got["agent"]
    assert (agent["name"], agent["channel"]) == (VET_NAME, "VOICE")
    assert agent["versions"] == [
        {"version": 2, "isPublished": False}, {"version": 1, "isPublished": True}, {"version": 0, "isPublished": True},
    ]
    draft = agent["draft"]
    assert draft["version"] == 2 and draft["analysisConfig"]["model"] == "gemini-2.5-flash-lite"
    assert draft["analysisConfig"]["summaryPrompt"] == "Write a 1-5 word summary of the call."
    fields = {f["name"]: f for f in draft["analysisConfig"]["dataFields"]}
    assert fields["pet_species"] == {
        "name": "pet_species", "type": "ENUM", "choices": ["dog", "cat", "rabbit", "bird", "other"], "required": True,
    }
    assert "symptoms" in fields
    # The chat agent came with a published version 0 only: its draft is a new copy.
    assert got["chatAgent"] == {"channel": "CHAT", "versions": [{"version": 1, "isPublished": False}, {"version": 0, "isPublished": True}]}


async def test_importing_the_same_file_again_changes_nothing_and_counts_it_unchanged(api, db_url, tmp_path) -> None:
    key = await _sample_imported(api, db_url, tmp_path)
    before = data(await api.gql(STATE, key=key))
    again = _import(SAMPLE, db_url, tmp_path)
    assert again.returncode == 0, again.stderr
    assert _summary(again) == (
        f"{SAMPLE}: agents=0 versions=0 calls=0 chats=0 analyses_imported=0 analyses_run=0 analyses_failed=0 "
        "unchanged=9 skipped=0"
    )
    assert data(await api.gql(STATE, key=key)) == before


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
    assert (again.agents, again.versions, again.calls, again.chats, again.analyses_run, again.unchanged, again.errors) == (
        0, 0, 0, 0, 0, 6, []
    )
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
    result = _import(path, db_url, tmp_path)
    assert result.returncode == 1, result.stderr
    assert _summary(result).endswith("calls=1 chats=0 analyses_imported=0 analyses_run=1 analyses_failed=0 unchanged=0 skipped=7")
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


async def test_malformed_sample_lines_are_skipped_and_change_no_stored_row(api, db_url, tmp_path) -> None:
    key = await _sample_imported(api, db_url, tmp_path)
    before = data(await api.gql(STATE, key=key))
    result = _import(MALFORMED, db_url, tmp_path)
    assert result.returncode == 1, result.stderr
    assert _summary(result) == (
        f"{MALFORMED}: agents=0 versions=0 calls=1 chats=0 analyses_imported=0 analyses_run=1 analyses_failed=0 "
        "unchanged=0 skipped=9"
    )
    for line, reason in [
        (2, "looks like a call (`call_status`, `transcript`, `agent_version`, `call_type`) but has no `call_id`"),
        (3, "looks like a chat (`chat_status`, `messages`, `chat_type`) but has no `chat_id`"),
        (4, "an agent record needs its `version`"),
        (5, "an agent record needs its analysis config"),
        (6, "not valid JSON"),
        (7, "`call_status` must be one of"),
        (8, "a record can't have both `call_id` and `chat_id`"),
        (9, "a record must be a JSON object"),
        (10, "`post_call_analysis_data[0] (pet_species)` is an ENUM and needs a non-empty `choices` list"),
    ]:
        assert f"{MALFORMED}:{line}: skipped: {reason}" in result.stderr, (line, reason, result.stderr)
    after = data(await api.gql(STATE, key=key))
    # The one good line added its call; nothing else moved: no agent renamed, no version added or edited.
    added = [c for c in after["calls"]["nodes"] if c["id"] == "call_6a1d3f8b2c47"]
    assert len(added) == 1 and added[0]["analysis"] is not None
    after["calls"]["nodes"].remove(added[0])
    assert after == before
    assert [a["name"] for a in after["agents"]["nodes"]] == [VET_NAME, "Lumen Fiber Support Chat"]


async def test_a_call_without_call_id_is_not_taken_for_an_agent(api) -> None:
    await _run(api, "acme", [voice_agent(version=0), voice_agent(version=1, published=False)])
    key = await api.key_for("acme")
    before = data(await api.gql(DRAFT, {"agent": "agent_voice1"}, key=key))
    broken_call = {k: v for k, v in call("call_1", version=1).items() if k != "call_id"}
    broken_chat = {k: v for k, v in chat("chat_1", agent_id="agent_voice1").items() if k != "chat_id"}
    # Agent fields and a transcript: still a broken call, not an agent version.
    agent_with_transcript = {**voice_agent(version=1, published=False, name="Renamed"), "transcript": "Agent: Hi"}
    report = await _run(api, "acme", [broken_call, broken_chat, agent_with_transcript])
    assert [line for line, _ in report.errors] == [1, 2, 3]
    assert "looks like a call" in report.errors[0][1] and "no `call_id`" in report.errors[0][1]
    assert "looks like a chat" in report.errors[1][1] and "no `chat_id`" in report.errors[1][1]
    assert "looks like a call" in report.errors[2][1]
    assert (report.agents, report.versions, report.calls, report.chats, report.skipped) == (0, 0, 0, 0, 3)
    assert data(await api.gql(DRAFT, {"agent": "agent_voice1"}, key=key)) == before
    assert before["agent"]["name"] == "Front Desk"


async def test_an_agent_record_without_its_version_or_config_is_skipped(api) -> None:
    await _run(api, "acme", [voice_agent(version=0)])
    key = await api.key_for("acme")
    before = data(await api.gql(DRAFT, {"agent": "agent_voice1"}, key=key))
    no_version = {k: v for k, v in voice_agent(name="Renamed").items() if k != "version"}
    no_config = {k: v for k, v in voice_agent(version=1, published=False, name="Renamed").items() if not k.startswith("post_")}
    model_only = {**no_config, "post_call_analysis_model": "gemini-2.5-pro"}
    report = await _run(api, "acme", [no_version, no_config, model_only])
    assert [line for line, _ in report.errors] == [1, 2, 3]
    assert "needs its `version`" in report.errors[0][1]
    assert all("needs its analysis config" in reason for _, reason in report.errors[1:])
    assert data(await api.gql(DRAFT, {"agent": "agent_voice1"}, key=key)) == before


async def test_an_agent_record_without_name_or_model_keeps_the_stored_ones(api) -> None:
    await _run(api, "acme", [voice_agent(version=0, model="gemini-2.5-pro"), voice_agent(version=1, published=False, model="gemini-2.5-pro")])
    key = await api.key_for("acme")
    before = data(await api.gql(DRAFT, {"agent": "agent_voice1"}, key=key))
    bare = [
        {k: v for k, v in voice_agent(version=v, published=v == 0).items() if k not in ("agent_name", "post_call_analysis_model")}
        for v in (0, 1)
    ]
    report = await _run(api, "acme", bare)
    assert (report.errors, report.agents, report.versions, report.unchanged) == ([], 0, 0, 2)
    after = data(await api.gql(DRAFT, {"agent": "agent_voice1"}, key=key))
    assert after == before and after["agent"]["name"] == "Front Desk"
    assert after["agent"]["draft"]["analysisConfig"]["model"] == "gemini-2.5-pro"


async def test_a_call_record_changes_only_the_fields_it_carries(api) -> None:
    await _run(api, "acme", [voice_agent(), call("call_1", metadata={"crm_id": "C-1"}, disconnection_reason="user_hangup")])
    key = await api.key_for("acme")
    query = '{ call(id: "call_1") { callStatus transcript startedAt durationMs metadata disconnectionReason direction } }'
    before = data(await api.gql(query, key=key))["call"]
    partial = {"call_id": "call_1", "agent_id": "agent_voice1", "call_status": "ended", "disconnection_reason": "agent_hangup"}
    report = await _run(api, "acme", [partial])
    assert (report.errors, report.calls, report.unchanged) == ([], 1, 0)
    after = data(await api.gql(query, key=key))["call"]
    assert after == {**before, "disconnectionReason": "agent_hangup"}
    assert after["transcript"].startswith("Agent: Hello") and after["metadata"] == {"crm_id": "C-1"}
    report = await _run(api, "acme", [partial])
    assert (report.calls, report.unchanged) == (0, 1)


async def test_import_help_tells_the_exit_status(db_url, tmp_path) -> None:
    result = cli("import", "--help", db_url=db_url, data_dir=tmp_path)
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "exit status: 0 when every record was imported or already there, 1 when any record was skipped" in text
    assert "configChanges" in text


async def test_a_file_that_is_not_text_exits_with_2(db_url, tmp_path) -> None:
    path = tmp_path / "export.jsonl"
    path.write_bytes(b"\xff\xfe\x00binary")
    result = cli("import", str(path), db_url=db_url, data_dir=tmp_path)
    assert result.returncode == 2 and "can't be read" in result.stderr


async def test_reimporting_a_file_keeps_a_draft_edited_through_graphql(api, db_url, tmp_path) -> None:
    key = await _sample_imported(api, db_url, tmp_path)
    data(await api.gql(UPDATE, {"agent": VET, "input": {"summaryPrompt": "Name the pet and the visit booked."}}, key=key))
    edited = data(await api.gql(DRAFT, {"agent": VET}, key=key))
    again = _import(SAMPLE, db_url, tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"{SAMPLE}:2: kept: the draft (version 2) of agent {VET} has moved on from the config this record carries" in again.stderr
    assert " versions=0 " in _summary(again) and _summary(again).endswith("unchanged=9 skipped=0")
    after = data(await api.gql(DRAFT, {"agent": VET}, key=key))
    assert after == edited
    draft = after["agent"]["draft"]
    assert draft["analysisConfig"]["summaryPrompt"] == "Name the pet and the visit booked."
    assert [c["changedFields"] for c in draft["configChanges"]] == [["summary_prompt"]]
    assert draft["configChanges"][0]["after"]["summaryPrompt"] == draft["analysisConfig"]["summaryPrompt"]


async def test_an_import_with_a_new_draft_config_replaces_an_edit_and_records_it(api, db_url, tmp_path) -> None:
    key = await _sample_imported(api, db_url, tmp_path)
    data(await api.gql(UPDATE, {"agent": VET, "input": {"summaryPrompt": "Name the pet and the visit booked."}}, key=key))
    newer = json.loads(SAMPLE.read_text().splitlines()[1])
    assert newer["version"] == 2 and not newer["is_published"]
    newer["post_call_analysis_data"][1] = {**newer["post_call_analysis_data"][1], "description": "Successful if a visit is on the calendar."}
    path = tmp_path / "newer.jsonl"
    path.write_text(json.dumps(newer) + "\n")
    result = _import(path, db_url, tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"{path}:1: updated draft: version 2 of agent {VET} takes the imported summary_prompt, successful_prompt" in result.stderr
    assert _summary(result) == (
        f"{path}: agents=0 versions=1 calls=0 chats=0 analyses_imported=0 analyses_run=0 analyses_failed=0 unchanged=0 skipped=0"
    )
    draft = data(await api.gql(DRAFT, {"agent": VET}, key=key))["agent"]["draft"]
    assert draft["analysisConfig"]["successfulPrompt"] == "Successful if a visit is on the calendar."
    assert draft["analysisConfig"]["summaryPrompt"] == "Write a 1-5 word summary of the call."
    # Newest first: the import's change, whose "before" is the user's edit, then the user's edit itself.
    assert [c["changedFields"] for c in draft["configChanges"]] == [["summary_prompt", "successful_prompt"], ["summary_prompt"]]
    imported, edit = draft["configChanges"]
    assert (imported["origin"], edit["origin"]) == ("IMPORT", "API")
    assert imported["before"]["summaryPrompt"] == edit["after"]["summaryPrompt"] == "Name the pet and the visit booked."
    assert imported["after"] == {k: draft["analysisConfig"][k] for k in ("summaryPrompt", "successfulPrompt", "model")}
    # The same file again: nothing to do.
    again = _import(path, db_url, tmp_path)
    assert again.returncode == 0 and _summary(again).endswith("versions=0 calls=0 chats=0 analyses_imported=0 analyses_run=0 analyses_failed=0 unchanged=1 skipped=0")


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


async def test_an_initial_analysis_whose_model_answer_fails_still_writes_its_charge_line(api, db_url, gemini) -> None:
    import asyncpg

    from graphql_api.analysis.gemini import GeminiAnalyzer

    analyzer = GeminiAnalyzer("test-key", gemini.base_url, max_attempts=1)
    try:
        gemini.malformed_next(1, mode="truncated")
        workspace_id = await api.workspace_id("acme")
        report = await Importer(db=api.db, workspace_id=workspace_id, analyzer=analyzer).run(
            list(enumerate([voice_agent(model="gemini-2.5-pro"), call("call_bad"), call("call_ok", minute=1)], start=1)))
    finally:
        await analyzer.aclose()
    assert (report.analyses_run, report.analyses_failed) == (1, 1)
    conn = await asyncpg.connect(dsn=db_url)
    try:
        lines = await conn.fetch("SELECT conversation_id, reason, waived, amount_usd, analysis_result_id, error FROM charges ORDER BY id")
    finally:
        await conn.close()
    failed = [line for line in lines if line["analysis_result_id"] is None]
    assert len(lines) == 2 and len(failed) == 1
    assert failed[0]["reason"] == "initial" and not failed[0]["waived"] and failed[0]["amount_usd"] > 0
    assert "malformed" in failed[0]["error"]
