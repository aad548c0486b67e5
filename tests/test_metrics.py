"""/metrics: every series operators scrape, in Prometheus' text format (OpenMetrics on request), counted per app."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import running_api

SERIES = {
    "graphql_http_requests_total", "sql_statements_total", "graphql_document_cache_bytes", "graphql_document_cache_entries",
    "graphql_document_cache_hits_total", "graphql_document_cache_misses_total", "rerun_items_processed_total",
    "rerun_items_failed_total", "rerun_db_seconds_total", "rerun_analyze_seconds_total", "rerun_items_in_flight",
    "progress_notifications_total", "graphql_ws_sockets_open", "graphql_ws_sockets_authenticated",
    "graphql_ws_api_keys_connected", "graphql_ws_sockets_revoked_total",
}


def _samples(text: str) -> dict[str, float]:
    return {sample.name: sample.value for family in text_string_to_metric_families(text) for sample in family.samples}


async def test_metrics_expose_every_series_and_count_each_app_on_its_own(db_url) -> None:
    async with running_api(db_url) as first, running_api(db_url) as second:
        for _ in range(3):
            await first.client.post("/graphql", json={"query": "{ __typename }"})
        await second.client.post("/graphql", json={"query": "{ __typename }"})
        answer = await first.client.get("/metrics")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        samples = _samples(answer.text)
        assert SERIES <= samples.keys(), SERIES - samples.keys()
        assert samples["graphql_http_requests_total"] == 3
        assert _samples((await second.client.get("/metrics")).text)["graphql_http_requests_total"] == 1

        openmetrics = await first.client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
        assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
        assert openmetrics.text.rstrip().endswith("# EOF")
