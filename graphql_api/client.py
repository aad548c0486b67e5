"""The terminal client: `rerun`, `jobs`, `cancel` and `diff` over GraphQL against a running server, like any frontend,
and `export`, a download from its /export endpoints.

Queries and mutations go over HTTP (httpx), the rerun's progress over the WebSocket at /graphql speaking
graphql-transport-ws (websockets). Nothing here touches the server's internals or its database.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import websockets
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.prompt import Confirm
from rich.table import Table

DEFAULT_URL = "http://127.0.0.1:8000"
URL_ENV = "ANALYSIS_API_URL"
KEY_ENV = "ANALYSIS_API_KEY"

# Exit statuses, the same for every command.
OK = 0
JOB_FAILED = 1
USAGE = 2
AUTH = 3
REFUSED = 4
UNREACHABLE = 5

_EXIT_FOR_CODE = {
    "BAD_USER_INPUT": USAGE, "NOT_FOUND": USAGE, "GRAPHQL_VALIDATION_FAILED": USAGE, "GRAPHQL_PARSE_FAILED": USAGE,
    "UNAUTHENTICATED": AUTH, "FORBIDDEN": AUTH,
    "CONFLICT": REFUSED, "LIMIT_EXCEEDED": REFUSED,
}
FINAL_STATUSES = frozenset({"SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"})

ESTIMATE_FIELDS = "conversations skipped inputTokens outputTokens costUsd model configVersion mode"
JOB_FIELDS = "id status total succeeded failed canceled pending costUsd createdAt finishedAt agent { id name }"
RESULT_FIELDS = "id trigger createdAt summary successful userSentiment inVoicemail customData agentVersion { version }"

RERUN = f"""mutation Rerun($input: RerunAnalysisInput!) {{
  rerunAnalysis(input: $input) {{ estimate {{ {ESTIMATE_FIELDS} }} job {{ {JOB_FIELDS} }} reused }}
}}"""
JOBS = f"""query Jobs($first: Int, $agentId: ID) {{
  rerunJobs(first: $first, agentId: $agentId) {{ nodes {{ {JOB_FIELDS} }} }}
}}"""
CANCEL = f"mutation Cancel($id: ID!) {{ cancelRerun(jobId: $id) {{ {JOB_FIELDS} }} }}"
ITEMS = """query Items($id: ID!, $after: String) { rerunJob(id: $id) {
  items(first: 100, after: $after) {
    nodes { conversationId status result { successful } previousResult { successful } }
    pageInfo { hasNextPage endCursor }
  }
} }"""
PROGRESS = f"""subscription Progress($id: ID!) {{ rerunProgress(jobId: $id) {{
  job {{ {JOB_FIELDS} }}
  item {{ conversationId status error result {{ successful }} previousResult {{ successful }} }}
}} }}"""
CONVERSATION = """query Conversation($id: ID!) {{ {kind}(id: $id) {{
  id analysis {{ {fields} }} analysisHistory {{ {fields} }}
}} }}"""


class ClientError(Exception):
    """An error to print (message and code) with the exit status it means; never a traceback."""

    def __init__(self, message: str, code: str | None = None, exit_code: int = JOB_FAILED):
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_code = exit_code

    @classmethod
    def from_graphql(cls, error: dict) -> ClientError:
        code = (error.get("extensions") or {}).get("code")
        return cls(str(error.get("message", "error")), code, _EXIT_FOR_CODE.get(code or "", JOB_FAILED))


@dataclass
class Client:
    url: str
    key: str | None
    timeout: float = 30

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def execute(self, query: str, variables: dict | None = None, *, retries: int = 0) -> dict:
        """The `data` of one operation; a GraphQL error raises ClientError. Transport errors are retried `retries` times."""
        endpoint = self.url.rstrip("/") + "/graphql"
        for attempt in range(retries + 1):
            try:
                response = httpx.post(endpoint, json={"query": query, "variables": variables or {}},
                                      headers=self._headers(), timeout=self.timeout)
                break
            except (httpx.TransportError, httpx.InvalidURL) as failed:
                if attempt == retries or isinstance(failed, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
                    raise self._unreachable(failed) from None
        body = _json_body(response)
        if body is None:
            raise _not_an_answer(response, endpoint)
        if body.get("errors"):
            raise ClientError.from_graphql(body["errors"][0])
        return body.get("data") or {}

    def _unreachable(self, failed: Exception) -> ClientError:
        if isinstance(failed, (httpx.InvalidURL, httpx.UnsupportedProtocol)):
            return ClientError(f"bad server URL {self.url!r}: {failed}", "BAD_USER_INPUT", USAGE)
        return ClientError(f"server unreachable at {self.url}: {failed or type(failed).__name__}", None, UNREACHABLE)

    @contextlib.contextmanager
    def download(self, path: str, params: list[tuple[str, str]]) -> Iterator[httpx.Response]:
        """A GET whose body is read as it arrives; a refusal (any status but 200) raises ClientError with its code."""
        endpoint = self.url.rstrip("/") + path
        with httpx.Client(timeout=self.timeout) as http:
            try:
                response = http.send(http.build_request("GET", endpoint, params=params, headers=self._headers()),
                                     stream=True)
            except (httpx.TransportError, httpx.InvalidURL) as failed:
                raise self._unreachable(failed) from None
            try:
                if response.status_code != 200:
                    response.read()
                    body = _json_body(response)
                    if body is None or not body.get("errors"):
                        raise _not_an_answer(response, endpoint)
                    raise ClientError.from_graphql(body["errors"][0])
                yield response
            finally:
                response.close()

    def ws_url(self) -> str:
        base = self.url.rstrip("/")
        if base.startswith("https://"):
            return "wss://" + base[len("https://"):] + "/graphql"
        if base.startswith("http://"):
            return "ws://" + base[len("http://"):] + "/graphql"
        return base + "/graphql"

    async def subscribe(self, query: str, variables: dict):
        """Yield each `next` payload's data of one subscription over graphql-transport-ws until `complete`."""
        try:
            connection = await websockets.connect(self.ws_url(), subprotocols=["graphql-transport-ws"],
                                                  open_timeout=self.timeout)
        except (OSError, websockets.exceptions.WebSocketException, asyncio.TimeoutError) as failed:
            raise ClientError(f"server unreachable at {self.url}: {failed}", None, UNREACHABLE) from None
        async with connection:
            await connection.send(json.dumps({"type": "connection_init", "payload": self._headers()}))
            try:
                async for raw in connection:
                    message = json.loads(raw)
                    kind = message.get("type")
                    if kind == "connection_ack":
                        await connection.send(json.dumps(
                            {"id": "1", "type": "subscribe", "payload": {"query": query, "variables": variables}}))
                    elif kind == "ping":
                        await connection.send(json.dumps({"type": "pong"}))
                    elif kind == "next":
                        payload = message.get("payload") or {}
                        if payload.get("errors"):
                            raise ClientError.from_graphql(payload["errors"][0])
                        yield payload.get("data") or {}
                    elif kind == "error":
                        errors = message.get("payload") or [{"message": "subscription error"}]
                        raise ClientError.from_graphql(errors[0] if isinstance(errors, list) else errors)
                    elif kind == "complete":
                        return
            except websockets.exceptions.ConnectionClosed as closed:
                reason = closed.rcvd.reason if closed.rcvd else ""
                code = closed.rcvd.code if closed.rcvd else None
                exit_code = AUTH if code in (4401, 4403) else UNREACHABLE
                raise ClientError(f"the server closed the subscription ({code}: {reason or 'no reason'})",
                                  "UNAUTHENTICATED" if code == 4401 else None, exit_code) from None
            raise ClientError("the server closed the subscription before it completed", None, UNREACHABLE)


