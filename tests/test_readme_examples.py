"""The README's GraphQL examples run as written against the demo data `make run` loads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from graphql import OperationDefinitionNode, parse

from graphql_api.analysis.offline import OfflineAnalyzer
from graphql_api.demo_data import generate_demo_records
from graphql_api.importer import Importer
from graphql_api.schema import schema
from graphql_api.schema.context import Context
from tests.conftest import data

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```graphql\n(.*?)```", README.read_text(), re.S)


def test_the_readme_has_its_three_examples() -> None:
    operations = [d.operation.value for block in BLOCKS for d in parse(block).definitions]
    assert operations[:4] == ["query", "mutation", "mutation", "subscription"]
    assert set(operations[4:]) <= {"query", "mutation"}, "further examples are single queries or mutations"


async def seed_demo(api) -> str:
    """Load the demo data `make run` loads; a key of its workspace `demo`."""
    key = await api.key_for("demo")
    workspace_id = await api.workspace_id("demo")
    report = await Importer(db=api.db, workspace_id=workspace_id, analyzer=OfflineAnalyzer()).run(
        list(enumerate(generate_demo_records(), start=1))
    )
    assert report.skipped == 0
    return key


@pytest.fixture
async def demo(api):
    return await seed_demo(api)


async def test_every_readme_example_runs_on_the_demo_data(api, demo) -> None:
    query, mutations, subscription, *more = BLOCKS
    # The further examples (of features) run first, each on its own, without errors.
    for block in more:
        textwrapped = "\n".join(line.removeprefix("  ") for line in block.splitlines())
        assert data(await api.gql(textwrapped, key=demo)), block
    calls = data(await api.gql(query, key=demo))["calls"]
    assert calls["edges"] and all(e["node"]["analysis"]["successful"] is False for e in calls["edges"])

    names = [d.name.value for d in parse(mutations).definitions if isinstance(d, OperationDefinitionNode)]
    assert names == ["EditPrompts", "Rerun"]
    answers = {}
    for name in names:
        response = await api.client.post(
            "/graphql", json={"query": mutations, "operationName": name}, headers={"Authorization": f"Bearer {demo}"}
        )
        answers[name] = data(response.json())
    draft = answers["EditPrompts"]["updateDraftPrompts"]
    assert draft["isLatestDraft"] and draft["analysisConfig"]["summaryPrompt"] == "Write a 1-5 word summary of the call."
    rerun = answers["Rerun"]["rerunAnalysis"]
    assert rerun["job"]["total"] == rerun["estimate"]["conversations"] > 0
    assert rerun["estimate"]["configVersion"] == draft["version"]

    # The subscription, on the job the mutation started: its first event is the job's snapshot.
    workspace = await api.services.authenticator.workspace_for(demo)
    context = Context(services=api.services, workspace=workspace)
    events = await schema.subscribe(subscription, variable_values={"id": rerun["job"]["id"]}, context_value=context)
    first = await anext(events)
    await events.aclose()
    assert not first.errors, first.errors
    assert first.data["rerunProgress"]["job"]["total"] == rerun["job"]["total"] and first.data["rerunProgress"]["item"] is None
