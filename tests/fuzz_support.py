"""Support for the fuzz and tenancy tests: a real server over two workspaces of demo data, a digest of
every table, the server's log, and the properties every answer of `/graphql` must keep."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from graphql_api.testing.processes import ServerProcess

CONTRACT_CODES = frozenset(
    {"UNAUTHENTICATED", "FORBIDDEN", "NOT_FOUND", "BAD_USER_INPUT", "CONFLICT", "LIMIT_EXCEEDED", "INTERNAL"}
)
OWN, OTHER = "fuzz-own", "fuzz-other"

LIST_IDS = """{
  agents(first: 100) { nodes { id channel } }
  calls(first: 100) { nodes { id } }
  chats(first: 100) { nodes { id } }
  rerunJobs(first: 100) { nodes { id } }
  webhookEndpoints { id }
}"""

CREATE_JOB = """mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id } } }"""
# Nothing listens there, and no delivery loop runs (RUN_WORKERS=0): the endpoint only gives the workspace an id.
CREATE_ENDPOINT = """mutation { createWebhookEndpoint(input: {url: "http://127.0.0.1:9/hooks"}) { endpoint { id } } }"""


@dataclass
class Workspace:
    """A workspace seen through its API key: the ids of what it holds, by kind."""

    name: str
    key: str
    ids: dict[str, list[str]] = field(default_factory=dict)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}


@dataclass
class Target:
    server: ServerProcess
    db_url: str
    own: Workspace
    other: Workspace

    @property
    def base_url(self) -> str:
        return self.server.base_url


async def _load_workspaces(db_url: str) -> tuple[str, str]:
    """Demo-like data (agents with versions, calls, chats, initial analyses) in two workspaces; a key for each."""
    from graphql_api.analysis.offline import OfflineAnalyzer
    from graphql_api.db import Database
    from graphql_api.demo_data import generate_demo_records
    from graphql_api.importer import Importer
    from graphql_api.workspaces import create_api_key

    db = Database(db_url, max_size=4)
    await db.connect()
    try:
        keys = []
        for name, seed, calls, chats in ((OWN, 7, 24, 8), (OTHER, 8, 12, 6)):
            workspace, key = await create_api_key(db=db, workspace_name=name)
            records = generate_demo_records(seed, calls=calls, chats=chats)
            report = await Importer(db=db, workspace_id=workspace.id, analyzer=OfflineAnalyzer()).run(
                list(enumerate(records, start=1))
            )
            assert not report.errors, report.errors
            keys.append(key)
        return keys[0], keys[1]
    finally:
        await db.disconnect()


def _gql(client: httpx.Client, workspace: Workspace, query: str, variables: dict | None = None) -> dict:
    response = client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=workspace.auth)
    body = response.json()
    assert not body.get("errors"), body
    return body["data"]


def _collect_ids(client: httpx.Client, workspace: Workspace) -> None:
    data = _gql(client, workspace, LIST_IDS)
    agents = data["agents"]["nodes"]
    workspace.ids = {
        "agent": [a["id"] for a in agents],
        "voice_agent": [a["id"] for a in agents if a["channel"] == "VOICE"],
        "chat_agent": [a["id"] for a in agents if a["channel"] == "CHAT"],
        "call": [c["id"] for c in data["calls"]["nodes"]],
        "chat": [c["id"] for c in data["chats"]["nodes"]],
        "job": [j["id"] for j in data["rerunJobs"]["nodes"]],
        "webhook": [e["id"] for e in data["webhookEndpoints"]],
    }


@contextlib.contextmanager
def running_target(db_url: str, data_dir: Path) -> Iterator[Target]:
    """The real server (uvicorn, its own process) over two loaded workspaces, each with queued rerun jobs.

    Rerun workers are off, so nothing changes the tables but the requests themselves.
    """
    own_key, other_key = _run(_load_workspaces(db_url))
    own, other = Workspace(OWN, own_key), Workspace(OTHER, other_key)
    # The rate limit would soon answer every request alike; the other limits stay at their defaults.
    env = {"RUN_WORKERS": "0", "LOG_LEVEL": "INFO", "RATE_LIMIT_PER_S": "1000000", "RATE_LIMIT_BURST": "1000000"}
    server = ServerProcess(db_url=db_url, data_dir=data_dir, env=env)
    try:
        server.wait_ready()
        with httpx.Client(base_url=server.base_url, timeout=30) as client:
            for workspace in (own, other):
                _collect_ids(client, workspace)
                # Two queued jobs per workspace: one to read, one that fuzzing or a walk may cancel.
                for call_id in workspace.ids["call"][-2:]:
                    _gql(client, workspace, CREATE_JOB, {"input": {"callIds": [call_id]}})
                _gql(client, workspace, CREATE_ENDPOINT)
                _collect_ids(client, workspace)
        yield Target(server=server, db_url=db_url, own=own, other=other)
    finally:
        server.stop()


def _run(coroutine: Any) -> Any:
    """Run a coroutine on a private loop: the callers are plain functions, maybe in a worker thread."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coroutine)
    finally:
        loop.close()


# ---- what the server did: its log and its tables ------------------------------------------------

LOG_RECORD = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d[,.]\d+ (?P<level>[A-Z]+) (?P<logger>\S+) (?P<message>.*)$")
BAD_LEVELS = ("WARNING", "ERROR", "CRITICAL")


class LogWatch:
    """The server log from where it was last read, in whole lines."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = path.stat().st_size

    def read(self) -> list[str]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            chunk = f.read()
        end = chunk.rfind(b"\n") + 1
        self.offset += end
        return chunk[:end].decode("utf-8", "replace").splitlines()


def log_problems(lines: list[str]) -> list[str]:
    """Records a client's request must never cause (a warning, an error, a traceback), one line each with its exception."""
    records: list[list[str]] = []
    for line in lines:
        if LOG_RECORD.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    problems = []
    for header, *rest in records:
        match = LOG_RECORD.match(header)
        traceback = any(line.startswith("Traceback") for line in [header, *rest])
        if not traceback and not (match and match["level"] in BAD_LEVELS):
            continue
        summary = f"{match['level']} {match['logger']} {match['message'][:160]}" if match else header[:160]
        raised = [
            line for line in rest
            if line and not line[0].isspace() and not line.startswith(("Traceback", "The above", "During handling"))
        ]
        if raised:
            summary += f" | {raised[-1][:200]}"
        problems.append(summary)
    return problems


class TableDigest:
    """An md5 of every table's rows, over a direct connection to the test database."""

    def __init__(self, db_url: str):
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection = self._loop.run_until_complete(asyncpg.connect(dsn=db_url))
        tables = self._loop.run_until_complete(
            self._conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")
        )
        self._sql = " UNION ALL ".join(
            f"SELECT '{t['tablename']}' AS name, md5(coalesce(string_agg(r::text, E'\\n' ORDER BY r::text), ''))"
            f' AS digest FROM "{t["tablename"]}" r'
            for t in tables
        )

    def __call__(self) -> dict[str, str]:
        rows = self._loop.run_until_complete(self._conn.fetch(self._sql))
        return {row["name"]: row["digest"] for row in rows}

    def close(self) -> None:
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()


# ---- a case, and the properties its answer must keep ---------------------------------------------


