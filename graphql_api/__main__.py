"""Command line (Typer): the server's commands (`serve`, `run`, `migrate`, `seed`, `worker`, `import`, the API keys)
and the clients of a running server (`rerun`, `export`, `jobs`, `cancel`, `diff`). `--help` on each names its options
and the environment variables it reads; `main(argv)` returns the exit status."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import signal
import sys
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import structlog
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# The database, the schema and the app are imported by the commands that use them: --help and the clients of a
# running server start without them.
from graphql_api import client
from graphql_api.config import Settings
from graphql_api.logs import setup_logging

if TYPE_CHECKING:
    from graphql_api.importer import Progress as ImportProgress

log = structlog.stdlib.get_logger("graphql_api")

DEMO_WORKSPACE = "demo"


async def _migrate(settings: Settings, url: str) -> None:
    from graphql_api.db import migrate

    applied = await migrate(url)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")


async def _seed(settings: Settings, url: str, *, only_if_empty: bool) -> None:
    """Add the demo data that is missing from the workspace demo; nothing stored is changed (a user's edits stay)."""
    from graphql_api.demo_data import generate_demo_records
    from graphql_api.importer import Importer
    from graphql_api.services import open_services
    from graphql_api.workspaces import ensure_workspace

    async with open_services(settings, url) as services:
        workspace = await ensure_workspace(db=services.db, name=DEMO_WORKSPACE)
        if only_if_empty and not await services.db.fetch_val("workspace_is_empty", workspace_id=workspace.id):
            log.info("seed_skipped", workspace=DEMO_WORKSPACE, reason="not empty")
            return
        records = list(enumerate(generate_demo_records(), start=1))
        log.info("seed_started", workspace=DEMO_WORKSPACE, records=len(records))
        report = await Importer(
            db=services.db, workspace_id=workspace.id, analyzer=services.analyzer,
            concurrency=settings.analysis_concurrency, fill_only=True,
        ).run(records)
        for line, reason in report.errors:
            log.error("seed_record_failed", record=line, reason=reason)
        for line, notice in report.notices:
            log.info("seed_record_kept", record=line, notice=notice)
        print(f"seeded workspace demo: {report.summary()}")


async def _create_api_key(settings: Settings, url: str, workspace: str) -> str:
    from graphql_api.services import open_services
    from graphql_api.workspaces import create_api_key

    async with open_services(settings, url) as services:
        _, key = await create_api_key(db=services.db, workspace_name=workspace)
    return key


async def _revoke_api_key(settings: Settings, url: str, prefix_or_key: str) -> int:
    """Exit status 0 when a key was revoked, 1 when none was (no match, already revoked, or a prefix of several)."""
    from graphql_api.services import open_services
    from graphql_api.workspaces import revoke_api_key

    async with open_services(settings, url) as services:
        outcome = await revoke_api_key(db=services.db, prefix_or_key=prefix_or_key)
    for key in outcome.revoked:
        print(f"revoked {key.prefix} (workspace {key.workspace}, created {_instant(key.created_at)}): "
              "servers refuse it and close its WebSockets now")
    if outcome.revoked:
        return 0
    live = [key for key in outcome.matched if key.revoked_at is None]
    if len(live) > 1:
        print(f"{len(live)} keys share the prefix {prefix_or_key}; nothing revoked: pass the whole key", file=sys.stderr)
    elif outcome.matched:
        for key in outcome.matched:
            print(f"{key.prefix} (workspace {key.workspace}) was already revoked at {_instant(key.revoked_at)}", file=sys.stderr)
    else:
        print(f"no API key matches {prefix_or_key!r} (give the prefix shown by list-api-keys, or the whole key)",
              file=sys.stderr)
    return 1


async def _list_api_keys(settings: Settings, url: str, workspace: str | None) -> int:
    from graphql_api.services import open_services
    from graphql_api.workspaces import list_api_keys

    async with open_services(settings, url) as services:
        keys = await list_api_keys(db=services.db, workspace_name=workspace)
    rows = [("PREFIX", "WORKSPACE", "CREATED", "REVOKED")] + [
        (key.prefix, key.workspace, _instant(key.created_at), _instant(key.revoked_at) if key.revoked_at else "-")
        for key in keys
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[3])
    return 0


def _instant(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


async def _demo_key(settings: Settings, url: str) -> str:
    """The demo key kept under the data directory, made anew when missing or no longer valid."""
    from graphql_api.services import open_services
    from graphql_api.workspaces import Authenticator, create_api_key

    path = settings.data_dir / "demo-api-key"
    async with open_services(settings, url) as services:
        if path.exists():
            key = path.read_text().strip()
            workspace = await Authenticator(services.db).workspace_for(key)
            if workspace is not None and workspace.name == DEMO_WORKSPACE:
                return key
        _, key = await create_api_key(db=services.db, workspace_name=DEMO_WORKSPACE)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(key + "\n")
    path.chmod(0o600)
    return key


async def _import(settings: Settings, url: str, file: Path, workspace_name: str) -> int:
    """Exit status: 0 when every record was imported (or already there), 1 when any was skipped, 2 when the file can't be read."""
    from graphql_api.importer import import_text
    from graphql_api.services import open_services
    from graphql_api.workspaces import ensure_workspace

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{file}: can't be read: {exc}", file=sys.stderr)
        return 2
    async with open_services(settings, url) as services:
        workspace = await ensure_workspace(db=services.db, name=workspace_name)
        with _import_progress() as progress:
            report = await import_text(
                db=services.db, workspace_id=workspace.id, text=text, analyzer=services.analyzer,
                concurrency=settings.analysis_concurrency, progress=progress,
            )
    for line, notice in report.notices:
        print(f"{file}:{line}: {notice}", file=sys.stderr)
    for line, reason in report.errors:
        print(f"{file}:{line}: skipped: {reason}", file=sys.stderr)
    print(f"{file}: {report.summary()}")
    return 1 if report.errors else 0


_IMPORT_STAGES = {"records": "records", "analyses": "initial analyses"}


@contextlib.contextmanager
def _import_progress() -> Iterator[ImportProgress | None]:
    """A progress bar per stage on stderr when stderr is a terminal, with the log lines printed above it; without a
    terminal nothing: the log's lines (initial_analysis_progress ...) tell how far it is."""
    if not sys.stderr.isatty():
        yield None
        return
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True)) as bar, _logging_to(sys.stderr):
        tasks: dict[str, int] = {}

        def update(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(_IMPORT_STAGES.get(stage, stage), total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield update


@contextlib.contextmanager
def _logging_to(stream: object) -> Iterator[None]:
    """Point the log's handlers at `stream` for a while: the progress bar's stand-in for stderr, which prints each line
    above the bar instead of through it."""
    handlers = [h for h in logging.getLogger().handlers if isinstance(h, logging.StreamHandler)]
    before = [handler.stream for handler in handlers]
    for handler in handlers:
        handler.setStream(stream)
    try:
        yield
    finally:
        for handler, original in zip(handlers, before):
            handler.setStream(original)


async def _worker(settings: Settings, url: str) -> None:
    """`python -m graphql_api worker`: workers without the HTTP server, until SIGTERM or SIGINT."""
    settings = settings.model_copy(update={"run_workers": True})
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    from graphql_api.services import open_services

    async with open_services(settings, url, background=True):
        await stopped.wait()
        log.info("rerun_worker_process_stopping", reason="signal")


def _serve(settings: Settings, url: str) -> None:
    import uvicorn

    from graphql_api.app import create_app
    from graphql_api.db import migrate

    # A database this code must not run on is refused here, in one line, rather than in uvicorn's lifespan.
    asyncio.run(migrate(url))
    application = create_app(settings, url)
    # Everything loaded by now (modules, the schema) lives as long as the process: out of the collector's
    # sight, so that its full collections, which stall every request in flight, scan only what requests
    # allocate. Measured on a page of 50 calls: p99 174 -> 50 ms, 1.40 -> 0.84 ms of CPU per request.
    gc.collect()
    gc.freeze()
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=settings.access_log,
        ws_ping_interval=20,
        # Frames over the limit are refused (close 1009) before they are read whole; graphql_api.websocket checks too.
        ws_max_size=settings.max_ws_message_bytes,
        # Progress messages are small; compressing each one for each subscriber costs more than it saves.
        ws_per_message_deflate=False,
        timeout_graceful_shutdown=10,
    )


PROG = "python -m graphql_api"

app = typer.Typer(
    help="The analysis API: serve it, keep its database and API keys, and rerun analysis from a terminal as a client "
    "of a running server. `COMMAND --help` names each command's options and the environment variables it reads.",
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    # Tracebacks stay the standard library's: Typer's pretty ones print local variables, API keys among them.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_SERVER, _DATA, _CLIENT = "Server", "Database and keys", "Clients of a running server"


def _command(name: str | None = None, **settings: object) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """`app.command` with the docstring as the help, its paragraphs unwrapped: the help wraps them to the terminal."""
    def register(function: Callable[..., None]) -> Callable[..., None]:
        paragraphs = inspect.cleandoc(function.__doc__ or "").split("\n\n")
        return app.command(name, help="\n\n".join(" ".join(p.split()) for p in paragraphs), **settings)(function)

    return register


def main(argv: list[str] | None = None) -> int:
    """Run one command and return its exit status (2 for bad usage, as any command's help tells)."""
    try:
        typer.main.get_command(app).main(args=argv, prog_name=PROG)
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            return exit.code or 0
        raise  # a message for the user (a bad setting): Python prints it and exits 1
    return 0


def _exit_with(status: int | None) -> None:
    raise typer.Exit(status or 0)


# ---- the commands that work on the database -------------------------------------------------------------------

# Each command's --help names the variables it reads: Settings.from_env reads them all, these change what it does.
_ENVIRONMENT = {
    "DATABASE_URL": "PostgreSQL URL; unset: an embedded PostgreSQL in DATA_DIR/pg",
    "DATA_DIR": "the embedded PostgreSQL's data and the demo key",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR",
    "LOG_FORMAT": "text or json",
    "HOST": "the address to listen on",
    "PORT": "the port to listen on",
    "ENVIRONMENT": "production turns introspection and GraphiQL off",
    "RUN_WORKERS": "0: serve the API only, reruns left to worker processes",
    "ACCESS_LOG": "1: uvicorn's per-request access log",
    "DB_POOL_MAX": "connections in each pool (the read engine's, and the one for the rest)",
    "READ_ENGINE": "0: every field by its resolver, no compiled SQL",
    "WEBHOOK_MAX_ATTEMPTS": "attempts at delivering a webhook event before giving up",
    "WEBHOOK_TIMEOUT_S": "seconds one webhook delivery may take",
    "WEBHOOK_POLL_S": "how often due webhook deliveries are looked for",
    "BATCH_POLL_S": "how often a BATCH rerun's provider batch is polled",
    "BATCH_MAX_REQUESTS": "requests per provider batch of a BATCH rerun",
    "BATCH_LEASE_S": "seconds a runner holds a provider batch it works on before another may take over",
    "GEMINI_API_KEY": "analyze with Gemini; unset: the offline analyzer",
    "GEMINI_BASE_URL": "a Gemini-compatible endpoint",
    "ANALYSIS_CONCURRENCY": "analyses run at once",
    "RERUN_LEASE_SECONDS": "how long a worker owns a claimed item without a heartbeat",
}
_DATABASE_ENV = ("DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "LOG_FORMAT")
_ANALYSIS_ENV = ("GEMINI_API_KEY", "GEMINI_BASE_URL", "ANALYSIS_CONCURRENCY")
_WEBHOOK_ENV = ("WEBHOOK_MAX_ATTEMPTS", "WEBHOOK_TIMEOUT_S", "WEBHOOK_POLL_S")
_BATCH_ENV = ("BATCH_POLL_S", "BATCH_MAX_REQUESTS", "BATCH_LEASE_S")
_WORKER_ENV = (*_DATABASE_ENV, *_ANALYSIS_ENV, "RERUN_LEASE_SECONDS", "DB_POOL_MAX", *_WEBHOOK_ENV, *_BATCH_ENV)
_SERVE_ENV = (*_WORKER_ENV, "HOST", "PORT", "RUN_WORKERS", "ENVIRONMENT", "ACCESS_LOG", "READ_ENGINE")


def setting_default(variable: str) -> object:
    """The default of the setting an environment variable sets (Settings names each field after its variable)."""
    for name, field in Settings.model_fields.items():
        if (field.validation_alias or name).upper() == variable:
            return field.default
    raise KeyError(variable)


def _environment(*variables: str, more: str = "") -> str:
    """The epilog listing the environment variables a command reads, with their defaults."""
    lines = []
    for variable in variables:
        default = setting_default(variable)
        shown = int(default) if isinstance(default, bool) else default
        lines.append(f"{variable}: {_ENVIRONMENT[variable]}" + (f" (default {shown})" if shown is not None else ""))
    return escape("Environment:\n" + "\n".join(lines) + (f"\n{more}" if more else ""))


def _on_database(command: str, body: Callable[[Settings, str, _StopSignals], int | None]) -> None:
    """Run a command that works on the database: the settings from the environment, the log, the stop signals and the
    database (an embedded one without DATABASE_URL); exit with the body's status."""
    from graphql_api.db import MigrationError
    from graphql_api.services import database_url

    settings = Settings.from_env()
    setup_logging(settings)
    stop_signals = _StopSignals()
    stop_signals.install()
    try:
        with database_url(settings) as url:
            status = body(settings, url, stop_signals)
    except MigrationError as refused:
        print(f"error: {refused}", file=sys.stderr)
        status = 1
    except _Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        log.info("process_stopped", command=command, signal=name)
        # For a command that serves until told to stop, the stop is its normal end; any other was cut short.
        status = 0 if command in _SERVING_COMMANDS else 128 + stopped.signum
    _exit_with(status)


_SERVING_COMMANDS = frozenset({"serve", "run", "worker"})


@_command(rich_help_panel=_SERVER, epilog=_environment(
    *_SERVE_ENV, more="and every limit in the README's Configuration (MAX_DEPTH, RATE_LIMIT_PER_S ...)"))
def serve() -> None:
    """Serve the API (pending migrations are applied at start) until SIGTERM or Ctrl-C."""
    _on_database("serve", lambda settings, url, _: _serve(settings, url))


@_command(rich_help_panel=_SERVER, epilog=_environment(*_SERVE_ENV))
def run() -> None:
    """What `make run` does: migrate, seed the demo workspace when it is empty, print a demo key with the studio and
    GraphiQL links, then serve."""
    _on_database("run", _run)


def _run(settings: Settings, url: str, _: _StopSignals) -> None:
    asyncio.run(_seed(settings, url, only_if_empty=True))
    demo_key = asyncio.run(_demo_key(settings, url))
    base = f"http://{settings.host}:{settings.port}"
    print(
        "\n"
        f"  Studio:        {base}/studio#key={demo_key}\n"
        f"  GraphiQL:      {base}/graphql\n"
        f"  Demo API key:  {demo_key}\n"
        f'  Header:        {{"Authorization": "Bearer {demo_key}"}}\n'
        f"  Health:        {base}/healthz\n",
        flush=True,
    )
    _serve(settings, url)


@_command(rich_help_panel=_SERVER, epilog=_environment(*_WORKER_ENV))
def worker() -> None:
    """Run rerun workers without the HTTP server, until SIGTERM or Ctrl-C (pair with RUN_WORKERS=0 on `serve`)."""
    def body(settings: Settings, url: str, stop_signals: _StopSignals) -> None:
        try:
            asyncio.run(_worker(settings, url))
        finally:
            # The worker's event loop handles the signals itself and resets them to the defaults as it closes.
            stop_signals.install()

    _on_database("worker", body)


@_command("migrate", rich_help_panel=_DATA, epilog=_environment(*_DATABASE_ENV))
def migrate_command() -> None:
    """Apply pending migrations."""
    _on_database("migrate", lambda settings, url, _: asyncio.run(_migrate(settings, url)))


@_command(rich_help_panel=_DATA, epilog=_environment(*_DATABASE_ENV, *_ANALYSIS_ENV))
def seed() -> None:
    """Add the demo agents, calls and chats missing from the workspace `demo`; what is there is never changed."""
    _on_database("seed", lambda settings, url, _: asyncio.run(_seed(settings, url, only_if_empty=False)))


@_command("import", rich_help_panel=_DATA, epilog=escape(
    "exit status: 0 when every record was imported or already there, 1 when any record was skipped, 2 when the "
    "file can't be read. On a terminal a progress bar shows on stderr; the summary line is the last of stdout."
) + "\n\n" + _environment(*_DATABASE_ENV, *_ANALYSIS_ENV))
def import_(
    file: Annotated[Path, typer.Argument(metavar="FILE", show_default=False,
                                         help="one JSON object, a JSON array, or JSON lines")],
    workspace: Annotated[str, typer.Option(metavar="NAME", help="target workspace (created when missing)")]
    = DEMO_WORKSPACE,
) -> None:
    """Import agents, calls and chats in Retell's JSON shape (one object, an array or JSON lines).

    Records are matched by id: only what differs changes, a draft edited here is kept unless the file brings a new
    config for it (the change is then recorded in the draft's configChanges), and a bad record is skipped with its
    line and reason while the others are imported. The summary counts what changed, then unchanged and skipped
    records.
    """
    def body(settings: Settings, url: str, _: _StopSignals) -> int:
        if not file.is_file():
            print(f"{file}: no such file", file=sys.stderr)
            return 2
        return asyncio.run(_import(settings, url, file, workspace))

    _on_database("import", body)


@_command(rich_help_panel=_DATA, epilog=_environment(*_DATABASE_ENV))
def create_api_key(
    workspace: Annotated[str, typer.Option(metavar="NAME", help="the key's workspace (created when missing)")],
) -> None:
    """Create an API key; the key is printed alone on the last line, once."""
    def body(settings: Settings, url: str, _: _StopSignals) -> None:
        created = asyncio.run(_create_api_key(settings, url, workspace))
        print(f"API key for workspace {workspace} (shown once, store it now):")
        print(created)

    _on_database("create-api-key", body)


@_command(rich_help_panel=_DATA, epilog=escape(
    "exit status: 0 when a key was revoked, 1 when none was (no match, already revoked, or a prefix that several "
    "keys share)") + "\n\n" + _environment(*_DATABASE_ENV))
def revoke_api_key(
    prefix_or_key: Annotated[str, typer.Argument(metavar="PREFIX_OR_KEY", show_default=False,
                                                 help="the key's prefix as list-api-keys shows it, or the whole key")],
) -> None:
    """Revoke an API key: every server refuses it and closes its WebSockets within seconds."""
    _on_database("revoke-api-key", lambda settings, url, _: asyncio.run(_revoke_api_key(settings, url, prefix_or_key)))


@_command(rich_help_panel=_DATA, epilog=_environment(*_DATABASE_ENV))
def list_api_keys(
    workspace: Annotated[str | None, typer.Option(metavar="NAME", help="only this workspace's keys")] = None,
) -> None:
    """List API keys: prefix, workspace, created, revoked (never the key)."""
    _on_database("list-api-keys", lambda settings, url, _: asyncio.run(_list_api_keys(settings, url, workspace)))


# ---- clients of a running server (graphql_api/client.py) -------------------------------------------------------
# No settings, database or signal handlers of the server's own: the server and the key come from flags or environment.

ServerUrl = Annotated[str, typer.Option("--url", metavar="URL", envvar=client.URL_ENV, help="the running server")]
ApiKey = Annotated[str | None, typer.Option("--key", metavar="KEY", envvar=client.KEY_ENV, show_default=False,
                                            help="API key of the workspace")]
_CLIENT_EPILOG = escape(
    "exit status: 0 ok; 1 the job ended FAILED or PARTIALLY_FAILED (or an unexpected server error); 2 usage or "
    "bad input (BAD_USER_INPUT, NOT_FOUND); 3 unauthenticated or forbidden; 4 CONFLICT or LIMIT_EXCEEDED; "
    "5 server unreachable.\n\n"
    f"Environment:\n{client.URL_ENV}: the server (default {client.DEFAULT_URL})\n{client.KEY_ENV}: the API key"
)


def _client(url: str, key: str | None, command: Callable[[client.Client], int]) -> None:
    _exit_with(client.run(url, key, command))


# The filter of `rerun --agent` and `export --agent`: the conversations of the agent that it selects.
Versions = Annotated[list[int] | None, typer.Option("--version", metavar="N", help="only conversations handled by "
                                                    "agent version N (repeatable)")]
StartedAfter = Annotated[str | None, typer.Option(metavar="ISO_TIME", help="started at or after, e.g. "
                                                  "2026-11-16T00:00:00Z")]
StartedBefore = Annotated[str | None, typer.Option(metavar="ISO_TIME", help="started before (exclusive)")]
Statuses = Annotated[list[str] | None, typer.Option("--status", metavar="STATUS", help="conversation status, e.g. "
                                                    "ENDED or ERROR (repeatable)")]
Successful = Annotated[bool, typer.Option("--successful", help="only conversations whose current analysis is "
                                          "successful")]
Unsuccessful = Annotated[bool, typer.Option("--unsuccessful", help="only conversations whose current analysis is "
                                            "unsuccessful")]
Sentiments = Annotated[list[str] | None, typer.Option("--sentiment", metavar="SENTIMENT", help="current user "
                                                      "sentiment: POSITIVE, NEUTRAL, NEGATIVE or UNKNOWN (repeatable)")]


def _targets(agent: str | None, version: list[int] | None, started_after: str | None, started_before: str | None,
             status: list[str] | None, successful: bool, unsuccessful: bool, sentiment: list[str] | None,
             **more: object) -> client.RerunTargets:
    if successful and unsuccessful:
        raise typer.BadParameter("give --successful or --unsuccessful, not both", param_hint="'--unsuccessful'")
    return client.RerunTargets(
        agent=agent, versions=version or [], started_after=started_after, started_before=started_before,
        status=status or [], successful=True if successful else False if unsuccessful else None,
        sentiment=sentiment or [], **more)


@_command(rich_help_panel=_CLIENT, epilog=_CLIENT_EPILOG)
def rerun(
    agent: Annotated[str | None, typer.Option(metavar="ID", help="rerun this agent's conversations (narrowed by the "
                                              "filters)")] = None,
    version: Versions = None,
    started_after: StartedAfter = None,
    started_before: StartedBefore = None,
    status: Statuses = None,
    successful: Successful = False,
    unsuccessful: Unsuccessful = False,
    sentiment: Sentiments = None,
    call: Annotated[list[str] | None, typer.Option(metavar="ID", help="rerun this call (repeatable; not with "
                                                   "--agent)")] = None,
    chat: Annotated[list[str] | None, typer.Option(metavar="ID", help="rerun this chat (repeatable; not with "
                                                   "--agent)")] = None,
    max_cost: Annotated[str | None, typer.Option(metavar="USD", help="refuse (LIMIT_EXCEEDED, exit 4, nothing "
                                                 "started) when the estimate is above it")] = None,
    field: Annotated[list[str] | None, typer.Option(metavar="OUTPUT", help="recompute only this output (repeatable): "
                                                    "summary, successful, userSentiment, inVoicemail or "
                                                    "customData.NAME")] = None,
    only_changed: Annotated[bool, typer.Option("--only-changed", help="per conversation, recompute only the outputs "
                                               "whose prompt, field or model the draft changed")] = False,
    batch: Annotated[bool, typer.Option("--batch", help="send it through the Gemini Batch API at half the price "
                                        "(results as batches finish, up to a day)")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="start without asking (needed without a terminal)")] = False,
    url: ServerUrl = client.DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Rerun analysis on a running server: estimate, confirm, then a live progress bar and a summary.

    Reruns the analysis of finished calls or chats with the agent's latest draft config. First a dry run prints the
    estimate (conversations, tokens, cost, model, draft version); then it asks to confirm (unless --yes; without a
    terminal and without --yes it refuses, exit 2), starts the job with an idempotency key (a retried start never
    charges twice), follows it live and ends with a summary: succeeded, failed, canceled, cost, and the outcomes
    that flipped (successful true<->false). Targets: --agent with optional filters, or --call/--chat ids.
    --field and --only-changed recompute some outputs only (smaller, cheaper requests); the rest is carried over.
    """
    targets = _targets(agent, version, started_after, started_before, status, successful, unsuccessful, sentiment,
                       calls=call or [], chats=chat or [], fields=field or None, only_changed=only_changed, batch=batch)
    _client(url, key, lambda server: client.rerun(server, targets, max_cost=max_cost, yes=yes))


@_command(rich_help_panel=_CLIENT, epilog=escape(
    "The CSV has a header row; a JSON line is one object with custom_data nested. A record starting with #truncated "
    "(CSV) or a line {\"errors\": ...} (JSON lines) ends an export the server could not finish; this command then "
    "exits 1 and leaves no file. Columns and the endpoints: docs/export.md.\n\n"
) + _CLIENT_EPILOG)
def export(
    job: Annotated[str | None, typer.Option(metavar="ID", help="export this rerun job's items: each new result next to "
                                            "the one it replaced")] = None,
    agent: Annotated[str | None, typer.Option(metavar="ID", help="export this agent's calls or chats with their "
                                              "current results (narrowed by the filters)")] = None,
    version: Versions = None,
    started_after: StartedAfter = None,
    started_before: StartedBefore = None,
    status: Statuses = None,
    successful: Successful = False,
    unsuccessful: Unsuccessful = False,
    sentiment: Sentiments = None,
    fmt: Annotated[str, typer.Option("--format", metavar="csv|jsonl", help="CSV, or JSON lines")] = "csv",
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE", show_default="stdout",
                                                help="where to write it; written whole or not at all")] = None,
    url: ServerUrl = client.DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Export analysis results from a running server as CSV or JSON lines, streamed to a file or stdout.

    --job ID exports a rerun job's items (conversation, item status and error, the new result next to the previous
    one); --agent ID exports the agent's calls or chats matching the filters with their current results, newest
    first. Custom data fields are columns of their own. On a terminal the rows written so far show on stderr; a
    summary (rows, size, time) ends it, on stderr when the data goes to stdout.
    """
    targets = _targets(agent, version, started_after, started_before, status, successful, unsuccessful, sentiment)
    _client(url, key, lambda server: client.export(server, job=job, targets=targets, fmt=fmt, output=output))


@_command(rich_help_panel=_CLIENT, epilog=_CLIENT_EPILOG)
def jobs(
    agent: Annotated[str | None, typer.Option(metavar="ID", help="only this agent's jobs")] = None,
    first: Annotated[int, typer.Option(metavar="N", help="how many jobs")] = 20,
    url: ServerUrl = client.DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """List rerun jobs of a running server, newest first: id, agent, status, counts, cost, created."""
    _client(url, key, lambda server: client.jobs(server, agent=agent, first=first))


@_command(rich_help_panel=_CLIENT, epilog=_CLIENT_EPILOG)
def cancel(
    job_id: Annotated[str, typer.Argument(metavar="JOB_ID", show_default=False,
                                          help="the job's id, as `jobs` lists it")],
    url: ServerUrl = client.DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Cancel a rerun job on a running server and print its status.

    What has not started is canceled; finished items keep their results. A job that already ended is refused with
    CONFLICT (exit 4).
    """
    _client(url, key, lambda server: client.cancel(server, job_id))


@_command(rich_help_panel=_CLIENT, epilog=_CLIENT_EPILOG)
def diff(
    conversation_id: Annotated[str, typer.Argument(metavar="CONVERSATION_ID", show_default=False,
                                                   help="a call or chat id")],
    against: Annotated[str | None, typer.Option(metavar="RESULT_ID", help="the earlier analysis result to compare "
                                                "with (default: the newest earlier one)")] = None,
    url: ServerUrl = client.DEFAULT_URL,
    key: ApiKey = None,
) -> None:
    """Compare a conversation's current analysis with an earlier one, field by field.

    Compares a call's or chat's current analysis with an earlier result (default: the newest earlier one of its
    analysisHistory): summary, successful, userSentiment, inVoicemail and each customData key; changed fields are
    marked with * and highlighted. Nothing changed is still exit 0.
    """
    _client(url, key, lambda server: client.diff(server, conversation_id, against=against))


class _Stopped(BaseException):
    """SIGTERM or SIGINT, raised so that the process unwinds and every `finally` runs."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


class _StopSignals:
    """SIGTERM (docker stop, systemd, kill) and SIGINT (Ctrl-C) end the process by unwinding it.

    Python's default for SIGTERM kills the process on the spot, skipping every `finally` and atexit hook, so the
    embedded PostgreSQL kept running with this pid on its record. uvicorn handles both signals while it serves,
    then puts these handlers back and raises the signal again once it has shut down: they take it from there.
    """

    def __init__(self) -> None:
        self.received: int | None = None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is not None:
            return  # already unwinding: a second signal must not cut the clean-up short
        self.received = signum
        raise _Stopped(signum)


if __name__ == "__main__":
    sys.exit(main())
