"""Run a command in a pseudo-terminal, as a person at a terminal would: stdin, stdout and stderr are one TTY of a
known size, prompts are answered as they appear, and the output is kept as drawn (control sequences and all)."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import termios
import time
from collections.abc import Sequence
from dataclasses import dataclass

# CSI sequences (colours, cursor moves, erase line), OSC sequences (links, titles), and charset selections.
_CONTROL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]")


def plain(drawn: str) -> str:
    """What a terminal's text reads like without its control sequences and carriage returns."""
    return _CONTROL.sub("", drawn).replace("\r", "")


@dataclass
class TerminalRun:
    status: int
    drawn: str  # everything written to the terminal, control sequences included

    @property
    def text(self) -> str:
        return plain(self.drawn)


def run_in_terminal(
    args: Sequence[str], *, env: dict[str, str], cwd: str | None = None, answers: Sequence[tuple[str, str]] = (),
    timeout: float = 60, columns: int = 160, rows: int = 50,
) -> TerminalRun:
    """Run `args` on a new pseudo-terminal; each (prompt, answer) is typed once `prompt` has shown, in order."""
    # The size is the terminal's, not COLUMNS'; colours as a common terminal has them.
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "NO_COLOR", "TERM")}
    env["TERM"] = "xterm-256color"
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
    process = subprocess.Popen(args, stdin=terminal, stdout=terminal, stderr=terminal, env=env, cwd=cwd)
    os.close(terminal)
    drawn = b""
    pending = list(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                raise AssertionError(f"{args} still running after {timeout}s:\n{plain(drawn.decode(errors='replace'))}")
            ready, _, _ = select.select([controller], [], [], 0.05)
            if not ready:
                if process.poll() is not None:
                    break  # exited and nothing left to read
                continue
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: every holder of the terminal has closed it
                break
            if not chunk:
                break
            drawn += chunk
            if pending and pending[0][0] in plain(drawn.decode(errors="replace")):
                os.write(controller, pending.pop(0)[1].encode())
    finally:
        os.close(controller)
        if process.poll() is None:
            process.kill()
        process.wait()
    if pending:
        raise AssertionError(f"never asked {pending[0][0]!r}:\n{plain(drawn.decode(errors='replace'))}")
    return TerminalRun(process.returncode, drawn.decode(errors="replace"))
