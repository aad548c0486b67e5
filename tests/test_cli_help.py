"""`python -m graphql_api COMMAND --help` names every option of the command and every environment variable it reads:
each command through Typer's runner, and all of them again as real processes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from graphql_api.__main__ import app
from graphql_api.config import Settings

DATABASE = ["DATABASE_URL", "DATA_DIR", "LOG_LEVEL", "LOG_FORMAT"]
ANALYSIS = ["GEMINI_API_KEY", "GEMINI_BASE_URL", "ANALYSIS_CONCURRENCY"]
SERVING = [*DATABASE, *ANALYSIS, "HOST", "PORT", "RUN_WORKERS", "RERUN_LEASE_SECONDS", "DB_POOL_MAX"]
CLIENT = ["ANALYSIS_API_URL", "ANALYSIS_API_KEY"]
SERVER_OPTIONS = ["--url", "--key"]

# command: (its arguments and options, the environment variables it reads)
COMMANDS = {
    "serve": ([], SERVING),
    "run": ([], SERVING),
    "worker": ([], [*DATABASE, *ANALYSIS, "RERUN_LEASE_SECONDS"]),
    "migrate": ([], DATABASE),
    "seed": ([], [*DATABASE, *ANALYSIS]),
    "import": (["FILE", "--workspace"], [*DATABASE, *ANALYSIS]),
    "create-api-key": (["--workspace"], DATABASE),
    "revoke-api-key": (["PREFIX_OR_KEY"], DATABASE),
    "list-api-keys": (["--workspace"], DATABASE),
    "rerun": (["--agent", "--version", "--started-after", "--started-before", "--status", "--successful",
               "--unsuccessful", "--sentiment", "--call", "--chat", "--max-cost", "--yes", "-y", *SERVER_OPTIONS],
              CLIENT),
    "export": (["--job", "--agent", "--version", "--started-after", "--started-before", "--status", "--successful",
                "--unsuccessful", "--sentiment", "--format", "--output", "-o", *SERVER_OPTIONS], CLIENT),
    "jobs": (["--agent", "--first", *SERVER_OPTIONS], CLIENT),
    "cancel": (["JOB_ID", *SERVER_OPTIONS], CLIENT),
    "diff": (["CONVERSATION_ID", "--against", *SERVER_OPTIONS], CLIENT),
}
# The environment of every run: a key in the environment must never show in a help.
SECRET = "ak_secret_never_shown"
ENV = {"ANALYSIS_API_KEY": SECRET, "GEMINI_API_KEY": SECRET, "DATABASE_URL": f"postgresql://u:{SECRET}@127.0.0.1:1/x"}
SETTINGS = {(field.validation_alias or name).upper() for name, field in Settings.model_fields.items()}


def _words(help_text: str) -> str:
    """The help as one line of words, whatever the panels' borders and the wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", help_text).split())


def _environment_section(help_text: str) -> list[str]:
    """The variables listed under "Environment:" (one `NAME: what` a line)."""
    section = help_text.split("Environment:", 1)[1] if "Environment:" in help_text else ""
    return re.findall(r"^\s*([A-Z][A-Z0-9_]+):", section, re.M)


def check_help(command: str, help_text: str) -> None:
    options, variables = COMMANDS[command]
    words = _words(help_text)
    assert f"Usage: python -m graphql_api {command}" in words, help_text
    for option in [*options, "--help", "-h"]:
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", words), (command, option, help_text)
    for variable in variables:
        assert variable in words, (command, variable, help_text)
    listed = _environment_section(help_text)
    assert set(variables) <= set(listed), (command, listed)
    if variables is CLIENT:
        assert not set(listed) & SETTINGS, f"{command} is a client: it reads no server setting"
        for variable in CLIENT:
            assert f"[env var: {variable}]" in words, (command, variable)  # on its option, as Typer shows it
        assert "exit status: 0 ok;" in words and "5 server unreachable" in words, help_text
    else:
        assert set(listed) <= SETTINGS, f"{command} lists variables that are no setting: {set(listed) - SETTINGS}"
    assert SECRET not in help_text


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_each_command_help_lists_its_options_and_environment(command: str) -> None:
    shown = CliRunner().invoke(app, [command, "--help"], env=ENV, prog_name="python -m graphql_api")
    assert shown.exit_code == 0, shown.output
    check_help(command, shown.output)


def test_help_of_a_real_process() -> None:
    """`python -m graphql_api` itself: the top-level help lists every command, and `-h` is `--help` for a command of
    the server and one of the clients (the runner above covers the rest in-process, where they take no second)."""
    env = {"PATH": "/usr/bin:/bin", "COLUMNS": "100", **ENV}
    runs = {command: subprocess.Popen([sys.executable, "-m", "graphql_api", *command.split(), "-h"], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for command in ("", "import", "rerun")}
    shown = {}
    for command, process in runs.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and err == "", (command, out, err)
        shown[command] = out
    check_help("import", shown["import"])
    check_help("rerun", shown["rerun"])
    listing = _words(shown[""])
    for command in COMMANDS:
        assert re.search(rf"(?<![\w-]){command}(?![\w-])", listing), (command, shown[""])


def test_bad_usage_exits_2_with_the_reason_on_stderr() -> None:
    runner = CliRunner()
    for args, reason in [
        (["create-api-key"], "Missing option '--workspace'"),
        (["rerun", "--successful", "--unsuccessful"], "not both"),
        (["export", "--successful", "--unsuccessful"], "not both"),
        (["jobs", "--first", "many"], "Invalid value for '--first'"),
        (["nope"], "No such command 'nope'"),
    ]:
        result = runner.invoke(app, args, env=ENV)
        assert result.exit_code == 2, (args, result.output)
        assert reason in _words(result.stderr), (args, result.stderr)
        assert result.stdout == "" and "Traceback" not in result.output
