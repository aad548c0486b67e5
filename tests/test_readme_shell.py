"""The README's shell commands run as written: each one in a terminal, against a seeded database and a running server
(its URL and the demo key in the environment), in the README's order; the few that serve until stopped or install
packages are listed with the reason they are not run here."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from graphql_api.testing.processes import ServerProcess
from tests.conftest import data, running_api
from tests.terminal import TerminalRun, run_in_terminal
from tests.test_readme_examples import seed_demo

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
PYTHON = ".venv/bin/python"

# A README command this test does not run, and why.
NOT_RUN = {
    "make run": "serves until stopped; tests/test_cli_startup.py starts `run` and checks what it prints",
    "make test": "the whole test suite, this test among it",
    f"{PYTHON} -m graphql_api serve": "serves until stopped; this test and every end-to-end test start it",
    f"{PYTHON} -m graphql_api run": "serves until stopped; tests/test_cli_startup.py runs it",
    f"{PYTHON} -m graphql_api worker": "runs until stopped; this test starts one for the rerun",
    "pip install --require-hashes --no-deps -r requirements.lock": "installs packages; tests/test_install.py does, "
    "in a virtual environment of its own",
    "pip install --no-deps .": "installs the package; tests/test_install.py does, in a virtual environment of its own",
}


def readme_commands() -> list[str]:
    """Each command of the README's sh, bash and console blocks: continuation lines joined, comments and prompts off."""
    commands = []
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", README, re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"(^|\s+)#\s.*$", "", line).removeprefix("$ ").strip()
            if line:
                commands.append(" ".join(line.split()))
    return commands


COMMANDS = readme_commands()


def test_every_readme_command_is_run_or_listed_with_a_reason() -> None:
    assert set(NOT_RUN) <= set(COMMANDS), f"listed but no longer in the README: {set(NOT_RUN) - set(COMMANDS)}"
    assert len(COMMANDS) - len(NOT_RUN) >= 10, COMMANDS


@pytest.mark.parametrize("command", sorted(NOT_RUN))
def test_readme_command_not_run_here(command: str) -> None:
    pytest.skip(f"README command `{command}` not run: {NOT_RUN[command]}")


# What each command must print (in a terminal, control sequences removed) besides exiting 0.
EXPECTED = [
    (r" create-api-key --workspace (\S+)", lambda m: [f"API key for workspace {m[1]}", "ak_"]),
    (r" migrate$", lambda m: ["migrations applied:"]),
    (r" (\S+) --help$", lambda m: [f"Usage: python -m graphql_api {m[1]}", "Options", "Environment:"]),
    (r" seed$", lambda m: ["seeded workspace demo:"]),
    (r" import (\S+) --workspace \S+$", lambda m: [f"{m[1]}: agents=", "skipped=0"]),
    (r" rerun --agent", lambda m: ["Rerun estimate", "Start the rerun?", "Rerun rerun_", ": SUCCEEDED",
                                   "outcomes flipped"]),
    (r" export (?:--agent|--job) ", lambda m: ["exported ", ") to "]),
    (r" jobs --agent (\S+)", lambda m: ["Rerun jobs, newest first", m[1], "SUCCEEDED"]),
    (r" cancel (\S+)$", lambda m: [f"job {m[1]}: CANCELED"]),
    (r" diff (\S+) --against (\S+)$", lambda m: [f"{m[1]}: current analysis against an earlier one", m[2], "changed"]),
]


def _expected(command: str) -> list[str]:
    for pattern, texts in EXPECTED:
        if found := re.search(pattern, command):
            return texts(found)
    raise AssertionError(f"no expected output for the README command {command!r}: add it to EXPECTED")


CLIENT_COMMANDS = ("rerun", "export", "jobs", "cancel", "diff")  # of the running server, one after the other