@dataclass
class Case:
    """One HTTP request to /graphql and what is known about it in advance."""

    label: str  # the group it reports under: "query calls", "raw: body is JSON null", ...
    method: str = "POST"
    body: bytes | None = None
    params: dict[str, str] | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    may_mutate: bool = False  # a mutation may run: tables may change when it succeeds
    refusal: str | None = None  # why the API must refuse the whole request (errors, no data)
    codes: frozenset[str] = frozenset()  # when given, the answer must be errors with these codes only
    tags: tuple[str, ...] = ()  # the odd values it carries, for the report

    def describe(self, keys: dict[str, str], limit: int = 700) -> str:
        lines = [f"{self.method} /graphql" + (f"?{httpx.QueryParams(self.params)}" if self.params else "")]
        for name, value in self.headers.items():
            text = value.decode("latin-1") if isinstance(value, bytes) else value
            for key, alias in keys.items():
                text = text.replace(key, alias)
            lines.append(f"{name}: {_clip(repr(text) if not text.isprintable() else text, 200)}")
        if self.body is not None:
            try:
                text = self.body.decode("utf-8")
            except UnicodeDecodeError:
                text = repr(self.body)
            lines.append(f"body ({len(self.body)} bytes): {_clip(text, limit)}")
        return "\n".join(lines)


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}…[{len(text) - limit} more chars]…{text[-half // 2:]}"


# The properties; a failing case names each one it broke.
HTTP_5XX = "http_5xx"
NO_RESPONSE = "no_response"
NOT_JSON = "not_json"
NOT_GRAPHQL = "not_graphql_response"
BAD_CODE = "error_code_not_in_contract"
INTERNAL = "internal_error"
ACCEPTED = "invalid_input_accepted"
CODES = "unexpected_codes"
TABLES = "failed_request_changed_tables"
LOG = "server_log"
SLOW = "slow_answer"
SLOW_S = 10.0  # no request of a fuzz case is worth more than this of the server's time
PROPERTIES = {
    HTTP_5XX: "no HTTP 5xx",
    NO_RESPONSE: "the server answers (no dropped connection, no timeout)",
    NOT_JSON: "the body is JSON",
    NOT_GRAPHQL: "the body is a GraphQL response: an object with `data` and/or `errors`",
    BAD_CODE: "every error has `extensions.code` from the contract list",
    INTERNAL: "a client's request never causes INTERNAL",
    ACCEPTED: "an invalid request is refused whole, before any resolver runs (errors without a path, no data)",
    CODES: "the request is answered with the error codes it calls for",
    TABLES: "a request that failed changes no table",
    LOG: "a client's request leaves no warning, error or traceback in the server log",
    SLOW: f"the answer comes within {SLOW_S:.0f} s",
}
REFUSAL_CODES = {"BAD_USER_INPUT", "UNAUTHENTICATED", "LIMIT_EXCEEDED"}


@dataclass
class Answer:
    status: int | None
    content_type: str
    text: str
    body: Any = None  # the parsed JSON, when it is JSON
    error: str | None = None  # why there is no answer
    seconds: float = 0.0

    @property
    def excerpt(self) -> str:
        if self.error:
            return self.error
        return f"HTTP {self.status} {self.content_type}: {_clip(self.text, 400)}"


def _is_graphql_response(body: Any) -> bool:
    if not isinstance(body, dict) or not ({"data", "errors"} & body.keys()) or body.keys() - {"data", "errors", "extensions"}:
        return False
    if "data" in body and body["data"] is not None and not isinstance(body["data"], dict):
        return False
    if "errors" in body:
        errors = body["errors"]
        if not isinstance(errors, list) or not errors:
            return False
        if not all(isinstance(e, dict) and isinstance(e.get("message"), str) for e in errors):
            return False
    elif body.get("data") is None:
        return False
    return True


def _responses(body: Any, case: Case) -> list[dict] | None:
    """The GraphQL responses in a body: one, or one per operation of a batch request."""
    if _is_graphql_response(body):
        return [body]
    batch = (case.body or b"").lstrip()[:1] == b"["
    if batch and isinstance(body, list) and body and all(map(_is_graphql_response, body)):
        return body
    return None


def error_code(error: dict) -> Any:
    extensions = error.get("extensions")
    return extensions.get("code") if isinstance(extensions, dict) else None


def mutation_failed(responses: list[dict] | None) -> bool:
    """No mutation took effect: no answer, or no data and every error on the request or a root field."""
    if responses is None:
        return True
    return all(
        r.get("data") is None and all(len(e.get("path") or ()) <= 1 for e in r.get("errors") or ())
        for r in responses
    )


def judge(case: Case, answer: Answer, problems: list[str], changed: list[str]) -> list[tuple[str, str]]:
    """The properties the answer broke, each with what was seen."""
    broken: list[tuple[str, str]] = []
    if answer.error:
        return [(NO_RESPONSE, answer.error)]
    if answer.status >= 500:
        broken.append((HTTP_5XX, f"HTTP {answer.status}"))
    responses = None
    if case.method != "HEAD":
        if answer.body is None and answer.text.strip() != "null":
            broken.append((NOT_JSON, f"HTTP {answer.status} {answer.content_type}: {answer.text[:60]!r}"))
        else:
            responses = _responses(answer.body, case)
            if responses is None:
                broken.append((NOT_GRAPHQL, f"HTTP {answer.status}: {answer.text[:80]!r}"))
    for response in responses or ():
        for error in response.get("errors") or ():
            code = error_code(error)
            if code not in CONTRACT_CODES:
                broken.append((BAD_CODE, f"code {code!r}: {error['message'][:80]!r}"))
            elif code == "INTERNAL":
                broken.append((INTERNAL, "INTERNAL at " + ".".join(str(p) for p in error.get("path") or ["<request>"] if not isinstance(p, int))))
    if case.refusal and case.method != "HEAD":
        # Refused whole: request errors only (no path), before any resolver ran.
        refused = responses is not None and all(
            r.get("data") is None and r.get("errors")
            and all(error_code(e) in REFUSAL_CODES and not e.get("path") for e in r["errors"])
            for r in responses
        )
        if not refused and responses is not None:
            got = [f"{error_code(e)}" + (f" at {'.'.join(map(str, e['path']))}" if e.get("path") else "")
                   for r in responses for e in r.get("errors") or ()]
            data = [r.get("data") for r in responses]
            broken.append((ACCEPTED, f"{case.refusal}; answered codes {got} with data {_clip(json.dumps(data), 120)}"))
    if case.codes and responses is not None:
        got = {error_code(e) for r in responses for e in r.get("errors") or ()}
        if not got or not got <= case.codes:
            broken.append((CODES, f"expected {'/'.join(sorted(case.codes))}, answered {sorted(map(str, got)) or 'no error'}"))
    if changed and not (case.may_mutate and answer.status < 400 and not mutation_failed(responses)):
        broken.append((TABLES, "changed: " + ", ".join(changed)))
    broken.extend((LOG, problem) for problem in problems)
    if answer.seconds > SLOW_S:
        broken.append((SLOW, f"{answer.seconds:.1f} s for a {len(case.body or b'')}-byte body"))
    return broken


@dataclass
class Failure:
    case: Case
    broken: list[tuple[str, str]]
    answer: Answer
    log: list[str]

    @property
    def key(self) -> tuple[str, str, str]:
        """Failures of one class share the property first broken, the request's group and what was seen."""
        kind, seen = self.broken[0]
        if kind in (INTERNAL, LOG) and self.log:
            seen = self.log[0]
        elif kind == ACCEPTED:
            seen = self.case.refusal or seen
        seen = _normalized(seen)
        group = self.case.label if self.case.label.startswith("raw") else self.case.label.split(" ")[0]
        return kind, group, seen[:160]


def _outcome(answer: Answer) -> str:
    """What kind of answer it was, for the figure: data, partial data, or refused with which codes."""
    if answer.error or not isinstance(answer.body, dict):
        return "no GraphQL answer"
    codes = sorted({str(error_code(e)) for e in answer.body.get("errors") or () if isinstance(e, dict)})
    if not codes:
        return "data"
    return ("partial data, " if answer.body.get("data") else "refused, ") + "/".join(codes)


def _normalized(text: str) -> str:
    """Text with its values (quoted strings, numbers, argument values) blanked, so variants of one failure group."""
    return re.sub(r"'[^']*'|\"[^\"]*\"|\d+|\(.*\)|=\S+", "…", text)


class Runner:
    """Sends cases to the server one by one and keeps every failure, with what the server logged."""

    def __init__(self, target: Target):
        self.target = target
        self.client = httpx.Client(base_url=target.base_url, timeout=60)
        self.log = LogWatch(target.server.log_path)
        self.digest = TableDigest(target.db_url)
        self.tables = self.digest()
        self.cases = 0
        self.repeats = 0
        self.slowest: tuple[float, str] = (0.0, "")
        self._seen: set[tuple] = set()
        self.outcomes: dict[str, int] = {}
        self.failures: list[Failure] = []
        self._last: tuple[Case, Answer] | None = None
        self.keys = {target.own.key: "<key of workspace A>", target.other.key: "<key of workspace B>"}

    def close(self) -> None:
        time.sleep(0.3)
        self._late_log()
        self.client.close()
        self.digest.close()

    def _late_log(self) -> None:
        """Lines logged after the previous case was judged belong to it."""
        late = log_problems(self.log.read())
        if late and self._last is not None:
            case, answer = self._last
            previous = next((f for f in self.failures if f.case is case), None)
            if previous is None:
                self.failures.append(Failure(case, [(LOG, p) for p in late], answer, late))
            else:
                previous.broken.extend((LOG, p) for p in late)
                previous.log.extend(late)

    def send(self, case: Case) -> Answer:
        request = self.client.build_request(
            case.method, "/graphql", params=case.params, content=case.body, headers={**case.headers, "Connection": "close"}
        )
        try:
            response = self.client.send(request)
        except httpx.HTTPError as exc:
            alive = self.target.server.process.poll() is None
            return Answer(None, "", "", error=f"{type(exc).__name__}: {exc}" + ("" if alive else " (the server exited)"))
        text = response.content.decode("utf-8", "replace")
        try:
            body = json.loads(response.content) if response.content else None
        except ValueError:
            body = None
        return Answer(response.status_code, response.headers.get("content-type", ""), text, body)

    def _barrier(self) -> None:
        """A request the server answers only after finishing what the case left (uvicorn logs a crash after the 500 went out)."""
        with contextlib.suppress(httpx.HTTPError):
            self.client.get("/healthz", headers={"Connection": "close"})

    def run(self, case: Case) -> Answer | None:
        """Send a case and judge its answer; a request already sent is skipped (None)."""
        identity = (case.method, case.body, json.dumps(case.params), repr(sorted(case.headers.items())))
        if identity in self._seen:
            self.repeats += 1
            return None
        self._seen.add(identity)
        self._late_log()
        self.cases += 1
        started = time.monotonic()
        answer = self.send(case)
        answer.seconds = time.monotonic() - started
        self.slowest = max(self.slowest, (answer.seconds, case.label))
        self._barrier()
        problems = log_problems(self.log.read())
        tables = self.digest()
        changed = sorted(name for name, digest in tables.items() if self.tables.get(name) != digest)
        self.tables = tables
        outcome = _outcome(answer)
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        broken = judge(case, answer, problems, changed)
        if broken:
            self.failures.append(Failure(case, broken, answer, problems))
        self._last = (case, answer)
        return answer

    def report(self, header: str) -> str:
        """The figure (cases, failures by property) and each failure class with its smallest request."""
        by_kind: dict[str, int] = {}
        for failure in self.failures:
            for kind in {kind for kind, _ in failure.broken}:
                by_kind[kind] = by_kind.get(kind, 0) + 1
        classes: dict[tuple[str, str, str], list[Failure]] = {}
        for failure in self.failures:
            classes.setdefault(failure.key, []).append(failure)
        lines = [
            f"{header}: {self.cases} cases run ({self.repeats} repeats skipped), {len(self.failures)} failed, "
            f"{len(classes)} distinct failure classes",
            f"slowest answer: {self.slowest[0]:.2f} s ({self.slowest[1]})",
            "answers: " + ", ".join(f"{k} {n}" for k, n in sorted(self.outcomes.items(), key=lambda kv: -kv[1])),
            "failures by property: " + (", ".join(f"{k} {n}" for k, n in sorted(by_kind.items(), key=lambda kv: -kv[1])) or "none"),
        ]
        for number, (key, failures) in enumerate(sorted(classes.items(), key=lambda kv: (kv[0][0], kv[0][1])), start=1):
            smallest = min(failures, key=lambda f: len(f.case.body or b"") + len(str(f.case.params or "")))
            tags = sorted({t for f in failures for t in f.case.tags})
            lines.append("")
            lines.append(f"[{number}] {key[0]} x{len(failures)} in {key[1]!r}" + (f" (odd values seen: {', '.join(tags)})" if tags else ""))
            for kind, seen in dict(smallest.broken).items():
                lines.append(f"    broken: {PROPERTIES[kind]}: {_clip(seen, 300)}")
            variants = sorted({_normalized(f.broken[0][1]) for f in failures} - {_normalized(smallest.broken[0][1])})
            if variants:
                lines.append(f"    also seen ({len(variants)}): " + "; ".join(_clip(v, 100) for v in variants[:8]))
            if not key[1].startswith("raw"):
                labels = sorted({f.case.label for f in failures})
                lines.append(f"    in ({len(labels)}): " + ", ".join(labels[:12]) + (" …" if len(labels) > 12 else ""))
            lines.append("    request:")
            lines.extend("      " + line for line in smallest.case.describe(self.keys).splitlines())
            lines.append(f"    answer: {smallest.answer.excerpt}")
        return "\n".join(lines)


# ---- values: valid, odd, and ones the API must refuse ------------------------------------------------

# Odd strings by what makes them odd. Lone surrogates can't be UTF-8: bodies carrying them are sent as
# ASCII JSON, where they are escapes like "\ud800".
ODD_STRINGS: dict[str, list[str]] = {
    "nul": ["\x00", "a\x00b", "agent_\x00"],
    "surrogate": ["\ud800", "a\udfffb", "\udc00\ud800"],
    "huge": ["x" * 70_000, "é" * 40_000, "\U0001f642" * 20_000],
    "control": ["\x1b[31mred", "line\r\nbreak", "\t", "\u202egnp.exe", "\ufeff", "\uffff", "\U0010ffff", "\u0085", "\x7f"],
    "injection": ["'; DROP TABLE agents; --", "%s%s%s", "$1", "\\", "{0}", "%(x)s", "${jndi:ldap://x}", "<script>", "../../etc/passwd"],
    "json_text": ['{"a": 1}', "[]", "null", "true"],
    "number_text": ["NaN", "Infinity", "-0", "1e309", " 1 ", "1_000", "0x10", "\u0661\u0662\u0663"],
    "blank": ["", " ", "\u3000"],
}
VERY_HUGE = "y" * 1_100_000

INT_VALID = [0, 1, 2, 3, 5, 20, 99, 100, 101, -1, -(2**31), 2**31 - 1]
# Not an Int: out of 32 bits or not integral; NaN and infinities can't be written in JSON at all.
INT_INVALID = [2**31, -(2**31) - 1, 2**53 + 1, 2**63, -(2**63) - 1, 2**64, 10**30, 1.5, 1e308, -1e308]
INT_NOT_JSON = [float("nan"), float("inf")]

DATE_VALID = ["2026-11-01T00:00:00Z", "2026-11-01T00:00:00+00:00", "2026-10-15T12:30:00.123456+02:00"]
DATE_EXTREME = [  # the first two leave years 1..9999 once in UTC
    "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z",
]
DATE_ODD = [  # valid for the DateTime scalar, unusual for a person
    "2026-11-01T00:00:00", "2026-11-01", "20261101T000000Z", "2026-11-01 00:00:00+00:00", "2026-W44-1",
    "2026-11-01T00:00:00.123456789Z", "2026-11-01T00:00:00+23:59", "2026-11-01T24:00:00Z",
]
DATE_INVALID = [
    "garbage", "", "2026-02-30T00:00:00Z", "2026-11-01T25:00:00Z", "2026-13-01T00:00:00Z",
    "2026-11-01T00:00:00+24:00", "+10000-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "2026-11-01T00:00:00\x00",
]

# Decimal is "a string in plain notation".
DECIMAL_VALID = ["0", "1", "0.5", "0.00000001", "100", "123456789012.12345678", "-1"]
DECIMAL_ODD = ["99999999999999999999999999", "0.0000000000000000000001", "+1", ".5", "5.", 1.5, 10, 1e308, 10**40, "00.1"]
DECIMAL_INVALID = [
    "-0", "-0.0", " 1 ", "1_000", "1e999", "1E5", "1e-7", "NaN", "-NaN", "sNaN", "Infinity", "-Infinity", "", " ", "abc",
    "1,000", "\u0661\u0662\u0663", "0x10",
]

MODELS = ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "offline", "gpt-4o", "GEMINI-2.5-FLASH"]
FIELD_NAMES = ["visit_type", "field_1", "a", "x" * 65, "has space", "\u00fcn\u00efcode", "1starts_with_digit", "call_summary"]
UNKNOWN_IDS = {
    "agent": "agent_0000000000", "call": "call_000000000000", "chat": "chat_000000000000", "job": "rerun_00000000000000000000",
    "webhook": "whe_00000000000000000000",
}
ID_KINDS: dict[str, tuple[str, ...]] = {
    # What an id argument names, from the argument's name (`agentId`, `callIds`) or, for `id`, the field's type.
    "agent": ("agent",), "call": ("call",), "chat": ("chat",), "conversation": ("call", "chat"),
    "job": ("job",), "rerunjob": ("job",),
    # webhookDeliveries(endpointId), and `id` of the webhook mutations (named after the type they return).
    "endpoint": ("webhook",), "webhookendpoint": ("webhook",), "webhookendpointsecret": ("webhook",),
}


def id_kind(argument: str, owner: str) -> str:
    """`agentId` -> agent, `callIds` -> call, and `id` of a field returning `RerunJob` -> rerunjob."""
    stem = re.sub(r"Ids?$", "", argument) if argument not in ("id", "ids") else owner
    return stem.lower()


def _b64(raw: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_tag(connection: str) -> str:
    """The list a cursor belongs to, as the server writes it: CallConnection -> call, RerunItemConnection -> item."""
    return connection.removesuffix("Connection").removeprefix("Rerun").lower()


def forged_cursors(tag: str, own: Workspace) -> dict[str, list[str]]:
    """Cursors of list `tag` in the server's own shapes with odd payloads, and strings that aren't cursors at all."""
    call_id = own.ids["call"][0]
    at = "2026-11-01T00:00:00+00:00"

    def shaped(*payload: Any) -> str:
        return _b64(json.dumps([tag, *payload]).encode())

    return {
        "cursor_valid": [shaped(at, call_id), shaped(1), _b64(json.dumps(["call", at, call_id]).encode())],
        "cursor_position": [shaped(n) for n in (2**31, 2**63, 10**30, 2**31 - 1, -1, 1.5, "1")],
        "cursor_date": [shaped(d, call_id) for d in DATE_EXTREME] + [shaped("garbage", call_id), shaped(1, call_id), shaped(None, "x"), shaped(at, 5)],
        "cursor_id": [shaped(at, "a\x00b"), _b64(f'["{tag}", "{at}", "\\ud800"]'.encode()), shaped(at, "x" * 10_000)],
        "cursor_garbage": [
            "", "!!!", "====", "a", _b64(b"\xff\xfe\x00"), _b64(b"not json"), _b64(b"[]"), _b64(b"{}"), _b64(b"null"),
            _b64(b"[" * 5000 + b"]" * 5000), shaped(at, call_id) + "==", "A" * 100_000, json.dumps([tag, at, call_id]),
        ],
    }


@dataclass(frozen=True)
class Hop:
    """One field on the way to an object: its name and the arguments that reach exactly one object."""

    field: str
    arguments: str = ""


def access_paths(schema: Any, own: Workspace) -> dict[str, tuple[Hop, ...]]:
    """For each object type a query can reach, the shortest chain of fields from Query to one object of it.

    Required ids are the own workspace's; lists are cut to their first item.
    """
    from collections import deque

    from graphql import GraphQLObjectType, get_named_type

    paths: dict[str, tuple[Hop, ...]] = {schema.query_type.name: ()}
    queue = deque([schema.query_type])
    while queue:
        parent = queue.popleft()
        for name, field_def in sorted(parent.fields.items()):
            target = get_named_type(field_def.type)
            if not isinstance(target, GraphQLObjectType) or target.name in paths:
                continue
            arguments = []
            for arg_name, arg in field_def.args.items():
                if arg_name == "first":
                    arguments.append("first: 1")
                elif _required(arg):
                    pool = ID_KINDS.get(id_kind(arg_name, target.name)) if get_named_type(arg.type).name == "ID" else None
                    if not pool or not own.ids.get(pool[0]):
                        break  # a required argument this walk can't fill: another field may reach the type
                    arguments.append(f"{arg_name}: {json.dumps(own.ids[pool[0]][0])}")
            else:
                paths[target.name] = (*paths[parent.name], Hop(name, f"({', '.join(arguments)})" if arguments else ""))
                queue.append(target)
    return paths


def render_path(path: tuple[Hop, ...], inner: str) -> str:
    """`inner` nested in the selections of a path: `agent(id: "a") { calls(first: 1) { nodes { <inner> } } }`."""
    for hop in reversed(path):
        inner = f"{hop.field}{hop.arguments} {{ {inner} }}"
    return inner


@dataclass
class Draft:
    """A case being built: its variables, and the one thing (if any) that makes it invalid."""

    breakable: bool = False  # this case may carry one invalid part
    variables: dict[str, Any] = field(default_factory=dict)
    declarations: list[str] = field(default_factory=list)
    invalid: list[str] = field(default_factory=list)
    tags: set[str] = field(default_factory=set)
    not_json: bool = False  # carries NaN or an infinity, which JSON can't say
    optional_percent: int = 45  # how often an optional argument or input field is given

    def breaks(self, draw: Any, percent: int, *, anywhere: bool = False) -> bool:
        """Whether to make the case invalid here: at most once a case, and (unless `anywhere`) only in cases chosen to be."""
        return (self.breakable or anywhere) and not self.invalid and chance(draw, percent)


def chance(draw: Any, percent: int) -> bool:
    from hypothesis import strategies as st

    # sampled_from is near uniform; integers() leans to its bounds.
    return draw(st.sampled_from(PERCENTS)) < percent


PERCENTS = range(100)
BREAKABLE_PERCENT = 25  # of generated operations, how many carry one invalid part
FOCUSED_PERCENT = 60  # of generated operations, how many aim at one field with arguments (nested ones too)


def _required(argument: Any) -> bool:
    from graphql import GraphQLNonNull
    from graphql.pyutils import Undefined

    # graphql-core 3.3 keeps a default in `default`; earlier versions in `default_value`.
    default = getattr(argument, "default", None)
    has_default = (default is not None and default is not Undefined) or argument.default_value is not Undefined
    return isinstance(argument.type, GraphQLNonNull) and not has_default


class OperationFactory:
    """GraphQL requests generated from the schema: every root field, arguments of every kind, wrong ones too.

    A quarter of the cases carry exactly one invalid part (a wrong type, a missing argument, a value the
    scalar can't take...), which the API must refuse whole; the rest are valid GraphQL with odd values.
    """

    MAX_DEPTH = 4

    def __init__(self, schema: Any, own: Workspace, other: Workspace):
        self.schema = schema
        self.own, self.other = own, other
        self.cursors: dict[str, dict[str, list[str]]] = {}
        self._paths: dict[str, tuple[Hop, ...]] = {}
        self._targets: list[tuple[str, str, str]] | None = None

    # -- values

    def ids(self, draw: Any, d: Draft, kind: str) -> Any:
        from hypothesis import strategies as st

        kinds = ID_KINDS.get(kind) or tuple(k for k in self.own.ids if "_" not in k)
        pool = draw(st.sampled_from(kinds))
        source = draw(st.sampled_from(["own", "own", "own", "other", "unknown", "odd"]))
        d.tags.add(f"id_{source}")
        if source == "own" and self.own.ids.get(pool):
            return draw(st.sampled_from(self.own.ids[pool]))
        if source == "other" and self.other.ids.get(pool):
            return draw(st.sampled_from(self.other.ids[pool]))
        if source == "unknown":
            return UNKNOWN_IDS[pool]
        return self.string(draw, d, plain=False)

    def string(self, draw: Any, d: Draft, *, plain: bool = True, extra: list[str] = ()) -> str:
        from hypothesis import strategies as st

        kinds = ["plain"] * 3 + ["extra"] * 2 if plain else []
        # NUL and lone surrogates are the ones a database refuses: tried more often.
        kind = draw(st.sampled_from(kinds + sorted(ODD_STRINGS) + ["nul", "surrogate", "very_huge"]))
        if kind == "plain" or (kind == "extra" and not extra):
            return draw(st.text(max_size=24))
        if kind == "extra":
            return draw(st.sampled_from(list(extra)))
        if kind == "very_huge":
            if not chance(draw, 10):  # a megabyte a time is slow: rarely
                return "y"
            d.tags.add("very_huge")
            return VERY_HUGE
        d.tags.add(kind)
        return draw(st.sampled_from(ODD_STRINGS[kind]))

    def scalar(self, draw: Any, d: Draft, name: str, argument: str, owner: str) -> Any:
        from hypothesis import strategies as st

        if name == "ID":
            if chance(draw, 5):
                return draw(st.sampled_from([123, 2**63, 0]))
            return self.ids(draw, d, id_kind(argument, owner))
        if name == "String":
            if argument == "after":
                cursors = self.cursors.setdefault(owner, forged_cursors(cursor_tag(owner), self.own))
                kind = draw(st.sampled_from(sorted(cursors)))
                d.tags.add(kind)
                return draw(st.sampled_from(cursors[kind]))
            extra = {"model": MODELS, "name": FIELD_NAMES, "idempotencyKey": ["k1", "k2", "x" * 201]}.get(argument, [])
            return self.string(draw, d, extra=extra)
        if name == "Int":
            if d.breaks(draw, 30):
                value = draw(st.sampled_from(INT_INVALID + INT_NOT_JSON))
                d.tags.add("int_extreme")
                d.invalid.append(f"{argument}={value!r} is not a 32-bit Int")
                d.not_json |= value != value or value in INT_NOT_JSON
                return value
            return draw(st.sampled_from(INT_VALID))
        if name == "Boolean":
            return draw(st.booleans())
        if name == "DateTime":
            kind = "invalid" if d.breaks(draw, 15, anywhere=True) else draw(st.sampled_from(["valid", "extreme", "extreme", "odd"]))
            d.tags.add(f"date_{kind}")
            value = draw(st.sampled_from({"valid": DATE_VALID, "extreme": DATE_EXTREME, "odd": DATE_ODD, "invalid": DATE_INVALID}[kind]))
            if kind == "invalid":
                d.invalid.append(f"{argument}={value!r} is not a date-time")
            return value
        if name == "Decimal":
            kind = "invalid" if d.breaks(draw, 50, anywhere=True) else draw(st.sampled_from(["valid", "odd"]))
            d.tags.add(f"decimal_{kind}")
            value = draw(st.sampled_from({"valid": DECIMAL_VALID, "odd": DECIMAL_ODD, "invalid": DECIMAL_INVALID}[kind]))
            if kind == "invalid":
                d.invalid.append(f"{argument}={value!r} is not a decimal in plain notation")
            return value
        return self.string(draw, d)

    def wrong(self, draw: Any, d: Draft, type_: Any, argument: str) -> Any:
        """A value of another JSON type than the position takes."""
        from graphql import GraphQLEnumType, GraphQLInputObjectType
        from hypothesis import strategies as st

        named = type_.name
        if isinstance(type_, GraphQLInputObjectType):
            options = ["text", 1, True, [1]]
        elif isinstance(type_, GraphQLEnumType):
            options = [1, True, {"a": 1}, next(iter(type_.values)).lower(), "NOT_A_VALUE"]
        elif named == "Int":
            options = ["1", True, {"a": 1}, "ten"]
        elif named == "Boolean":
            options = ["true", 1, {"a": 1}, "yes"]
        elif named == "ID":
            options = [True, {"a": 1}, 1.5, [{"a": 1}]]
        else:  # String and the string-shaped scalars
            options = [True, {"a": 1}, [{"a": 1}]] + ([1] if named == "String" else [])
        value = draw(st.sampled_from(options))
        d.tags.add("wrong_type")
        d.invalid.append(f"{argument}={value!r} is not a {named}")
        return value

    def value(self, draw: Any, d: Draft, type_: Any, argument: str, owner: str) -> Any:
        from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLList, GraphQLNonNull
        from hypothesis import strategies as st

        if isinstance(type_, GraphQLNonNull):
            if d.breaks(draw, 3):
                d.invalid.append(f"{argument} is null but non-null")
                return None
            type_ = type_.of_type
        elif chance(draw, 8):
            return None
        if isinstance(type_, GraphQLList):
            size = draw(st.sampled_from([0, 1, 1, 2, 3, "big"]))
            if size == "big":
                d.tags.add("big_list")
                one = self.value(draw, d, type_.of_type, argument, owner)
                if len(json.dumps(one)) > 200:
                    one = UNKNOWN_IDS["call"]
                sizes = [101, 1_000] + ([20_000] if not isinstance(one, (dict, list)) else [])
                return [one] * draw(st.sampled_from(sizes))
            return [self.value(draw, d, type_.of_type, argument, owner) for _ in range(size)]
        if d.breaks(draw, 8):
            return self.wrong(draw, d, type_, argument)
        if isinstance(type_, GraphQLEnumType):
            return draw(st.sampled_from(sorted(type_.values)))
        if isinstance(type_, GraphQLInputObjectType):
            obj = {}
            for name, input_field in type_.fields.items():
                required = _required(input_field)
                if required and d.breaks(draw, 5):
                    d.invalid.append(f"{argument}.{name} is missing but required")
                elif required or chance(draw, d.optional_percent):
                    obj[name] = self.value(draw, d, input_field.type, name, type_.name)
            if d.breaks(draw, 5):
                d.invalid.append(f"{argument} has an unknown field")
                obj["notAField"] = 1
            return obj
        return self.scalar(draw, d, type_.name, argument, owner)

    # -- documents

    def arguments(self, draw: Any, d: Draft, field_def: Any, owner: str, *, focus: bool = False) -> str:
        parts = []
        for name, arg in field_def.args.items():
            required = _required(arg)
            if required and d.breaks(draw, 5):
                d.invalid.append(f"argument {name} is missing")
                continue
            if not required and not chance(draw, 85 if focus else d.optional_percent):
                continue
            d.optional_percent = 80 if focus else 45
            value = self.value(draw, d, arg.type, name, owner)
            d.optional_percent = 45
            printable = _literal(value, arg.type) if not _has_special_float(value) else None
            if printable is not None and chance(draw, 30):
                parts.append(f"{name}: {printable}")
                continue
            var = f"v{len(d.declarations) + 1}"
            declared = str(arg.type)
            if d.breaks(draw, 3):
                declared = "Int" if declared.startswith("Boolean") else "Boolean"
                d.invalid.append(f"${var} is declared {declared} where {arg.type} is expected")
            d.declarations.append(f"${var}: {declared}")
            if declared.endswith("!") and d.breaks(draw, 3):
                d.invalid.append(f"${var} has no value")
            else:
                d.variables[var] = value
            parts.append(f"{name}: ${var}")
        return f"({', '.join(parts)})" if parts else ""

    def selection(self, draw: Any, d: Draft, type_: Any, depth: int) -> str:
        from graphql import GraphQLObjectType, get_named_type, is_leaf_type
        from hypothesis import strategies as st

        named = get_named_type(type_)
        if is_leaf_type(named):
            return ""
        if not isinstance(named, GraphQLObjectType):
            return "{ __typename }"
        names = sorted(named.fields)
        if depth >= self.MAX_DEPTH:
            names = [n for n in names if is_leaf_type(get_named_type(named.fields[n].type))] or ["__typename"]
        chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
        return "{ " + " ".join(self.field(draw, d, named, name, depth + 1) for name in chosen) + " }"

    def field(self, draw: Any, d: Draft, parent: Any, name: str, depth: int, *, focus: bool = False) -> str:
        from graphql import get_named_type

        if name == "__typename":
            return name
        field_def = parent.fields[name]
        owner = get_named_type(field_def.type).name
        arguments = self.arguments(draw, d, field_def, owner, focus=focus)
        return f"{name}{arguments} {self.selection(draw, d, field_def.type, depth)}".strip()

    def focused(self, draw: Any, d: Draft) -> tuple[str, str, str]:
        """(operation type, root field name, selection) aiming at one field that takes arguments, anywhere in the schema."""
        from hypothesis import strategies as st

        if self._targets is None:
            self._paths = access_paths(self.schema, self.own)
            self._targets = sorted(
                (kind, type_name, name)
                for kind, type_name in [("query", t) for t in self._paths] + [("mutation", "Mutation"), ("subscription", "Subscription")]
                for name, field_def in self.schema.type_map[type_name].fields.items()
                if field_def.args
            )
        kind, type_name, name = draw(st.sampled_from(self._targets))
        path = self._paths.get(type_name, ()) if kind == "query" else ()
        inner = self.field(draw, d, self.schema.type_map[type_name], name, len(path), focus=True)
        text = render_path(path, inner)
        return kind, (path[0].field if path else name), text

    def case(self, draw: Any) -> Case:
        from hypothesis import strategies as st

        d = Draft(breakable=chance(draw, BREAKABLE_PERCENT))
        if chance(draw, FOCUSED_PERCENT):
            kind, name, text = self.focused(draw, d)
            names, fields = [name], [text]
        else:
            kind = draw(st.sampled_from(["query"] * 10 + ["mutation"] * 9 + ["subscription"]))
            root = {"query": self.schema.query_type, "mutation": self.schema.mutation_type, "subscription": self.schema.subscription_type}[kind]
            count = draw(st.sampled_from([1, 1, 2])) if kind == "query" else 1
            names = [draw(st.sampled_from(sorted(root.fields))) for _ in range(count)]
            # Aliases only where a field comes twice, so error paths name the fields.
            fields = [(f"f{i}: " if name in names[:i] else "") + self.field(draw, d, root, name, 0) for i, name in enumerate(names)]
        declarations = f"({', '.join(d.declarations)})" if d.declarations else ""
        document = f"{kind} Fuzz{declarations} {{ {' '.join(fields)} }}"
        payload: dict[str, Any] = {"query": document, "variables": d.variables}
        if d.breaks(draw, 20):
            if chance(draw, 50):
                payload["operationName"] = "NotInTheDocument"
                d.invalid.append("operationName names no operation of the document")
            else:
                payload["query"] += " query Other { __typename }"
                d.invalid.append("two operations and no operationName")
        elif chance(draw, 50):
            payload["operationName"] = "Fuzz"
            if chance(draw, 20):
                payload["query"] += " query Other { __typename }"
        if kind == "subscription":
            d.tags.add("subscription_over_http")
        auth = draw(st.sampled_from(["own"] * 8 + ["other", "none", "garbage"]))
        headers: dict[str, Any] = {}
        if auth in ("own", "other"):
            headers.update((self.own if auth == "own" else self.other).auth)
        elif auth == "garbage":
            headers["Authorization"] = draw(st.sampled_from(["Bearer ak_nope", "Bearer", "Basic x", b"Bearer \xff\xfe", "Bearer " + "k" * 10_000]))
        label = f"{kind} {'+'.join(sorted(set(names)))}"
        refusal = d.invalid[0] if d.invalid else None
        small = len(payload["query"]) + len(json.dumps(d.variables, ensure_ascii=True)) < 6_000  # fits in a URL
        if kind == "query" and small and chance(draw, 12) and not d.not_json:
            params = {"query": payload["query"], "variables": json.dumps(d.variables, ensure_ascii=True)}
            if "operationName" in payload:
                params["operationName"] = payload["operationName"]
            return Case(label, "GET", params=params, headers={**headers, "Accept": "application/json"},
                        refusal=refusal, tags=tuple(sorted(d.tags)))
        ascii_only = _has_surrogate(payload) or chance(draw, 30)
        body = json.dumps(payload, ensure_ascii=ascii_only, allow_nan=True).encode("utf-8")
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "application/json", "application/json; charset=utf-8"]))
        headers["Accept"] = draw(st.sampled_from(["application/json", "application/graphql-response+json", "*/*"]))
        return Case(label, body=body, headers=headers, may_mutate=kind == "mutation", refusal=refusal, tags=tuple(sorted(d.tags)))


