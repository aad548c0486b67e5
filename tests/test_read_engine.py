"""The read engine (graphql_api/schema/compiler.py) against the resolvers: the same JSON, errors included.

A database with two workspaces of demo data, edited drafts and finished, failed and canceled reruns. Every
query runs twice in process, compiled (as HTTP and WebSocket requests run) and through the resolvers
(READ_ENGINE=off), and the answers must be equal: data and errors. Hand-written queries cover every compiled
field and the errors; hypothesis generates more from the schema: random selections, arguments (good and
bad), aliases, fragments, variables and @include/@skip. The rest of the suite checks the same on every query
it sends (READ_ENGINE_VERIFY, tests/conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
import pytest
from graphql import GraphQLList, GraphQLNonNull, GraphQLObjectType
from hypothesis import HealthCheck, given, settings, strategies as st

from graphql_api.analysis.offline import OfflineAnalyzer
from graphql_api.app import create_app
from graphql_api.db import migrate, with_database
from graphql_api.demo_data import generate_demo_records
from graphql_api.http import comparable_result
from graphql_api.importer import Importer
from graphql_api.schema import schema
from graphql_api.schema.context import Context
from graphql_api.workspaces import create_api_key
from tests import conftest

OWN, OTHER = "engine-own", "engine-other"
MAX_EXAMPLES = int(os.environ.get("READ_ENGINE_EXAMPLES", "150"))


@dataclass
class World:
    loop: asyncio.AbstractEventLoop
    services: Any
    own: Any  # Workspace
    other: Any
    ids: dict[str, list[str]]
    cursors: list[str]

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    async def execute(self, query: str, variables: dict[str, Any] | None, *, compiled: bool, workspace: Any = None) -> Any:
        context = Context(
            services=self.services, workspace=workspace or self.own,
            read_engine=self.services.read_engine if compiled else None, json_fragments=False,
        )
        result = await schema.execute(query, variable_values=variables, context_value=context)
        return result, context.compiled_roots

    def both(self, query: str, variables: dict[str, Any] | None = None, workspace: Any = None) -> tuple[Any, Any, int]:
        compiled, roots = self.run(self.execute(query, variables, compiled=True, workspace=workspace))
        reference, _ = self.run(self.execute(query, variables, compiled=False, workspace=workspace))
        return comparable_result(compiled), comparable_result(reference), roots


JOB_INPUT = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id } } }"
EDIT = """mutation($agentId: ID!, $config: AnalysisConfigInput!) {
  updateDraftPrompts(agentId: $agentId, input: $config) { version } }"""


async def _build(server_url: str, name: str) -> tuple[Any, Any, Any, Any]:
    admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    await admin.close()
    url = with_database(server_url, name)
    await migrate(url)
    app = create_app(conftest.test_settings(url, read_engine_verify=False, analysis_concurrency=4), url)
    lifespan = app.router.lifespan_context(app)
    await lifespan.__aenter__()
    services = app.state.services
    workspaces = []
    for workspace_name, seed, calls, chats in ((OWN, 7, 40, 16), (OTHER, 8, 16, 6)):
        workspace, _ = await create_api_key(db=services.db, workspace_name=workspace_name)
        records = generate_demo_records(seed, calls=calls, chats=chats)
        report = await Importer(db=services.db, workspace_id=workspace.id, analyzer=OfflineAnalyzer()).run(
            list(enumerate(records, start=1)))
        assert not report.errors, report.errors
        workspaces.append(workspace)
    return app, lifespan, workspaces[0], workspaces[1]


async def _mutate(services: Any, workspace: Any, query: str, variables: dict[str, Any]) -> dict[str, Any]:
    context = Context(services=services, workspace=workspace, key_prefix="test")
    result = await schema.execute(query, variable_values=variables, context_value=context)
    assert not result.errors, result.errors
    return result.data


async def _history(world: World) -> None:
    """Edits of drafts, and reruns that finish (some items fail), stay queued, or are canceled."""
    services, own = world.services, world.own
    agents = (await world.execute("{ agents { nodes { id channel } } }", None, compiled=False))[0].data["agents"]["nodes"]
    for agent in agents[:2]:
        await _mutate(services, own, EDIT, {"agentId": agent["id"], "config": {
            "summaryPrompt": "Summarize in one sentence.",
            "dataFields": [{"name": "topic", "type": "STRING", "description": "What it was about", "examples": ["billing"]},
                           {"name": "tier", "type": "ENUM", "description": "Plan", "choices": ["basic", "pro"], "required": True}],
        }})
        await _mutate(services, own, EDIT, {"agentId": agent["id"], "config": {"successfulPrompt": None}})
    voice = next(a["id"] for a in agents if a["channel"] == "VOICE")
    done = await _mutate(services, own, JOB_INPUT, {"input": {"agentId": voice, "filter": {"status": ["ENDED", "ERROR"]}}})
    await _until_final(world, done["rerunAnalysis"]["job"]["id"])
    chat_agent = next(a["id"] for a in agents if a["channel"] == "CHAT")
    await _mutate(services, own, JOB_INPUT, {"input": {"agentId": chat_agent}})
    canceled = await _mutate(services, own, JOB_INPUT, {"input": {"agentId": voice, "filter": {"successful": False}}})
    canceled_id = canceled["rerunAnalysis"]["job"]["id"]
    with contextlib.suppress(AssertionError):  # it may have finished already
        await _mutate(services, own, "mutation($id: ID!) { cancelRerun(jobId: $id) { id } }", {"id": canceled_id})
    await _until_final(world, canceled_id)
    with contextlib.suppress(AssertionError):  # unless it finished before the cancel: a retry of its canceled items
        await _mutate(services, own, "mutation($id: ID!) { retryRerun(jobId: $id) { job { id } } }", {"id": canceled_id})
    versions = (await world.execute('query($id: ID!) { agent(id: $id) { versions { version isPublished } } }', {"id": voice},
                                    compiled=False))[0].data["agent"]["versions"]
    published = next(v["version"] for v in versions if v["isPublished"])
    await _mutate(services, own, JOB_INPUT, {"input": {"agentId": voice, "configVersion": published}})


async def _until_final(world: World, job_id: str) -> None:
    for _ in range(600):
        status = (await world.execute('query($id: ID!) { rerunJob(id: $id) { status } }', {"id": job_id}, compiled=False)
                  )[0].data["rerunJob"]["status"]
        if status not in ("QUEUED", "RUNNING"):
            break
        await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
def world(server_url: str) -> Iterator[World]:
    loop = asyncio.new_event_loop()
    name = f"gqlapi_engine_{secrets.token_hex(4)}"
    app, lifespan, own, other = loop.run_until_complete(_build(server_url, name))
    world = World(loop, app.state.services, own, other, {}, [])
    try:
        world.run(_history(world))
        listing = world.run(world.execute(
            "{ agents(first: 100) { nodes { id } } calls(first: 100) { edges { cursor node { id } } } "
            "chats(first: 100) { nodes { id } } rerunJobs { nodes { id } } }", None, compiled=False))[0].data
        other_listing = world.run(world.execute(
            "{ agents { nodes { id } } calls(first: 5) { nodes { id } } rerunJobs { nodes { id } } }",
            None, compiled=False, workspace=other))[0].data
        world.ids = {
            "agent": [a["id"] for a in listing["agents"]["nodes"]],
            "call": [c["node"]["id"] for c in listing["calls"]["edges"]],
            "chat": [c["id"] for c in listing["chats"]["nodes"]],
            "job": [j["id"] for j in listing["rerunJobs"]["nodes"]],
            "foreign": [a["id"] for a in other_listing["agents"]["nodes"]] + [c["id"] for c in other_listing["calls"]["nodes"]],
        }
        world.cursors = [edge["cursor"] for edge in listing["calls"]["edges"][::7]]
        assert len(world.ids["job"]) >= 3 and world.ids["chat"]
        yield world
    finally:
        world.run(lifespan.__aexit__(None, None, None))

        async def drop() -> None:
            admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            await admin.close()

        world.run(drop())
        loop.close()


def assert_same(world: World, query: str, variables: dict[str, Any] | None = None, *, compiled: bool | None = True) -> Any:
    got, expected, roots = world.both(query, variables)
    assert got == expected, f"\ncompiled:  {orjson.dumps(got).decode()[:3000]}\nresolvers: {orjson.dumps(expected).decode()[:3000]}"
    if compiled is not None:
        assert (roots > 0) == compiled, f"compiled root fields: {roots}"
    return got


# ---- every compiled field, by hand --------------------------------------------------------------

ANALYSIS = """id conversationId trigger model summary successful userSentiment inVoicemail customData inputTokens
  outputTokens costUsd charged createdAt agentVersion { id version }"""
CONFIG = """summaryPrompt successfulPrompt userSentimentPrompt summaryPromptIsDefault successfulPromptIsDefault
  userSentimentPromptIsDefault model dataFields { name type description examples choices required __typename }"""
VERSION = f"""id agentId version isPublished isLatestDraft title createdAt publishedAt configUpdatedAt revision
  analysisConfig {{ {CONFIG} }} agent {{ id name }}
  configChanges {{ changedAt changedFields origin before {{ {CONFIG} }} after {{ summaryPrompt model }} }}"""
CALL = f"""id callType callStatus direction fromNumber toNumber startedAt endedAt durationMs disconnectionReason
  transcript metadata transcriptObject {{ role content words {{ word start end }} }}
  agent {{ id name channel createdAt }} agentVersion {{ {VERSION} }} analysis {{ {ANALYSIS} }}
  analysisHistory {{ {ANALYSIS} }} __typename"""
CHAT = f"""id chatType chatStatus startedAt endedAt transcript metadata messages {{ role content createdAt }}
  agent {{ id }} agentVersion {{ version }} analysis {{ {ANALYSIS} }} analysisHistory {{ id trigger }}"""
PAGE_INFO = "pageInfo { hasNextPage hasPreviousPage startCursor endCursor __typename }"
JOB = f"""id status total succeeded failed canceled pending estimatedCostUsd estimatedInputTokens estimatedOutputTokens
  costUsd configVersion configSource config {{ {CONFIG} }} targets requestedBy cancelRequestedAt createdAt startedAt finishedAt
  impact {{ compared withoutPreviousResult flippedToSuccessful flippedToUnsuccessful sentimentChanged
    customDataChanged {{ name changed __typename }} __typename }}
  agent {{ id name }} retryOf {{ id status configVersion configSource targets }} retries {{ id configSource targets retryOf {{ id }} }}
  items(first: 100) {{ edges {{ cursor node {{ conversationId status error attempts startedAt finishedAt
    result {{ {ANALYSIS} }} previousResult {{ id summary }} call {{ id callStatus analysis {{ id }} }} chat {{ id }} }} }}
    {PAGE_INFO} }}"""

HAND_WRITTEN = [
    f"{{ calls(first: 100) {{ edges {{ cursor node {{ {CALL} }} }} {PAGE_INFO} __typename }} }}",
    f"{{ chats(first: 100) {{ nodes {{ {CHAT} }} edges {{ cursor }} {PAGE_INFO} }} }}",
    f"{{ agents {{ nodes {{ id name channel createdAt draft {{ {VERSION} }} versions {{ {VERSION} }}"
    f"  calls(first: 3) {{ nodes {{ id }} {PAGE_INFO} }} chats(first: 2, filter: {{status: [ENDED]}}) {{ nodes {{ id }} }} }}"
    f"  edges {{ cursor node {{ id }} __typename }} {PAGE_INFO} }} }}",
    f"{{ rerunJobs(first: 100) {{ nodes {{ {JOB} }} {PAGE_INFO} }} }}",
    "{ a: calls(first: 2) { nodes { id } } b: calls(first: 3, filter: {successful: true}) { nodes { id analysis { successful } } } }",
    "{ calls(filter: {versions: [1, 2], status: [ENDED, NOT_CONNECTED]}) { nodes { id agentVersion { version } callStatus } } }",
    "{ calls(filter: {userSentiment: [NEGATIVE]}) { nodes { id analysis { userSentiment } } } }",
    "{ calls(filter: {userSentiment: [POSITIVE, NEUTRAL], successful: false}) { nodes { id } pageInfo { hasNextPage } } }",
    '{ calls(filter: {startedAfter: "2026-11-10T00:00:00Z", startedBefore: "2026-11-20T00:00:00Z"}) { nodes { id startedAt } } }',
    "{ calls(first: 0) { nodes { id } pageInfo { hasNextPage hasPreviousPage startCursor endCursor } } }",
    "{ calls { ...Page } } fragment Page on CallConnection { edges { node { ...C } } } fragment C on Call { id ... on Call { agent { name } } }",
    "query($skip: Boolean!, $inc: Boolean!) { calls(first: 3) { nodes { id callStatus @skip(if: $skip) agent @include(if: $inc) { id } } } }",
    "{ __typename calls(first: 1) { nodes { id } } }",
    "{ calls(first: 101) { nodes { id } } }",
    "{ calls(first: -1) { nodes { id } } }",
    '{ calls(after: "garbage") { nodes { id } } }',
    '{ calls(filter: {agentId: "agent_nope"}) { nodes { id } } }',
    '{ calls(filter: {startedAfter: "2026-11-20T00:00:00Z", startedBefore: "2026-11-10T00:00:00Z"}) { nodes { id } } }',
    '{ chats(filter: {status: [NOT_CONNECTED]}) { nodes { id } } }',
    '{ agent(id: "agent_nope") { id } call(id: "call_nope") { id } chat(id: "nope") { id } rerunJob(id: "rerun_00000000000000000000") { id } }',
    '{ agents { nodes { calls(first: 500) { nodes { id } } } } }',
    '{ rerunJobs(agentId: "agent_nope") { nodes { id } } }',
]


@pytest.mark.parametrize("index", range(len(HAND_WRITTEN)))
def test_hand_written_queries_answer_alike(world: World, index: int) -> None:
    query = HAND_WRITTEN[index]
    variables = {"skip": True, "inc": False} if "$skip" in query else None
    assert_same(world, query, variables, compiled=None)
    if variables:
        assert_same(world, query, {"skip": False, "inc": True}, compiled=None)


def test_by_id_roots_and_walks_answer_alike(world: World) -> None:
    ids = world.ids
    for kind, query in (
        ("agent", f"query($id: ID!) {{ agent(id: $id) {{ id name draft {{ {VERSION} }} calls(first: 5) {{ nodes {{ id }} }} }} }}"),
        ("call", f"query($id: ID!) {{ call(id: $id) {{ {CALL} }} chat(id: $id) {{ id }} }}"),
        ("chat", f"query($id: ID!) {{ chat(id: $id) {{ {CHAT} }} }}"),
        ("job", f"query($id: ID!) {{ rerunJob(id: $id) {{ {JOB} }} }}"),
    ):
        for ident in ids[kind][:6] + ids["foreign"][:2]:
            assert_same(world, query, {"id": ident}, compiled=None)
    # A walk through every call by cursor, through both paths.
    after, seen = None, 0
    while True:
        page = assert_same(world, "query($after: String) { calls(first: 7, after: $after) { edges { cursor node { id } } "
                                  "pageInfo { hasNextPage endCursor } } }", {"after": after})[0]["calls"]
        seen += len(page["edges"])
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == len(ids["call"])
    job = ids["job"][-1]
    first = assert_same(world, 'query($id: ID!) { rerunJob(id: $id) { items(first: 2) { pageInfo { endCursor } } } }', {"id": job})
    cursor = first[0]["rerunJob"]["items"]["pageInfo"]["endCursor"]
    assert_same(world, 'query($id: ID!, $after: String) { rerunJob(id: $id) { items(first: 3, after: $after, status: [SUCCEEDED, FAILED]) '
                       '{ nodes { conversationId status } pageInfo { hasNextPage hasPreviousPage } } } }', {"id": job, "after": cursor})
    impacts = [assert_same(world, "query($id: ID!) { rerunJob(id: $id) { succeeded impact { compared flippedToSuccessful "
                                  "flippedToUnsuccessful sentimentChanged customDataChanged { name changed } } } }", {"id": j})
               for j in ids["job"]]
    assert any(i[0]["rerunJob"]["impact"]["compared"] for i in impacts)  # compiled, and over real results


def test_the_other_workspace_is_never_seen(world: World) -> None:
    for query in ("{ calls(first: 100) { nodes { id } } }", "{ agents { nodes { id calls(first: 100) { nodes { id } } } } }",
                  "{ rerunJobs { nodes { id items { nodes { conversationId call { id } } } } } }"):
        got, expected, roots = world.both(query, workspace=world.other)
        assert got == expected and roots == 1
        seen = orjson.dumps(got).decode()
        assert not any(ident in seen for ident in world.ids["call"][:20])


# ---- generated queries -------------------------------------------------------------------------

GRAPHQL = schema._schema
ROOTS = ["agents", "agent", "calls", "call", "chats", "chat", "rerunJobs", "rerunJob"]
FILTER_PARTS = {
    "versions": st.lists(st.integers(0, 4), min_size=0, max_size=3),
    "successful": st.booleans(),
    "userSentiment": st.lists(st.sampled_from(["NEGATIVE", "NEUTRAL", "POSITIVE", "UNKNOWN"]), min_size=1, max_size=2),
    "status": st.lists(st.sampled_from(["ENDED", "ERROR", "NOT_CONNECTED", "ONGOING"]), min_size=1, max_size=2),
    "startedAfter": st.sampled_from(["2026-11-01T00:00:00Z", "2026-11-18T12:00:00+02:00"]),
    "startedBefore": st.sampled_from(["2026-11-19T00:00:00Z", "2027-01-01T00:00:00Z"]),
}


def _unwrap(type_: Any) -> Any:
    while isinstance(type_, (GraphQLNonNull, GraphQLList)):
        type_ = type_.of_type
    return type_


@st.composite
def arguments(draw: Any, world: World, parent: str, name: str, args: dict[str, Any]) -> dict[str, Any]:
    chosen: dict[str, Any] = {}
    if "id" in args:
        pool = {"agent": "agent", "call": "call", "chat": "chat", "rerunJob": "job"}[name]
        chosen["id"] = draw(st.sampled_from(world.ids[pool][:8] + world.ids["foreign"][:2] + ["missing_id"]))
    if "first" in args and draw(st.booleans()):
        chosen["first"] = draw(st.sampled_from([0, 1, 2, 5, 20, 100, 101, -1]))
    if "after" in args and draw(st.integers(0, 3)) == 0:
        tags = {"calls": world.cursors, "items": ["WyJpdGVtIiwyXQ"]}.get(name, [])
        chosen["after"] = draw(st.sampled_from(tags + ["WyJjYWxsIiwiMjAyNi0xMS0yMFQxMjowMDowMCswMDowMCIsInoiXQ", "bad"]))
    if "filter" in args and draw(st.booleans()):
        parts = draw(st.dictionaries(st.sampled_from(sorted(FILTER_PARTS)), st.just(None), max_size=3))
        flt = {key: draw(FILTER_PARTS[key]) for key in parts}
        if draw(st.integers(0, 5)) == 0:
            flt["agentId"] = draw(st.sampled_from(world.ids["agent"][:3] + ["agent_nope"]))
        chosen["filter"] = flt
    if "status" in args and draw(st.booleans()):
        chosen["status"] = draw(st.lists(st.sampled_from(["PENDING", "SUCCEEDED", "FAILED", "CANCELED"]), min_size=1, max_size=2))
    if "agentId" in args and draw(st.integers(0, 3)) == 0:
        chosen["agentId"] = draw(st.sampled_from(world.ids["agent"][:3] + ["agent_nope"]))
    return chosen


def _literal(value: Any, enum: bool = False) -> str:
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_literal(v, k in ('userSentiment', 'status'))}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_literal(v, enum) for v in value) + "]"
    if enum:
        return value
    return orjson.dumps(value).decode()


@st.composite
def selection(draw: Any, world: World, type_: GraphQLObjectType, depth: int, state: dict[str, Any]) -> str:
    names = sorted(type_.fields)
    if depth <= 0:
        names = [n for n in names if not isinstance(_unwrap(type_.fields[n].type), GraphQLObjectType)] or names[:1]
    picked = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    parts = []
    for name in picked:
        field = type_.fields[name]
        args = draw(arguments(world, type_.name, name, field.args)) if field.args else {}
        if args and draw(st.booleans()):  # some arguments as variables
            rendered = []
            for arg, value in args.items():
                variable = f"v{len(state['variables'])}"
                state["variables"][variable] = value
                state["definitions"].append(f"${variable}: {field.args[arg].type}")
                rendered.append(f"{arg}: ${variable}")
            arg_text = "(" + ", ".join(rendered) + ")"
        else:
            arg_text = "(" + ", ".join(f"{k}: {_literal(v, k == 'status')}" for k, v in args.items()) + ")" if args else ""
        alias = draw(st.sampled_from(["", "", "", f"x{len(parts)}: "]))
        named = _unwrap(field.type)
        sub = ""
        if isinstance(named, GraphQLObjectType):
            sub = " { " + draw(selection(world, named, depth - 1, state)) + " }"
        text = f"{alias}{name}{arg_text}{sub}"
        how = draw(st.integers(0, 9))
        if how == 0:
            text = f"... on {type_.name} {{ {text} }}"
        elif how == 1 and "@" not in text:
            state["definitions"].append("$flag: Boolean!")
            text = f"{text} @include(if: $flag)"
        elif how == 2:
            fragment = f"F{len(state['fragments'])}"
            state["fragments"].append(f"fragment {fragment} on {type_.name} {{ {text} }}")
            text = f"...{fragment}"
        parts.append(text)
    if draw(st.integers(0, 6)) == 0:
        parts.append("__typename")
    return " ".join(parts)


@st.composite
def queries(draw: Any, world: World) -> tuple[str, dict[str, Any]]:
    state: dict[str, Any] = {"variables": {}, "definitions": [], "fragments": []}
    roots = draw(st.lists(st.sampled_from(ROOTS), min_size=1, max_size=2, unique=True))
    body = " ".join(_root(draw, world, root, state) for root in roots)
    definitions = list(dict.fromkeys(state["definitions"]))
    if any(d.startswith("$flag") for d in definitions):
        state["variables"]["flag"] = draw(st.booleans())
    header = f"query({', '.join(definitions)})" if definitions else ""
    return f"{header} {{ {body} }} " + " ".join(state["fragments"]), state["variables"]


def _root(draw: Any, world: World, root: str, state: dict[str, Any]) -> str:
    field = GRAPHQL.query_type.fields[root]
    args = draw(arguments(world, "Query", root, field.args))
    arg_text = "(" + ", ".join(f"{k}: {_literal(v, k == 'status')}" for k, v in args.items()) + ")" if args else ""
    return f"{root}{arg_text} {{ {draw(selection(world, _unwrap(field.type), 3, state))} }}"


def _sibling_errors_alike(got: Any, expected: Any) -> bool:
    """Both answers null their data over the same error raised by several items of one list: which item's error
    comes first follows the order the resolvers happened to finish in, on either path, so the item index is masked."""
    def masked(result: Any) -> Any:
        data, errors = result
        return data, [{**e, "path": [p if isinstance(p, str) else "#" for p in e.get("path") or []]} for e in errors or []]

    return got[0] is None and expected[0] is None and masked(got) == masked(expected)


def test_generated_queries_answer_alike(world: World) -> None:
    compiled = {"roots": 0, "queries": 0}

    @settings(max_examples=MAX_EXAMPLES, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
    @given(st.data())
    def check(draw: Any) -> None:
        query, variables = draw.draw(queries(world))
        got, expected, roots = world.both(query, variables)
        compiled["roots"] += roots
        compiled["queries"] += 1
        if got != expected and _sibling_errors_alike(got, expected):
            return
        assert got == expected, (f"\n{query}\n{variables}\ncompiled:  {orjson.dumps(got).decode()[:2000]}"
                                 f"\nresolvers: {orjson.dumps(expected).decode()[:2000]}")

    check()
    # Most generated queries compile (the others are errors, answered by the resolvers on purpose).
    assert compiled["roots"] >= compiled["queries"] // 2, compiled
