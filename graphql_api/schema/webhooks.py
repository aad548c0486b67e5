"""Webhook endpoints and their deliveries: register, change, list, disable, rotate a secret, read the attempts."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Annotated, Any

import strawberry
from strawberry.scalars import JSON

from graphql_api.reruns import webhooks
from graphql_api.schema.context import Info
from graphql_api.schema.pagination import Connection, decode_position, encode_position, page_of, page_size


@strawberry.enum(description="What a webhook endpoint is sent.")
class WebhookEventType(Enum):
    RERUN_FINISHED = strawberry.enum_value(
        "rerun.finished", description="A rerun job reached its final state (SUCCEEDED, PARTIALLY_FAILED, FAILED or CANCELED)."
    )
    ANALYSIS_COMPLETED = strawberry.enum_value(
        "analysis.completed",
        description="An analysis of a call or chat committed: initial, rerun, and (with `includePreviews`) preview; "
        "with the trigger and rerun job that produced it, in the endpoint's `payloadFormat`.",
    )


@strawberry.enum(description="The body an endpoint gets for analysis.completed (rerun.finished is always API).")
class WebhookPayloadFormat(Enum):
    API = strawberry.enum_value("API", description="This API's shape: {type, timestamp, data: {trigger, rerun_job_id, "
                                "conversation, analysis}}.")
    RETELL = strawberry.enum_value(
        "RETELL", description="Retell's call_analyzed / chat_analyzed body ({event, call} or {event, chat}), so a receiver "
        "written for Retell works unchanged; an extra `analysis_run` key says which trigger and job produced it."
    )


@strawberry.enum(description="Where a delivery stands.")
class WebhookDeliveryStatus(Enum):
    PENDING = strawberry.enum_value("PENDING", description="Not delivered yet; tried again at `nextAttemptAt`.")
    DELIVERED = strawberry.enum_value("DELIVERED", description="The endpoint answered 2xx.")
    FAILED = strawberry.enum_value("FAILED", description="Given up: every attempt failed, or the endpoint was disabled.")


@strawberry.type(description="A URL this workspace's events are POSTed to, signed per the Standard Webhooks specification.")
class WebhookEndpoint:
    id: strawberry.ID
    url: str
    description: str
    event_types: list[WebhookEventType]
    payload_format: WebhookPayloadFormat = strawberry.field(description="The body of analysis.completed deliveries.")
    include_previews: bool = strawberry.field(description="analysis.completed is sent for PREVIEW results too.")
    enabled: bool
    created_at: datetime
    disabled_at: datetime | None
    secret_rotated_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> WebhookEndpoint:
        return cls(
            id=strawberry.ID(row["id"]),
            url=row["url"],
            description=row["description"],
            event_types=[WebhookEventType(t) for t in row["event_types"]],
            payload_format=WebhookPayloadFormat(row["payload_format"]),
            include_previews=row["include_previews"],
            enabled=row["enabled"],
            created_at=row["created_at"],
            disabled_at=row["disabled_at"],
            secret_rotated_at=row["secret_rotated_at"],
        )


@strawberry.type(description="An endpoint with its signing secret, which is shown only in this answer: keep it.")
class WebhookEndpointSecret:
    endpoint: WebhookEndpoint
    secret: str = strawberry.field(description="`whsec_` and base64: verify each delivery's `webhook-signature` with it.")


@strawberry.type(description="One event for one endpoint, and how its attempts went.")
class WebhookDelivery:
    id: strawberry.ID = strawberry.field(description="The `webhook-id` header: the same on every attempt.")
    event_type: WebhookEventType
    status: WebhookDeliveryStatus
    attempts: int
    job_id: strawberry.ID | None = strawberry.field(
        description="The rerun job the event is about (rerun.finished) or that produced the analysis (analysis.completed; "
        "null for an initial analysis or a preview)."
    )
    payload: JSON = strawberry.field(description="The body sent.")
    last_status_code: int | None = strawberry.field(description="The HTTP status of the last attempt, if it got one.")
    last_error: str | None = strawberry.field(description="Why the last attempt failed; null when it succeeded.")
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None = strawberry.field(description="When a PENDING delivery is tried again.")
    created_at: datetime
    delivered_at: datetime | None

    @classmethod
    def from_row(cls, row: Any) -> WebhookDelivery:
        return cls(
            id=strawberry.ID(row["webhook_id"]),
            event_type=WebhookEventType(row["event_type"]),
            status=WebhookDeliveryStatus(row["status"]),
            attempts=row["attempts"],
            job_id=strawberry.ID(row["job_id"]) if row["job_id"] else None,
            payload=row["payload"],
            last_status_code=row["last_status_code"],
            last_error=row["last_error"],
            last_attempt_at=row["last_attempt_at"],
            next_attempt_at=row["next_attempt_at"],
            created_at=row["created_at"],
            delivered_at=row["delivered_at"],
        )


@strawberry.input
class CreateWebhookEndpointInput:
    url: str = strawberry.field(description="http or https, at most 2,048 characters. Redirects are not followed.")
    description: str = ""
    event_types: list[WebhookEventType] | None = strawberry.field(
        default=None,
        description="Default: RERUN_FINISHED for an API endpoint, ANALYSIS_COMPLETED for a RETELL one. ANALYSIS_COMPLETED "
        "is one event per analysis (ten thousand for a rerun of ten thousand calls): it is sent only when asked for.",
    )
    payload_format: WebhookPayloadFormat = strawberry.field(
        default=WebhookPayloadFormat.API, description="The body of analysis.completed deliveries."
    )
    include_previews: bool = strawberry.field(
        default=False, description="Send analysis.completed for PREVIEW results (previewAnalysis, previewImpact) too."
    )


@strawberry.input(description="What to change; a field left out keeps its value. The URL and the secret stay.")
class UpdateWebhookEndpointInput:
    description: str | None = None
    event_types: list[WebhookEventType] | None = None
    payload_format: WebhookPayloadFormat | None = None
    include_previews: bool | None = None


@strawberry.type
class WebhookQueries:
    @strawberry.field(description="This workspace's webhook endpoints, newest first. Secrets are never shown here.")
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        workspace = info.context.require_workspace()
        rows = await webhooks.list_endpoints(db=info.context.db, workspace_id=workspace.id)
        return [WebhookEndpoint.from_row(row) for row in rows]

    @strawberry.field(description="An endpoint's deliveries, newest first, with their attempts; NOT_FOUND when the "
                      "endpoint isn't in this workspace.")
    async def webhook_deliveries(
        self, info: Info, endpoint_id: strawberry.ID, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookDelivery]:
        workspace = info.context.require_workspace()
        limit = page_size(first)
        before_id = decode_position(after, "webhookdelivery")
        rows = await webhooks.deliveries_page(
            db=info.context.db, workspace_id=workspace.id, endpoint_id=endpoint_id, before_id=before_id, limit=limit + 1
        )
        return page_of(rows, limit=limit, after=after, node=WebhookDelivery.from_row,
                       cursor=lambda row: encode_position("webhookdelivery", row["id"]))


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(description="Register a URL for this workspace's events. The answer holds the signing secret, "
                         "shown this once.")
    async def create_webhook_endpoint(self, info: Info, input: CreateWebhookEndpointInput) -> WebhookEndpointSecret:
        workspace = info.context.require_workspace()
        row, secret = await webhooks.create_endpoint(
            db=info.context.db, workspace_id=workspace.id, url=input.url, description=input.description,
            event_types=[t.value for t in input.event_types] if input.event_types is not None else None,
            payload_format=input.payload_format.value, include_previews=input.include_previews,
        )
        return WebhookEndpointSecret(endpoint=WebhookEndpoint.from_row(row), secret=secret)

    @strawberry.mutation(description="Change what an endpoint is sent: its event types, payload format, previews or "
                         "description. Deliveries already written keep their body. NOT_FOUND when the endpoint isn't in "
                         "this workspace.")
    async def update_webhook_endpoint(self, info: Info, id: strawberry.ID, input: UpdateWebhookEndpointInput) -> WebhookEndpoint:
        workspace = info.context.require_workspace()
        row = await webhooks.update_endpoint(
            db=info.context.db, workspace_id=workspace.id, endpoint_id=id, description=input.description,
            event_types=[t.value for t in input.event_types] if input.event_types is not None else None,
            payload_format=input.payload_format.value if input.payload_format is not None else None,
            include_previews=input.include_previews,
        )
        return WebhookEndpoint.from_row(row)

    @strawberry.mutation(description="Stop sending to an endpoint, for good; its deliveries not yet made give up. "
                         "Disabling a disabled endpoint changes nothing.")
    async def disable_webhook_endpoint(self, info: Info, id: strawberry.ID) -> WebhookEndpoint:
        workspace = info.context.require_workspace()
        row = await webhooks.disable_endpoint(db=info.context.db, workspace_id=workspace.id, endpoint_id=id)
        return WebhookEndpoint.from_row(row)

    @strawberry.mutation(description="A new signing secret, shown this once. For 24 hours deliveries carry a second "
                         "signature made with the old secret, so receivers can switch without missing one.")
    async def rotate_webhook_secret(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The endpoint.")]
    ) -> WebhookEndpointSecret:
        workspace = info.context.require_workspace()
        row, secret = await webhooks.rotate_secret(db=info.context.db, workspace_id=workspace.id, endpoint_id=id)
        return WebhookEndpointSecret(endpoint=WebhookEndpoint.from_row(row), secret=secret)
