"""What narrower and batch reruns cost: the same conversations rerun in full, for one changed field only, and in
full through the Batch API, each job's actual charge side by side.

    .venv/bin/python -m bench.costs [--conversations 1000]

One server process (real google-genai client) against the Gemini test server, whose token counts follow the
request and answer sizes (about four bytes per token), so a smaller prompt and response schema show as they would.
Steps: a full rerun gives every call a current result; the draft's `party_size` field description changes; then,
on the same calls, a rerun with `onlyChanged: true` (it asks for that field only), a full interactive rerun, a
full BATCH rerun, and full reruns asking for rationale (EVALUATIONS, then ALL; the test server answers with a
one-sentence reason and a quoted line per output, as a model would). Figures: estimated and charged cost, tokens,
and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg

from bench.reruns import LOAD_SQL, RESULTS_DIR, Api, database
from graphql_api.db import migrate
from graphql_api.testing import GeminiTestServer
from graphql_api.testing.gemini_server import example_from_schema
from graphql_api.testing.processes import ServerProcess, cli

FINAL = {"SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"}
RERUN = """mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) {
  job { id total skipped } estimate { conversations skipped inputTokens outputTokens costUsd mode } } }"""
JOB = """query($id: ID!) { rerunJob(id: $id) { id status mode total succeeded failed skipped costUsd estimatedCostUsd
  startedAt finishedAt batches { state items } } }"""
TOKENS = """SELECT coalesce(sum(r.input_tokens), 0)::bigint AS input, coalesce(sum(r.output_tokens), 0)::bigint AS output
FROM analysis_results r WHERE r.rerun_job_id = $1"""
EDIT = """mutation($fields: [DataFieldInput!]) { updateDraftPrompts(agentId: "agent_bench", input: { dataFields: $fields }) {
  version } }"""
FIELDS = [
    {"name": "visit_type", "type": "ENUM", "description": "Kind of visit", "choices": ["cleaning", "checkup", "emergency"],
     "required": True},
    {"name": "party_size", "type": "NUMBER", "description": "How many people the booking is for (a whole number)",
     "required": False},
]


async def run_job(api: Api, db_url: str, label: str, input: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    payload = (await api.gql(RERUN, {"input": input}))["rerunAnalysis"]
    job_id = payload["job"]["id"]
    while True:
        job = (await api.gql(JOB, {"id": job_id}))["rerunJob"]
        if job["status"] in FINAL:
            break
        await asyncio.sleep(0.2)
    conn = await asyncpg.connect(dsn=db_url)
    try:
        tokens = await conn.fetchrow(TOKENS, job_id)
    finally:
        await conn.close()
    figures = {
        "label": label, "input": input, "status": job["status"], "mode": job["mode"], "conversations": job["total"],
        "skipped": job["skipped"], "estimated_cost_usd": payload["estimate"]["costUsd"], "cost_usd": job["costUsd"],
        "input_tokens": tokens["input"], "output_tokens": tokens["output"], "batches": len(job["batches"]),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(f"{label:<34} {job['status']:<9} {job['total']:>6} conv  {tokens['input']:>10,} in {tokens['output']:>9,} out  "
          f"charged ${Decimal(job['costUsd']):.6f} (estimate ${Decimal(payload['estimate']['costUsd']):.6f})  "
          f"{figures['seconds']}s")
    return figures


async def scenario(args: argparse.Namespace, db_url: str, key: str, data_dir: Path) -> dict[str, Any]:
    with GeminiTestServer(record=False) as gemini:
        gemini.batch_delay_s = 0.2
        env = {"GEMINI_API_KEY": "bench", "GEMINI_BASE_URL": gemini.base_url, "ANALYSIS_CONCURRENCY": "32",
               "LOG_LEVEL": "WARNING", "BATCH_POLL_S": "0.2", "BATCH_MAX_REQUESTS": "500"}
        with ServerProcess(db_url=db_url, data_dir=data_dir, env=env) as server:
            api = Api(server, key)
            everything = {"agentId": "agent_bench"}
            baseline = await run_job(api, db_url, "full (gives current results)", everything)
            await api.gql(EDIT, {"fields": FIELDS})
            narrow = await run_job(api, db_url, "onlyChanged (party_size changed)", {**everything, "onlyChanged": True})
            full = await run_job(api, db_url, "full, interactive", everything)
            batch = await run_job(api, db_url, "full, BATCH", {**everything, "mode": "BATCH"})
            # Rationale: the same full rerun, with reasons for the evaluations, then for every output.
            gemini.responder = realistic_rationale
            await api.gql(RATIONALE, {"mode": "EVALUATIONS"})
            evaluations = await run_job(api, db_url, "full, rationale EVALUATIONS", everything)
            await api.gql(RATIONALE, {"mode": "ALL"})
            explained = await run_job(api, db_url, "full, rationale ALL", everything)
            await api.client.aclose()
    return {"baseline": baseline, "only_changed": narrow, "full": full, "batch": batch,
            "field_only_vs_full_cost": _ratio(narrow["cost_usd"], full["cost_usd"]),
            "field_only_vs_full_input_tokens": _ratio(narrow["input_tokens"], full["input_tokens"]),
            "field_only_vs_full_output_tokens": _ratio(narrow["output_tokens"], full["output_tokens"]),
            "rationale_evaluations": evaluations, "rationale_all": explained,
            "rationale_evaluations_vs_none_cost": _ratio(evaluations["cost_usd"], full["cost_usd"]),
            "rationale_evaluations_vs_none_output_tokens": _ratio(evaluations["output_tokens"], full["output_tokens"]),
            "rationale_all_vs_none_cost": _ratio(explained["cost_usd"], full["cost_usd"]),
            "rationale_all_vs_none_output_tokens": _ratio(explained["output_tokens"], full["output_tokens"]),
            "batch_vs_interactive_cost": _ratio(batch["cost_usd"], full["cost_usd"]),
            "batch_vs_interactive_tokens": _ratio(batch["input_tokens"] + batch["output_tokens"],
                                                  full["input_tokens"] + full["output_tokens"])}


RATIONALE = """mutation($mode: RationaleMode) { updateDraftPrompts(agentId: "agent_bench", input: { rationale: $mode }) {
  version } }"""


def realistic_rationale(request: Any) -> dict[str, Any]:
    """The test server's answer, with reasons a model would write: a sentence, a quoted transcript line, its turn."""
    answer = example_from_schema(request.response_schema, request.contents)
    lines = request.contents.splitlines()
    quote = next((line.split(": ", 1)[1] for line in lines if line.startswith("User:")), None)
    turn = next((i + 1 for i, line in enumerate(lines) if line.startswith("User:")), None)

    def reason(what: str) -> dict[str, Any]:
        return {"reason": f"The caller stated the {what} plainly and the agent confirmed it before the call ended.",
                "quote": quote, "turn": turn}

    for key, value in (answer.get("rationale") or {}).items():
        if isinstance(value, dict) and "reason" in value:
            answer["rationale"][key] = reason(key.replace("_", " "))
        elif isinstance(value, dict):
            answer["rationale"][key] = {name: reason(name.replace("_", " ")) for name in value}
    return answer


