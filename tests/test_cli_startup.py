"""What `python -m graphql_api run` prints while it starts: each fact once, no library noise (issue 7)."""

from __future__ import annotations

import re
import signal

from tests.cli_process import cli_sandbox, process_gone, wait_until

STARTUP_FACTS = ["embedded_postgres_ready", "database_connected", "analyzer_selected", "server_ready", "Demo API key:"]


def test_run_states_each_startup_fact_once_and_no_runtime_dir_warning() -> None:
    with cli_sandbox() as start:
        run = start("run")
        run.wait_serving(timeout=60)
        postmaster = run.postmaster_pid()

        status, _ = run.stop(signal.SIGTERM)
        output = run.output

        assert status == 0, output
        for fact in STARTUP_FACTS:
            assert len(re.findall(rf"(?<![\w]){re.escape(fact)}(?![\w])", output)) == 1, f"{fact!r}:\n{output}"
        assert "XDG_RUNTIME_DIR" not in output, output
        assert not re.search(r"\w+Warning: ", output), output  # a Python warning of any library
        wait_until(lambda: process_gone(postmaster), timeout=5, what="the embedded PostgreSQL to stop")
