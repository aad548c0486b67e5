"""Shared steps of the rerun tests."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from tests.conftest import data

FINAL = {"SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"}

RERUN = """mutation($input: RerunAnalysisInput!) {
  rerunAnalysis(input: $input) {
    reused
    job { id status total succeeded failed canceled pending configVersion config { summaryPrompt model } }
    estimate { conversations inputTokens outputTokens costUsd model configVersion }
  }
}"""

JOB = """query($id: ID!) { rerunJob(id: $id) {
  id status total succeeded failed canceled pending costUsd estimatedCostUsd config { summaryPrompt }
  items(first: 100) { nodes { conversationId status error attempts
    result { id trigger model summary charged costUsd agentVersion { version } }
    previousResult { id trigger } } }
} }"""

UPDATE = """mutation($agent: ID!, $input: AnalysisConfigInput!) {
  updateDraftPrompts(agentId: $agent, input: $input) { version } }"""


async def wait_final(api: Any, key: str, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = data(await api.gql(JOB, {"id": job_id}, key=key))["rerunJob"]
        if job["status"] in FINAL:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job did not finish: {job}")
        await asyncio.sleep(0.05)
