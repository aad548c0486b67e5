"""Shared steps of the rerun tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from tests.conftest import data, running_api
from tests.factories import load

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


@contextlib.asynccontextmanager
async def gemini_api(db_url: str, gemini: Any, records: list[dict], **settings: Any) -> AsyncIterator[Any]:
    """A running API whose analyzer is the real google-genai client against the Gemini test server, with `records`
    imported into workspace "acme" (initial analyses by that analyzer) and `api.key` its key."""
    async with running_api(
        db_url, gemini_api_key="test-key", gemini_base_url=gemini.base_url, gemini_retry_base_delay_s=0.02,
        gemini_max_attempts=2, analysis_concurrency=4, **settings,
    ) as api:
        api.key = await api.key_for("acme")
        await load(api, "acme", records, analyzer=api.services.analyzer)
        gemini.clear_requests()
        yield api
