"""Planning a rerun: resolve its targets, snapshot the draft config, estimate the cost, create the job."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from graphql_api.agents import config_of
from graphql_api.analysis.config import effective_config
from graphql_api.analysis.pricing import cost_usd
from graphql_api.analysis.prompting import estimate_usage
from graphql_api.conversations import ANALYZABLE_STATUSES, Selection
from graphql_api.db import Database
from graphql_api.errors import BadUserInput, Conflict, LimitExceeded, not_found

MAX_TARGETS = 100_000
MAX_EXPLICIT_IDS = 10_000


@dataclass(frozen=True)
class Estimate:
    conversations: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    model: str
    config_version: int


@dataclass(frozen=True)
class Plan:
    job: Any | None  # the rerun_jobs row; None for a dry run
    estimate: Estimate
    reused: bool = False  # an earlier request with the same idempotency key created it


async def resolve_explicit_targets(
    *, db: Database, workspace_id: int, call_ids: list[str], chat_ids: list[str]
) -> Selection:
    """Check explicit ids: all found in this workspace, finished, and of one agent."""
    ids = list(dict.fromkeys(call_ids + chat_ids))
    if len(ids) > MAX_EXPLICIT_IDS:
        raise LimitExceeded(
            f"At most {MAX_EXPLICIT_IDS} explicit ids per request; use agentId with a filter for more.",
            argument="input",
        )
    rows = {r["conversation_id"]: r for r in await db.fetch_all("rerun_target_check", workspace_id=workspace_id, ids=ids)}
    expected_kind = {i: "CALL" for i in call_ids} | {i: "CHAT" for i in chat_ids}
    missing = [i for i in ids if i not in rows or rows[i]["kind"] != expected_kind[i]]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise not_found("conversation", shown)
    agents = sorted({r["agent_id"] for r in rows.values()})
    if len(agents) > 1:
        raise BadUserInput(
            "A rerun uses one agent's draft config, and these conversations belong to "
            f"{len(agents)} agents ({', '.join(agents[:5])}); send one request per agent.",
            argument="input",
        )
    kinds = {r["kind"] for r in rows.values()}
    unfinished = [i for i in ids if rows[i]["status"] not in ANALYZABLE_STATUSES]
    if unfinished:
        raise BadUserInput(
            f"{', '.join(unfinished[:5])} {'is' if len(unfinished) == 1 else 'are'} still in progress "
            "(ongoing or registered); only finished conversations can be analyzed.",
            argument="input",
        )
    return Selection(kind=kinds.pop(), agent_id=agents[0], ids=ids)


def _request_hash(targets: Selection) -> str:
    return hashlib.sha256(orjson.dumps(targets.to_json(), option=orjson.OPT_SORT_KEYS)).hexdigest()


async def plan_rerun(
    *,
    db: Database,
    workspace_id: int,
    targets: Selection,
    requested_by: str,
    dry_run: bool = False,
    max_cost_usd: Decimal | None = None,
    idempotency_key: str | None = None,
) -> Plan:
    """Estimate a rerun and, unless a dry run, create the job and its items in one transaction."""
    request_hash = _request_hash(targets)
    if idempotency_key is not None and not dry_run:
        earlier = await db.fetch_one("rerun_job_by_idempotency_key", workspace_id=workspace_id, idempotency_key=idempotency_key)
        if earlier is not None:
            return _reused(earlier, request_hash)

    async with db.transaction():
        drafts = await db.fetch_all("drafts_of_agents", workspace_id=workspace_id, agent_ids=[targets.agent_id])
        if not drafts:
            raise not_found("agent", targets.agent_id)
        draft = drafts[0]
        config = effective_config(draft)
        counted = await db.fetch_one("rerun_estimate", workspace_id=workspace_id, **targets.target_params())
        conversations = counted["conversations"]
        if conversations == 0:
            raise BadUserInput(
                "The request matches no finished conversations; nothing to rerun.", argument="input.filter"
            )
        if conversations > MAX_TARGETS:
            raise LimitExceeded(
                f"The request matches {conversations} conversations; one rerun takes at most {MAX_TARGETS}. "
                "Narrow the filter (e.g. by startedAfter/startedBefore) and send several.",
                argument="input.filter",
            )
        input_tokens, output_tokens = estimate_usage(
            config, targets.kind, conversations=conversations, transcript_chars=counted["transcript_chars"]
        )
        estimate = Estimate(
            conversations=conversations,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            cost_usd=cost_usd(config.model, input_tokens, output_tokens),
            model=config.model,
            config_version=draft["version"],
        )
        if max_cost_usd is not None and estimate.cost_usd > max_cost_usd:
            raise LimitExceeded(
                f"The estimated cost is ${estimate.cost_usd} for {conversations} conversations, above maxCostUsd "
                f"${max_cost_usd}; nothing was created.",
                argument="input.maxCostUsd",
                estimatedCostUsd=str(estimate.cost_usd),
            )
        if dry_run:
            return Plan(job=None, estimate=estimate)
        if idempotency_key is None:
            # A double-click must not pay twice: the same targets with the same config, while the first
            # job runs, are refused (an idempotency key makes the retry return that job instead).
            await db.fetch_val("rerun_request_lock", workspace_id=workspace_id, request_hash=request_hash)
            running = await db.fetch_one(
                "rerun_job_same_running", workspace_id=workspace_id, request_hash=request_hash,
                config_snapshot=config_of(draft),
            )
            if running is not None:
                raise Conflict(
                    f"An identical rerun (job {running['job_id']}, {running['status']}) is still running; wait for it or "
                    "cancel it. Send an idempotencyKey to get that job back when retrying a request.",
                    jobId=running["job_id"],
                )
        job_id = "rerun_" + secrets.token_hex(10)
        inserted = await db.fetch_val(
            "rerun_job_insert",
            job_id=job_id,
            workspace_id=workspace_id,
            agent_id=targets.agent_id,
            kind=targets.kind,
            requested_by=requested_by,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
            config_version=draft["version"],
            config_snapshot=config_of(draft),
            targets=targets.to_json(),
            estimated_input_tokens=input_tokens,
            estimated_output_tokens=output_tokens,
            estimated_cost_usd=estimate.cost_usd,
        )
        if inserted is None:
            # A concurrent request with the same idempotency key won; answer with its job.
            raise _IdempotentRace()
        job = await db.fetch_one(
            "rerun_items_insert", job_id=job_id, workspace_id=workspace_id, **targets.target_params()
        )
        if job["total"] == 0:
            # The targets changed between the estimate and the insert (a filter on current results
            # that another rerun just rewrote): a job with nothing to do would never end. Roll back.
            raise BadUserInput("The request matches no finished conversations any more; nothing to rerun.", argument="input.filter")
    return Plan(job=job, estimate=estimate)


class _IdempotentRace(Exception):
    pass


def _reused(job: Any, request_hash: str) -> Plan:
    if job["request_hash"] != request_hash:
        raise Conflict(
            "This idempotencyKey was already used for a different rerun request; use a new key.",
            argument="input.idempotencyKey",
            jobId=job["job_id"],
        )
    return Plan(job=job, estimate=estimate_of(job), reused=True)


def estimate_of(job: Any) -> Estimate:
    return Estimate(
        conversations=job["total"],
        input_tokens=job["estimated_input_tokens"],
        output_tokens=job["estimated_output_tokens"],
        cost_usd=job["estimated_cost_usd"],
        model=job["config_snapshot"]["model"],
        config_version=job["config_version"],
    )


async def create_rerun(**kwargs: Any) -> Plan:
    """plan_rerun, answering a lost idempotency race with the winner's job."""
    try:
        return await plan_rerun(**kwargs)
    except _IdempotentRace:
        db, workspace_id = kwargs["db"], kwargs["workspace_id"]
        earlier = await db.fetch_one(
            "rerun_job_by_idempotency_key", workspace_id=workspace_id, idempotency_key=kwargs["idempotency_key"]
        )
        return _reused(earlier, _request_hash(kwargs["targets"]))
