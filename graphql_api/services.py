"""The long-lived parts a process shares: database, authenticator, analyzer."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import structlog

from graphql_api.analysis.base import Analyzer
from graphql_api.config import Settings
from graphql_api.db import Database, EmbeddedPostgres, describe_url, migrate
from graphql_api.logs import log_once
from graphql_api.persisted import PersistedQueries, load_allow_list
from graphql_api.ratelimit import RateLimiter
from graphql_api.reruns.batches import BatchClient, BatchRunner, OfflineBatchClient
from graphql_api.reruns.progress import ProgressHub
from graphql_api.schema.compiler import ReadEngine
from graphql_api.schema.documents import DocumentCache
from graphql_api.reruns.webhooks import WebhookDeliverer
from graphql_api.reruns.worker import RerunWorker
from graphql_api.workspaces import Authenticator

log = structlog.stdlib.get_logger(__name__)


@dataclass
class Services:
    settings: Settings
    db: Database
    authenticator: Authenticator
    analyzer: Analyzer
    progress: ProgressHub | None = None
    worker: RerunWorker | None = None
    webhooks: WebhookDeliverer | None = None
    batches: BatchRunner | None = None
    documents: DocumentCache = field(init=False)
    rate_limiter: RateLimiter = field(init=False)
    persisted: PersistedQueries = field(init=False)
    read_engine: ReadEngine | None = field(init=False)

    def __post_init__(self) -> None:
        settings = self.settings
        self.documents = DocumentCache(settings)
        self.read_engine = ReadEngine() if settings.read_engine else None
        self.rate_limiter = RateLimiter(rate=settings.rate_limit_per_s, burst=settings.rate_limit_burst)
        allow_list = load_allow_list(settings.persisted_queries_file) if settings.persisted_queries_file else None
        if settings.persisted_queries == "only" and not allow_list:
            raise SystemExit("PERSISTED_QUERIES=only needs PERSISTED_QUERIES_FILE with the allowed documents")
        self.persisted = PersistedQueries(
            mode=settings.persisted_queries, allow_list=allow_list, max_document_bytes=settings.cacheable_document_bytes
        )

    def wake_webhooks(self) -> None:
        if self.webhooks is not None:
            self.webhooks.wake()

    def wake_workers(self) -> None:
        if self.worker is not None:
            self.worker.wake()
        if self.batches is not None:
            self.batches.wake()


def make_analyzer(settings: Settings) -> Analyzer:
    if settings.gemini_api_key:
        from graphql_api.analysis.gemini import GeminiAnalyzer

        log_once(log.info, "analyzer_selected", analyzer="gemini", base_url=settings.gemini_base_url or "default")
        return GeminiAnalyzer(
            settings.gemini_api_key,
            settings.gemini_base_url,
            max_attempts=settings.gemini_max_attempts,
            base_delay_s=settings.gemini_retry_base_delay_s,
            request_timeout_s=settings.gemini_timeout_s,
        )
    from graphql_api.analysis.offline import OfflineAnalyzer

    log_once(
        log.warning, "analyzer_selected", analyzer="offline",
        reason="GEMINI_API_KEY unset; results come from the deterministic offline analyzer (model 'offline', no cost), "
        "not from an LLM",
    )
    return OfflineAnalyzer()


def make_batch_client(settings: Settings) -> BatchClient:
    """The Gemini Batch API with a key; without one, batches the offline analyzer answers at once."""
    if settings.gemini_api_key:
        from graphql_api.analysis.batch import GeminiBatchClient

        return GeminiBatchClient(settings.gemini_api_key, settings.gemini_base_url,
                                 max_attempts=settings.gemini_max_attempts, base_delay_s=settings.gemini_retry_base_delay_s,
                                 request_timeout_s=settings.gemini_timeout_s)
    return OfflineBatchClient()


@contextlib.contextmanager
def database_url(settings: Settings):
    """DATABASE_URL when set; otherwise an embedded PostgreSQL under the data directory."""
    if settings.database_url:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir / "pg")
    try:
        # start() inside the try: a stop signal it held back is raised as it returns, and the server
        # it has just started must still be let go of.
        yield embedded.start()
    finally:
        embedded.stop()


@contextlib.asynccontextmanager
async def open_services(
    settings: Settings, url: str, *, apply_migrations: bool = True, background: bool = False
) -> AsyncIterator[Services]:
    """The process's services; with `background`, also the progress listener and (per settings) a rerun worker."""
    if apply_migrations:
        await migrate(url)
    db = Database(url, max_size=settings.db_pool_max, statement_timeout_ms=settings.statement_timeout_ms)
    await db.connect()
    log_once(log.info, "database_connected", url=describe_url(url))
    services = Services(settings=settings, db=db, authenticator=Authenticator(db), analyzer=make_analyzer(settings))
    worker_task = webhooks_task = batches_task = None
    try:
        if background:
            services.progress = ProgressHub(db, url, on_queued=services.wake_workers, on_analysis=services.wake_webhooks)
            await services.progress.start()
            if settings.run_workers:
                services.worker = RerunWorker(
                    db=db, analyzer=services.analyzer, concurrency=settings.analysis_concurrency,
                    lease_s=settings.lease_s,
                )
                worker_task = asyncio.create_task(services.worker.run())
                # Each process that runs workers also sends the webhooks of the reruns that end.
                services.webhooks = WebhookDeliverer(
                    db=db, max_attempts=settings.webhook_max_attempts, timeout_s=settings.webhook_timeout_s,
                    retry_delays_s=settings.webhook_retry_delays_s, poll_s=settings.webhook_poll_s,
                )
                webhooks_task = asyncio.create_task(services.webhooks.run())
                # And the batches of BATCH reruns.
                services.batches = BatchRunner(
                    db=db, client=make_batch_client(settings), max_requests=settings.batch_max_requests,
                    poll_s=settings.batch_poll_s, lease_s=settings.batch_lease_s,
                )
                batches_task = asyncio.create_task(services.batches.run())
        yield services
    finally:
        if batches_task is not None:
            services.batches.stop()
            await batches_task
            await services.batches.client.aclose()
        if worker_task is not None:
            services.worker.stop()
            await worker_task
        if webhooks_task is not None:
            services.webhooks.stop()
            await webhooks_task
        if services.progress is not None:
            await services.progress.stop()
        close = getattr(services.analyzer, "aclose", None)
        if close is not None:
            await close()
        await db.disconnect()
