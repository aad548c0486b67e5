"""Planning a rerun: resolve its targets, snapshot the config (the latest draft's, or a published version's),
estimate the cost, create the job; and a retry of a finished job's failed or canceled items with its snapshot."""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

from graphql_api.agents import config_of
from graphql_api.analysis.base import output_names, with_dependencies
from graphql_api.analysis.config import effective_config
from graphql_api.analysis.pricing import cost_usd
from graphql_api.analysis.prompting import estimate_usage
from graphql_api.conversations import ANALYZABLE_STATUSES, Selection
from graphql_api.db import Database
from graphql_api.errors import BadUserInput, Conflict, LimitExceeded, NotFound, not_found
from graphql_api.reruns import FINAL_STATUSES

MAX_TARGETS = 100_000
MAX_EXPLICIT_IDS = 10_000

# Where a job's config came from, kept in its snapshot (rerun_jobs.config_snapshot) beside the config keys.
SOURCE_KEY = "config_source"
DRAFT, PUBLISHED = "DRAFT", "PUBLISHED"
# How a job's model requests are sent: one by one as workers take them, or through the provider's Batch API.
INTERACTIVE, BATCH = "INTERACTIVE", "BATCH"
# Item statuses a retry takes: the others are still to run in their job, or have their result.
RETRYABLE_STATUSES = ("FAILED", "CANCELED")


@dataclass(frozen=True)
class Estimate:
    conversations: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    model: str
    config_version: int
    config_source: str = DRAFT
    skipped: int = 0  # targeted conversations with nothing to recompute
    mode: str = INTERACTIVE


@dataclass(frozen=True)
class Narrowing:
    """Which outputs a rerun recomputes: `fields` (None for all) and, with `only_changed`, per conversation only
    those whose definition differs between the config that produced its current result and the rerun's."""

    fields: list[str] | None = None
    only_changed: bool = False

    @property
    def narrows(self) -> bool:
        return self.fields is not None or self.only_changed

    def to_json(self) -> dict[str, Any]:
        """What rerun_jobs.targets and the request hash record of it; nothing for a full rerun (as before)."""
        out: dict[str, Any] = {}
        if self.fields is not None:
            out["fields"] = sorted(set(self.fields))
        if self.only_changed:
            out["onlyChanged"] = True
        return out


FULL = Narrowing()


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


