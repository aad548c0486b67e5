"""The demo data set: Retell-shaped, deterministic, varied enough to demo reruns."""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from graphql_api.analysis.base import AnalysisConfig, Conversation, DataField, Utterance
from graphql_api.analysis.offline import analyze_offline
from graphql_api.demo_data import DAY_MS, DEFAULT_NOW_MS, generate_demo_records, iter_demo_records
from graphql_api.testing.processes import cli
from tests.conftest import data

SAMPLE = Path(__file__).resolve().parent / "samples" / "retell-export.jsonl"


@pytest.fixture(scope="module")
def records() -> list[dict]:
    return generate_demo_records()


def split(records):
    agents = [r for r in records if "agent_id" in r and "call_id" not in r and "chat_id" not in r]
    calls = [r for r in records if "call_id" in r]
    chats = [r for r in records if "chat_id" in r]
    return agents, calls, chats


def versions_by_agent(agents) -> dict[str, list[dict]]:
    by_agent: dict[str, list[dict]] = defaultdict(list)
    for a in agents:
        by_agent[a["agent_id"]].append(a)
    return {k: sorted(v, key=lambda a: a["version"]) for k, v in by_agent.items()}


def analysis_items(agent: dict) -> list[dict]:
    return agent.get("post_call_analysis_data") or agent.get("post_chat_analysis_data") or []


def analysis_model(agent: dict) -> str | None:
    return agent.get("post_call_analysis_model") or agent.get("post_chat_analysis_model")


def config_of(agent: dict) -> AnalysisConfig:
    prompts = {}
    fields = []
    for item in analysis_items(agent):
        if item["type"] == "system-presets":
            prompts[item["name"].split("_", 1)[-1] if item["name"] != "user_sentiment" else "sentiment"] = item[
                "description"
            ]
        else:
            fields.append(DataField.from_json({**item, "type": item["type"].upper()}))
    return AnalysisConfig(
        model="offline",
        summary_prompt=prompts["summary"],
        successful_prompt=prompts["successful"],
        user_sentiment_prompt=prompts["sentiment"],
        data_fields=tuple(fields),
    )


def conversation_of(call: dict) -> Conversation:
    return Conversation(
        id=call["call_id"],
        kind="CALL",
        transcript=call["transcript"],
        utterances=tuple(Utterance(u["role"], u["content"]) for u in call["transcript_object"]),
        status=call["call_status"],
        disconnection_reason=call["disconnection_reason"],
    )


def test_same_seed_gives_identical_records_and_another_seed_differs():
    first = generate_demo_records(seed=11)
    assert json.dumps(first) == json.dumps(generate_demo_records(seed=11))
    other = generate_demo_records(seed=12)
    assert [r.get("call_id") for r in first] != [r.get("call_id") for r in other]
    assert [r.get("transcript") for r in first] != [r.get("transcript") for r in other]


def test_iterating_yields_the_same_records_as_the_list():
    assert list(iter_demo_records(seed=5, calls=40, chats=9)) == generate_demo_records(seed=5, calls=40, chats=9)


def test_default_counts_and_requested_counts(records):
    agents, calls, chats = split(records)
    assert (len(calls), len(chats)) == (320, 72)
    _, calls, chats = split(generate_demo_records(calls=25, chats=4))
    assert (len(calls), len(chats)) == (25, 4)


def test_at_least_three_agents_with_voice_and_chat(records):
    agents, _, _ = split(records)
    by_agent = versions_by_agent(agents)
    assert len(by_agent) >= 3
    channels = {("voice" if "post_call_analysis_data" in v[0] else "chat") for v in by_agent.values()}
    assert channels == {"voice", "chat"}
    assert len({v[0]["agent_name"] for v in by_agent.values()}) == len(by_agent)


def test_each_agent_has_published_versions_and_a_different_latest_draft(records):
    agents, _, _ = split(records)
    for agent_id, versions in versions_by_agent(agents).items():
        numbers = [v["version"] for v in versions]
        assert numbers == list(range(len(numbers))), agent_id
        *published, draft = versions
        assert len(published) >= 2 and all(v["is_published"] for v in published)
        assert draft["is_published"] is False
        last = published[-1]
        assert (analysis_model(draft), analysis_items(draft)) != (analysis_model(last), analysis_items(last))
        stamps = [v["last_modification_timestamp"] for v in versions]
        assert stamps == sorted(stamps)


