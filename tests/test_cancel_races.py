"""Cancel against busy workers: no deadlock, no lost cancel, and the job's books always balance."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

import asyncpg

from graphql_api.analysis.offline import OfflineAnalyzer
from graphql_api.reruns.worker import RerunWorker
from tests.conftest import data, error_codes, running_api
from tests.factories import call, load, voice_agent
from tests.reruns_helpers import RERUN, wait_final

ROUNDS = 30
CONVERSATIONS = 150

CANCEL = "mutation($id: ID!) { cancelRerun(jobId: $id) { status canceled } }"
PROGRESS = "query($id: ID!) { rerunJob(id: $id) { succeeded failed } }"


class JitteryAnalyzer(OfflineAnalyzer):
    """The offline analyzer taking a few milliseconds, like a fast model, so commits interleave."""

    async def analyze(self, conversation: Any, config: Any) -> Any:
        await asyncio.sleep(random.uniform(0.02, 0.06))
        return await super().analyze(conversation, config)


async def _books(conn: asyncpg.Connection, job_id: str) -> dict[str, Any]:
    return dict(await conn.fetchrow(
        """SELECT j.status, j.total, j.succeeded, j.failed, j.canceled,
                  (SELECT count(*) FROM rerun_items i WHERE i.job_id = j.job_id) AS items,
                  (SELECT count(*) FROM rerun_items i WHERE i.job_id = j.job_id AND i.status = 'SUCCEEDED') AS items_succeeded,
                  (SELECT count(*) FROM rerun_items i WHERE i.job_id = j.job_id AND i.status = 'FAILED') AS items_failed,
                  (SELECT count(*) FROM rerun_items i WHERE i.job_id = j.job_id AND i.status = 'CANCELED') AS items_canceled,
                  (SELECT count(*) FROM rerun_items i WHERE i.job_id = j.job_id
                     AND i.status NOT IN ('SUCCEEDED', 'FAILED', 'CANCELED')) AS items_open,
                  (SELECT count(*) FROM rerun_items i WHERE i.job_id = j.job_id
                     AND (i.status = 'SUCCEEDED') <> (i.result_id IS NOT NULL)) AS items_result_mismatch,
                  (SELECT count(*) FROM analysis_results r WHERE r.rerun_job_id = j.job_id) AS results,
                  (SELECT count(*) FROM charges c JOIN analysis_results r ON r.id = c.analysis_result_id
                     WHERE r.rerun_job_id = j.job_id) AS charges
           FROM rerun_jobs j WHERE j.job_id = $1""",
        job_id,
    ))


async def test_cancel_never_deadlocks_with_busy_workers_and_the_books_balance(db_url, caplog) -> None:
    caplog.set_level(logging.WARNING)
    # No READ_ENGINE_VERIFY: its second reads slow the polling down until the cancels come too late to race.
    async with running_api(db_url, run_workers=False, read_engine_verify=False) as api:
        key = await api.key_for("acme")
        await load(api, "acme", [voice_agent()] + [call(f"call_{i:03d}", minute=i) for i in range(CONVERSATIONS)])
        workers = [
            RerunWorker(db=api.db, analyzer=JitteryAnalyzer(), concurrency=8, lease_s=10, idle_poll_s=0.02)
            for _ in range(4)
        ]
        tasks = [asyncio.create_task(worker.run()) for worker in workers]
        conn = await asyncpg.connect(dsn=db_url)
        rng = random.Random(7)
        caught = 0
        try:
            for round_ in range(ROUNDS):
                job_id = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1"}}, key=key))["rerunAnalysis"]["job"]["id"]
                # Cancel at a different point of each run: before any item finished, or in the thick of it.
                wait_for = rng.randrange(0, CONVERSATIONS // 3)
                for _ in range(2000):
                    job = data(await api.gql(PROGRESS, {"id": job_id}, key=key))["rerunJob"]
                    if job["succeeded"] + job["failed"] >= wait_for:
                        break
                    await asyncio.sleep(0.002)
                canceled = await api.gql(CANCEL, {"id": job_id}, key=key)
                if canceled.get("errors"):
                    # The last items may finish while the cancel waits its turn: the job ended, nothing to cancel.
                    assert error_codes(canceled) == ["CONFLICT"], (round_, canceled["errors"])
                    assert canceled["errors"][0]["extensions"]["status"] == "SUCCEEDED", canceled
                else:
                    caught += canceled["data"]["cancelRerun"]["canceled"] > 0
                final = await wait_final(api, key, job_id, timeout=30)
                books = await _books(conn, job_id)
                assert books["items_open"] == 0, books
                assert books["items"] == books["total"] == CONVERSATIONS, books
                assert (books["succeeded"], books["failed"], books["canceled"]) == (
                    books["items_succeeded"], books["items_failed"], books["items_canceled"]), books
                assert books["items_result_mismatch"] == 0, books
                assert books["results"] == books["charges"] == books["succeeded"], books
                expected_status = "CANCELED" if books["canceled"] else "SUCCEEDED"
                assert final["status"] == books["status"] == expected_status, (final, books)
        finally:
            for worker in workers:
                worker.stop()
            await asyncio.gather(*tasks)
            await conn.close()
    assert caught >= ROUNDS // 2  # most cancels caught pending items: the race was really run
    deadlocks = [r.getMessage() for r in caplog.records if "Deadlock" in r.getMessage() or "deadlock" in r.getMessage()]
    assert deadlocks == []
    # PostgreSQL counts every deadlock it broke, whoever was the victim.
    admin = await asyncpg.connect(dsn=db_url)
    try:
        await asyncio.sleep(1.1)  # backends flush their statistics at most once a second
        counted = await admin.fetchval("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
    finally:
        await admin.close()
    assert counted == 0


async def _lock_waiters(conn: asyncpg.Connection, at_least: int) -> None:
    for _ in range(500):
        waiting = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        if waiting >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {at_least} statements waiting on a lock")


async def test_cancel_and_a_commit_of_an_item_claimed_during_the_cancel_do_not_deadlock(db_url) -> None:
    """The interleaving that deadlocked: the cancel, waiting on one item, meets an item that was claimed after
    the cancel's statement began and whose commit then waits for the job the cancel holds."""
    from graphql_api.reruns.worker import cancel_rerun

    async with running_api(db_url, run_workers=False) as api:
        key = await api.key_for("acme")
        workspace_id = await api.workspace_id("acme")
        await load(api, "acme", [voice_agent()] + [call(f"call_{i}", minute=i) for i in range(3)])
        job_id = data(await api.gql(RERUN, {"input": {"agentId": "agent_voice1"}}, key=key))["rerunAnalysis"]["job"]["id"]
        blocker, committer, watcher = [await asyncpg.connect(dsn=db_url) for _ in range(3)]
        try:
            # A claim in flight holds item 1.
            blocker_tx = blocker.transaction()
            await blocker_tx.start()
            await blocker.execute("SELECT 1 FROM rerun_items WHERE job_id = $1 AND seq = 1 FOR UPDATE", job_id)
            # The cancel takes the job and waits for item 1.
            cancel = asyncio.create_task(cancel_rerun(db=api.db, workspace_id=workspace_id, job_id=job_id))
            await _lock_waiters(watcher, 1)
            # Meanwhile a worker claims item 2 (item 1 is skipped: locked) and commits its result.
            claimed = await api.db.fetch_all("rerun_items_claim", batch=1, owner="worker-2", lease_s=30)
            assert [row["seq"] for row in claimed] == [2]
            finish = asyncio.create_task(committer.fetchrow(
                "SELECT * FROM finish_rerun_item($1, 2, 'worker-2', NULL, 'offline', 'A summary.', true, 'POSITIVE',"
                " false, '{}'::jsonb, 10, 5, 0)", job_id))
            await _lock_waiters(watcher, 2)
            await blocker_tx.commit()
            job = await asyncio.wait_for(cancel, timeout=10)
            finished = await asyncio.wait_for(finish, timeout=10)
        finally:
            for conn in (blocker, committer, watcher):
                await conn.close()
        assert job["canceled"] == 2 and job["cancel_requested_at"] is not None
        assert finished["job_id"] == job_id
        final = await wait_final(api, key, job_id, timeout=10)
        assert (final["status"], final["succeeded"], final["canceled"]) == ("CANCELED", 1, 2)