def _hash(request: dict[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(request, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _request_hash(
    targets: Selection, config_version: int | None = None, narrowing: Narrowing = FULL, mode: str = INTERACTIVE
) -> str:
    # A full interactive rerun of the draft hashes as it always did.
    request = {**targets.to_json(), **narrowing.to_json()}
    if config_version is not None:
        request = {**request, "configVersion": config_version}
    if mode != INTERACTIVE:
        request = {**request, "mode": mode}
    return _hash(request)


def _outputs_asked(snapshot: dict[str, Any], kind: str, narrowing: Narrowing) -> list[str] | None:
    """The outputs `fields` names, checked against the rerun's config and with what they imply; None for all."""
    if narrowing.fields is None:
        return None
    config = effective_config(snapshot)
    known = output_names(config, kind)
    unknown = [name for name in narrowing.fields if name not in known]
    if unknown:
        raise BadUserInput(
            f"`fields` names {', '.join(map(repr, unknown[:5]))}, which the rerun's config does not produce for "
            f"{'calls' if kind == 'CALL' else 'chats'}; choose among {', '.join(known)}.",
            argument="input.fields",
        )
    if not narrowing.fields:
        raise BadUserInput("`fields` is empty: name the outputs to recompute, or leave it out for all.", argument="input.fields")
    return sorted(with_dependencies(set(narrowing.fields), config))


async def _snapshot(db: Database, workspace_id: int, agent_id: str | None, config_version: int | None) -> tuple[int, dict[str, Any]]:
    """The version a rerun runs with and its config snapshot: the latest draft's, or the published version asked for."""
    if config_version is None:
        drafts = await db.fetch_all("drafts_of_agents", workspace_id=workspace_id, agent_ids=[agent_id])
        if not drafts:
            raise not_found("agent", agent_id)
        return drafts[0]["version"], {**config_of(drafts[0]), SOURCE_KEY: DRAFT}
    if config_version < 0:
        raise BadUserInput("`configVersion` is a version number: 0 or more.", argument="input.configVersion")
    rows = await db.fetch_all(
        "agent_versions_by_keys", workspace_id=workspace_id, agent_ids=[agent_id], versions=[config_version]
    )
    if not rows:
        raise NotFound(
            f"Agent {agent_id} has no version {config_version}.",
            id=f"{agent_id}@{config_version}",
            argument="input.configVersion",
        )
    if not rows[0]["is_published"]:
        raise BadUserInput(
            f"Version {config_version} is agent {agent_id}'s latest draft, which can still change: configVersion "
            "takes a published version. Leave it out to rerun with the latest draft (the default).",
            argument="input.configVersion",
        )
    return config_version, {**config_of(rows[0]), SOURCE_KEY: PUBLISHED}


@dataclass(frozen=True)
class _NewJob:
    """What plan_rerun and plan_retry have in hand once they know the job's targets and config."""

    agent_id: str | None
    kind: str
    config_version: int
    snapshot: dict[str, Any]
    targets: dict[str, Any]  # rerun_jobs.targets: what was asked for
    request_hash: str
    items_query: str  # inserts the items and sets the job's total
    items_params: dict[str, Any]
    targets_argument: str  # the GraphQL arguments a refusal names
    cap_argument: str
    mode: str = INTERACTIVE


def _estimate(new: _NewJob, groups: list[Any], max_cost_usd: Decimal | None) -> Estimate:
    """Price the targets with the snapshot's model, each group of conversations (rows of outputs, conversations,
    transcript_chars) with the request it makes: all outputs (outputs NULL), some, or none (skipped); refuse above
    the cap."""
    config = effective_config(new.snapshot)
    conversations = input_tokens = output_tokens = skipped = 0
    for group in groups:
        outputs = group["outputs"]
        if outputs is not None and not outputs:
            skipped += group["conversations"]
            continue
        narrowed = config if outputs is None else dataclasses.replace(config, outputs=frozenset(outputs))
        group_input, group_output = estimate_usage(
            narrowed, new.kind, conversations=group["conversations"], transcript_chars=group["transcript_chars"]
        )
        conversations += group["conversations"]
        input_tokens += group_input
        output_tokens += group_output
    estimate = Estimate(
        conversations=conversations,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cost_usd=cost_usd(config.model, input_tokens, output_tokens, batch=new.mode == BATCH),
        model=config.model,
        config_version=new.config_version,
        config_source=new.snapshot.get(SOURCE_KEY, DRAFT),
        skipped=skipped,
        mode=new.mode,
    )
    if max_cost_usd is not None and estimate.cost_usd > max_cost_usd:
        raise LimitExceeded(
            f"The estimated cost is ${estimate.cost_usd} for {conversations} conversations, above maxCostUsd "
            f"${max_cost_usd}; nothing was created.",
            argument=new.cap_argument,
            estimatedCostUsd=str(estimate.cost_usd),
        )
    return estimate


async def _insert_job(
    db: Database, workspace_id: int, new: _NewJob, estimate: Estimate, *, requested_by: str, idempotency_key: str | None
) -> Any:
    """Create the job and its items, in the caller's transaction; the rerun_jobs row with its total."""
    if idempotency_key is None:
        # A double-click must not pay twice: the same request with the same config, while the first
        # job runs, is refused (an idempotency key makes the retry return that job instead).
        await db.fetch_val("rerun_request_lock", workspace_id=workspace_id, request_hash=new.request_hash)
        running = await db.fetch_one(
            "rerun_job_same_running", workspace_id=workspace_id, request_hash=new.request_hash,
            config_snapshot=new.snapshot,
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
        agent_id=new.agent_id,
        kind=new.kind,
        requested_by=requested_by,
        idempotency_key=idempotency_key,
        request_hash=new.request_hash,
        config_version=new.config_version,
        config_snapshot=new.snapshot,
        targets=new.targets,
        estimated_input_tokens=estimate.input_tokens,
        estimated_output_tokens=estimate.output_tokens,
        estimated_cost_usd=estimate.cost_usd,
        mode=new.mode,
    )
    if inserted is None:
        # A concurrent request with the same idempotency key won; answer with its job.
        raise _IdempotentRace()
    job = await db.fetch_one(new.items_query, job_id=job_id, workspace_id=workspace_id, **new.items_params)
    if job["total"] == 0:
        # The targets changed between the estimate and the insert (a filter on current results
        # that another rerun just rewrote): a job with nothing to do would never end. Roll back.
        raise BadUserInput("The request matches no finished conversations any more; nothing to rerun.", argument=new.targets_argument)
    return job


def _nothing_to_recompute(estimate: Estimate, argument: str) -> BadUserInput:
    return BadUserInput(
        f"Nothing to recompute: the current results of all {estimate.skipped} conversations already come from this "
        "config for the outputs asked for. Leave out onlyChanged (or fields) to rerun them anyway.",
        argument=argument,
        skipped=estimate.skipped,
    )


async def plan_rerun(
    *,
    db: Database,
    workspace_id: int,
    targets: Selection,
    requested_by: str,
    dry_run: bool = False,
    max_cost_usd: Decimal | None = None,
    idempotency_key: str | None = None,
    config_version: int | None = None,
    narrowing: Narrowing = FULL,
    mode: str = INTERACTIVE,
) -> Plan:
    """Estimate a rerun and, unless a dry run, create the job and its items in one transaction."""
    request_hash = _request_hash(targets, config_version, narrowing, mode)
    if idempotency_key is not None and not dry_run:
        earlier = await db.fetch_one("rerun_job_by_idempotency_key", workspace_id=workspace_id, idempotency_key=idempotency_key)
        if earlier is not None:
            return _reused(earlier, request_hash)

    async with db.transaction():
        version, snapshot = await _snapshot(db, workspace_id, targets.agent_id, config_version)
        fields = _outputs_asked(snapshot, targets.kind, narrowing)
        fingerprints = None
        if narrowing.narrows:
            fingerprints = await db.fetch_val("rerun_config_fingerprints", config=snapshot, kind=targets.kind)
        params = {**targets.target_params(), "fingerprints": fingerprints, "fields": fields,
                  "only_changed": narrowing.only_changed}
        new = _NewJob(
            agent_id=targets.agent_id, kind=targets.kind, config_version=version, snapshot=snapshot,
            targets={**targets.to_json(), **narrowing.to_json()}, request_hash=request_hash,
            items_query="rerun_items_insert", items_params=params,
            targets_argument="input.filter", cap_argument="input.maxCostUsd", mode=mode,
        )
        groups = await db.fetch_all("rerun_estimate", workspace_id=workspace_id, **params)
        conversations = sum(group["conversations"] for group in groups)
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
        estimate = _estimate(new, groups, max_cost_usd)
        if dry_run:
            return Plan(job=None, estimate=estimate)
        if estimate.conversations == 0:
            raise _nothing_to_recompute(estimate, "input.onlyChanged" if narrowing.only_changed else "input.fields")
        job = await _insert_job(db, workspace_id, new, estimate, requested_by=requested_by, idempotency_key=idempotency_key)
    return Plan(job=job, estimate=estimate)


def _retry_request(job_id: str, statuses: list[str]) -> dict[str, Any]:
    """A retry's rerun_jobs.targets: the job it retries and which of its items."""
    return {"retryOf": job_id, "statuses": sorted(set(statuses))}


async def plan_retry(
    *,
    db: Database,
    workspace_id: int,
    job_id: str,
    statuses: list[str],
    requested_by: str,
    max_cost_usd: Decimal | None = None,
    idempotency_key: str | None = None,
) -> Plan:
    """A new job over a finished job's items in these statuses, with that job's config snapshot (not today's draft).

    The caller checks that the statuses are among RETRYABLE_STATUSES."""
    request = _retry_request(job_id, statuses)
    request_hash = _hash(request)
    if idempotency_key is not None:
        earlier = await db.fetch_one("rerun_job_by_idempotency_key", workspace_id=workspace_id, idempotency_key=idempotency_key)
        if earlier is not None:
            return _reused(earlier, request_hash)

    async with db.transaction():
        original = await db.fetch_one("rerun_job_get", workspace_id=workspace_id, job_id=job_id)
        if original is None:
            raise not_found("rerun job", job_id)
        if original["status"] not in FINAL_STATUSES:
            raise Conflict(
                f"Rerun job {job_id} is {original['status']}: its items may still run. Retry it once it has ended "
                "(or cancel it first).",
                status=original["status"],
            )
        params = {"retry_of": job_id, "item_statuses": request["statuses"], "statuses": sorted(ANALYZABLE_STATUSES)}
        groups = await db.fetch_all("rerun_retry_estimate", workspace_id=workspace_id, **params)
        if sum(group["conversations"] for group in groups) == 0:
            raise BadUserInput(
                f"Rerun job {job_id} has no {' or '.join(request['statuses'])} items: nothing to retry.",
                argument="statuses",
            )
        new = _NewJob(
            agent_id=original["agent_id"], kind=original["kind"], config_version=original["config_version"],
            snapshot=original["config_snapshot"], targets=request, request_hash=request_hash,
            items_query="rerun_retry_items_insert", items_params=params,
            targets_argument="statuses", cap_argument="maxCostUsd", mode=original["mode"],
        )
        estimate = _estimate(new, groups, max_cost_usd)
        job = await _insert_job(db, workspace_id, new, estimate, requested_by=requested_by, idempotency_key=idempotency_key)
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
        config_source=job["config_snapshot"].get(SOURCE_KEY, DRAFT),
        skipped=job["skipped"],
        mode=job["mode"],
    )


async def create_rerun(**kwargs: Any) -> Plan:
    """plan_rerun, answering a lost idempotency race with the winner's job."""
    try:
        return await plan_rerun(**kwargs)
    except _IdempotentRace:
        return await _race_winner(
            kwargs, _request_hash(kwargs["targets"], kwargs.get("config_version"), kwargs.get("narrowing", FULL),
                                  kwargs.get("mode", INTERACTIVE))
        )


async def retry_rerun(**kwargs: Any) -> Plan:
    """plan_retry, answering a lost idempotency race with the winner's job."""
    try:
        return await plan_retry(**kwargs)
    except _IdempotentRace:
        return await _race_winner(kwargs, _hash(_retry_request(kwargs["job_id"], kwargs["statuses"])))


async def _race_winner(kwargs: dict[str, Any], request_hash: str) -> Plan:
    db, workspace_id = kwargs["db"], kwargs["workspace_id"]
    earlier = await db.fetch_one(
        "rerun_job_by_idempotency_key", workspace_id=workspace_id, idempotency_key=kwargs["idempotency_key"]
    )
    return _reused(earlier, request_hash)