def _has_special_float(value: Any) -> bool:
    if isinstance(value, float):
        return value != value or value in (float("inf"), float("-inf"))
    if isinstance(value, list):
        return any(map(_has_special_float, value))
    if isinstance(value, dict):
        return any(map(_has_special_float, value.values()))
    return False


def _has_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= c <= "\udfff" for c in value)
    if isinstance(value, list):
        return any(map(_has_surrogate, value))
    if isinstance(value, dict):
        return any(map(_has_surrogate, value.values())) or any(map(_has_surrogate, value))
    return False


NAME = re.compile(r"^[_A-Za-z][_0-9A-Za-z]*$")


def _literal(value: Any, type_: Any) -> str:
    """A value written in GraphQL syntax for a position of `type_` (enum values bare)."""
    from graphql import GraphQLEnumType, GraphQLInputObjectType, GraphQLList, GraphQLNonNull

    while isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        if isinstance(type_, GraphQLEnumType) and NAME.match(value) and value not in ("true", "false", "null"):
            return value
        return json.dumps(value, ensure_ascii=True)
    if isinstance(value, list):
        item = type_.of_type if isinstance(type_, GraphQLList) else type_
        return "[" + ", ".join(_literal(v, item) for v in value) + "]"
    fields = type_.fields if isinstance(type_, GraphQLInputObjectType) else {}
    return "{" + ", ".join(f"{k}: {_literal(v, fields[k].type if k in fields else None)}" for k, v in value.items()) + "}"