def _json_body(response: httpx.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _not_an_answer(response: httpx.Response, endpoint: str) -> ClientError:
    if response.status_code in (401, 403):
        return ClientError(f"HTTP {response.status_code} from {endpoint}", None, AUTH)
    return ClientError(f"HTTP {response.status_code} from {endpoint}: not a GraphQL response", None, JOB_FAILED)


@dataclass
class RerunTargets:
    agent: str | None = None
    versions: list[int] = field(default_factory=list)
    started_after: str | None = None
    started_before: str | None = None
    status: list[str] = field(default_factory=list)
    successful: bool | None = None
    sentiment: list[str] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    chats: list[str] = field(default_factory=list)
    fields: list[str] | None = None  # the outputs to recompute; None for all
    only_changed: bool = False
    batch: bool = False  # through the Gemini Batch API

    def input(self) -> dict[str, Any]:
        narrowing: dict[str, Any] = {}
        if self.fields is not None:
            narrowing["fields"] = self.fields
        if self.only_changed:
            narrowing["onlyChanged"] = True
        if self.batch:
            narrowing["mode"] = "BATCH"
        return {**self._targets(), **narrowing}

    def _targets(self) -> dict[str, Any]:
        if self.agent and (self.calls or self.chats):
            raise ClientError("give --agent with filters, or --call/--chat ids, not both", "BAD_USER_INPUT", USAGE)
        if self.calls or self.chats:
            if self.filtered():
                raise ClientError("filters apply to --agent only", "BAD_USER_INPUT", USAGE)
            return {key: value for key, value in (("callIds", self.calls), ("chatIds", self.chats)) if value}
        if not self.agent:
            raise ClientError("nothing to rerun: give --agent ID (with filters) or --call/--chat ids",
                              "BAD_USER_INPUT", USAGE)
        conversation_filter = {
            "versions": self.versions or None, "startedAfter": self.started_after,
            "startedBefore": self.started_before, "status": [s.upper() for s in self.status] or None,
            "successful": self.successful, "userSentiment": [s.upper() for s in self.sentiment] or None,
        }
        conversation_filter = {k: v for k, v in conversation_filter.items() if v is not None}
        return {"agentId": self.agent, **({"filter": conversation_filter} if conversation_filter else {})}


    def filtered(self) -> bool:
        return bool(self.versions or self.started_after or self.started_before or self.status or self.sentiment
                    or self.successful is not None)

    def export_params(self) -> list[tuple[str, str]]:
        """The filter as /export/results takes it: parameters named like the GraphQL filter's fields, lists repeated."""
        targets = self._targets()
        params = [("agentId", targets["agentId"])]
        for name, value in targets.get("filter", {}).items():
            for item in value if isinstance(value, list) else [value]:
                params.append((name, str(item).lower() if isinstance(item, bool) else str(item)))
        return params


def _out() -> Console:
    return Console(highlight=False)


def _err() -> Console:
    return Console(stderr=True, highlight=False)


def report_error(error: ClientError) -> int:
    _err().print(f"error: {error.message}" + (f" ({error.code})" if error.code else ""), markup=False)
    return error.exit_code


def _money(value: Any) -> str:
    return f"${float(value):.4f}"


def estimate_table(estimate: dict) -> Table:
    table = Table(title="Rerun estimate (dry run, nothing started)")
    for column in ("conversations", "input tokens", "output tokens", "cost", "model", "draft version"):
        table.add_column(column, justify="right" if column not in ("model",) else "left")
    cost = _money(estimate["costUsd"]) + (" (batch price)" if estimate.get("mode") == "BATCH" else "")
    table.add_row(str(estimate["conversations"]), f"{estimate['inputTokens']:,}", f"{estimate['outputTokens']:,}",
                  cost, estimate["model"], str(estimate["configVersion"]))
    return table


def rerun(client: Client, targets: RerunTargets, *, max_cost: str | None, yes: bool) -> int:
    out = _out()
    request = targets.input()
    if max_cost is not None:
        request["maxCostUsd"] = max_cost
    dry = client.execute(RERUN, {"input": {**request, "dryRun": True}})["rerunAnalysis"]
    out.print(estimate_table(dry["estimate"]))
    if dry["estimate"]["skipped"]:
        out.print(f"{dry['estimate']['skipped']} conversations have nothing to recompute and are skipped")
    if dry["estimate"]["conversations"] == 0:
        out.print("nothing to rerun: no finished conversation matches" if not dry["estimate"]["skipped"]
                  else "nothing to recompute: their current results already come from this config")
        return OK
    if not yes:
        if not sys.stdin.isatty():
            raise ClientError("not starting without confirmation: no terminal to ask on, pass --yes",
                              "BAD_USER_INPUT", USAGE)
        if not Confirm.ask(f"Start the rerun? It is charged (about {_money(dry['estimate']['costUsd'])})",
                           console=out, default=False):
            out.print("nothing started")
            return OK
    # One key for this start: a retry after a lost answer returns the job the first attempt created.
    started = client.execute(RERUN, {"input": {**request, "idempotencyKey": f"cli-{uuid.uuid4().hex}"}},
                             retries=2)["rerunAnalysis"]
    job = started["job"]
    out.print(f"rerun job {job['id']} {'(already started by an earlier request) ' if started['reused'] else ''}"
              f"{job['status']}, {job['total']} conversations")
    try:
        job, flips, seen = asyncio.run(_watch(client, job, out))
    except KeyboardInterrupt:
        _err().print(f"stopped watching; the job keeps running (python -m graphql_api cancel {job['id']})")
        return 130
    flips.update(_flips_from_items(client, job["id"], exclude=seen))
    return _summary(out, job, flips)


async def _watch(client: Client, job: dict, out: Console) -> tuple[dict, dict[str, tuple[bool, bool]], set[str]]:
    flips: dict[str, tuple[bool, bool]] = {}
    seen: set[str] = set()
    with Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[detail]}"), TimeElapsedColumn(), console=out) as progress:
        task = progress.add_task(f"job {job['id']}", total=job["total"], completed=0, detail="")
        async for data in client.subscribe(PROGRESS, {"id": job["id"]}):
            event = data["rerunProgress"]
            job = event["job"]
            item = event.get("item")
            if item is not None:
                seen.add(item["conversationId"])
                flip = _flip(item)
                if flip:
                    flips[item["conversationId"]] = flip
            done = job["succeeded"] + job["failed"] + job["canceled"]
            progress.update(task, completed=done, total=job["total"], detail=(
                f"{job['status']} ok {job['succeeded']} failed {job['failed']} flipped {len(flips)} "
                f"{_money(job['costUsd'])}"))
    return job, flips, seen