def test_analysis_configs_cover_every_field_type_and_prompt(records):
    agents, _, _ = split(records)
    types = Counter()
    models = set()
    for agent in agents:
        items = analysis_items(agent)
        prefix = "call" if "post_call_analysis_data" in agent else "chat"
        presets = {i["name"]: i["description"] for i in items if i["type"] == "system-presets"}
        assert set(presets) == {f"{prefix}_summary", f"{prefix}_successful", "user_sentiment"}
        assert all(presets.values())
        for item in items:
            types[item["type"]] += 1
            if item["type"] == "enum":
                assert item["choices"]
        models.add(analysis_model(agent))
    assert {"string", "enum", "boolean", "number"} <= set(types)
    assert any(i.get("required") for a in agents for i in analysis_items(a))
    assert len(models) >= 3
    assert models <= {"gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.0-flash", "gemini-2.5-pro"}


def test_prompts_change_between_versions(records):
    agents, _, _ = split(records)
    for versions in versions_by_agent(agents).values():
        summaries = {next(i["description"] for i in analysis_items(v) if i["name"].endswith("_summary")) for v in versions}
        assert len(summaries) >= 2


def test_ids_have_retell_formats_and_are_unique(records):
    agents, calls, chats = split(records)
    assert all(re.fullmatch(r"agent_[0-9a-f]{10}", a["agent_id"]) for a in agents)
    assert all(re.fullmatch(r"call_[0-9a-f]{12}", c["call_id"]) for c in calls)
    assert all(re.fullmatch(r"chat_[0-9a-f]{12}", c["chat_id"]) for c in chats)
    assert len({c["call_id"] for c in calls}) == len(calls)
    assert len({c["chat_id"] for c in chats}) == len(chats)


def test_conversations_belong_to_published_versions_of_the_right_channel(records):
    agents, calls, chats = split(records)
    versions = {(a["agent_id"], a["version"]): a for a in agents}
    for call in calls:
        agent = versions[(call["agent_id"], call["agent_version"])]
        assert "post_call_analysis_data" in agent and agent["is_published"]
    for chat in chats:
        agent = versions[(chat["agent_id"], chat["version"])]
        assert "post_chat_analysis_data" in agent and agent["is_published"]


def test_calls_and_chats_are_spread_over_every_published_version(records):
    agents, calls, chats = split(records)
    used = Counter((c["agent_id"], c["agent_version"]) for c in calls)
    used.update((c["agent_id"], c["version"]) for c in chats)
    for agent_id, versions in versions_by_agent(agents).items():
        for v in versions:
            if v["is_published"]:
                assert used[(agent_id, v["version"])] >= 5, (agent_id, v["version"])


def test_statuses_cover_ended_voicemail_not_connected_and_errors(records):
    _, calls, chats = split(records)
    statuses = Counter(c["call_status"] for c in calls)
    reasons = Counter(c["disconnection_reason"] for c in calls)
    assert statuses["ended"] >= 200
    assert statuses["not_connected"] >= 5 and statuses["error"] >= 1
    assert {"ongoing", "registered"} <= set(statuses)
    assert reasons["voicemail_reached"] >= 5
    assert {"ended", "ongoing"} <= {c["chat_status"] for c in chats}
    assert {"web_call", "phone_call"} == {c["call_type"] for c in calls}
    assert {"inbound", "outbound"} == {c["direction"] for c in calls}


def test_transcripts_fit_the_call_outcome(records):
    _, calls, _ = split(records)
    for call in calls:
        if call["call_status"] in ("not_connected", "registered"):
            assert call["transcript"] == "" and call["transcript_object"] == []
        elif call["disconnection_reason"] == "voicemail_reached":
            assert {u["role"] for u in call["transcript_object"]} == {"agent"}
        else:
            assert {u["role"] for u in call["transcript_object"]} == {"agent", "user"}
        lines = [f"{'Agent' if u['role'] == 'agent' else 'User'}: {u['content']}" for u in call["transcript_object"]]
        assert call["transcript"] == "\n".join(lines)


