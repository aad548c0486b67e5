"""DataLoaders, one set per GraphQL operation: every per-row lookup is batched into one query."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Iterable
from typing import Any

from strawberry.dataloader import DataLoader

from graphql_api.db import Database


def _by_key(rows: Iterable[Any], keys: list, key_of) -> list:
    found = {key_of(row): row for row in rows}
    return [found.get(key) for key in keys]


def _grouped(rows: Iterable[Any], keys: list, key_of) -> list[list]:
    groups: dict[Any, list] = defaultdict(list)
    for row in rows:
        groups[key_of(row)].append(row)
    return [groups.get(key, []) for key in keys]


class SharedLoader(DataLoader):
    """A DataLoader whose cached answer survives the cancellation of one of its waiters.

    graphql-core cancels the pending resolvers of a list when an error nulls one of its items; a
    cancelled task cancels the future it awaits, and the loader's cache hands that same future to every
    resolver asking for the key. Each caller awaits its own shield instead, so the answer stays whole.
    """

    def load(self, key: Any) -> Awaitable[Any]:
        return asyncio.shield(super().load(key))


class Loaders:
    """Loaders return raw rows (or None); the schema types map them."""

    def __init__(self, db: Database, workspace_id: int):
        self.db = db
        self.workspace_id = workspace_id
        self.agent = SharedLoader(self._agents)
        self.version = SharedLoader(self._versions)
        self.draft = SharedLoader(self._drafts)
        self.versions_of_agent = SharedLoader(self._versions_of_agents)
        self.conversation = SharedLoader(self._conversations)
        self.current_analysis = SharedLoader(self._current_analysis)
        self.analysis_history = SharedLoader(self._analysis_history)
        self.config_changes = SharedLoader(self._config_changes)
        self.result = SharedLoader(self._results)
        self.rerun_job = SharedLoader(self._rerun_jobs)
        self.retries = SharedLoader(self._retries)
        self.rerun_impact = SharedLoader(self._rerun_impacts)
        self.rerun_batches = SharedLoader(self._rerun_batches)

    async def _agents(self, keys: list[str]) -> list:
        rows = await self.db.fetch_all("agents_by_ids", workspace_id=self.workspace_id, agent_ids=keys)
        return _by_key(rows, keys, lambda r: r["agent_id"])

    async def _versions(self, keys: list[tuple[str, int]]) -> list:
        rows = await self.db.fetch_all(
            "agent_versions_by_keys",
            workspace_id=self.workspace_id,
            agent_ids=[k[0] for k in keys],
            versions=[k[1] for k in keys],
        )
        return _by_key(rows, keys, lambda r: (r["agent_id"], r["version"]))

    async def _drafts(self, keys: list[str]) -> list:
        rows = await self.db.fetch_all("drafts_of_agents", workspace_id=self.workspace_id, agent_ids=keys)
        return _by_key(rows, keys, lambda r: r["agent_id"])

    async def _versions_of_agents(self, keys: list[str]) -> list[list]:
        rows = await self.db.fetch_all("agent_versions_of_agents", workspace_id=self.workspace_id, agent_ids=keys)
        return _grouped(rows, keys, lambda r: r["agent_id"])

    async def _conversations(self, keys: list[str]) -> list:
        rows = await self.db.fetch_all(
            "conversations_by_ids", workspace_id=self.workspace_id, conversation_ids=keys
        )
        return _by_key(rows, keys, lambda r: r["conversation_id"])

    async def _current_analysis(self, keys: list[str]) -> list:
        rows = await self.db.fetch_all(
            "current_analysis_of", workspace_id=self.workspace_id, conversation_ids=keys
        )
        return _by_key(rows, keys, lambda r: r["conversation_id"])

    async def _analysis_history(self, keys: list[str]) -> list[list]:
        rows = await self.db.fetch_all(
            "analysis_history_of", workspace_id=self.workspace_id, conversation_ids=keys
        )
        return _grouped(rows, keys, lambda r: r["conversation_id"])

    async def _config_changes(self, keys: list[tuple[str, int]]) -> list[list]:
        rows = await self.db.fetch_all(
            "agent_version_changes_of",
            workspace_id=self.workspace_id,
            agent_ids=[k[0] for k in keys],
            versions=[k[1] for k in keys],
        )
        return _grouped(rows, keys, lambda r: (r["agent_id"], r["version"]))

    async def _results(self, keys: list[int]) -> list:
        rows = await self.db.fetch_all("analysis_results_by_ids", workspace_id=self.workspace_id, ids=keys)
        return _by_key(rows, keys, lambda r: r["id"])

    async def _rerun_jobs(self, keys: list[str]) -> list:
        rows = await self.db.fetch_all("rerun_jobs_by_ids", workspace_id=self.workspace_id, job_ids=keys)
        return _by_key(rows, keys, lambda r: r["job_id"])

    async def _retries(self, keys: list[str]) -> list[list]:
        rows = await self.db.fetch_all("rerun_job_retries", workspace_id=self.workspace_id, job_ids=keys)
        return _grouped(rows, keys, lambda r: r["targets"]["retryOf"])

    async def _rerun_batches(self, keys: list[str]) -> list[list]:
        rows = await self.db.fetch_all("rerun_batches_of_jobs", workspace_id=self.workspace_id, job_ids=keys)
        return _grouped(rows, keys, lambda r: r["job_id"])

    async def _rerun_impacts(self, keys: list[tuple[str, int]]) -> list:
        """Keys are (job id, how many items had finished in the job row read): the impact as of that row."""
        rows = await self.db.fetch_all(
            "rerun_impacts", workspace_id=self.workspace_id, job_ids=[k[0] for k in keys], uptos=[k[1] for k in keys]
        )
        return _by_key(rows, keys, lambda r: (r["job_id"], r["upto"]))