# ---- raw transport: bodies, methods and content types a GraphQL library may never see ---------------

AGENTS = "{ agents { nodes { id } } }"


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def transport_cases(target: Target) -> list[Case]:
    """Fixed requests for the HTTP layer: each says what it sends and what the API must answer."""
    own = target.own
    auth = own.auth
    js = {**auth, "Content-Type": "application/json"}
    job = own.ids["job"][0]
    agent = own.ids["agent"][0]
    publish = f'mutation {{ publishDraft(agentId: "{agent}") {{ version }} }}'
    deep = 100_000
    cases = [
        # Bodies that are JSON but not an object.
        *(Case(f"raw: body is JSON {name}", body=raw, headers=js, refusal="the body is not a JSON object")
          for name, raw in (("null", b"null"), ("true", b"true"), ("false", b"false"), ("number", b"1"),
                            ("float", b"1.5e308"), ("string", b'"{ agents { nodes { id } } }"'))),
        Case("raw: batch, empty", body=b"[]", headers=js),
        Case("raw: batch of two queries", body=_json([{"query": AGENTS}, {"query": "{ __typename }"}]), headers=js),
        Case("raw: batch with a mutation", body=_json([{"query": publish}]), headers=js, may_mutate=True),
        Case("raw: batch of non-objects", body=b"[1, null]", headers=js),
        # Bytes that aren't UTF-8 or JSON.
        Case("raw: invalid UTF-8 in a JSON string", body=b'{"query": "{ agents { nodes { id } } }", "variables": {"x": "\xff\xfe"}}',
             headers=js, refusal="the body is not UTF-8"),
        Case("raw: invalid UTF-8 bytes", body=b"\xff\xfe\xfd", headers=js, refusal="the body is not UTF-8"),
        Case("raw: UTF-16 JSON", body=_json({"query": AGENTS}).decode().encode("utf-16"), headers=js),
        Case("raw: empty body", body=b"", headers=js, refusal="the body is empty"),
        Case("raw: truncated JSON", body=b'{"query": ', headers=js, refusal="the body is malformed JSON"),
        Case("raw: single-quoted JSON", body=b"{'query': '{ __typename }'}", headers=js, refusal="the body is malformed JSON"),
        Case("raw: trailing garbage", body=_json({"query": AGENTS}) + b" }", headers=js, refusal="the body is malformed JSON"),
        Case("raw: NaN token", body=b'{"query": "{ __typename }", "variables": {"x": NaN}}', headers=js),
        Case("raw: duplicate keys", body=b'{"query": "{ __typename }", "query": "{ agents { nodes { id } } }"}', headers=js),
        # Deep nesting.
        Case("raw: deeply nested JSON array", body=b"[" * deep + b"]" * deep, headers=js),
        Case("raw: deeply nested JSON object", body=b'{"a":' * 20_000 + b"1" + b"}" * 20_000, headers=js,
             refusal="the body has no query"),
        Case("raw: deeply nested variables", body=b'{"query": "query($x: String) { __typename }", "variables": {"x": '
             + b"[" * deep + b"]" * deep + b"}}", headers=js),
        Case("raw: deeply nested selection", body=_json({"query": "{" + "a {" * 5_000 + "b" + "}" * 5_001}), headers=js,
             refusal="the document is not valid"),
        Case("raw: deeply nested list literal", body=_json({"query": f'{{ calls(filter: {{versions: {"[" * 5_000}1{"]" * 5_000}}}) {{ nodes {{ id }} }} }}'}),
             headers=js, refusal="the document is not valid"),
        Case("raw: many aliases", body=_json({"query": "{ " + " ".join(f"a{i}: __typename" for i in range(20_000)) + " }"}), headers=js),
        Case("raw: huge query", body=_json({"query": AGENTS + " " * 3_000_000}), headers=js),
        # Members of the wrong type, or missing.
        Case("raw: no query", body=b"{}", headers=js, refusal="the body has no query"),
        Case("raw: query null", body=_json({"query": None}), headers=js, refusal="the body has no query"),
        Case("raw: query is a number", body=_json({"query": 1}), headers=js, refusal="the query is not a string"),
        Case("raw: query is a list", body=_json({"query": [AGENTS]}), headers=js, refusal="the query is not a string"),
        Case("raw: variables is a string", body=_json({"query": AGENTS, "variables": "{}"}), headers=js),
        Case("raw: variables is a list", body=_json({"query": AGENTS, "variables": [1]}), headers=js,
             refusal="variables is not an object"),
        Case("raw: operationName is a number", body=_json({"query": AGENTS, "operationName": 1}), headers=js),
        Case("raw: extensions is a string", body=_json({"query": AGENTS, "extensions": "x"}), headers=js),
        Case("raw: NUL in the document", body=_json({"query": "{ agents\u0000 { nodes { id } } }"}), headers=js,
             refusal="the document is not valid"),
        Case("raw: lone surrogate in the document", body=b'{"query": "{ agents { nodes { id } } } # \\ud800"}', headers=js),
        Case("raw: lone surrogate in a string literal", body=b'{"query": "{ agent(id: \\"\\\\ud800\\") { id } }"}', headers=js,
             refusal="the document is not valid"),
        # Operations.
        Case("raw: unknown operationName", body=_json({"query": "query A { __typename }", "operationName": "B"}), headers=js,
             refusal="operationName names no operation"),
        Case("raw: several operations without operationName",
             body=_json({"query": f"query A {{ __typename }} {publish.replace('mutation', 'mutation B', 1)}"}), headers=js, may_mutate=True,
             refusal="several operations and no operationName"),
        Case("raw: operationName of a fragment", body=_json({"query": "query A { ...F } fragment F on Query { __typename }",
             "operationName": "F"}), headers=js, refusal="operationName names no operation"),
        Case("raw: subscription over POST", body=_json({"query": f'subscription {{ rerunProgress(jobId: "{job}") {{ job {{ id }} }} }}'}),
             headers=js, refusal="subscriptions need a WebSocket"),
        Case("raw: subscription over GET", method="GET", params={"query": f'subscription {{ rerunProgress(jobId: "{job}") {{ job {{ id }} }} }}'},
             headers={**auth, "Accept": "application/json"}, refusal="subscriptions need a WebSocket"),
        Case("raw: directive with a wrong argument", body=_json({"query": '{ __typename @skip(if: "yes") }'}), headers=js,
             refusal="the document is not valid"),
        Case("raw: fragment cycle", body=_json({"query": "{ ...A } fragment A on Query { ...B } fragment B on Query { ...A }"}),
             headers=js, refusal="the document is not valid"),
        # Seeds: one request for each bug class fuzzing has found, so the bounded run always tries them.
        *(Case(f"raw: seed, {name}", body=_json({"query": query, "variables": variables}), headers=js)
          for name, query, variables in (
              ("NUL in an id", "query($id: ID!) { call(id: $id) { id } }", {"id": "call_\x00"}),
              ("lone surrogate in an id", "query($id: ID!) { rerunJob(id: $id) { id } }", {"id": "\ud800"}),
              ("instant before year 1 in UTC", "query($d: DateTime) { calls(filter: {startedAfter: $d}) { nodes { id } } }",
               {"d": "0001-01-01T00:00:00+14:00"}),
              ("instant after year 9999 in UTC", "query($d: DateTime) { chats(filter: {startedBefore: $d}) { nodes { id } } }",
               {"d": "9999-12-31T23:59:59-14:00"}),
              ("cursor position past 2^31", "query($id: ID!, $a: String) { rerunJob(id: $id) { items(after: $a) { nodes { status } } } }",
               {"id": job, "a": _b64(b'["item", 2147483648]')}),
              ("keyset cursor before year 1", "query($a: String) { agents(after: $a) { nodes { id } } }",
               {"a": _b64(b'["agent", "0001-01-01T00:00:00+14:00", "agent_x"]')}),
          )),
        *(Case(f"raw: seed, maxCostUsd {value!r}", body=_json({"query": "mutation($i: RerunAnalysisInput!) { rerunAnalysis(input: $i) { reused } }",
               "variables": {"i": {"agentId": agent, "dryRun": True, "maxCostUsd": value}}}), headers=js,
               refusal=f"maxCostUsd={value!r} is not a decimal in plain notation")
          for value in ("-0", " 1 ", "1_000", "1e999", "\u0661\u0662\u0663")),
        # Found by the generated requests: a nested error that nulls a list item while a sibling branch awaits the
        # same DataLoader key (here an agent's draft).
        Case("raw: nested error beside a branch sharing a loader", body=_json({"query": "{ calls { nodes { agent { "
             "calls(first: 101) { nodes { id } } draft { id } } } edges { node { agent { draft { id } } } } } }"}), headers=js),
        Case("raw: introspection without a key", body=_json({"query": "{ __schema { types { name } } }"}),
             headers={"Content-Type": "application/json"}),
        # HTTP methods and content types.
        *(Case(f"raw: method {m}", method=m, body=_json({"query": AGENTS}), headers=js, refusal="/graphql takes GET and POST")
          for m in ("PUT", "DELETE", "PATCH", "OPTIONS")),
        Case("raw: method HEAD", method="HEAD", headers=auth),
        Case("raw: GET without a query", method="GET", headers={**auth, "Accept": "application/json"}, refusal="there is no query"),
        Case("raw: GET with a mutation", method="GET", params={"query": publish}, headers={**auth, "Accept": "application/json"},
             may_mutate=True, refusal="mutations can't be sent with GET"),
        Case("raw: GET with malformed variables", method="GET", params={"query": AGENTS, "variables": "{"},
             headers={**auth, "Accept": "application/json"}, refusal="the variables are malformed JSON"),
        Case("raw: GET with variables that are a list", method="GET", params={"query": AGENTS, "variables": "[1]"},
             headers={**auth, "Accept": "application/json"}, refusal="variables is not an object"),
        *(Case(f"raw: content type {ctype or 'missing'}", body=_json({"query": AGENTS}), headers={**auth, **({"Content-Type": ctype} if ctype else {})})
          for ctype in ("text/plain", "application/x-www-form-urlencoded", "application/xml", "", "application/json; charset=latin-1", "application/JSON")),
        Case("raw: content type application/graphql", body=AGENTS.encode(), headers={**auth, "Content-Type": "application/graphql"}),
        Case("raw: multipart without operations", body=b'--x\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n',
             headers={**auth, "Content-Type": "multipart/form-data; boundary=x"}, refusal="multipart without operations"),
        Case("raw: multipart with operations", body=b'--x\r\nContent-Disposition: form-data; name="operations"\r\n\r\n'
             + _json({"query": AGENTS}) + b'\r\n--x\r\nContent-Disposition: form-data; name="map"\r\n\r\n{}\r\n--x--\r\n',
             headers={**auth, "Content-Type": "multipart/form-data; boundary=x"}),
        Case("raw: multipart with a broken boundary", body=b"--y\r\n\r\n", headers={**auth, "Content-Type": "multipart/form-data; boundary=x"}),
        # Authorization headers.
        *(Case(f"raw: Authorization {name}", body=_json({"query": AGENTS}), headers={"Content-Type": "application/json", "Authorization": value},
               codes=frozenset({"UNAUTHENTICATED", "LIMIT_EXCEEDED"}))
          for name, value in (("non-latin bytes", b"Bearer \xff\xfe"), ("scheme only", "Bearer"), ("huge key", "Bearer " + "k" * 60_000),
                              ("other scheme", "Digest x"))),
    ]
    return cases


