"""Named queries: `:name` parameters become `$n` placeholders, and a shared fragment (`{{name}}`, the filter of a page
and of a rerun's targets) is written in place before they are numbered."""

from __future__ import annotations

import re

import pytest

from graphql_api.db import load_queries, parse_queries

FILES = {
    "a.sql": """-- selected --
-- A fragment.
FROM t WHERE t.w = :workspace_id AND (:kind::text IS NULL OR t.kind = :kind::text)

-- page --
-- A page.
SELECT t.id {{selected}} AND t.id > :after ORDER BY t.id LIMIT :limit;
""",
    "b.sql": """-- count_selected --
-- Another file's statement over the same fragment.
SELECT count(*) {{selected}};
""",
}


def test_a_fragment_is_written_in_place_before_parameters_are_numbered() -> None:
    queries = parse_queries(FILES)
    page = queries["page"]
    assert page.sql == (
        "SELECT t.id FROM t WHERE t.w = $1 AND ($2::text IS NULL OR t.kind = $2::text) AND t.id > $3 ORDER BY t.id LIMIT $4"
    )
    assert page.params == ("workspace_id", "kind", "after", "limit")
    assert queries["count_selected"].params == ("workspace_id", "kind")


@pytest.mark.parametrize(
    "files, message",
    [
        ({"a.sql": "-- q --\nSELECT 1 {{missing}}"}, "includes 'missing'"),
        ({"a.sql": "-- q --\nSELECT 1 {{r}}\n-- r --\nFROM t {{q}}"}, "includes 'q'"),
        ({"a.sql": "-- q --\nSELECT 1", "b.sql": "-- q --\nSELECT 2"}, "already defined in another file"),
    ],
)
def test_a_broken_include_or_a_name_defined_twice_is_refused_at_load(files: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_queries(files)


def test_a_page_and_a_reruns_targets_share_one_filter() -> None:
    def shape(sql: str) -> str:  # placeholder numbers differ from one statement to the next
        return re.sub(r"\$\d+", "$_", " ".join(sql.split()))

    queries = load_queries()
    fragment = shape(queries["conversations_selected"].sql)
    for name in ("conversations_page", "rerun_estimate", "rerun_items_insert"):
        assert fragment in shape(queries[name].sql), name