async def test_readme_commands_run_as_written(db_url, tmp_path) -> None:
    async with running_api(db_url, run_workers=False) as api:
        key = await seed_demo(api)
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "GEMINI_BASE_URL")}
    env |= {"DATABASE_URL": db_url, "DATA_DIR": str(tmp_path)}
    placeholders = {"<the demo key make run printed>": key, "FILE": "tests/samples/retell-export.jsonl",
                    "NAME": "readme"}
    commands = [command for command in COMMANDS if command not in NOT_RUN]
    session = [c for c in commands
               if c.startswith("export ") or c.split(" -m graphql_api ")[-1].startswith(CLIENT_COMMANDS)]
    # The README's server runs at the default address with its own database; here both are the test's. Its reruns
    # are run by a worker process, so that a job can be left queued for `cancel`.
    server = ServerProcess(db_url=db_url, data_dir=tmp_path, env={"RUN_WORKERS": "0"})
    worker = ServerProcess(db_url=db_url, data_dir=tmp_path, command="worker")
    with _stopped_at_the_end(server), _stopped_at_the_end(worker), ThreadPoolExecutor(4) as pool:
        # The database's commands are independent of each other and of the server: they run meanwhile.
        alone = [pool.submit(_run, _substituted(c, placeholders), dict(env)) for c in commands if c not in session]
        server.wait_ready()
        worker.wait_ready()
        env["ANALYSIS_API_URL"] = server.base_url
        for command in session:
            if " cancel " in command:
                # Only a job that has not ended can be canceled: one started while no worker runs.
                assert worker.stop() == 0, worker.log()
                placeholders["JOB_ID"] = _queued_job(server.base_url, key)
            command = _substituted(command, placeholders)
            # What the README's exports write goes to the test's directory, not into the checkout.
            command = re.sub(r"(\s(?:--output|-o)\s+)(\S+)", lambda m: m[1] + str(tmp_path / Path(m[2]).name), command)
            if command.startswith("export "):
                name, value = command.removeprefix("export ").split("=", 1)
                env[name] = value
                continue
            run = _run(command, env)
            if " rerun " in command:
                _assert_progress_drawn(run.drawn, run.text)
                job_id = re.search(r"rerun job (\S+)", run.text)[1]
                placeholders["JOB_ID"] = job_id  # for an export of the job (`cancel` gets a queued one of its own)
                placeholders["CONVERSATION_ID"], placeholders["RESULT_ID"] = _rerun_item(server.base_url, key, job_id)
        for future in alone:
            future.result()
    assert len(alone) >= 6 and len(session) >= 5, (alone, session)


def _run(command: str, env: dict[str, str]) -> TerminalRun:
    """One command in a terminal, as pasted; it must exit 0 and print what EXPECTED says."""
    # The rerun asks before it starts anything: answered as a person would.
    answers = [("[y/n]", "y\r")] if " rerun " in command else []
    run = run_in_terminal(["bash", "-c", command], env=env, cwd=str(ROOT), answers=answers, timeout=90)
    assert run.status == 0, (command, run.text)
    for text in _expected(command):
        assert text in run.text, (command, text, run.text)
    assert "Traceback" not in run.text, (command, run.text)
    return run


@contextlib.contextmanager
def _stopped_at_the_end(process: ServerProcess) -> Iterator[None]:
    try:
        yield
    finally:
        process.stop()


def _substituted(command: str, placeholders: dict[str, str]) -> str:
    """The command with the README's placeholders filled in, optional parts ([--against RESULT_ID]) given, and the
    project's Python being the one running the tests."""
    command = re.sub(r"\[([^\]]*)\]", r"\1", command)
    for placeholder, value in placeholders.items():
        command = re.sub(rf"(?<![\w-]){re.escape(placeholder)}(?![\w-])", value.replace("\\", r"\\"), command)
    if "postgresql://..." in command:
        command = command.replace("DATABASE_URL=postgresql://...", "")  # the environment holds the test's
    command = re.sub(r"(^|\s)(\.venv/bin/python|python)(?=\s)", lambda m: m[1] + shlex.quote(sys.executable), command)
    assert not re.search(r"\b[A-Z]+_ID\b|<[^>]*>", command), f"a placeholder left in {command!r}"
    return command.strip()


def _assert_progress_drawn(drawn: str, text: str) -> None:
    """Rich's live progress bar: the bar's glyphs, redrawn in place (cursor moved back up), ending at N/N."""
    assert "━" in text, text
    assert "\x1b[1A" in drawn or "\x1b[2K" in drawn, "the bar was not redrawn in place"
    total = re.search(r"rerun job \S+ \w+, (\d+) conversations", text)[1]
    assert f"{total}/{total}" in text, text


def _gql(base_url: str, key: str, query: str, variables: dict | None = None) -> dict:
    response = httpx.post(base_url + "/graphql", json={"query": query, "variables": variables or {}},
                          headers={"Authorization": f"Bearer {key}"}, timeout=30)
    return data(response.json())


def _rerun_item(base_url: str, key: str, job_id: str) -> tuple[str, str]:
    """A conversation the job reran, and the result it had before."""
    items = _gql(base_url, key, """query($id: ID!) { rerunJob(id: $id) { items(first: 1) {
      nodes { conversationId previousResult { id } } } } }""", {"id": job_id})["rerunJob"]["items"]["nodes"]
    return items[0]["conversationId"], items[0]["previousResult"]["id"]


def _queued_job(base_url: str, key: str) -> str:
    calls = _gql(base_url, key, "{ calls(first: 1, filter: { successful: true }) { edges { node { id } } } }")
    call_id = calls["calls"]["edges"][0]["node"]["id"]
    started = _gql(
        base_url, key, "mutation($ids: [ID!]) { rerunAnalysis(input: { callIds: $ids }) { job { id status } } }",
        {"ids": [call_id]},
    )
    job = started["rerunAnalysis"]["job"]
    assert job["status"] == "QUEUED", job
    return job["id"]
