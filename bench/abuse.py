"""The abusive requests of the load test (issue 8): documents, bodies and WebSocket handshakes that a server
without limits executes at great cost, and a client that sends them and records what comes back.

Each kind is sent as a hostile client would; the answer is recorded as a label (`413 LIMIT_EXCEEDED`,
`200 executed`, `ws closed 4403`, `no answer in 20 s`, `transport WriteError` ...) with its latency. "Heavy" kinds are those that
take seconds or hundreds of MB on a server that executes them: at most a few run at once, and none is sent
while the server's resident memory is above a guard, so that the machine survives the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import random
import re
import secrets
import signal
import string
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import websockets

from bench.reruns import vm_kib

ALIASES = 60_000
PAGES = 1_000
OPERATIONS = 10_000
DEPTH = 30
INTROSPECTIONS = 200
BIG_BODY_BYTES = 10 * 2**20

_CODE = re.compile(rb'"code"\s*:\s*"([A-Za-z_]+)"')
_NAME_START = string.ascii_letters
_NAME_REST = string.ascii_letters + string.digits + "_"


def short_name(i: int) -> str:
    """A distinct GraphQL name of at most 3 characters for i < 206,388: 60,000 aliases stay under 1 MiB."""
    out = _NAME_START[i % 52]
    i //= 52
    while i:
        out += _NAME_REST[i % 63]
        i //= 63
    return out


_TYPENAME_ALIASES = " ".join(f"{short_name(i)}:__typename" for i in range(ALIASES))
_PAGES_DOCUMENT = "{ " + " ".join(
    f"p{i}: calls(first: 100) {{ nodes {{ id transcript agent {{ id }} analysis {{ summary }} }} }}" for i in range(PAGES)
) + " }"
_OPERATIONS_DOCUMENT = " ".join(f"query o{i} {{ __typename }}" for i in range(OPERATIONS))
_INTROSPECTION_DOCUMENT = "{ " + " ".join(
    f"i{i}: __schema {{ types {{ name kind description fields(includeDeprecated: true) {{ name description "
    f"args {{ name type {{ name kind ofType {{ name kind }} }} }} type {{ name kind ofType {{ name kind ofType {{ name kind }} }} }} }} }} }}"
    for i in range(INTROSPECTIONS)
) + " }"


def _deep_document(depth: int) -> str:
    """agents → nodes → calls → nodes → agent → calls → ... → agent → id: `depth` levels of fields (30: the
    29th is an agent)."""
    levels = ["agents(first: 1)", "nodes"]
    cycle = ["calls(first: 1)", "nodes", "agent"]
    while len(levels) < depth - 1:
        levels.append(cycle[(len(levels) - 2) % 3])
    if levels[-1] != "agent":
        raise ValueError(f"depth {depth} does not end on an agent")
    return "{ " + " { ".join(levels) + " { id" + " }" * len(levels) + " }"


_DEEP_DOCUMENT = _deep_document(DEPTH)
# Padding in a comment: the document is a trivial one once the lexer has skipped 10 MB.
_BIG_BODY = orjson.dumps({"query": "#" + "x" * BIG_BODY_BYTES + "\n{ __typename }"})
_PLAIN_QUERY = "{ agents(first: 5) { nodes { id name } } }"


@dataclass
class Tally:
    """Answers of one kind."""

    answers: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    max_bytes: int = 0
    skipped: int = 0  # not sent: the server was above the memory guard

    def to_json(self, percentile: Callable[[list[float], float], float]) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "sent": len(ordered), "skipped_memory_guard": self.skipped, "answers": dict(self.answers.most_common()),
            "latency_ms": {
                "p50": _ms(percentile(ordered, 50)), "p95": _ms(percentile(ordered, 95)),
                "max": _ms(ordered[-1]) if ordered else None,
            },
            "max_response_bytes": self.max_bytes,
        }


def _ms(seconds: float) -> float | None:
    return None if seconds != seconds else round(seconds * 1000, 1)


def label_of(status: int, content: bytes) -> str:
    """`<status> <first extensions.code>`, or `<status> executed` for an answer with data and no error."""
    head = content[: 1 << 16]
    if len(content) <= 1 << 20:
        try:
            doc = orjson.loads(content)
        except orjson.JSONDecodeError:
            return f"{status} not JSON"
        if not isinstance(doc, dict):
            return f"{status} not a GraphQL response"
        errors = doc.get("errors") or []
        if errors:
            code = ((errors[0] or {}).get("extensions") or {}).get("code") if isinstance(errors[0], dict) else None
            return f"{status} {code or 'error without code'}"
        return f"{status} executed" if doc.get("data") is not None else f"{status} no data"
    # Too large to parse here without stealing the machine's CPU: errors come before data in the answer.
    if head.startswith(b'{"errors"'):
        match = _CODE.search(head)
        return f"{status} {match.group(1).decode() if match else 'error without code'}"
    return f"{status} executed"


@dataclass(frozen=True)
class Target:
    base_url: str
    ws_url: str
    key: str  # a valid key of the load test's workspace, for the kinds that authenticate


@dataclass(frozen=True)
class Kind:
    name: str
    what: str
    heavy: bool


KINDS = (
    Kind("aliases_60k", f"{ALIASES:,} `__typename` aliases (~0.9 MB, distinct documents), no key", True),
    Kind("aliases_60k_key", f"the same {ALIASES:,} aliases with a valid key", True),
    Kind("pages_1000x100", f"{PAGES:,} aliased `calls(first: 100)` pages with transcript, agent, analysis; valid key", True),
    Kind("operations_10k", f"a document of {OPERATIONS:,} operations, no key", True),
    Kind("introspection_200", f"{INTROSPECTIONS} aliased introspection queries, no key", True),
    Kind("depth_30", f"nesting depth {DEPTH} (agents → calls → agent → ...), valid key", False),
    Kind("body_10mb", "a 10 MB JSON body with Content-Length, no key", False),
    Kind("body_10mb_chunked", "a 10 MB JSON body, chunked (no Content-Length), no key", False),
    Kind("no_key", "a plain query without Authorization", False),
    Kind("wrong_key", "a plain query with a wrong API key", False),
    Kind("junk_body", "random bytes as application/json, no key", False),
    Kind("ws_wrong_key", "WebSocket connection_init with a wrong API key", False),
)


def kinds_named(names: str) -> tuple[Kind, ...]:
    """The kinds in a comma-separated list of names; all of them for an empty one."""
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {kind.name for kind in KINDS})
    if unknown:
        raise SystemExit(f"unknown abusive kinds {', '.join(unknown)}; choose from {', '.join(k.name for k in KINDS)}")
    return tuple(kind for kind in KINDS if not wanted or kind.name in wanted)


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for at in range(0, len(body), 1 << 16):
        yield body[at: at + (1 << 16)]


def _request(kind: str, target: Target, rnd: random.Random) -> tuple[dict[str, str], Any]:
    """Headers and content of one HTTP request of `kind`."""
    json_headers = {"Content-Type": "application/json", "Accept": "application/json"}
    keyed = {**json_headers, "Authorization": f"Bearer {target.key}"}
    if kind in ("aliases_60k", "aliases_60k_key"):
        headers = keyed if kind == "aliases_60k_key" else json_headers
        return headers, orjson.dumps({"query": f"query Q{secrets.token_hex(6)} {{ {_TYPENAME_ALIASES} }}"})
    if kind == "pages_1000x100":
        return keyed, orjson.dumps({"query": f"# {secrets.token_hex(6)}\n{_PAGES_DOCUMENT}"})
    if kind == "operations_10k":
        return json_headers, orjson.dumps({"query": _OPERATIONS_DOCUMENT, "operationName": "o0"})
    if kind == "introspection_200":
        return json_headers, orjson.dumps({"query": _INTROSPECTION_DOCUMENT})
    if kind == "depth_30":
        return keyed, orjson.dumps({"query": _DEEP_DOCUMENT})
    if kind == "body_10mb":
        return json_headers, _BIG_BODY
    if kind == "body_10mb_chunked":
        return json_headers, _chunks(_BIG_BODY)
    if kind == "no_key":
        return json_headers, orjson.dumps({"query": _PLAIN_QUERY})
    if kind == "wrong_key":
        return {**json_headers, "Authorization": f"Bearer gqa_{secrets.token_urlsafe(24)}"}, orjson.dumps({"query": _PLAIN_QUERY})
    if kind == "junk_body":
        return json_headers, rnd.randbytes(rnd.randint(16, 4096))
    raise ValueError(kind)


async def _send_ws_wrong_key(target: Target, timeout: float) -> str:
    try:
        async with asyncio.timeout(timeout):
            async with websockets.connect(target.ws_url, subprotocols=["graphql-transport-ws"], open_timeout=timeout) as ws:
                init = {"type": "connection_init", "payload": {"Authorization": f"Bearer gqa_{secrets.token_urlsafe(24)}"}}
                await ws.send(orjson.dumps(init).decode())
                try:
                    message = orjson.loads(await ws.recv())
                except websockets.ConnectionClosed as exc:
                    return f"ws closed {exc.rcvd.code if exc.rcvd else 'without close frame'}"
                if message.get("type") == "connection_ack":
                    return "ws connection_ack"
                return f"ws {message.get('type')}"
    except TimeoutError:
        return f"ws no answer in {timeout:.0f} s"
    except websockets.InvalidStatus as exc:
        return f"ws handshake HTTP {exc.response.status_code}"
    except (OSError, websockets.WebSocketException) as exc:
        return f"ws {type(exc).__name__}"


class Abuser:
    """Sends the kinds in turn, `concurrency` at once, recording each answer into its kind's tally."""

    def __init__(self, target: Target, *, concurrency: int, heavy_at_once: int, timeout: float, pause_s: float,
                 over_memory_guard: Callable[[], bool], seed: int, kinds: tuple[Kind, ...] = KINDS):
        self.target = target
        self.kinds = kinds
        self.concurrency = concurrency
        self.heavy = asyncio.Semaphore(heavy_at_once)
        self.timeout = timeout
        self.pause_s = pause_s
        self.over_memory_guard = over_memory_guard
        self.seed = seed
        self.tallies: dict[str, Tally] = {kind.name: Tally() for kind in kinds}

    async def run(self) -> None:
        """Until cancelled."""
        await asyncio.gather(*(self._loop(i) for i in range(self.concurrency)))

    async def _loop(self, index: int) -> None:
        rnd = random.Random(self.seed * 100 + index)
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=self.target.base_url, timeout=self.timeout, limits=limits) as client:
            position = index * len(self.kinds) // max(1, self.concurrency)
            while True:
                kind = self.kinds[position % len(self.kinds)]
                position += 1
                tally = self.tallies[kind.name]
                if kind.heavy and self.over_memory_guard():
                    tally.skipped += 1
                else:
                    async with self.heavy if kind.heavy else contextlib.nullcontext():
                        label, seconds, size = await self._send(client, kind.name, rnd)
                    tally.answers[label] += 1
                    tally.latencies.append(seconds)
                    tally.max_bytes = max(tally.max_bytes, size)
                await asyncio.sleep(self.pause_s)

    async def _send(self, client: httpx.AsyncClient, kind: str, rnd: random.Random) -> tuple[str, float, int]:
        """One request of `kind`: the answer's label, its latency and its size."""
        started = time.perf_counter()
        size = 0
        if kind == "ws_wrong_key":
            label = await _send_ws_wrong_key(self.target, min(self.timeout, 10.0))
        else:
            headers, content = _request(kind, self.target, rnd)
            try:
                async with asyncio.timeout(self.timeout):
                    response = await client.post("/graphql", headers=headers, content=content)
                size = len(response.content)
                label = label_of(response.status_code, response.content)
            except (TimeoutError, httpx.TimeoutException):
                label = f"no answer in {self.timeout:.0f} s"
            except httpx.HTTPError as exc:
                # For example, a server that answers 413 and closes before reading the rest of the body.
                label = f"transport {type(exc).__name__}"
        return label, time.perf_counter() - started, size

    async def probe(self, server_cpu_s: Callable[[], float], server_rss_kib: Callable[[], int], *,
                    repeat: int = 10, budget_s: float = 1.0) -> dict[str, Any]:
        """Each kind alone on an otherwise idle server, up to `repeat` times or `budget_s` of wall time (once when it is
        executed rather than refused): its answers, latency, and the server CPU and memory growth it cost."""
        rnd = random.Random(self.seed)
        out: dict[str, Any] = {}
        async with httpx.AsyncClient(base_url=self.target.base_url, timeout=self.timeout) as client:
            for kind in self.kinds:
                labels: Counter[str] = Counter()
                latencies: list[float] = []
                cpu_start, rss_start, started = server_cpu_s(), server_rss_kib(), time.perf_counter()
                while len(latencies) < repeat and time.perf_counter() - started < budget_s:
                    if kind.heavy and self.over_memory_guard():
                        break
                    label, seconds, _ = await self._send(client, kind.name, rnd)
                    labels[label] += 1
                    latencies.append(seconds)
                await asyncio.sleep(0.05)  # work the server does after answering (a body it still reads) counts too
                n = len(latencies)
                out[kind.name] = {
                    "sent": n, "answers": dict(labels.most_common()),
                    "latency_ms_mean": round(sum(latencies) / n * 1000, 1) if n else None,
                    "server_cpu_ms_per_request": round((server_cpu_s() - cpu_start) / n * 1000, 1) if n else None,
                    "server_rss_growth_mib": round((server_rss_kib() - rss_start) / 1024, 1),
                }
        return out


