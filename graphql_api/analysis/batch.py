"""Gemini Batch API for backfills: many analyses submitted as one batch (at half the interactive price), polled, and
read back through google-genai's async batches interface.

Each inline request is exactly what GeminiAnalyzer sends for its (conversation, config), and each answer is parsed by
the same code, so a batch result equals the interactive one. Transient failures of the batch calls are retried with
the interactive path's policy.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
import structlog
from google.genai import types

from graphql_api.analysis.base import (
    ENDED_STATES,
    AnalysisError,
    BatchRequest,
    BatchResult,
    BatchState,
    BatchStateName,
)

__all__ = ["BatchRequest", "BatchResult", "BatchState", "GeminiBatchClient", "normalize_state"]
from graphql_api.analysis.gemini import GeminiCaller, is_retryable_status, parse_response, request_config
from graphql_api.analysis.prompting import render_transcript

logger = structlog.stdlib.get_logger(__name__)

T = TypeVar("T")

# The inline request's metadata entry that carries BatchRequest.key; the API echoes metadata in each response.
METADATA_KEY = "key"

# The SDK's JobState (it renames Gemini's BATCH_STATE_* to JOB_STATE_*; the rest are Vertex AI's) as one of ours.
_STATES: dict[str, BatchStateName] = {
    "JOB_STATE_UNSPECIFIED": "PENDING",
    "JOB_STATE_QUEUED": "PENDING",
    "JOB_STATE_PENDING": "PENDING",
    "JOB_STATE_PAUSED": "PENDING",
    "JOB_STATE_RUNNING": "RUNNING",
    "JOB_STATE_UPDATING": "RUNNING",
    "JOB_STATE_CANCELLING": "RUNNING",
    "JOB_STATE_SUCCEEDED": "SUCCEEDED",
    "JOB_STATE_PARTIALLY_SUCCEEDED": "SUCCEEDED",
    "JOB_STATE_FAILED": "FAILED",
    "JOB_STATE_CANCELLED": "CANCELLED",
    "JOB_STATE_EXPIRED": "EXPIRED",
}

# google.rpc.Code (what a batch reports errors with) as the HTTP status an interactive call would have failed with,
# so AnalysisError.status and retryability read the same on both paths.
_HTTP_STATUS_OF_CODE = {
    1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429, 9: 400, 10: 409, 11: 400, 12: 501, 13: 500,
    14: 503, 15: 500, 16: 401,
}


def normalize_state(state: types.JobState | str | None) -> BatchStateName:
    """Our name of a batch state, from the SDK's JobState (or the API's BATCH_STATE_* string).

    A state this module does not know reads as RUNNING, so a caller keeps polling rather than reading results early.
    """
    if state is None:
        return "PENDING"
    value = str(getattr(state, "value", state))
    if value.startswith("BATCH_STATE_"):
        value = "JOB_STATE_" + value.removeprefix("BATCH_STATE_")
    known = _STATES.get(value)
    if known is None:
        logger.warning("gemini_batch_unknown_state", state=value)
        return "RUNNING"
    return known


class _BatchOperation(pydantic.BaseModel, types.Operation):
    """A batch's long-running operation as the API sends it, read through operations.get(): the SDK's BatchJob leaves
    out the operation's `error`, which says why a batch failed, expired or was cancelled."""

    @classmethod
    def from_api_response(cls, api_response: Any, is_vertex_ai: bool = False) -> _BatchOperation:
        body = api_response if isinstance(api_response, dict) else {}
        error = body.get("error")
        return cls(name=body.get("name"), done=body.get("done"), error=error if isinstance(error, dict) else None)


@dataclass(frozen=True)
class _Ending:
    """Why an ended batch did not succeed: the operation's message and google.rpc.Code, when the API gave them."""

    message: str
    code: int | None

    @property
    def status(self) -> int | None:
        return None if self.code is None else _HTTP_STATUS_OF_CODE.get(self.code, 500)


