"""Reruns in GraphQL: rerunAnalysis, retryRerun, cancelRerun, rerunJob(s) and the rerunProgress subscription."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncGenerator
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON
import structlog

from graphql_api.errors import ApiError, BadUserInput, not_found
from graphql_api.conversations import Selection
from graphql_api.reruns.planning import (
    RETRYABLE_STATUSES,
    Narrowing,
    SOURCE_KEY,
    Estimate,
    create_rerun,
    estimate_of,
    resolve_explicit_targets,
    retry_rerun,
)
from graphql_api.reruns.progress import FINAL_STATUSES, finished_count
from graphql_api.reruns.worker import cancel_rerun
from graphql_api.schema.context import Info
from graphql_api.schema.execution import SharedEvent, shared_event_sink, shared_key
from graphql_api.schema.pagination import Connection, Keyset, decode_position, encode_position, page_of, page_size
from graphql_api.schema.filters import ConversationFilter, selection_of
from graphql_api.schema.impact import RerunImpact
from graphql_api.schema.types import (
    Agent,
    AnalysisConfig,
    AnalysisResult,
    Call,
    Chat,
    _load_agent,
    hydrate_conversations,
    selected_object_fields,
)

log = structlog.stdlib.get_logger(__name__)

MAX_IDEMPOTENCY_KEY = 200


@strawberry.enum
class RerunJobStatus(Enum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    PARTIALLY_FAILED = "PARTIALLY_FAILED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


@strawberry.enum
class RerunItemStatus(Enum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"


@strawberry.enum(description="Where a rerun's config comes from.")
class RerunConfigSource(Enum):
    DRAFT = strawberry.enum_value("DRAFT", description="The agent's latest draft when the rerun was requested (the default).")
    PUBLISHED = strawberry.enum_value("PUBLISHED", description="A published version asked for with `configVersion`.")


@strawberry.enum(description="How a rerun's model requests are sent.")
class RerunMode(Enum):
    INTERACTIVE = strawberry.enum_value(
        "INTERACTIVE", description="One request per conversation as workers take them: results within seconds (the default)."
    )
    BATCH = strawberry.enum_value(
        "BATCH",
        description="Through the Gemini Batch API at half the price: results come back when a batch is done (up to a "
        "day), a batch at a time. For backfills.",
    )


@strawberry.type(description="One provider batch of a BATCH rerun: some of its items, sent together.")
class RerunBatch:
    name: str = strawberry.field(description="Its display name at the provider: the job id and its rank.")
    provider_name: str | None = strawberry.field(description="The provider's name for it (batches/...); null until sent.")
    state: str = strawberry.field(
        description="SUBMITTING, PENDING, RUNNING, SUCCEEDED, FAILED, CANCELLED or EXPIRED, as the provider last said."
    )
    items: int
    recorded: bool = strawberry.field(description="Its results (or failure) are on its items.")
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> RerunBatch:
        return cls(name=row["display_name"], provider_name=row["provider_name"], state=row["state"], items=row["items"],
                   recorded=row["recorded"], error=row["error"], created_at=row["created_at"],
                   submitted_at=row["submitted_at"], finished_at=row["finished_at"])


@strawberry.type(description="What a rerun will cost before it runs: its config's model, priced per token.")
class RerunEstimate:
    conversations: int
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal
    model: str
    config_version: int = strawberry.field(description="The version whose config the rerun uses.")
    config_source: RerunConfigSource = strawberry.field(description="Whether that version is the latest draft or a published one.")
    skipped: int = strawberry.field(
        description="Targeted conversations with nothing to recompute (onlyChanged): not rerun, not charged."
    )

    mode: RerunMode = strawberry.field(description="BATCH estimates are priced at the batch price.")

    @classmethod
    def of(cls, estimate: Estimate) -> RerunEstimate:
        fields = dataclasses.asdict(estimate)
        return cls(**fields | {"config_source": RerunConfigSource(fields["config_source"]), "mode": RerunMode(fields["mode"])})


async def _load_result(info: Info, result_id: int | None) -> AnalysisResult | None:
    if result_id is None:
        return None
    row = await info.context.loaders.result.load(result_id)
    return AnalysisResult.from_row(row) if row is not None else None


@strawberry.type(description="One conversation of a rerun job: its status, and its result next to the one it had before.")
class RerunItem:
    conversation_id: strawberry.ID
    status: RerunItemStatus
    error: str | None = strawberry.field(description="Why the analysis of this conversation failed.")
    attempts: int
    outputs: list[str] | None = strawberry.field(
        description="The outputs this item asks the model for (fields, onlyChanged); null for all of them."
    )
    started_at: datetime | None
    finished_at: datetime | None
    _row: strawberry.Private[Any]
    _result: strawberry.Private[Any] = None

    @strawberry.field(description="The result this rerun produced.")
    def result(self, info: Info) -> AnalysisResult | None:
        if self._result is not None:
            return self._result
        return _load_result(info, self._row["result_id"])  # type: ignore[return-value]

    @strawberry.field(description="The conversation's current result when the rerun was requested.")
    async def previous_result(self, info: Info) -> AnalysisResult | None:
        return await _load_result(info, self._row["previous_result_id"])

    async def _conversation(self, info: Info, kind: str) -> Any:
        row = await info.context.loaders.conversation.load(self._row["conversation_id"])
        if row is None or row["kind"] != kind:
            return None
        item = (Call if kind == "CALL" else Chat).from_row(row)
        await hydrate_conversations(info, [item], selected_object_fields(info))
        return item

    @strawberry.field(description="The call, when the job reruns calls.")
    async def call(self, info: Info) -> Call | None:
        return await self._conversation(info, "CALL")

    @strawberry.field(description="The chat, when the job reruns chats.")
    async def chat(self, info: Info) -> Chat | None:
        return await self._conversation(info, "CHAT")

    @classmethod
    def from_row(cls, row: Any, result: Any = None) -> RerunItem:
        return cls(
            conversation_id=strawberry.ID(row["conversation_id"]),
            status=RerunItemStatus(row["status"]),
            error=row["error"],
            attempts=row["attempts"],
            outputs=row["outputs"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            _row=row,
            _result=AnalysisResult.from_row(result) if result is not None else None,
        )


@strawberry.type(
    description="A rerun of the analysis over many conversations with the agent's draft config (or a published version's), "
    "snapshotted when requested."
)
class RerunJob:
    id: strawberry.ID
    status: RerunJobStatus
    total: int
    succeeded: int
    failed: int
    canceled: int
    skipped: int = strawberry.field(
        description="Targeted conversations with nothing to recompute (onlyChanged or fields): no item, no charge."
    )
    pending: int = strawberry.field(description="Not finished yet: queued or running.")
    estimated_cost_usd: Decimal
    estimated_input_tokens: int
    estimated_output_tokens: int
    cost_usd: Decimal = strawberry.field(description="What the finished items cost so far; every rerun is charged.")
    config_version: int = strawberry.field(
        description="The version whose config was snapshotted; its results record it as their `agentVersion`."
    )
    config_source: RerunConfigSource = strawberry.field(
        description="Whether `configVersion` was the latest draft (the default) or a published version asked for."
    )
    config: AnalysisConfig = strawberry.field(description="The config snapshot the job runs with.")
    mode: RerunMode = strawberry.field(description="INTERACTIVE, or BATCH (the Gemini Batch API, at the batch price).")
    targets: JSON = strawberry.field(
        description="What was asked for: explicit ids, or the agent and filter; for a retry, the job retried (`retryOf`) "
        "and the statuses of its items taken."
    )
    requested_by: str = strawberry.field(description="The prefix of the API key that asked.")
    cancel_requested_at: datetime | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    _row: strawberry.Private[Any]

    @strawberry.field
    async def agent(self, info: Info) -> Agent:
        return await _load_agent(info, self._row["agent_id"])

    @strawberry.field(description="The job this one retries (retryRerun); null for a job rerunAnalysis created.")
    async def retry_of(self, info: Info) -> RerunJob | None:
        retried = self._row["targets"].get("retryOf")
        if retried is None:
            return None
        row = await info.context.loaders.rerun_job.load(retried)
        return RerunJob.from_row(row) if row is not None else None

    @strawberry.field(description="A BATCH job's provider batches, oldest first; empty for an INTERACTIVE job.")
    async def batches(self, info: Info) -> list[RerunBatch]:
        return [RerunBatch.from_row(row) for row in await info.context.loaders.rerun_batches.load(self._row["job_id"])]

    @strawberry.field(description="The jobs that retry this one, newest first.")
    async def retries(self, info: Info) -> list[RerunJob]:
        return [RerunJob.from_row(row) for row in await info.context.loaders.retries.load(self._row["job_id"])]

    @strawberry.field(
        description="Its succeeded items' results against the ones they replaced, as of the job's counters "
        "(it grows as items finish, and comes with each rerunProgress event)."
    )
    async def impact(self, info: Info) -> RerunImpact:
        row = await info.context.loaders.rerun_impact.load((self._row["job_id"], finished_count(self._row)))
        return RerunImpact.of(row["impact"])

    @strawberry.field(description="The job's items in order, optionally only some statuses.")
    async def items(
        self, info: Info, first: int | None = None, after: str | None = None, status: list[RerunItemStatus] | None = None
    ) -> Connection[RerunItem]:
        workspace = info.context.require_workspace()
        limit = page_size(first)
        after_seq = decode_position(after, "item")
        rows = await info.context.db.fetch_all(
            "rerun_items_page",
            workspace_id=workspace.id,
            job_id=self.id,
            statuses=[s.value for s in status] if status else None,
            after_seq=after_seq,
            limit=limit + 1,
        )
        return page_of(
            rows, limit=limit, after=after, node=RerunItem.from_row, cursor=lambda row: encode_position("item", row["seq"])
        )

    @classmethod
    def from_row(cls, row: Any) -> RerunJob:
        snapshot = row["config_snapshot"]
        return cls(
            id=strawberry.ID(row["job_id"]),
            status=RerunJobStatus(row["status"]),
            total=row["total"],
            succeeded=row["succeeded"],
            failed=row["failed"],
            canceled=row["canceled"],
            skipped=row["skipped"],
            pending=row["total"] - row["succeeded"] - row["failed"] - row["canceled"],
            estimated_cost_usd=row["estimated_cost_usd"],
            estimated_input_tokens=row["estimated_input_tokens"],
            estimated_output_tokens=row["estimated_output_tokens"],
            cost_usd=row["cost_usd"],
            config_version=row["config_version"],
            config_source=RerunConfigSource(snapshot.get(SOURCE_KEY, RerunConfigSource.DRAFT.value)),
            config=AnalysisConfig.from_row(snapshot),
            mode=RerunMode(row["mode"]),
            targets=row["targets"],
            requested_by=row["requested_by"],
            cancel_requested_at=row["cancel_requested_at"],
            created_at=row["created_at"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            _row=row,
        )


@strawberry.type
class RerunAnalysisPayload:
    job: RerunJob | None = strawberry.field(description="The job; null for a dry run.")
    estimate: RerunEstimate
    reused: bool = strawberry.field(description="True when an earlier request with the same idempotencyKey created the job.")


@strawberry.type(description="One event of a rerun's progress. The first is a snapshot with `item` null.")
class RerunProgress(SharedEvent):
    job: RerunJob
    item: RerunItem | None


@strawberry.input(
    description="What to rerun: explicit `callIds`/`chatIds`, or an `agentId` with an optional `filter`, not both. "
    "A job runs one agent's latest draft config (or, with `configVersion`, one of its published versions), so explicit "
    "ids of several agents are refused (BAD_USER_INPUT); send one request per agent."
)
class RerunAnalysisInput:
    call_ids: list[strawberry.ID] | None = None
    chat_ids: list[strawberry.ID] | None = None
    agent_id: strawberry.ID | None = None
    filter: ConversationFilter | None = None
    dry_run: bool = strawberry.field(default=False, description="Return the estimate and create nothing.")
    max_cost_usd: Decimal | None = strawberry.field(
        default=None, description="Refuse (LIMIT_EXCEEDED, nothing created) when the estimate is above it."
    )
    idempotency_key: str | None = strawberry.field(
        default=None, description="A retried request with the same key returns the job the first one created."
    )
    config_version: int | None = strawberry.field(
        default=None,
        description="Rerun with this published version's config instead of the latest draft's (the default). "
        "NOT_FOUND when the agent has no such version; BAD_USER_INPUT for the latest draft's own number (a draft "
        "can still change: leave configVersion out to use it).",
    )
    fields: list[str] | None = strawberry.field(
        default=None,
        description="Recompute only these outputs: summary, successful, userSentiment, inVoicemail (calls) and "
        "customData.<field name> (fields of the rerun's config). The model is asked for those alone; the new "
        "result carries the others over from the current one (see AnalysisResult.outputSources). A required field "
        "brings successful with it (it decides it). A conversation without a current result is analyzed in full. "
        "Null (the default) recomputes everything.",
    )
    mode: RerunMode = strawberry.field(
        default=RerunMode.INTERACTIVE,
        description="BATCH sends the requests through the Gemini Batch API at half the price; results arrive as "
        "batches finish (minutes to a day). A retry of a BATCH job is a BATCH job.",
    )
    only_changed: bool = strawberry.field(
        default=False,
        description="Per conversation, recompute only the outputs whose prompt, field definition or model differ "
        "between the config that produced its current result and the rerun's (within `fields` when given). "
        "Conversations with nothing to recompute are skipped and counted (`skipped`); when all are, nothing is "
        "created (BAD_USER_INPUT; a dry run just reports it).",
    )


def _check_idempotency_key(key: str | None, argument: str) -> None:
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY):
        raise BadUserInput(f"`idempotencyKey` takes 1 to {MAX_IDEMPOTENCY_KEY} characters.", argument=argument)


async def _targets(info: Info, workspace_id: int, input: RerunAnalysisInput) -> Selection:
    explicit = input.call_ids is not None or input.chat_ids is not None
    by_filter = input.agent_id is not None or input.filter is not None
    if explicit and by_filter:
        raise BadUserInput("Give either callIds/chatIds or agentId with a filter, not both.", argument="input")
    if explicit:
        if not (input.call_ids or input.chat_ids):
            raise BadUserInput("callIds and chatIds are empty: nothing to rerun.", argument="input")
        return await resolve_explicit_targets(
            db=info.context.db, workspace_id=workspace_id, call_ids=list(input.call_ids or []), chat_ids=list(input.chat_ids or [])
        )
    agent_id = input.agent_id or (input.filter.agent_id if input.filter else None)
    if agent_id is None:
        raise BadUserInput("Nothing to rerun: give callIds/chatIds, or an agentId (with an optional filter).", argument="input")
    agent = await info.context.loaders.agent.load(agent_id)
    if agent is None:
        raise not_found("agent", agent_id)
    kind = "CALL" if agent["channel"] == "VOICE" else "CHAT"
    return selection_of(kind, input.filter, agent_id)


@strawberry.type
class RerunMutations:
    @strawberry.mutation(
        description="Rerun the analysis of past calls or chats with the config of the agent's latest draft, "
        "even for conversations handled by older published versions. Every rerun is charged, for every model."
    )
    async def rerun_analysis(self, info: Info, input: RerunAnalysisInput) -> RerunAnalysisPayload:
        workspace = info.context.require_workspace()
        if input.max_cost_usd is not None and input.max_cost_usd < 0:
            raise BadUserInput("`maxCostUsd` must be zero or more.", argument="input.maxCostUsd")
        _check_idempotency_key(input.idempotency_key, "input.idempotencyKey")
        targets = await _targets(info, workspace.id, input)
        plan = await create_rerun(
            db=info.context.db,
            workspace_id=workspace.id,
            targets=targets,
            requested_by=info.context.key_prefix or "unknown",
            dry_run=input.dry_run,
            max_cost_usd=input.max_cost_usd,
            idempotency_key=input.idempotency_key,
            config_version=input.config_version,
            narrowing=Narrowing(
                fields=[str(name) for name in input.fields] if input.fields is not None else None,
                only_changed=input.only_changed,
            ),
            mode=input.mode.value,
        )
        if plan.job is None:
            return RerunAnalysisPayload(job=None, estimate=RerunEstimate.of(plan.estimate), reused=False)
        if not plan.reused:
            log.info(
                "rerun_job_created", job=plan.job["job_id"], agent=targets.agent_id, items=plan.job["total"],
                config_version=plan.job["config_version"], config_source=plan.estimate.config_source,
                estimated_cost_usd=plan.estimate.cost_usd,
            )
            info.context.services.wake_workers()
        return RerunAnalysisPayload(job=RerunJob.from_row(plan.job), estimate=RerunEstimate.of(plan.estimate), reused=plan.reused)

    @strawberry.mutation(
        description="Rerun the items of a finished job that ended in these statuses, as a new job with the same config "
        "snapshot (not today's draft), linked to it (`retryOf`, `retries`). CONFLICT while the job is queued or running; "
        "BAD_USER_INPUT when no item is in these statuses. Charged like any rerun."
    )
    async def retry_rerun(
        self,
        info: Info,
        job_id: strawberry.ID,
        statuses: Annotated[
            list[RerunItemStatus] | None,
            strawberry.argument(description="Which items to take: FAILED, CANCELED or both (the default; also for null)."),
        ] = [RerunItemStatus.FAILED, RerunItemStatus.CANCELED],  # noqa: B006 (read, never changed)
        idempotency_key: Annotated[
            str | None, strawberry.argument(description="A retried request with the same key returns the job the first one created.")
        ] = None,
        max_cost_usd: Annotated[
            Decimal | None,
            strawberry.argument(description="Refuse (LIMIT_EXCEEDED, nothing created) when the estimate is above it."),
        ] = None,
    ) -> RerunAnalysisPayload:
        workspace = info.context.require_workspace()
        if statuses is None:
            statuses = [RerunItemStatus(s) for s in RETRYABLE_STATUSES]
        wrong = [s.value for s in statuses if s.value not in RETRYABLE_STATUSES]
        if wrong or not statuses:
            raise BadUserInput(
                f"retryRerun takes FAILED and CANCELED items, not {', '.join(wrong) or 'an empty list'}: PENDING and "
                "RUNNING items still run in their job, and SUCCEEDED ones have their result (rerun those with rerunAnalysis).",
                argument="statuses",
            )
        if max_cost_usd is not None and max_cost_usd < 0:
            raise BadUserInput("`maxCostUsd` must be zero or more.", argument="maxCostUsd")
        _check_idempotency_key(idempotency_key, "idempotencyKey")
        plan = await retry_rerun(
            db=info.context.db,
            workspace_id=workspace.id,
            job_id=job_id,
            statuses=[s.value for s in statuses],
            requested_by=info.context.key_prefix or "unknown",
            max_cost_usd=max_cost_usd,
            idempotency_key=idempotency_key,
        )
        if not plan.reused:
            log.info("rerun_job_created", job=plan.job["job_id"], retry_of=job_id, items=plan.job["total"],
                     estimated_cost_usd=plan.estimate.cost_usd)
            info.context.services.wake_workers()
        return RerunAnalysisPayload(job=RerunJob.from_row(plan.job), estimate=RerunEstimate.of(plan.estimate), reused=plan.reused)

    @strawberry.mutation(description="Cancel what has not started; finished items keep their results. CONFLICT when the job already ended.")
    async def cancel_rerun(self, info: Info, job_id: strawberry.ID) -> RerunJob:
        workspace = info.context.require_workspace()
        return RerunJob.from_row(await cancel_rerun(db=info.context.db, workspace_id=workspace.id, job_id=job_id))


@strawberry.type
class RerunQueries:
    @strawberry.field(description="One rerun job; NOT_FOUND when it isn't in this workspace.")
    async def rerun_job(self, info: Info, id: strawberry.ID) -> RerunJob | None:
        workspace = info.context.require_workspace()
        row = await info.context.db.fetch_one("rerun_job_get", workspace_id=workspace.id, job_id=id)
        if row is None:
            raise not_found("rerun job", id)
        return RerunJob.from_row(row)

    @strawberry.field(description="Rerun jobs, newest first, optionally of one agent.")
    async def rerun_jobs(
        self, info: Info, first: int | None = None, after: str | None = None, agent_id: strawberry.ID | None = None
    ) -> Connection[RerunJob]:
        workspace = info.context.require_workspace()
        page = Keyset.of("job", first, after)
        rows = await info.context.db.fetch_all("rerun_jobs_page", workspace_id=workspace.id, agent_id=agent_id, **page.params())
        if not rows and agent_id is not None and await info.context.loaders.agent.load(agent_id) is None:
            raise not_found("agent", agent_id)  # like every other id: unknown and foreign alike
        return page.connection(rows, RerunJob.from_row, at="created_at", ident="job_id")


@strawberry.type
class Subscription:
    @strawberry.subscription(
        description="A rerun's progress: first a snapshot of the job (item null), then one event per finished item "
        "with the job's counters; the stream completes when the job reaches a final state."
    )
    async def rerun_progress(self, info: Info, job_id: strawberry.ID) -> AsyncGenerator[RerunProgress, None]:
        workspace = info.context.require_workspace()
        try:
            async for progress in _progress(info, workspace.id, job_id):
                yield progress
        except ApiError:
            raise
        except Exception as exc:
            # Errors raised here reach clients without a path; say nothing of the internals.
            log.error("subscription_failed", job=job_id, error=type(exc).__name__, exc_info=exc)
            raise ApiError("Internal server error. It has been logged; subscribe again.") from exc


async def _progress(info: Info, workspace_id: int, job_id: str) -> AsyncGenerator[RerunProgress, None]:
    db = info.context.db
    hub = info.context.services.progress
    async with hub.subscribe(workspace_id, job_id) as subscriber:
        job = await db.fetch_one("rerun_job_get", workspace_id=workspace_id, job_id=job_id)
        if job is None:
            raise not_found("rerun job", job_id)
        yield RerunProgress(job=RerunJob.from_row(job), item=None)
        if job["status"] in FINAL_STATUSES:
            return
        # An event another subscriber of the same document and variables has executed goes to the socket as its
        # stored bytes; the others go through the executor (which stores them for the rest).
        sink = shared_event_sink.get()
        key = shared_key(info._raw_info.operation, info._raw_info.variable_values) if sink is not None else None
        async for event in subscriber.events(after=finished_count(job)):
            view = event.view
            if view is None:
                item = RerunItem.from_row(event.item, event.result) if event.item is not None else None
                view = event.view = RerunProgress(job=RerunJob.from_row(event.job), item=item)
            if key is not None:
                payload = view.shared_payload(key)
                if payload is not None:
                    await sink(payload)
                    continue
            yield view


__all__ = ["RerunMutations", "RerunQueries", "Subscription", "estimate_of"]