def _ratio(a: Any, b: Any) -> float:
    return round(float(Decimal(str(a)) / Decimal(str(b))), 4) if Decimal(str(b)) else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conversations", type=int, default=1000)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="gqlapi-bench-data-"))
    with database(os.environ.get("DATABASE_URL")) as db_url:
        asyncio.run(migrate(db_url))
        key = cli("create-api-key", "--workspace", "bench", db_url=db_url, data_dir=data_dir).stdout.strip().splitlines()[-1]

        async def load() -> None:
            conn = await asyncpg.connect(dsn=db_url)
            try:
                for statement in LOAD_SQL.split(";\n"):
                    if statement.strip():
                        await conn.execute(statement, *([args.conversations] if "$1" in statement else []))
                await conn.execute("ANALYZE")
            finally:
                await conn.close()

        asyncio.run(load())
        print(f"{args.conversations} calls of agent_bench (model gemini-2.5-flash-lite, two data fields)\n")
        report = {"when": datetime.now().isoformat(timespec="seconds"), "cpus": os.cpu_count(),
                  **asyncio.run(scenario(args, db_url, key, data_dir))}
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"costs-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nresults: {out}")
    print(f"summary: field-only rerun costs {report['field_only_vs_full_cost']:.3f}x a full one "
          f"({report['field_only_vs_full_input_tokens']:.3f}x input tokens, {report['field_only_vs_full_output_tokens']:.3f}x "
          f"output tokens); the batch job costs {report['batch_vs_interactive_cost']:.3f}x the interactive one "
          f"for {report['batch_vs_interactive_tokens']:.3f}x its tokens; rationale for the evaluations costs "
          f"{report['rationale_evaluations_vs_none_cost']:.3f}x ({report['rationale_evaluations_vs_none_output_tokens']:.2f}x "
          f"output tokens), for every output {report['rationale_all_vs_none_cost']:.3f}x "
          f"({report['rationale_all_vs_none_output_tokens']:.2f}x output tokens)")


if __name__ == "__main__":
    main()