class GeminiBatchClient(GeminiCaller):
    """Submits analyses as Gemini batches with inline requests, and reads their state and results.

    A batch holds one model's requests. Its display name is the caller's idempotency key: unique per submission, it
    lets find() adopt a batch submitted just before a crash, and lets submit() adopt a batch whose create answer was
    lost instead of paying for it twice.
    """

    def __init__(self, api_key: str, base_url: str | None = None, *, list_page_size: int = 50,
                 **options: Any) -> None:
        """`options` are GeminiCaller's: max_attempts, request_timeout_s, base_delay_s, max_delay_s, sleep, jitter."""
        super().__init__(api_key, base_url, **options)
        self.list_page_size = list_page_size

    # ---- the calls ---------------------------------------------------------------------------

    async def submit(self, requests: Sequence[BatchRequest], *, display_name: str) -> str:
        """Create a batch of `requests` (one model, unique keys) and return its name ("batches/<id>").

        Raises ValueError for an empty batch, mixed models or duplicate keys, AnalysisError when the API refuses
        the batch or keeps failing.
        """
        model = _one_model(requests)
        if not display_name:
            raise ValueError("a batch needs a display name")
        inlined = [
            types.InlinedRequest(
                contents=render_transcript(r.conversation),
                config=request_config(r.config, r.conversation.kind),
                metadata={METADATA_KEY: r.key},
            )
            for r in requests
        ]
        config = types.CreateBatchJobConfig(display_name=display_name)
        attempted = False

        async def create() -> str:
            nonlocal attempted
            if attempted:
                # The failed attempt may have made the batch (its answer lost to a timeout or a 5xx): adopt it
                # rather than run and pay for the requests twice.
                found = await self._newest_named(display_name)
                if found is not None:
                    logger.warning("gemini_batch_adopted", batch=found, display_name=display_name)
                    return found
            attempted = True
            job = await self._client.aio.batches.create(model=model, src=inlined, config=config)
            if not job.name:
                raise AnalysisError(f"gemini created batch {display_name!r} without a name")
            return job.name

        name = await self._batch_call(f"batches.create {display_name}", create)
        logger.info("gemini_batch_submitted", batch=name, display_name=display_name, model=model,
                    requests=len(requests))
        return name

    async def state(self, name: str) -> BatchState:
        """The batch's state now (one get, and one more for the reason when it ended without success)."""
        job = await self._get(name)
        state = normalize_state(job.state)
        ending = await self._ending(name, job, state)
        return BatchState(
            name=job.name or name,
            state=state,
            done=state in ENDED_STATES,
            error=ending.message if ending is not None else None,
            display_name=job.display_name,
            model=job.model,
            create_time=job.create_time,
            end_time=job.end_time,
        )

    async def results(self, name: str, requests: Sequence[BatchRequest]) -> list[BatchResult]:
        """One result per request of an ended batch, in the order of `requests` (the ones it was submitted with).

        Answers are matched by the metadata key the API echoes, else by position when it returned one answer per
        request. A request without an answer (a batch cancelled, expired or failed before it) gets an error result.
        Raises AnalysisError (retryable) for a batch that has not ended.
        """
        job = await self._get(name)
        state = normalize_state(job.state)
        if state not in ENDED_STATES:
            raise AnalysisError(f"gemini batch {name} has not ended (state {state})", retryable=True)
        answers = list(job.dest.inlined_responses or []) if job.dest is not None else []
        keyed = {
            str(a.metadata[METADATA_KEY]): a for a in answers if a.metadata and a.metadata.get(METADATA_KEY) is not None
        }
        by_position = not keyed and len(answers) == len(requests)
        if not keyed and answers and not by_position:
            logger.warning("gemini_batch_unmatched", batch=name, answers=len(answers), requests=len(requests))
        ending = await self._ending(name, job, state)
        results = []
        for index, request in enumerate(requests):
            answer = keyed.get(request.key) if keyed else (answers[index] if by_position else None)
            results.append(_result(name, request, answer, state, ending))
        failed = sum(1 for r in results if r.error is not None)
        logger.info("gemini_batch_results", batch=name, state=state, requests=len(requests), answers=len(answers),
                    succeeded=len(results) - failed, failed=failed)
        return results

    async def cancel(self, name: str) -> None:
        """Ask the API to cancel the batch; it ends CANCELLED unless it ended first (state() tells)."""
        await self._batch_call(f"batches.cancel {name}", lambda: self._client.aio.batches.cancel(name=name))
        logger.info("gemini_batch_cancel_requested", batch=name)

    async def delete(self, name: str) -> None:
        """Forget the batch at the API (its results go with it); it does not cancel a running batch."""
        await self._batch_call(f"batches.delete {name}", lambda: self._client.aio.batches.delete(name=name))

    async def find(self, display_name: str) -> str | None:
        """The name of the newest batch with this display name, None if there is none (to adopt a batch submitted
        just before a crash)."""
        return await self._batch_call(f"batches.list {display_name}", lambda: self._newest_named(display_name))

    # ---- helpers -----------------------------------------------------------------------------

    async def _get(self, name: str) -> types.BatchJob:
        return await self._batch_call(f"batches.get {name}", lambda: self._client.aio.batches.get(name=name))

    async def _newest_named(self, display_name: str) -> str | None:
        """Every page of the batch list, read once (a failure is the caller's to retry)."""
        newest: types.BatchJob | None = None
        config: types.ListBatchJobsConfigDict = {"page_size": self.list_page_size}
        while True:
            pager = await self._client.aio.batches.list(config=config)
            for job in pager.page:
                if job.display_name == display_name and (newest is None or _created(job) > _created(newest)):
                    newest = job
            token = pager.config.get("page_token")
            if not token:
                return newest.name if newest is not None else None
            config = {"page_size": self.list_page_size, "page_token": token}

    async def _ending(self, name: str, job: types.BatchJob, state: BatchStateName) -> _Ending | None:
        """Why a batch ended without success, None for one that succeeded or has not ended."""
        if state not in ENDED_STATES or state == "SUCCEEDED":
            return None
        if job.error is not None and job.error.message:  # not filled for the Gemini API by the SDK we pin, yet
            return _Ending(job.error.message, job.error.code)
        try:
            operation = await self._batch_call(
                f"operations.get {name}", lambda: self._client.aio.operations.get(_BatchOperation(name=name))
            )
        except AnalysisError as exc:
            logger.warning("gemini_batch_ending_unknown", batch=name, state=state, error=str(exc))
            return _Ending(f"the batch ended {state}", None)
        error = operation.error or {}
        code = error.get("code")
        message = error.get("message") or f"the batch ended {state}"
        return _Ending(str(message), code if isinstance(code, int) else None)

    async def _batch_call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call` (the SDK call `what`, such as "batches.get batches/x") under the interactive path's retry policy."""
        return await self._call(what, call, log=logger, event="gemini_batch_retry", call=what)


def _one_model(requests: Sequence[BatchRequest]) -> str:
    """The model every request uses; ValueError for an empty batch, mixed models or a duplicate key."""
    if not requests:
        raise ValueError("a batch needs at least one request")
    models = {r.config.model for r in requests}
    if len(models) != 1:
        raise ValueError(f"a batch runs one model, these requests use {sorted(models)}")
    keys = [r.key for r in requests]
    if len(set(keys)) != len(keys):
        raise ValueError("batch request keys must be unique (answers are matched by key)")
    return models.pop()


def _created(job: types.BatchJob) -> float:
    return job.create_time.timestamp() if job.create_time is not None else float("-inf")


def _result(name: str, request: BatchRequest, answer: types.InlinedResponse | None, state: BatchStateName,
            ending: _Ending | None) -> BatchResult:
    """One request's result from its inline answer, parsed as the interactive path parses an answer."""
    conversation_id = request.conversation.id
    if answer is not None and answer.error is not None:
        code = answer.error.code if answer.error.code is not None else 2
        status = _HTTP_STATUS_OF_CODE.get(code, 500)
        return BatchResult(request.key, error=AnalysisError(
            f"gemini failed {conversation_id} in batch {name}: {status} (code {code}): {answer.error.message}",
            retryable=is_retryable_status(status),
            status=status,
        ))
    if answer is None or answer.response is None:
        # Never answered: it may run again, unless the batch failed for a reason that would fail it again.
        why = ending.message if ending is not None else "no answer in the batch's output"
        status = ending.status if ending is not None else None
        retryable = state == "CANCELLED" or status is None or is_retryable_status(status)
        return BatchResult(request.key, answered=False, error=AnalysisError(
            f"gemini batch {name} ended {state} without answering {conversation_id}: {why}",
            retryable=retryable,
            status=status,
        ))
    try:
        return BatchResult(request.key, outcome=parse_response(answer.response, request.conversation, request.config))
    except AnalysisError as exc:
        return BatchResult(request.key, error=exc)
