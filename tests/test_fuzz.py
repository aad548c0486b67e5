"""Fuzzing the real server over HTTP: requests generated from the schema and raw HTTP oddities, each answer
held to the contract (no 5xx, a GraphQL response, contract codes, a quiet log, untouched tables on failure).

FUZZ_EXAMPLES sets how many generated requests run (`make fuzz` runs thousands); the run is derandomized,
so the same code sends the same requests.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from tests.fuzz_support import OperationFactory, Runner, api_schema, raw_body_case, running_target, transport_cases

FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "800"))  # about 500 distinct requests
# Hypothesis keeps caches (its Unicode tables) on disk; not in the work tree.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "graphql-api-hypothesis")
RAW_PERCENT = 20  # of generated requests, how many are random bodies rather than operations of the schema


def _fuzz(db_url: str, data_dir: Path, *, generated: int) -> str | None:
    """Run the fixed transport cases, or `generated` requests from the schema; the report when any failed."""
    with running_target(db_url, data_dir) as target:
        runner = Runner(target)
        try:
            if not generated:
                for case in transport_cases(target):
                    runner.run(case)
            else:
                factory = OperationFactory(api_schema(), target.own, target.other)

                @settings(
                    max_examples=generated,
                    derandomize=True,
                    database=None,
                    deadline=None,
                    phases=[Phase.generate],
                    suppress_health_check=list(HealthCheck),
                    print_blob=False,
                )
                @given(st.data())
                def one_request(data: st.DataObject) -> None:
                    if data.draw(st.integers(0, 99)) < RAW_PERCENT:
                        runner.run(raw_body_case(data.draw, target))
                    else:
                        runner.run(factory.case(data.draw))

                one_request()
        finally:
            runner.close()
        report = runner.report("generated requests" if generated else "transport cases")
    print("\n" + "\n".join(report.splitlines()[:4]))  # the figure; the failures come with the assertion
    return report if runner.failures else None


async def test_raw_http_requests_get_graphql_answers_with_contract_codes(db_url: str, tmp_path: Path) -> None:
    report = await asyncio.to_thread(_fuzz, db_url, tmp_path, generated=0)
    assert report is None, report


async def test_generated_requests_keep_the_contract(db_url: str, tmp_path: Path) -> None:
    report = await asyncio.to_thread(_fuzz, db_url, tmp_path, generated=FUZZ_EXAMPLES)
    assert report is None, report