def _flip(item: dict) -> tuple[bool, bool] | None:
    before = (item.get("previousResult") or {}).get("successful")
    after = (item.get("result") or {}).get("successful")
    if before is None or after is None or before == after:
        return None
    return before, after


def _flips_from_items(client: Client, job_id: str, exclude: set[str]) -> dict[str, tuple[bool, bool]]:
    """Flips of items that finished before the subscription started (the stream delivers only later ones)."""
    flips: dict[str, tuple[bool, bool]] = {}
    after = None
    while True:
        page = client.execute(ITEMS, {"id": job_id, "after": after})["rerunJob"]["items"]
        for item in page["nodes"]:
            if item["conversationId"] not in exclude and (flip := _flip(item)):
                flips[item["conversationId"]] = flip
        if not page["pageInfo"]["hasNextPage"]:
            return flips
        after = page["pageInfo"]["endCursor"]


def _summary(out: Console, job: dict, flips: dict[str, tuple[bool, bool]]) -> int:
    table = Table(title=f"Rerun {job['id']}: {job['status']}")
    for column in ("succeeded", "failed", "canceled", "cost", "outcomes flipped"):
        table.add_column(column, justify="right")
    table.add_row(str(job["succeeded"]), str(job["failed"]), str(job["canceled"]), _money(job["costUsd"]),
                  str(len(flips)))
    out.print(table)
    for conversation, (before, after) in sorted(flips.items()):
        out.print(f"  {conversation}: successful {str(before).lower()} -> {str(after).lower()}")
    return JOB_FAILED if job["status"] in ("FAILED", "PARTIALLY_FAILED") else OK


