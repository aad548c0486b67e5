"""What the command line draws on a terminal: `import` shows a progress bar per stage on stderr when stderr is a
terminal, and nothing of the kind when it is not (the log's lines tell how far it is)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from tests.terminal import run_in_terminal

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "tests/samples/retell-export.jsonl"  # 9 records, 3 conversations without an analysis of their own


def test_import_draws_progress_bars_on_a_terminal_and_none_without(db_url, tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GEMINI_BASE_URL")}
    env |= {"DATABASE_URL": db_url, "DATA_DIR": str(tmp_path)}
    command = [sys.executable, "-m", "graphql_api", "import", SAMPLE, "--workspace"]

    shown = run_in_terminal([*command, "on-a-terminal"], env=env, cwd=str(ROOT))
    assert shown.status == 0, shown.text
    assert re.search(r"records\s+━+\s+9/9", shown.text), shown.text
    assert re.search(r"initial analyses\s+━+\s+3/3", shown.text), shown.text
    assert "\x1b[2K" in shown.drawn, "the bars are redrawn in place"
    summary = shown.text.rstrip().splitlines()[-1]
    assert summary.startswith(f"{SAMPLE}: agents=2") and summary.endswith("skipped=0"), shown.text

    piped = subprocess.run([*command, "piped"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "━" not in piped.stderr and "\x1b[" not in piped.stderr, piped.stderr
    assert piped.stdout == summary + "\n"  # the same summary, alone on stdout
