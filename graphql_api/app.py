"""The Starlette application: GraphQL over HTTP and WebSocket, GraphiQL, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Iterator
from typing import Any

import orjson
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from graphql import ExecutionResult
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse, process_result
import structlog

from graphql_api import http as graphql_http
from graphql_api.config import Settings
from graphql_api.export import EXPORT_METHODS, export_job, export_results
from graphql_api.graphiql import render_graphiql, static_route, vendor_dir
from graphql_api.schema import schema
from graphql_api.schema.context import Context
from graphql_api.schema.extensions import with_code
from graphql_api.services import Services, open_services
from graphql_api.studio import studio_page, to_studio
from graphql_api.websocket import LegacyWSHandler, TransportWSHandler, admit, socket_metrics
from graphql_api.workspaces import bearer_key

log = structlog.stdlib.get_logger(__name__)


class Metrics(Collector):
    """This app's metrics in a registry of its own (a process may run several apps: tests do), read at each scrape
    from the counters the services keep as they work."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.registry = CollectorRegistry(auto_describe=False)
        self.graphql_requests = Counter("graphql_http_requests", "GraphQL requests received over HTTP.", registry=self.registry)
        self.registry.register(self)

    def collect(self) -> Iterator[Metric]:
        services = self.services
        documents = services.documents
        yield CounterMetricFamily("sql_statements", "SQL statements sent to PostgreSQL by this process.",
                                  value=services.db.statements_executed)
        yield GaugeMetricFamily("graphql_document_cache_bytes", "Estimated memory held by parsed and validated documents.",
                                value=documents.size_bytes)
        yield GaugeMetricFamily("graphql_document_cache_entries", "Documents held parsed and validated.", value=len(documents))
        yield CounterMetricFamily("graphql_document_cache_hits", "Documents found in the cache.", value=documents.hits)
        yield CounterMetricFamily("graphql_document_cache_misses", "Documents parsed and validated.", value=documents.misses)
        worker = services.worker
        if worker is not None:
            yield CounterMetricFamily("rerun_items_processed", "Rerun items this process finished (succeeded or failed).",
                                      value=worker.processed)
            yield CounterMetricFamily("rerun_items_failed", "Rerun items this process finished as failed.", value=worker.failed)
            yield CounterMetricFamily("rerun_db_seconds", "Time rerun workers spent in claim and commit statements.",
                                      value=worker.db_seconds)
            yield CounterMetricFamily("rerun_analyze_seconds", "Time rerun workers spent in analyses.", value=worker.analyze_seconds)
            yield GaugeMetricFamily("rerun_items_in_flight", "Rerun items being analyzed or committed now.", value=worker.in_flight)
        if services.progress is not None:
            yield CounterMetricFamily("progress_notifications", "Notifications heard by the progress listener.",
                                      value=services.progress.notifications)
        engine = services.read_engine
        if engine is not None:
            fields = CounterMetricFamily("graphql_read_engine_root_fields",
                                         "Root fields of queries, by how they ran: compiled into one SQL statement, "
                                         "or by the resolvers (not compiled, or sent back there by an error).",
                                         labels=["path"])
            fields.add_metric(["compiled"], engine.compiled)
            fields.add_metric(["resolvers"], engine.resolved)
            yield fields
        yield from socket_metrics(services)