def jobs(client: Client, *, agent: str | None, first: int) -> int:
    nodes = client.execute(JOBS, {"first": first, "agentId": agent})["rerunJobs"]["nodes"]
    table = Table(title="Rerun jobs, newest first")
    for column in ("id", "agent", "status", "total", "ok", "failed", "canceled", "pending", "cost", "created"):
        table.add_column(column, justify="right" if column in ("total", "ok", "failed", "canceled", "pending", "cost")
                         else "left", overflow="fold")
    for job in nodes:
        table.add_row(job["id"], job["agent"]["id"], job["status"], str(job["total"]), str(job["succeeded"]),
                      str(job["failed"]), str(job["canceled"]), str(job["pending"]), _money(job["costUsd"]),
                      job["createdAt"][:19].replace("T", " "))
    _out().print(table)
    return OK


def cancel(client: Client, job_id: str) -> int:
    job = client.execute(CANCEL, {"id": job_id})["cancelRerun"]
    _out().print(f"job {job['id']}: {job['status']} (succeeded {job['succeeded']}, failed {job['failed']}, "
                 f"canceled {job['canceled']}, pending {job['pending']})")
    return OK


def _conversation(client: Client, conversation_id: str) -> dict:
    kinds = ("chat", "call") if conversation_id.startswith("chat") else ("call", "chat")
    for kind in kinds:
        try:
            found = client.execute(CONVERSATION.format(kind=kind, fields=RESULT_FIELDS), {"id": conversation_id})[kind]
        except ClientError as error:
            if error.code == "NOT_FOUND":
                continue
            raise
        if found is not None:
            return found
    raise ClientError(f"No call or chat with id {conversation_id!r} in this workspace.", "NOT_FOUND", USAGE)


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def diff(client: Client, conversation_id: str, *, against: str | None) -> int:
    conversation = _conversation(client, conversation_id)
    current = conversation["analysis"]
    if current is None:
        raise ClientError(f"{conversation_id} has no analysis yet", "NOT_FOUND", USAGE)
    history = conversation["analysisHistory"]
    if against:
        earlier = next((result for result in history if result["id"] == against), None)
        if earlier is None:
            raise ClientError(f"no analysis result {against!r} of {conversation_id}", "NOT_FOUND", USAGE)
    else:
        earlier = next((result for result in history if result["id"] != current["id"]), None)
        if earlier is None:
            raise ClientError(f"{conversation_id} has only its current analysis: nothing to compare with",
                              "NOT_FOUND", USAGE)
    rows = [(name, earlier.get(key), current.get(key)) for name, key in (
        ("summary", "summary"), ("successful", "successful"), ("userSentiment", "userSentiment"),
        ("inVoicemail", "inVoicemail"))]
    custom_before, custom_after = earlier.get("customData") or {}, current.get("customData") or {}
    rows += [(f"customData.{key}", custom_before.get(key), custom_after.get(key))
             for key in sorted(set(custom_before) | set(custom_after))]

    def label(result: dict) -> str:
        return f"{result['id']} ({result['trigger']}, v{result['agentVersion']['version']}, {result['createdAt'][:19]})"

    table = Table(title=f"{conversation_id}: current analysis against an earlier one", show_lines=True)
    table.add_column("", width=1)
    table.add_column("field")
    table.add_column(f"earlier {label(earlier)}", overflow="fold")
    table.add_column(f"current {label(current)}", overflow="fold")
    changed = 0
    for name, before, after in rows:
        if before != after:
            changed += 1
            table.add_row("*", name, _show(before), _show(after), style="bold yellow")
        else:
            table.add_row("", name, _show(before), _show(after))
    out = _out()
    out.print(table)
    out.print(f"{changed} of {len(rows)} fields changed" if changed else "nothing changed")
    return OK


