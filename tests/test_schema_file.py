"""schema.graphql is generated from the code and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from graphql_api.schema import schema

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "schema.graphql"


def test_schema_graphql_matches_the_code() -> None:
    assert SCHEMA_FILE.exists(), "run `make schema`"
    assert SCHEMA_FILE.read_text().strip() == schema.as_str().strip(), "schema.graphql is stale: run `make schema`"