def test_transcripts_are_varied_multi_turn_conversations(records):
    _, calls, chats = split(records)
    talked = [c for c in calls if c["call_status"] == "ended" and c["disconnection_reason"] != "voicemail_reached"]
    assert len({c["transcript"] for c in talked}) >= 0.9 * len(talked)
    assert sum(len(c["transcript_object"]) >= 4 for c in talked) >= 0.9 * len(talked)
    assert len({c["transcript"] for c in chats}) >= 0.9 * len(chats)
    text = " ".join(c["transcript"] for c in calls + chats).lower()
    for cue in ("booked", "refund", "invoice", "not interested", "ridiculous", "consultation", "voicemail"):
        assert cue in text, cue


def test_some_utterances_carry_word_timings(records):
    _, calls, _ = split(records)
    timed = [u for c in calls for u in c["transcript_object"] if "words" in u]
    assert timed
    for utterance in timed:
        words = utterance["words"]
        assert [w["word"] for w in words] == utterance["content"].split()
        assert all(w["start"] < w["end"] for w in words)
        assert all(a["end"] <= b["start"] for a, b in zip(words, words[1:]))


def test_timestamps_fall_in_the_30_days_before_now(records):
    _, calls, chats = split(records)
    for c in calls + chats:
        assert DEFAULT_NOW_MS - 30 * DAY_MS <= c["start_timestamp"] <= DEFAULT_NOW_MS
        if c["end_timestamp"] is not None:
            assert c["start_timestamp"] <= c["end_timestamp"] <= DEFAULT_NOW_MS
    for call in calls:
        if call["end_timestamp"] is None:
            assert call["call_status"] in ("ongoing", "registered") and call["duration_ms"] is None
        else:
            assert call["duration_ms"] == call["end_timestamp"] - call["start_timestamp"]


def test_now_ms_moves_the_whole_data_set():
    base = generate_demo_records(calls=20, chats=5)
    later = generate_demo_records(calls=20, chats=5, now_ms=DEFAULT_NOW_MS + DAY_MS)
    for before, after in zip(base, later):
        for key in ("start_timestamp", "end_timestamp", "last_modification_timestamp"):
            if before.get(key) is not None:
                assert after[key] - before[key] == DAY_MS


def test_records_have_the_shape_of_the_retell_sample(records):
    sample = [json.loads(line) for line in SAMPLE.read_text().splitlines() if line.strip()]
    sample_call = next(r for r in sample if "call_id" in r)
    sample_chat = next(r for r in sample if "chat_id" in r)
    sample_agent = next(r for r in sample if "post_call_analysis_data" in r)
    agents, calls, chats = split(json.loads(json.dumps(records)))
    assert set(sample_call) - {"call_analysis"} <= set(calls[0])
    assert set(sample_chat) - {"chat_analysis"} <= set(chats[0])
    assert set(sample_agent) <= set(next(a for a in agents if "post_call_analysis_data" in a))
    assert not any("call_analysis" in c for c in calls)
    assert not any("chat_analysis" in c for c in chats)
    for chat in chats:
        assert [(m["role"], m["content"]) for m in chat["message_with_tool_calls"]] == [
            (m["role"], m["content"]) for m in chat["messages"]
        ]


def test_large_data_sets_generate_quickly():
    # Benchmarks load 100,000 calls; 20,000 take well under a second here.
    started = time.perf_counter()
    count = sum(1 for r in iter_demo_records(calls=20_000, chats=0) if "call_id" in r)
    assert count == 20_000
    assert time.perf_counter() - started < 5


