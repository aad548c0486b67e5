"""Run the real server (`python -m graphql_api serve`, uvicorn) or a worker in a child process, for end-to-end tests and benchmarks."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli(*args: str, db_url: str, data_dir: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "DATABASE_URL": db_url, "DATA_DIR": str(data_dir), **(env or {})}
    if "GEMINI_API_KEY" not in (env or {}):
        full_env.pop("GEMINI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "graphql_api", *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


class ServerProcess:
    def __init__(self, *, db_url: str, data_dir: Path, env: dict[str, str] | None = None, command: str = "serve"):
        self.command = command
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir / f"server-{self.port}.log"
        # Tests and benchmarks poll fast with one key: no rate limit unless they ask for one.
        full_env = {**os.environ, "DATABASE_URL": db_url, "DATA_DIR": str(data_dir), "HOST": "127.0.0.1",
                    "PORT": str(self.port), "RATE_LIMIT_PER_S": "0", **(env or {})}
        if "GEMINI_API_KEY" not in (env or {}):
            full_env.pop("GEMINI_API_KEY", None)
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "graphql_api", command], env=full_env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, timeout: float = 60) -> ServerProcess:
        if self.command == "worker":
            return self.wait_ready_log("progress_listener_connected", timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(self.base_url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"server not ready:\n{self.log()}")

    def wait_ready_log(self, text: str, timeout: float = 60) -> ServerProcess:
        """Wait until the process has logged `text` (workers serve no HTTP)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.log():
                return self
            if self.process.poll() is not None:
                raise RuntimeError(f"process exited early:\n{self.log()}")
            time.sleep(0.05)
        raise TimeoutError(f"{text!r} not logged:\n{self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self.wait_ready()

    def __exit__(self, *exc: object) -> None:
        self.stop()