class GraphQLView(GraphQL):
    """Strawberry's ASGI view with our context, auth, orjson encoding and the offline GraphiQL page."""

    graphql_transport_ws_handler_class = TransportWSHandler
    graphql_ws_handler_class = LegacyWSHandler

    def __init__(self, **kwargs: Any):
        # WebSocket limits come from the settings, read by the protocol handlers (graphql_api.websocket).
        super().__init__(schema, **kwargs)
        self._graphiql_html: str | None = None

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> Context:
        # WebSocket connections only: HTTP requests get their context in graphql_api.http.
        services: Services = request.app.state.services
        return Context(services=services, request=request, response=response, read_engine=services.read_engine,
                       json_fragments=True)

    async def on_ws_connect(self, context: Context) -> Any:
        # A socket without a valid key, or over a cap, is closed and never acknowledged (graphql_api.websocket).
        await admit(context)
        return await super().on_ws_connect(context)

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Syntax errors end a request before the schema extensions see it; every error gets its code here.
        if result.errors:
            result.errors = [with_code(error) for error in result.errors]
        return process_result(result)

    def encode_json(self, data: object) -> str:
        # Text, so WebSocket messages go out as text frames as the protocols require.
        return orjson.dumps(data).decode()

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = Response(orjson.dumps(response_data), status_code=sub_response.status_code or 200, media_type="application/json")
        response.headers.raw.extend(sub_response.headers.raw)
        if sub_response.background:
            response.background = sub_response.background
        return response

    async def render_graphql_ide(self, request: Request) -> Response:
        if self._graphiql_html is None:
            self._graphiql_html = render_graphiql(vendor_dir=vendor_dir())
        return HTMLResponse(self._graphiql_html)


async def healthz(request: Request) -> Response:
    services: Services = request.app.state.services
    try:
        reachable = await asyncio.wait_for(services.db.ping(), timeout=2.0)
    except Exception as exc:  # any failure means unreachable; the body says which
        log.warning("healthz_database_unreachable", error=type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "reachable" if reachable else "unreachable"})


async def metrics(request: Request) -> Response:
    services: Services = request.app.state.services
    token = services.settings.metrics_token
    if token is not None:
        given = bearer_key(request.headers.get("authorization")) or ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            return PlainTextResponse("metrics need `Authorization: Bearer <METRICS_TOKEN>`\n", status_code=401,
                                     headers={"WWW-Authenticate": "Bearer"})
    elif services.settings.production:
        return PlainTextResponse("metrics are off in production until METRICS_TOKEN is set\n", status_code=404)
    # Prometheus' text format, or OpenMetrics when the scraper asks for it.
    encode, media_type = choose_encoder(request.headers.get("accept", ""))
    return Response(encode(request.app.state.metrics.registry), media_type=media_type)


# The GraphiQL page runs its own inline loader and may fall back to unpkg.com for a missing local file.
_HTML_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://unpkg.com; "
    "style-src 'self' 'unsafe-inline' https://unpkg.com; font-src 'self' data: https://unpkg.com; "
    "img-src 'self' data:; connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Headers every response carries, and the stricter ones of HTML pages (no framing, a content policy)."""

    def __init__(self, app: Any):
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("X-Frame-Options", "DENY")
                    headers.setdefault("Content-Security-Policy", _HTML_POLICY)
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: Settings, database_url: str) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with open_services(settings, database_url, background=True) as services:
            app.state.services = services
            app.state.metrics = Metrics(services)
            log.info("server_ready", analyzer=services.analyzer.name)
            yield
            log.info("server_stopping", reason="shutdown")

    # Browsers on the configured origins may open the WebSocket too (Strawberry refuses other origins).
    view = GraphQLView(allowed_origins=settings.cors_origins)

    async def graphql_over_http(request: Request) -> Response:
        return await graphql_http.handle(view, request)

    middleware = [Middleware(SecurityHeaders)]
    if settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Accept"],
            max_age=600,
        ))
    return Starlette(
        middleware=middleware,
        routes=[
            # Every method reaches the handler, so that even a wrong one is answered with a GraphQL response.
            Route("/graphql", graphql_over_http, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]),
            WebSocketRoute("/graphql", view),
            # CSV and JSON lines downloads (docs/export.md).
            Route("/export/results", export_results, methods=EXPORT_METHODS),
            Route("/export/jobs/{job_id}", export_job, methods=EXPORT_METHODS),
            Route("/healthz", healthz),
            Route("/metrics", metrics),
            Route("/studio", studio_page),
            Route("/", to_studio),
            static_route(),
        ],
        lifespan=lifespan,
    )