def test_offline_analysis_of_demo_calls_reads_the_outcomes(records):
    agents, calls, _ = split(records)
    drafts = {a["agent_id"]: config_of(a) for a in agents if not a["is_published"]}
    outcomes = {c["call_id"]: analyze_offline(conversation_of(c), drafts[c["agent_id"]]) for c in calls}
    for call in calls:
        outcome = outcomes[call["call_id"]]
        if call["disconnection_reason"] == "voicemail_reached":
            assert outcome.in_voicemail is True and outcome.successful is False
        if call["call_status"] == "not_connected":
            assert outcome.successful is False and outcome.user_sentiment == "UNKNOWN"
    results = Counter(o.successful for o in outcomes.values())
    sentiments = Counter(o.user_sentiment for o in outcomes.values())
    assert results[True] >= 30 and results[False] >= 30
    assert {"POSITIVE", "NEGATIVE", "NEUTRAL", "UNKNOWN"} <= set(sentiments)
    # The dental draft asks for a 1–5 word summary.
    dental = next(a for a in agents if not a["is_published"] and "1\u20135 word" in json.dumps(a, ensure_ascii=False))
    assert all(
        len(outcomes[c["call_id"]].summary.split()) <= 5 for c in calls if c["agent_id"] == dental["agent_id"]
    )


SEEDED = (
    "seeded workspace demo: agents=3 versions=12 calls=320 chats=72 analyses_imported=0 analyses_run=389 "
    "analyses_failed=0 unchanged=0 skipped=0"
)
SEEDED_AGAIN = (
    "seeded workspace demo: agents=0 versions=0 calls=0 chats=0 analyses_imported=0 analyses_run=0 "
    "analyses_failed=0 unchanged=404 skipped=0"
)
DENTAL = """query($agent: ID!) { agent(id: $agent) { name versions { version isPublished title
  analysisConfig { summaryPrompt successfulPrompt model dataFields { name } } }
  draft { version analysisConfig { summaryPrompt successfulPrompt model dataFields { name } }
          configChanges { changedFields before { summaryPrompt model } after { summaryPrompt model } } } } }"""
EDIT = """mutation($agent: ID!) { updateDraftPrompts(agentId: $agent,
  input: {summaryPrompt: "Say which treatment was booked, and when.", model: "gemini-2.5-pro"}) { version } }"""


async def _seed_and_edit(api, db_url, tmp_path) -> tuple[str, str]:
    first = cli("seed", db_url=db_url, data_dir=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().splitlines()[-1] == SEEDED
    key = await api.key_for("demo")
    agents = data(await api.gql("{ agents { nodes { id name } } }", key=key))["agents"]["nodes"]
    dental = next(a["id"] for a in agents if a["name"] == "Riverside Dental Receptionist")
    data(await api.gql(EDIT, {"agent": dental}, key=key))
    return key, dental


async def test_seed_keeps_a_draft_edited_through_graphql(api, db_url, tmp_path) -> None:
    key, dental = await _seed_and_edit(api, db_url, tmp_path)
    edited = data(await api.gql(DENTAL, {"agent": dental}, key=key))
    again = cli("seed", db_url=db_url, data_dir=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == SEEDED_AGAIN
    after = data(await api.gql(DENTAL, {"agent": dental}, key=key))
    assert after == edited
    draft = after["agent"]["draft"]
    assert draft["analysisConfig"]["summaryPrompt"] == "Say which treatment was booked, and when."
    assert draft["analysisConfig"]["model"] == "gemini-2.5-pro"
    # configChanges tells the truth: one edit, from the demo config to what the draft holds now.
    [change] = draft["configChanges"]
    assert change["changedFields"] == ["summary_prompt", "model"]
    assert change["after"] == {k: draft["analysisConfig"][k] for k in ("summaryPrompt", "model")}
    assert change["before"] == {"summaryPrompt": "Write a 1\u20135 word summary of the call.", "model": "gemini-2.5-flash-lite"}


async def test_seed_after_a_publish_keeps_the_published_edit_and_skips_nothing(api, db_url, tmp_path) -> None:
    key, dental = await _seed_and_edit(api, db_url, tmp_path)
    data(await api.gql("mutation($agent: ID!) { publishDraft(agentId: $agent) { version } }", {"agent": dental}, key=key))
    published = data(await api.gql(DENTAL, {"agent": dental}, key=key))
    assert [v["version"] for v in published["agent"]["versions"]] == [4, 3, 2, 1, 0]
    again = cli("seed", db_url=db_url, data_dir=tmp_path)
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1] == SEEDED_AGAIN
    after = data(await api.gql(DENTAL, {"agent": dental}, key=key))
    assert after == published
    assert after["agent"]["versions"][1]["analysisConfig"]["summaryPrompt"] == "Say which treatment was booked, and when."
