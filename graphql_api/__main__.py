"""Command line: `python -m graphql_api serve | run | migrate | seed | worker | import FILE | create-api-key |
revoke-api-key | list-api-keys`, and the clients of a running server: `rerun | jobs | cancel | diff`."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from datetime import datetime, timezone
from pathlib import Path

import structlog

from graphql_api.config import Settings
from graphql_api.db import MigrationError, migrate
from graphql_api.logs import setup_logging
from graphql_api.services import database_url, open_services

log = structlog.stdlib.get_logger("graphql_api")

DEMO_WORKSPACE = "demo"


async def _migrate(settings: Settings, url: str) -> None:
    applied = await migrate(url)
    print(f"migrations applied: {', '.join(applied) if applied else 'none (up to date)'}")


async def _seed(settings: Settings, url: str, *, only_if_empty: bool) -> None:
    """Add the demo data that is missing from the workspace demo; nothing stored is changed (a user's edits stay)."""
    from graphql_api.demo_data import generate_demo_records
    from graphql_api.importer import Importer
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
    from graphql_api.workspaces import create_api_key

    async with open_services(settings, url) as services:
        _, key = await create_api_key(db=services.db, workspace_name=workspace)
    return key


async def _revoke_api_key(settings: Settings, url: str, prefix_or_key: str) -> int:
    """Exit status 0 when a key was revoked, 1 when none was (no match, already revoked, or a prefix of several)."""
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
    from graphql_api.workspaces import ensure_workspace

    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"{file}: can't be read: {exc}", file=sys.stderr)
        return 2
    async with open_services(settings, url) as services:
        workspace = await ensure_workspace(db=services.db, name=workspace_name)
        report = await import_text(
            db=services.db, workspace_id=workspace.id, text=text, analyzer=services.analyzer,
            concurrency=settings.analysis_concurrency,
        )
    for line, notice in report.notices:
        print(f"{file}:{line}: {notice}", file=sys.stderr)
    for line, reason in report.errors:
        print(f"{file}:{line}: skipped: {reason}", file=sys.stderr)
    print(f"{file}: {report.summary()}")
    return 1 if report.errors else 0


async def _worker(settings: Settings, url: str) -> None:
    """`python -m graphql_api worker`: workers without the HTTP server, until SIGTERM or SIGINT."""
    settings = settings.model_copy(update={"run_workers": True})
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    async with open_services(settings, url, background=True):
        await stopped.wait()
        log.info("rerun_worker_process_stopping", reason="signal")


def _serve(settings: Settings, url: str) -> None:
    import uvicorn

    from graphql_api.app import create_app

    # A database this code must not run on is refused here, in one line, rather than in uvicorn's lifespan.
    asyncio.run(migrate(url))
    uvicorn.run(
        create_app(settings, url),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m graphql_api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="serve the API (migrations applied at start)")
    sub.add_parser("run", help="migrate, seed an empty demo workspace, print a demo key, serve")
    sub.add_parser("migrate", help="apply pending migrations")
    sub.add_parser("seed", help="fill the workspace 'demo' with demo agents, calls and chats")
    sub.add_parser("worker", help="run rerun workers without the HTTP server")
    imp = sub.add_parser(
        "import",
        help="import agents, calls and chats in Retell's JSON shape",
        description="Import agents, calls and chats in Retell's JSON shape (one object, an array or JSON lines). "
        "Records are matched by id: only what differs changes, a draft edited here is kept unless the file "
        "brings a new config for it (the change is then recorded in the draft's configChanges), and a bad "
        "record is skipped with its line and reason while the others are imported. The summary counts what "
        "changed, then unchanged and skipped records.",
        epilog="exit status: 0 when every record was imported or already there, 1 when any record was "
        "skipped, 2 when the file can't be read",
    )
    imp.add_argument("file", type=Path)
    imp.add_argument("--workspace", default=DEMO_WORKSPACE, help="target workspace (created when missing)")
    key = sub.add_parser("create-api-key", help="create an API key; the key is printed alone on the last line")
    key.add_argument("--workspace", required=True)
    revoke = sub.add_parser(
        "revoke-api-key",
        help="revoke an API key by its prefix (as listed) or the whole key; every server refuses it and closes its "
        "WebSockets within seconds",
        epilog="exit status: 0 when a key was revoked, 1 when none was (no match, already revoked, or a prefix that "
        "several keys share)",
    )
    revoke.add_argument("key", metavar="PREFIX_OR_KEY")
    listing = sub.add_parser("list-api-keys", help="list API keys: prefix, workspace, created, revoked (never the key)")
    listing.add_argument("--workspace", help="only this workspace's keys")
    _add_client_commands(sub)
    args = parser.parse_args(argv)
    if args.command in _CLIENT_COMMANDS:
        # Clients of a running server: no settings, database or signal handlers of the server's own.
        from graphql_api import client

        return client.run(args.command, args)

    settings = Settings.from_env()
    setup_logging(settings)
    stop_signals = _StopSignals()
    stop_signals.install()
    try:
        with database_url(settings) as url:
            return _command(args, settings, url, stop_signals)
    except MigrationError as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 1
    except _Stopped as stopped:
        name = signal.Signals(stopped.signum).name
        log.info("process_stopped", command=args.command, signal=name)
        # For a command that serves until told to stop, the stop is its normal end; any other was cut short.
        return 0 if args.command in _SERVING_COMMANDS else 128 + stopped.signum