class AbuseProcess:
    """The abusive stream in a process of its own, started ahead and sending from `go()` to `finish()`: building and
    sending its bodies then never delays the event loop that times the well-behaved clients."""

    def __init__(self, target: Target, settings: dict[str, Any], *, server_pid: int, max_server_rss_kib: int):
        context = multiprocessing.get_context("spawn")
        self._go, self._stop, self._out = context.Event(), context.Event(), context.Queue()
        self.process = context.Process(
            target=_abuse_child, args=(target, settings, server_pid, max_server_rss_kib, self._go, self._stop, self._out),
            name="bench-abuse", daemon=True,
        )
        self.process.start()

    def go(self) -> None:
        self._go.set()

    def finish(self, timeout: float) -> dict[str, Tally]:
        """Stop sending (requests in flight are dropped) and return the tallies."""
        self._go.set()
        self._stop.set()
        try:
            return self._out.get(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        self.process.join(timeout=5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()


def _abuse_child(target: Target, settings: dict[str, Any], server_pid: int, max_server_rss_kib: int,
                 go: Any, stop: Any, out: Any) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends this process
    go.wait()

    async def main() -> dict[str, Tally]:
        abuser = Abuser(target, over_memory_guard=lambda: vm_kib(server_pid, "VmRSS") > max_server_rss_kib, **settings)
        task = asyncio.create_task(abuser.run())
        while not stop.is_set() and not task.done():
            await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return abuser.tallies

    out.put(asyncio.run(main()))