EXPORT_FORMATS = ("csv", "jsonl")


class RecordCounter:
    """Counts the rows of an export as its bytes arrive, and tells whether its last record is a truncation marker.

    A record ends at a newline, except, in CSV, inside a quoted field: each `"` opens or closes one (an escaped `""`
    does both), so a newline ends a record when the quotes seen so far are even. A CSV export starts with its header.
    """

    # What starts the record the server writes last when it fails mid-stream (docs/export.md).
    MARKERS = {"csv": b"#truncated,", "jsonl": b'{"errors":'}
    HEAD = 64  # bytes kept of a record: enough to tell a marker

    def __init__(self, fmt: str):
        self.csv = fmt == "csv"
        self.marker = self.MARKERS[fmt]
        self.quoted = False
        self.records = 0
        self.current = b""  # the start of the record being read
        self.last = b""  # the start of the last whole record

    def feed(self, chunk: bytes) -> None:
        start = position = 0
        while True:
            newline = chunk.find(b"\n", position)
            if self.csv and chunk.count(b'"', position, len(chunk) if newline < 0 else newline) % 2:
                self.quoted = not self.quoted
            if newline < 0:
                break
            position = newline + 1
            if not self.quoted:
                self.records += 1
                self.last = (self.current + chunk[start:newline])[:self.HEAD]
                self.current = b""
                start = position
        if len(self.current) < self.HEAD:
            self.current += chunk[start:start + self.HEAD - len(self.current)]

    @property
    def truncated(self) -> bool:
        return self.last.startswith(self.marker)

    @property
    def rows(self) -> int:
        return max(0, self.records - self.csv - self.truncated)