_SERVING_COMMANDS = frozenset({"serve", "run", "worker"})
_CLIENT_COMMANDS = frozenset({"rerun", "jobs", "cancel", "diff"})

_CLIENT_EPILOG = (
    "exit status: 0 ok; 1 the job ended FAILED or PARTIALLY_FAILED (or an unexpected server error); 2 usage or "
    "bad input (BAD_USER_INPUT, NOT_FOUND); 3 unauthenticated or forbidden; 4 CONFLICT or LIMIT_EXCEEDED; "
    "5 server unreachable. Environment: ANALYSIS_API_URL (the server, default http://127.0.0.1:8000), "
    "ANALYSIS_API_KEY (the API key)."
)


def _add_client_commands(sub: argparse._SubParsersAction) -> None:
    """`rerun`, `jobs`, `cancel`, `diff`: clients of a running server over GraphQL (graphql_api/client.py)."""
    server = argparse.ArgumentParser(add_help=False)
    server.add_argument("--url", default=os.environ.get("ANALYSIS_API_URL", "http://127.0.0.1:8000"),
                        help="the running server (default: $ANALYSIS_API_URL, else http://127.0.0.1:8000)")
    server.add_argument("--key", default=os.environ.get("ANALYSIS_API_KEY"),
                        help="API key of the workspace (default: $ANALYSIS_API_KEY)")
    rerun = sub.add_parser(
        "rerun", parents=[server], epilog=_CLIENT_EPILOG,
        help="rerun analysis on a running server: estimate, confirm, then a live progress bar and a summary",
        description="Rerun the analysis of finished calls or chats with the agent's latest draft config, on a "
        "running server. First a dry run prints the estimate (conversations, tokens, cost, model, draft version); "
        "then it asks to confirm (unless --yes; without a terminal and without --yes it refuses, exit 2), starts "
        "the job with an idempotency key (a retried start never charges twice), follows it live and ends with a "
        "summary: succeeded, failed, canceled, cost, and the outcomes that flipped (successful true<->false). "
        "Targets: --agent with optional filters, or --call/--chat ids.",
    )
    rerun.add_argument("--agent", metavar="ID", help="rerun this agent's conversations (narrowed by the filters)")
    rerun.add_argument("--version", type=int, action="append", metavar="N",
                       help="only conversations handled by agent version N (repeatable)")
    rerun.add_argument("--started-after", metavar="ISO_TIME", help="started at or after, e.g. 2026-11-16T00:00:00Z")
    rerun.add_argument("--started-before", metavar="ISO_TIME", help="started before (exclusive)")
    rerun.add_argument("--status", action="append", metavar="STATUS",
                       help="conversation status, e.g. ENDED or ERROR (repeatable)")
    outcome = rerun.add_mutually_exclusive_group()
    outcome.add_argument("--successful", dest="successful", action="store_const", const=True, default=None,
                         help="only conversations whose current analysis is successful")
    outcome.add_argument("--unsuccessful", dest="successful", action="store_const", const=False,
                         help="only conversations whose current analysis is unsuccessful")
    rerun.add_argument("--sentiment", action="append", metavar="SENTIMENT",
                       help="current user sentiment: POSITIVE, NEUTRAL, NEGATIVE or UNKNOWN (repeatable)")
    rerun.add_argument("--call", action="append", metavar="ID", help="rerun this call (repeatable; not with --agent)")
    rerun.add_argument("--chat", action="append", metavar="ID", help="rerun this chat (repeatable; not with --agent)")
    rerun.add_argument("--max-cost", metavar="USD",
                       help="refuse (LIMIT_EXCEEDED, exit 4, nothing started) when the estimate is above it")
    rerun.add_argument("--yes", "-y", action="store_true", help="start without asking (needed without a terminal)")
    jobs = sub.add_parser(
        "jobs", parents=[server], epilog=_CLIENT_EPILOG,
        help="list rerun jobs of a running server, newest first",
        description="List rerun jobs, newest first: id, agent, status, counts, cost, created.",
    )
    jobs.add_argument("--agent", metavar="ID", help="only this agent's jobs")
    jobs.add_argument("--first", type=int, default=20, metavar="N", help="how many jobs (default 20)")
    cancel = sub.add_parser(
        "cancel", parents=[server], epilog=_CLIENT_EPILOG,
        help="cancel a rerun job on a running server and print its status",
        description="Cancel what has not started of a rerun job; finished items keep their results. A job that "
        "already ended is refused with CONFLICT (exit 4).",
    )
    cancel.add_argument("job_id", metavar="JOB_ID", help="the job's id, as `jobs` lists it")
    diff = sub.add_parser(
        "diff", parents=[server], epilog=_CLIENT_EPILOG,
        help="compare a conversation's current analysis with an earlier one, field by field",
        description="Compare a call's or chat's current analysis with an earlier result (default: the newest "
        "earlier one of its analysisHistory): summary, successful, userSentiment, inVoicemail and each customData "
        "key; changed fields are marked with * and highlighted. Nothing changed is still exit 0.",
    )
    diff.add_argument("conversation_id", metavar="CONVERSATION_ID", help="a call or chat id")
    diff.add_argument("--against", metavar="RESULT_ID", help="the earlier analysis result to compare with")


def _command(args: argparse.Namespace, settings: Settings, url: str, stop_signals: _StopSignals) -> int:
    if args.command == "migrate":
        asyncio.run(_migrate(settings, url))
    elif args.command == "seed":
        asyncio.run(_seed(settings, url, only_if_empty=False))
    elif args.command == "import":
        if not args.file.is_file():
            print(f"{args.file}: no such file", file=sys.stderr)
            return 2
        return asyncio.run(_import(settings, url, args.file, args.workspace))
    elif args.command == "create-api-key":
        created = asyncio.run(_create_api_key(settings, url, args.workspace))
        print(f"API key for workspace {args.workspace} (shown once, store it now):")
        print(created)
    elif args.command == "revoke-api-key":
        return asyncio.run(_revoke_api_key(settings, url, args.key))
    elif args.command == "list-api-keys":
        return asyncio.run(_list_api_keys(settings, url, args.workspace))
    elif args.command == "worker":
        try:
            asyncio.run(_worker(settings, url))
        finally:
            # The worker's event loop handles the signals itself and resets them to the defaults as it closes.
            stop_signals.install()
    elif args.command == "serve":
        _serve(settings, url)
    elif args.command == "run":
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
    return 0


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
