"""End to end: the real server under uvicorn, the CLI, and an HTTP client."""

from __future__ import annotations

from pathlib import Path

import httpx

from graphql_api.testing.processes import ServerProcess, cli

SAMPLE = Path(__file__).resolve().parent / "samples" / "retell-export.jsonl"


async def test_server_serves_the_read_api_over_http(db_url: str, tmp_path: Path) -> None:
    created = cli("create-api-key", "--workspace", "e2e", db_url=db_url, data_dir=tmp_path)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("ak_") and " " not in key
    imported = cli("import", str(SAMPLE), "--workspace", "e2e", db_url=db_url, data_dir=tmp_path)
    assert imported.returncode == 0, imported.stderr

    with ServerProcess(db_url=db_url, data_dir=tmp_path) as server:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=10) as client:
            health = await client.get("/healthz")
            assert health.json() == {"status": "ok", "database": "reachable"}

            query = "{ calls { nodes { id agent { name } analysis { summary } } } }"
            response = await client.post("/graphql", json={"query": query}, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200
            nodes = response.json()["data"]["calls"]["nodes"]
            # Newest first: the call still in progress, then the one the export brought with its analysis.
            assert [n["id"] for n in nodes] == ["call_c4a2e6b8d013", "call_9f1e3c5a7b20", "call_5e0c1a9b7d34", "call_2b8d6f0e1a95"]
            assert nodes[0]["agent"]["name"] == "Maple Street Veterinary Front Desk"
            assert nodes[2]["analysis"]["summary"].startswith("The caller booked a rabies vaccination")

            # Queries may also come by GET.
            response = await client.get("/graphql", params={"query": "{ agents { nodes { id } } }"}, headers={"Authorization": f"Bearer {key}"})
            assert len(response.json()["data"]["agents"]["nodes"]) == 2

            unauthenticated = await client.post("/graphql", json={"query": query})
            assert unauthenticated.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

            page = await client.get("/graphql", headers={"Accept": "text/html"})
            assert page.status_code == 200 and "graphiql" in page.text.lower()
            assert "Authorization" in page.text  # the header editor comes prefilled for the key
            if "/static/vendor/" in page.text:  # the local copy is installed by `make setup`
                asset = page.text.split("/static/vendor/")[1].split('"')[0]
                assert (await client.get("/static/vendor/" + asset)).status_code == 200

            metrics = await client.get("/metrics")
            assert "sql_statements_total" in metrics.text
        # uvicorn re-raises SIGTERM after a graceful shutdown, as process managers expect.
        assert server.stop() in (0, -15)
    log = server.log()
    assert "server_ready" in log and "server_stopping" in log and "Traceback" not in log