def export(client: Client, *, job: str | None, targets: RerunTargets, fmt: str, output: Path | None) -> int:
    """Download a job's items (`job`) or an agent's current results (`targets`) to `output` (None: stdout), counting
    rows as they arrive; a file is written whole or not at all."""
    if fmt not in EXPORT_FORMATS:
        raise ClientError(f"--format is {' or '.join(EXPORT_FORMATS)}, not {fmt!r}", "BAD_USER_INPUT", USAGE)
    if job and targets.agent:
        raise ClientError("give --job or --agent (with filters), not both", "BAD_USER_INPUT", USAGE)
    if job:
        if targets.filtered():
            raise ClientError("filters apply to --agent only", "BAD_USER_INPUT", USAGE)
        path, params = f"/export/jobs/{job}", [("format", fmt)]
    elif targets.agent:
        path, params = "/export/results", [("format", fmt), *targets.export_params()]
    else:
        raise ClientError("nothing to export: give --job ID, or --agent ID (with filters)", "BAD_USER_INPUT", USAGE)
    counter = RecordCounter(fmt)
    written = 0
    started = time.monotonic()
    try:
        with _export_sink(output) as sink, client.download(path, params) as response, _export_progress() as progress:
            try:
                for chunk in response.iter_bytes():
                    sink.write(chunk)
                    written += len(chunk)
                    counter.feed(chunk)
                    progress(counter.rows, written)
            except httpx.TransportError as failed:
                raise _truncated(counter, output, f"the connection broke ({failed or type(failed).__name__})") from None
            if counter.truncated:
                raise _truncated(counter, output, "the server failed while writing it (its log says why)")
    except BrokenPipeError:
        # What reads stdout stopped (`| head`): end quietly, as a process that SIGPIPE ended would.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    where = f"to {output}" if output else "to stdout"
    (_out() if output else _err()).print(
        f"exported {_rows(counter.rows)} ({_size(written)}, {fmt}) {where} in {time.monotonic() - started:.1f} s",
        markup=False)
    return OK


def _truncated(counter: RecordCounter, output: Path | None, why: str) -> ClientError:
    kept = f"{output} was not written" if output else "what was written to stdout is incomplete"
    return ClientError(f"the export was cut short after {_rows(counter.rows)}: {why}; {kept}", None, JOB_FAILED)


@contextlib.contextmanager
def _export_sink(output: Path | None) -> Iterator[Any]:
    """stdout, or a file beside `output` renamed to it once the export is whole (removed when it is not)."""
    if output is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    partial = output.with_name(f".{output.name}.{os.getpid()}.part")
    try:
        sink = partial.open("wb")
    except OSError as failed:
        raise ClientError(f"can't write {output}: {failed.strerror or failed}", "BAD_USER_INPUT", USAGE) from None
    try:
        with sink:
            yield sink
        os.replace(partial, output)
    finally:
        partial.unlink(missing_ok=True)


@contextlib.contextmanager
def _export_progress() -> Iterator[Callable[[int, int], None]]:
    """Rows and bytes so far on stderr, redrawn in place, when stderr is a terminal; nothing otherwise."""
    if not sys.stderr.isatty():
        yield lambda rows, size: None
        return
    columns = (SpinnerColumn(), TextColumn("exporting {task.fields[rows]}, {task.fields[size]}"), TimeElapsedColumn())
    with Progress(*columns, console=_err(), transient=True) as bar:
        task = bar.add_task("export", total=None, rows=_rows(0), size=_size(0))
        yield lambda rows, size: bar.update(task, rows=_rows(rows), size=_size(size))


def _rows(count: int) -> str:
    return f"{count:,} row" + ("" if count == 1 else "s")


def _size(size: int) -> str:
    if size < 1000:
        return f"{size} bytes"
    scaled = float(size)
    for unit in ("kB", "MB", "GB"):
        scaled /= 1000
        if scaled < 1000 or unit == "GB":
            break
    return f"{scaled:.1f} {unit}"


def run(url: str, key: str | None, command: Callable[[Client], int]) -> int:
    """Run one client command against the server at `url`; errors print on stderr and give the exit status."""
    client = Client(url=url, key=key)
    try:
        if not client.key:
            raise ClientError(f"no API key: pass --key or set {KEY_ENV}", "UNAUTHENTICATED", AUTH)
        return command(client)
    except ClientError as error:
        return report_error(error)
    except KeyboardInterrupt:
        _err().print("interrupted")
        return 130
