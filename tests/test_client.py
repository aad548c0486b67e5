"""The terminal client (`rerun`, `jobs`, `cancel`, `diff`) as a user runs it: subprocesses against a real server
process on the seeded demo data, with the URL and key in the environment."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx

from graphql_api.testing.processes import ServerProcess, cli, free_port
from tests.terminal import run_in_terminal

AGENT = "agent_f252e6b438"  # the demo's dental agent, as in the README
WEEK = ("--version", "2", "--started-after", "2026-11-16T00:00:00Z", "--started-before", "2026-11-23T00:00:00Z")


def _demo_key(db_url: str, data_dir: Path) -> str:
    seeded = cli("seed", db_url=db_url, data_dir=data_dir)
    assert seeded.returncode == 0, seeded.stderr
    created = cli("create-api-key", "--workspace", "demo", db_url=db_url, data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    return created.stdout.strip().splitlines()[-1]


def test_rerun_jobs_cancel_and_diff_against_a_running_server(db_url, tmp_path) -> None:
    key = _demo_key(db_url, tmp_path)
    with ServerProcess(db_url=db_url, data_dir=tmp_path) as server:
        env = {"ANALYSIS_API_URL": server.base_url, "ANALYSIS_API_KEY": key, "COLUMNS": "200"}

        def run(*args: str, **extra: str):
            return cli(*args, db_url="postgresql://unused@127.0.0.1:1/none", data_dir=tmp_path, env={**env, **extra},
                       timeout=60)

        # Without a terminal and without --yes: the estimate, then a refusal; nothing started.
        refused = run("rerun", "--agent", AGENT, *WEEK)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "estimate" in refused.stdout and "--yes" in refused.stderr
        assert "Traceback" not in refused.stderr

        # On a terminal it asks, and "no" starts nothing (the README's test answers yes on a terminal).
        declined = run_in_terminal([sys.executable, "-m", "graphql_api", "rerun", "--agent", AGENT, *WEEK],
                                   env={**os.environ, **env}, answers=[("[y/n]", "n\r")])
        assert declined.status == 0, declined.text
        assert "Start the rerun?" in declined.text and declined.text.rstrip().endswith("nothing started")
        assert _jobs(server.base_url, key) == []

        done = run("rerun", "--agent", AGENT, *WEEK, "--yes")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "conversations" in done.stdout and "draft version" in done.stdout
        job_id = re.search(r"rerun job (\S+)", done.stdout).group(1)
        assert f"Rerun {job_id}: SUCCEEDED" in done.stdout
        for column in ("succeeded", "failed", "canceled", "cost", "outcomes flipped"):
            assert column in done.stdout
        summary_row = done.stdout.split("outcomes flipped", 1)[1].splitlines()[2]
        assert [cell.strip() for cell in summary_row.strip("│ ").split("│")][-1] == str(len(_flips(server.base_url, key, job_id)))

        listed = run("jobs", "--agent", AGENT)
        assert listed.returncode == 0, listed.stderr
        assert job_id in listed.stdout and "SUCCEEDED" in listed.stdout

        canceled = run("cancel", job_id)
        assert canceled.returncode == 4, canceled.stdout + canceled.stderr
        assert "(CONFLICT)" in canceled.stderr and "Traceback" not in canceled.stderr

        missing = run("cancel", "job_nope")
        assert missing.returncode == 2, missing.stdout + missing.stderr
        assert "NOT_FOUND" in missing.stderr or "BAD_USER_INPUT" in missing.stderr

        # A conversation of the job: its rerun result against the result it had before.
        item = run("diff", _first_item(server.base_url, key, job_id))
        assert item.returncode == 0, item.stdout + item.stderr
        for name in ("summary", "successful", "userSentiment", "inVoicemail", "customData."):
            assert name in item.stdout
        assert "changed" in item.stdout

        wrong = run("jobs", ANALYSIS_API_KEY="not-a-key")
        assert wrong.returncode == 3, wrong.stdout + wrong.stderr
        assert "UNAUTHENTICATED" in wrong.stderr and "Traceback" not in wrong.stderr


def _jobs(base_url: str, key: str) -> list[dict]:
    body = httpx.post(base_url + "/graphql", json={"query": "{ rerunJobs(first: 10) { nodes { id status } } }"},
                      headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    return body["data"]["rerunJobs"]["nodes"]


def _items(base_url: str, key: str, job_id: str) -> list[dict]:
    query = """query($id: ID!) { rerunJob(id: $id) { items(first: 100) { nodes {
      conversationId result { successful } previousResult { successful } } } } }"""
    body = httpx.post(base_url + "/graphql", json={"query": query, "variables": {"id": job_id}},
                      headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    return body["data"]["rerunJob"]["items"]["nodes"]


def _flips(base_url: str, key: str, job_id: str) -> list[str]:
    return [item["conversationId"] for item in _items(base_url, key, job_id)
            if item["result"]["successful"] != (item["previousResult"] or {}).get("successful")]


def _first_item(base_url: str, key: str, job_id: str) -> str:
    query = "query($id: ID!) { rerunJob(id: $id) { items(first: 1) { nodes { conversationId } } } }"
    body = httpx.post(base_url + "/graphql", json={"query": query, "variables": {"id": job_id}},
                      headers={"Authorization": f"Bearer {key}"}, timeout=10).json()
    return body["data"]["rerunJob"]["items"]["nodes"][0]["conversationId"]


def test_an_unreachable_server_exits_5(tmp_path) -> None:
    env = {"ANALYSIS_API_URL": f"http://127.0.0.1:{free_port()}", "ANALYSIS_API_KEY": "any"}
    for args in (("jobs",), ("rerun", "--agent", AGENT, "--yes"), ("diff", "call_x"), ("cancel", "job_x")):
        result = cli(*args, db_url="postgresql://unused@127.0.0.1:1/none", data_dir=tmp_path, env=env, timeout=30)
        assert result.returncode == 5, (args, result.stdout, result.stderr)
        assert "unreachable" in result.stderr and "Traceback" not in result.stderr