def raw_body_case(draw: Any, target: Target) -> Case:
    """A POST whose body is random: any JSON value, a request object with members of any type, or bytes."""
    from hypothesis import strategies as st

    scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
    documents = st.sampled_from([AGENTS, "{ __typename }", "query($id: ID!) { agent(id: $id) { id } }", "mutation { __typename }"])
    shape = draw(st.sampled_from(["value", "request", "request", "bytes", "mangled_document"]))
    headers = {**target.own.auth, "Content-Type": "application/json"}
    if shape == "bytes":
        return Case("raw: random bytes", body=draw(st.binary(max_size=64)), headers=headers)
    if shape == "value":
        value = draw(json_values)
        body = json.dumps(value).encode()
        refusal = None if isinstance(value, (dict, list)) else "the body is not a JSON object"
        return Case(f"raw: random JSON {type(value).__name__}", body=body, headers=headers, refusal=refusal)
    if shape == "mangled_document":
        document = draw(documents)
        position = draw(st.integers(0, len(document)))
        document = document[:position] + draw(st.text(max_size=3)) + document[position + draw(st.integers(0, 3)):]
        return Case("raw: mangled document", body=json.dumps({"query": document}).encode(), headers=headers)
    request = {}
    for member, values in (("query", documents | json_values), ("variables", json_values), ("operationName", json_values), ("extensions", json_values)):
        if draw(st.booleans()):
            request[member] = draw(values)
    refusal = None
    if not isinstance(request.get("query"), str):
        refusal = "the query is missing or not a string"
    return Case("raw: request object with members of any type", body=json.dumps(request).encode(), headers=headers,
                may_mutate="mutation" in json.dumps(request), refusal=refusal)


def api_schema() -> Any:
    """The served schema as graphql-core types (from the SDL the code exports)."""
    from graphql import build_schema

    from graphql_api.schema import schema

    return build_schema(schema.as_str())
