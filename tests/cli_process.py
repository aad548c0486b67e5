"""`python -m graphql_api` as a real process on an embedded PostgreSQL in a temporary data directory, for the
tests of what happens around a process: its start-up output, its signals, the server it leaves behind."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_gone(pid: int) -> bool:
    """Exited; a zombie waiting to be reaped by its parent (init, for a postmaster) has exited too."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition, *, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


class Cli:
    """One CLI process; stdout and stderr go to a file, so a full pipe can never block it."""

    def __init__(self, data_dir: Path, *args: str, port: int):
        self.port = port
        self.pg_dir = data_dir / "pg"
        self.output_path = data_dir / f"output-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "GEMINI_API_KEY", "GEMINI_BASE_URL", "XDG_RUNTIME_DIR", "LOG_FORMAT")}
        env.update(DATA_DIR=str(data_dir), HOST="127.0.0.1", PORT=str(port), LOG_LEVEL="INFO")
        with self.output_path.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "graphql_api", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
            )

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def wait_serving(self, timeout: float = 30) -> None:
        def healthy() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"exited with {self.process.returncode} before serving:\n{self.output}")
            try:
                return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, timeout=timeout, what=f"/healthz\n{self.output}")

    def stop(self, sig: signal.Signals, timeout: float = 10) -> tuple[int, float]:
        """Send `sig`; the exit status and how long the process took to exit."""
        sent = time.monotonic()
        self.process.send_signal(sig)
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {timeout}s after {sig.name}:\n{self.output}") from None
        return status, time.monotonic() - sent

    def postmaster_pid(self) -> int | None:
        """The pid in postmaster.pid, the file PostgreSQL keeps while it runs."""
        with contextlib.suppress(FileNotFoundError):
            return int((self.pg_dir / "postmaster.pid").read_text().splitlines()[0])
        return None

    def recorded_users(self) -> list[int]:
        """pgserver's record of the processes using the server."""
        with contextlib.suppress(FileNotFoundError):
            return json.loads((self.pg_dir / ".handle_pids.json").read_text())
        return []


@contextlib.contextmanager
def cli_sandbox() -> Iterator[callable]:  # type: ignore[valid-type]
    """Start CLI processes in one temporary data directory; whatever happens, end them, the PostgreSQL they
    started, and the directory."""
    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-cli-"))  # short: PostgreSQL's socket lives in it
    started: list[Cli] = []

    def start(*args: str, port: int | None = None) -> Cli:
        cli = Cli(data_dir, *args, port=port or free_port())
        started.append(cli)
        return cli

    try:
        yield start
    finally:
        for cli in started:
            if cli.process.poll() is None:
                cli.process.kill()
                cli.process.wait()
        _end_postgres(data_dir / "pg")
        shutil.rmtree(data_dir, ignore_errors=True)


def _end_postgres(pg_dir: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, IndexError):
        pid = int((pg_dir / "postmaster.pid").read_text().splitlines()[0])
        with contextlib.suppress(psutil.NoSuchProcess):
            postmaster = psutil.Process(pid)
            children = postmaster.children(recursive=True)
            postmaster.send_signal(signal.SIGQUIT)  # immediate shutdown, children included
            _, alive = psutil.wait_procs([postmaster, *children], timeout=5)
            for process in alive:
                with contextlib.suppress(psutil.NoSuchProcess):
                    process.kill()
    # An initdb or pg_ctl whose parent died would go on writing into the directory.
    strays = []
    for process in psutil.process_iter(["cmdline"]):
        if any(str(pg_dir) in part for part in process.info["cmdline"] or ()):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                process.kill()
                strays.append(process)
    psutil.wait_procs(strays, timeout=5)
