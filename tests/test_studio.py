"""The studio in a real browser: headless Chromium (Debian's, driven by Playwright) against a running server with
the demo data, analysing through the Gemini-compatible test server made slow enough to watch and cancel. Every
browser test also checks that the page logged no console error and sent no request to another origin.

STUDIO_SCREENSHOTS=DIR makes the tests save screenshots of the studio there (`make studio-screenshots`)."""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

from graphql_api.db import with_database
from graphql_api.graphiql import vendor_dir
from graphql_api.studio import GRAPHQL_WS, GRAPHQL_WS_INTEGRITY
from graphql_api.testing import GeminiTestServer
from graphql_api.testing.gemini_server import RecordedRequest, example_from_schema
from graphql_api.testing.processes import ServerProcess, cli

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # the test extra is not installed
    sync_playwright = None

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = os.environ.get("STUDIO_SCREENSHOTS")
CHROMIUM = os.environ.get("STUDIO_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
# Debian's chromium; Playwright's own browser download can't be used here.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
DENTAL, SOLAR, BILLING = "Riverside Dental Receptionist", "SunPeak Solar Outbound", "Acme Billing Chat"

if sync_playwright is None:
    SKIP_REASON = "Playwright is not installed (it comes with the project's test extra: make setup)"
elif CHROMIUM is None:
    SKIP_REASON = "no Chromium found: apt-get install chromium (or set STUDIO_CHROMIUM to a Chromium binary)"
else:
    SKIP_REASON = None
if SKIP_REASON and SCREENSHOTS:
    pytest.fail(f"cannot take screenshots: {SKIP_REASON}", pytrace=False)
if SKIP_REASON:
    # Shown in the warnings summary of a plain `pytest -q`, where skip reasons are not.
    warnings.warn(f"the studio's browser tests are skipped: {SKIP_REASON}", stacklevel=1)


@dataclass
class Studio:
    base_url: str
    key: str
    gemini: Any
    server: ServerProcess

    def gql(self, query: str, variables: dict | None = None) -> dict:
        response = httpx.post(self.base_url + "/graphql", json={"query": query, "variables": variables or {}},
                              headers={"Authorization": f"Bearer {self.key}"}, timeout=30)
        body = response.json()
        assert not body.get("errors"), body
        return body["data"]

    def agent_id(self, name: str) -> str:
        agents = self.gql("{ agents { nodes { id name } } }")["agents"]["nodes"]
        return next(agent["id"] for agent in agents if agent["name"] == name)


@dataclass
class Session:
    """One browser page on the studio, with what it logged and every URL it asked for."""

    page: Any
    base_url: str
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)

    def check(self) -> None:
        """No console error, and no request (HTTP or WebSocket) went anywhere but this server."""
        assert self.errors == []
        origin = urlsplit(self.base_url).netloc
        foreign = [url for url in self.urls + self.sockets
                   if urlsplit(url).scheme != "data" and urlsplit(url).netloc != origin]
        assert foreign == []
        assert self.urls, "the page made no request"

    def shot(self, name: str) -> None:
        if SCREENSHOTS:
            Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(Path(SCREENSHOTS) / f"studio-{name}.png"))

    def open_agent(self, key: str, name: str) -> None:
        self.page.goto(f"{self.base_url}/studio#key={key}")
        self.page.get_by_test_id("agent-item").filter(has_text=name).click()
        expect(self.page.get_by_test_id("agent-name")).to_have_text(name)


@pytest.fixture(scope="module")
def chromium() -> str:
    if SKIP_REASON:
        pytest.skip(SKIP_REASON)
    return CHROMIUM


@pytest.fixture(scope="module")
async def studio_db(chromium: str, server_url: str, template_db: str) -> AsyncIterator[str]:
    # One database for the module: the demo data is seeded once (about ten seconds), the tests share it.
    name = f"gqlapi_studio_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template_db}"')
    await admin.close()
    yield with_database(server_url, name)
    admin = await asyncpg.connect(dsn=with_database(server_url, "postgres"))
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


@pytest.fixture(scope="module")
def studio(studio_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Studio]:
    data_dir = tmp_path_factory.mktemp("studio")
    seeded = cli("seed", db_url=studio_db, data_dir=data_dir, timeout=300)
    assert seeded.returncode == 0, seeded.stderr
    created = cli("create-api-key", "--workspace", "demo", db_url=studio_db, data_dir=data_dir)
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    with GeminiTestServer(delay_s=0.05) as gemini:
        # Two analyses at a time, each a little slow: a rerun takes long enough to watch it move and cancel it.
        # BATCH reruns' provider batches are polled often, so one ends within a second or so.
        env = {"GEMINI_API_KEY": "test-key", "GEMINI_BASE_URL": gemini.base_url, "GEMINI_RETRY_BASE_DELAY_S": "0.05",
               "ANALYSIS_CONCURRENCY": "2", "BATCH_POLL_S": "0.2"}
        with ServerProcess(db_url=studio_db, data_dir=data_dir, env=env) as server:
            yield Studio(base_url=server.base_url, key=key, gemini=gemini, server=server)


@pytest.fixture(scope="module")
def browser(chromium: str, studio: Studio) -> Iterator[Any]:
    # Started after every async fixture: Playwright's sync API keeps an event loop running in this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def session(browser: Any, studio: Studio) -> Iterator[Session]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    watched = Session(page=page, base_url=studio.base_url)
    page.on("console", lambda message: message.type == "error" and watched.errors.append(message.text))
    page.on("pageerror", lambda error: watched.errors.append(str(error)))
    page.on("request", lambda request: watched.urls.append(request.url))
    page.on("websocket", lambda socket: watched.sockets.append(socket.url))
    yield watched
    context.close()


def test_the_root_redirects_to_the_studio_which_loads_from_this_server(studio: Studio) -> None:
    # No browser needed: the routes, the page's security headers, and graphql-ws served by this server.
    root = httpx.get(studio.base_url + "/", follow_redirects=False)
    assert root.status_code == 302 and root.headers["location"] == "/studio"
    page = httpx.get(studio.base_url + "/studio")
    assert page.status_code == 200 and "script-src 'self'" in page.headers["content-security-policy"]
    assert (vendor_dir() / GRAPHQL_WS).is_file(), "graphql-ws is not installed: run scripts/install_graphiql_assets.sh"
    assert f'src="/static/vendor/{GRAPHQL_WS}" integrity="{GRAPHQL_WS_INTEGRITY}"' in page.text
    assert httpx.get(f"{studio.base_url}/static/vendor/{GRAPHQL_WS}").status_code == 200
    # The installer fetches and checks the very file the page names.
    package, path = GRAPHQL_WS.split("/", 1)
    assert f"{package} {path} {GRAPHQL_WS_INTEGRITY}" in (ROOT / "scripts" / "install_graphiql_assets.sh").read_text()


def test_a_link_with_the_key_fills_it_once_and_lists_the_agents(session: Session, studio: Studio) -> None:
    page = session.page
    page.goto(f"{studio.base_url}/#key={studio.key}")
    expect(page.get_by_test_id("agent-item")).to_have_count(3)
    # The key left the address bar and stays in the browser's storage.
    assert page.url == f"{studio.base_url}/studio"
    assert page.evaluate("Object.values(localStorage)") == [studio.key]
    expect(page.get_by_test_id("api-key")).to_have_value(studio.key)
    page.reload()
    expect(page.get_by_test_id("agent-item")).to_have_count(3)
    expect(page.get_by_test_id("agent-item").first).to_contain_text(DENTAL)
    expect(page.locator(".rules")).to_contain_text("A required data field left empty makes the conversation unsuccessful")
    expect(page.locator(".rules")).to_contain_text("Every rerun is charged, for every model")
    session.check()


DRAFT = "query($id: ID!) { agent(id: $id) { draft { revision analysisConfig { summaryPrompt successfulPrompt dataFields { name type choices required } } } } }"
SAVE = "mutation($id: ID!, $input: AnalysisConfigInput!) { updateDraftPrompts(agentId: $id, input: $input) { revision } }"


def test_editing_the_draft_shows_a_refused_field_where_it_is_saves_and_explains_a_stale_edit(session: Session, studio: Studio) -> None:
    page = session.page
    session.open_agent(studio.key, DENTAL)
    agent_id = studio.agent_id(DENTAL)
    revision = studio.gql(DRAFT, {"id": agent_id})["agent"]["draft"]["revision"]
    # The seeded draft's summary prompt is not the published one: both sides are marked.
    summary = page.locator('[data-pair="summaryPrompt"]')
    expect(summary.locator(".badge.diff")).to_have_text("differs from v2")

    page.get_by_test_id("summary-prompt").fill("Write a 1-3 word summary of the call.")
    expect(summary.locator(".badge.edited")).to_be_visible()
    page.get_by_test_id("add-field").click()
    card = page.get_by_test_id("data-field").last
    card.get_by_test_id("field-name").fill("callback_requested")
    card.get_by_test_id("field-type").select_option("ENUM")
    card.get_by_test_id("field-required").check()
    expect(card.locator(".badge.diff")).to_have_text("new in draft")
    page.get_by_test_id("save-draft").click()
    # An ENUM without choices: the server's message sits under the choices of that very field.
    error = card.get_by_test_id("field-error")
    expect(error).to_contain_text("needs a non-empty `choices` list")
    expect(card.get_by_test_id("field-choices")).to_have_attribute("aria-invalid", "true")
    session.shot("validation-error")
    assert studio.gql(DRAFT, {"id": agent_id})["agent"]["draft"]["revision"] == revision

    card.get_by_test_id("field-choices").fill("yes\nno\nlater")
    page.get_by_test_id("save-draft").click()
    expect(page.get_by_test_id("save-status")).to_have_text(f"Saved: draft v3 is now at revision {revision + 1}.")
    expect(page.get_by_test_id("field-error")).to_have_count(0)
    draft = studio.gql(DRAFT, {"id": agent_id})["agent"]["draft"]
    assert draft["revision"] == revision + 1
    assert draft["analysisConfig"]["summaryPrompt"] == "Write a 1-3 word summary of the call."
    assert {"name": "callback_requested", "type": "ENUM", "choices": ["yes", "no", "later"], "required": True} in draft["analysisConfig"]["dataFields"]
    page.get_by_test_id("summary-prompt").scroll_into_view_if_needed()
    session.shot("config")

    # Someone else saves meanwhile: this page's edit is refused and explained, and nothing of it is written.
    studio.gql(SAVE, {"id": agent_id, "input": {"successfulPrompt": "Successful if any appointment was made.",
                                                 "expectedRevision": revision + 1}})
    page.get_by_test_id("successful-prompt").fill("Successful if the caller booked and confirmed a time.")
    page.get_by_test_id("save-draft").click()
    conflict = page.get_by_test_id("conflict")
    expect(conflict).to_contain_text(f"You edited revision {revision + 1} of draft v3; it is now at revision {revision + 2}")
    assert studio.gql(DRAFT, {"id": agent_id})["agent"]["draft"]["analysisConfig"]["successfulPrompt"] == "Successful if any appointment was made."
    conflict.get_by_role("button", name="Show the current draft (drop my edits)").click()
    expect(page.get_by_test_id("successful-prompt")).to_have_value("Successful if any appointment was made.")
    expect(page.get_by_test_id("conflict")).to_have_count(0)
    session.check()


def test_a_preview_runs_the_draft_on_one_conversation_beside_its_current_result(session: Session, studio: Studio) -> None:
    page = session.page
    session.open_agent(studio.key, SOLAR)
    page.get_by_test_id("tab-conversations").click()
    row = page.get_by_test_id("conversation-row").filter(has_text="ENDED").first
    conversation_id = row.get_attribute("data-id")
    row.get_by_test_id("preview-button").click()
    compare = page.get_by_test_id("preview-compare")
    expect(compare).to_contain_text("Preview (draft v3, gemini-2.5-pro)")
    expect(compare).to_contain_text("Current (initial, v")
    # The test model's summary differs from the offline analyzer's: that row, and only changed rows, are marked.
    expect(compare.locator('tr[data-field="summary"]')).to_have_class("changed")
    expect(compare.locator("tr.changed .badge.diff").first).to_have_text("changed")
    expect(page.get_by_test_id("preview")).to_contain_text("every preview and rerun is charged")
    session.shot("preview")
    history = studio.gql("query($id: ID!) { call(id: $id) { analysis { trigger } analysisHistory { trigger } } }",
                         {"id": conversation_id})["call"]
    assert history["analysis"]["trigger"] == "INITIAL"
    assert "PREVIEW" in [result["trigger"] for result in history["analysisHistory"]]
    session.check()


# Every value the progress bar showed, recorded in the page as it changes.
RECORD_PROGRESS = """
window.progressSeen = [];
new MutationObserver((records) => {
  for (const record of records) window.progressSeen.push(Number(record.target.getAttribute("aria-valuenow")));
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["aria-valuenow"] });
"""

ITEMS = """query($id: ID!) { rerunJob(id: $id) { status total succeeded items(first: 100) {
  nodes { status result { successful } previousResult { successful } } } } }"""


def _flips(job: dict) -> int:
    return sum(1 for item in job["items"]["nodes"] if item["result"] and item["previousResult"]
               and item["result"]["successful"] != item["previousResult"]["successful"])


def _rerun(studio: Studio, **targets: Any) -> str:
    """Start a rerun through the API and wait until it has succeeded; its job id."""
    job_id = studio.gql("mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { job { id } } }",
                        {"input": targets})["rerunAnalysis"]["job"]["id"]
    deadline = time.monotonic() + 30
    while studio.gql(ITEMS, {"id": job_id})["rerunJob"]["status"] != "SUCCEEDED":
        assert time.monotonic() < deadline, "the rerun did not finish"
        time.sleep(0.1)
    return job_id


def test_a_rerun_is_estimated_capped_started_and_watched_live_to_its_end(session: Session, studio: Studio) -> None:
    page = session.page
    page.add_init_script(RECORD_PROGRESS)
    session.open_agent(studio.key, DENTAL)
    page.get_by_test_id("tab-rerun").click()
    page.locator('input[name="versions"][value="2"]').check()
    page.get_by_test_id("from-date").fill("2026-11-10")
    page.get_by_test_id("to-date").fill("2026-11-20")
    page.get_by_test_id("max-cost").fill("0.000001")
    page.get_by_test_id("estimate-button").click()
    expect(page.locator(".rerun .problem")).to_contain_text("Over your budget cap")
    expect(page.get_by_test_id("start-rerun")).to_be_disabled()

    page.get_by_test_id("max-cost").fill("5")
    page.get_by_test_id("estimate-button").click()
    estimate = page.get_by_test_id("estimate")
    expected = studio.gql("mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { estimate { conversations model configVersion } } }",
                          {"input": {"agentId": studio.agent_id(DENTAL), "dryRun": True, "filter": {
                              "versions": [2], "startedAfter": "2026-11-10T00:00:00Z", "startedBefore": "2026-11-21T00:00:00Z"}}})
    expected = expected["rerunAnalysis"]["estimate"]
    total = expected["conversations"]
    assert 5 <= total <= 100
    expect(page.get_by_test_id("estimate-conversations")).to_have_text(str(total))
    expect(estimate).to_contain_text(expected["model"])
    expect(estimate).to_contain_text(f"draft v{expected['configVersion']}")
    expect(page.locator(".rules-inline")).to_contain_text("Every rerun is charged, for every model")
    estimate.scroll_into_view_if_needed()
    session.shot("estimate")

    studio.gemini.delay_s = 0.15  # about ten items a second: long enough to see the bar move
    try:
        page.get_by_test_id("start-rerun").click()
        expect(page.get_by_test_id("rerun-status")).to_have_text("SUCCEEDED", timeout=60_000)
    finally:
        studio.gemini.delay_s = 0.05
    progress = page.get_by_test_id("rerun-progress")
    expect(progress).to_have_attribute("value", str(total))
    expect(progress).to_have_attribute("max", str(total))
    expect(page.get_by_test_id("rerun-item")).to_have_count(total)
    expect(page.get_by_test_id("count-succeeded")).to_have_text(str(total))
    # Watched live: the bar moved through values between empty and full as items finished.
    seen = page.evaluate("window.progressSeen")
    assert any(0 < value < total for value in seen), seen
    assert any(url.endswith("/graphql") and url.startswith("ws://") for url in session.sockets)

    job_id = re.search(r"job=([^&]+)", page.url).group(1)
    job = studio.gql(ITEMS, {"id": job_id})["rerunJob"]
    assert job["status"] == "SUCCEEDED" and job["total"] == total
    expect(page.get_by_test_id("flipped-count")).to_have_text(str(_flips(job)))
    first = page.get_by_test_id("rerun-item").first
    expect(first.locator(".change").first).to_be_visible()
    session.shot("rerun")
    session.check()


def test_a_rerun_of_ticked_conversations_is_canceled_while_it_runs(session: Session, studio: Studio) -> None:
    page = session.page
    session.open_agent(studio.key, BILLING)
    page.get_by_test_id("tab-conversations").click()
    expect(page.get_by_test_id("conversation-row")).to_have_count(25)
    # Chats still in progress can't be analyzed: they can't be ticked either.
    finished = page.get_by_test_id("conversation-tick").evaluate_all("boxes => boxes.filter(b => !b.disabled).length")
    assert 5 <= finished < 25
    page.get_by_role("button", name="Tick all shown").click()
    expect(page.get_by_test_id("ticked-count")).to_have_text(f"{finished} ticked")
    page.get_by_role("button", name="Rerun the ticked ones…").click()
    expect(page.get_by_test_id("target-ticked")).to_be_checked()
    page.get_by_test_id("estimate-button").click()
    expect(page.get_by_test_id("estimate-conversations")).to_have_text(str(finished))
    studio.gemini.delay_s = 1.0  # two at a time, a second each: the job runs for many seconds
    try:
        page.get_by_test_id("start-rerun").click()
        expect(page.get_by_test_id("count-succeeded")).not_to_have_text("0", timeout=20_000)
        expect(page.get_by_test_id("rerun-status")).to_have_text("RUNNING")
        session.shot("progress")
        page.get_by_test_id("cancel-rerun").click()
        expect(page.get_by_test_id("rerun-status")).to_have_text("CANCELED", timeout=20_000)
    finally:
        studio.gemini.delay_s = 0.05
    canceled = int(page.get_by_test_id("count-canceled").inner_text())
    assert canceled > 0
    progress = page.get_by_test_id("rerun-progress")
    expect(progress).to_have_attribute("value", progress.get_attribute("max"))
    expect(page.get_by_test_id("cancel-rerun")).to_be_hidden()
    page.get_by_test_id("item-filter").select_option("CANCELED")
    expect(page.get_by_test_id("rerun-item")).to_have_count(canceled)
    assert set(page.get_by_test_id("rerun-item").evaluate_all("rows => rows.map(r => r.dataset.status)")) == {"CANCELED"}
    session.check()


def test_past_reruns_of_an_agent_are_listed_and_one_opens_with_its_items_filtered(session: Session, studio: Studio) -> None:
    page = session.page
    agent_id = studio.agent_id(SOLAR)
    calls = studio.gql("query($id: ID!) { agent(id: $id) { calls(first: 3, filter: { status: [ENDED] }) { nodes { id } } } }",
                       {"id": agent_id})["agent"]["calls"]["nodes"]
    job_id = _rerun(studio, callIds=[c["id"] for c in calls])

    session.open_agent(studio.key, SOLAR)
    page.get_by_test_id("tab-reruns").click()
    row = page.locator(f'[data-testid="rerun-job"][data-id="{job_id}"]')
    expect(row).to_contain_text("SUCCEEDED")
    row.get_by_test_id("open-job").click()
    expect(page.get_by_test_id("rerun-status")).to_have_text("SUCCEEDED")
    expect(page.get_by_test_id("rerun-item")).to_have_count(3)
    page.get_by_test_id("item-filter").select_option("FAILED")
    expect(page.get_by_test_id("rerun-item")).to_have_count(0)
    expect(page.get_by_test_id("job")).to_contain_text("No failed items")
    page.get_by_test_id("item-filter").select_option("SUCCEEDED")
    expect(page.get_by_test_id("rerun-item")).to_have_count(3)
    # The address remembers the opened job: a reload comes back to it.
    page.reload()
    expect(page.get_by_test_id("rerun-status")).to_have_text("SUCCEEDED")
    expect(page.get_by_test_id("job")).to_contain_text(job_id)
    session.check()


def test_without_graphql_ws_a_running_rerun_is_followed_by_polling(session: Session, studio: Studio) -> None:
    page = session.page
    # As when setup could not install graphql-ws: its browser build loads but can't define its global.
    page.add_init_script("Object.defineProperty(window, 'graphqlWs', { value: undefined, writable: false });")
    page.add_init_script(RECORD_PROGRESS)
    agent_id = studio.agent_id(SOLAR)
    calls = studio.gql("query($id: ID!) { agent(id: $id) { calls(first: 6, filter: { status: [ENDED] }) { nodes { id } } } }",
                       {"id": agent_id})["agent"]["calls"]["nodes"]
    studio.gemini.delay_s = 1.0  # six items, two at a time: about three seconds
    try:
        job_id = studio.gql("mutation($ids: [ID!]) { rerunAnalysis(input: { callIds: $ids }) { job { id } } }",
                            {"ids": [c["id"] for c in calls]})["rerunAnalysis"]["job"]["id"]
        page.goto(f"{studio.base_url}/studio#key={studio.key}")
        expect(page.get_by_test_id("agent-item")).to_have_count(3)
        page.goto(f"{studio.base_url}/studio#agent={agent_id}&job={job_id}")
        expect(page.get_by_test_id("progress-feed")).to_contain_text("Polling every second")
        expect(page.get_by_test_id("rerun-status")).to_have_text("SUCCEEDED", timeout=20_000)
    finally:
        studio.gemini.delay_s = 0.05
    expect(page.get_by_test_id("rerun-item")).to_have_count(6)
    seen = page.evaluate("window.progressSeen")
    assert any(0 < value < 6 for value in seen), seen
    assert session.sockets == []
    session.check()


# The checklist the rubric tests judge SunPeak's calls by.
CHECKLIST = [{"name": "booked", "prompt": "A consultation was booked with a date and time."},
             {"name": "homeowner", "prompt": "The caller said they own the home."}]
# Words no transcript has: a reason quoting them is not grounded, and the studio says so.
RENTS, OWNS = "We just rent the place.", "Yes, we own the house outright."
RUBRIC = "query($id: ID!) { agent(id: $id) { draft { revision analysisConfig { successfulPrompt rationale successRubric { type threshold criteria { name prompt } } } } } }"
COMMON_WORDS = {"the", "and", "was", "with", "they", "said", "caller", "agent", "user"}


def _words(text: str) -> set[str]:
    return {word for word in re.findall(r"[a-z]+", text.lower()) if len(word) > 2} - COMMON_WORDS


def reasoning_model(unmet: tuple[str, ...] = (), invented: dict[str, str] | None = None) -> Callable[[RecordedRequest], dict]:
    """The test model, answering rubrics with reasons: every checklist criterion met but the `unmet` ones. A reason
    quotes the caller's answer to the agent's line nearest its topic, with its turn; an `invented` one quotes words
    that are not in the transcript."""
    invented = invented or {}

    def respond(request: RecordedRequest) -> dict:
        answer = example_from_schema(request.response_schema, request.contents)
        turns = [line.partition(": ")[::2] for line in request.contents.splitlines()]
        schema = request.response_schema["properties"]
        criteria = schema.get("evaluation", {}).get("properties", {}).get("criteria", {}).get("properties", {})
        topics = {name: prop.get("description", "") for name, prop in {**schema, **criteria}.items()}
        for name in answer.get("evaluation", {}).get("criteria", {}):
            answer["evaluation"]["criteria"][name] = "FAILURE" if name in unmet else "SUCCESS"
        reasons = answer.get("rationale", {})
        for group in (reasons, reasons.get("criteria", {})):
            for name in [name for name in group if name not in ("criteria", "custom_data")]:
                words = _words(topics.get(name, name))
                asked = max(range(len(turns)), key=lambda i: len(words & _words(turns[i][1])) if turns[i][0] == "Agent" else -1)
                turn = next((i + 1 for i in range(asked, len(turns)) if turns[i][0] == "User"), None)
                quote = invented.get(name, turns[turn - 1][1] if turn else None)
                group[name] = {"reason": f"Going by what the caller says at turn {turn}.", "quote": quote, "turn": turn}
        return answer

    return respond


def test_a_checklist_rubric_is_edited_refused_at_its_criterion_saved_and_previewed_with_its_reasons(session: Session, studio: Studio) -> None:
    page = session.page
    agent_id = studio.agent_id(SOLAR)
    # From the yes/no prompt, whatever ran before.
    studio.gql(SAVE, {"id": agent_id, "input": {"successRubric": None, "rationale": "NONE"}})
    revision = studio.gql(RUBRIC, {"id": agent_id})["agent"]["draft"]["revision"]
    session.open_agent(studio.key, SOLAR)
    rubric = page.locator('[data-pair="successRubric"]')
    expect(page.get_by_test_id("published-rubric")).to_contain_text("Yes / no: the successful prompt")
    page.get_by_test_id("rubric-type").select_option("CHECKLIST")
    criteria = page.get_by_test_id("criterion")
    expect(criteria).to_have_count(1)
    criteria.nth(0).get_by_test_id("criterion-name").fill("booked")
    criteria.nth(0).get_by_test_id("criterion-prompt").fill(CHECKLIST[0]["prompt"])
    page.get_by_test_id("add-criterion").click()
    criteria.nth(1).get_by_test_id("criterion-name").fill("booked")
    criteria.nth(1).get_by_test_id("criterion-prompt").fill(CHECKLIST[1]["prompt"])
    # The checklist's default threshold is every criterion; the rationale's cost is said where it is chosen.
    expect(page.get_by_test_id("rubric-threshold")).to_have_attribute("placeholder", "all (2)")
    page.get_by_test_id("rationale").select_option("EVALUATIONS")
    expect(page.get_by_test_id("rationale-cost")).to_contain_text("Reasons cost more output tokens")
    expect(rubric.locator(".badge.diff").first).to_have_text("differs from v2")
    expect(criteria.nth(1).locator(".badge.diff")).to_have_text("new in draft")

    # Two criteria named alike: the server's message sits under the second one's name, and nothing is saved.
    page.get_by_test_id("save-draft").click()
    expect(criteria.nth(1).get_by_test_id("field-error")).to_contain_text("'booked' is used twice")
    expect(criteria.nth(1).get_by_test_id("criterion-name")).to_have_attribute("aria-invalid", "true")
    expect(criteria.nth(0).get_by_test_id("field-error")).to_have_count(0)
    assert studio.gql(RUBRIC, {"id": agent_id})["agent"]["draft"]["revision"] == revision

    criteria.nth(1).get_by_test_id("criterion-name").fill("homeowner")
    page.get_by_test_id("save-draft").click()
    expect(page.get_by_test_id("save-status")).to_have_text(f"Saved: draft v3 is now at revision {revision + 1}.")
    expect(page.get_by_test_id("field-error")).to_have_count(0)
    config = studio.gql(RUBRIC, {"id": agent_id})["agent"]["draft"]["analysisConfig"]
    assert config["successRubric"] == {"type": "CHECKLIST", "threshold": None, "criteria": CHECKLIST}
    assert config["rationale"] == "EVALUATIONS"
    rubric.evaluate("pair => pair.scrollIntoView({ block: 'start' })")
    session.shot("rubric")

    studio.gemini.responder = reasoning_model(unmet=("homeowner",), invented={"homeowner": RENTS})
    try:
        page.get_by_test_id("tab-conversations").click()
        row = page.get_by_test_id("conversation-row").filter(has_text="ENDED").first
        call_id = row.get_attribute("data-id")
        row.get_by_test_id("preview-button").click()
        evaluation = page.get_by_test_id("preview-compare").locator('tr[data-field="evaluation"] td').last
        expect(evaluation.get_by_test_id("evaluation-score")).to_have_text("Checklist: 1 of 2 criteria met · needs 2 of 2")
    finally:
        studio.gemini.responder = None
    expect(page.get_by_test_id("preview-compare").locator('tr[data-field="successful"] td').last).to_have_text("no")
    preview = studio.gql("query($id: ID!) { call(id: $id) { analysisHistory { trigger rationale { output quote turn quoteFound } } } }",
                         {"id": call_id})["call"]["analysisHistory"][0]
    assert preview["trigger"] == "PREVIEW"
    reasons = {r["output"]: r for r in preview["rationale"]}
    booked = evaluation.locator('[data-criterion="booked"]')
    expect(booked).to_have_attribute("data-verdict", "SUCCESS")
    expect(booked.get_by_test_id("rationale-quote")).to_have_text(reasons["criterion.booked"]["quote"])
    expect(booked.get_by_test_id("rationale-turn")).to_have_text(f" turn {reasons['criterion.booked']['turn']}")
    expect(booked.get_by_test_id("quote-not-found")).to_have_count(0)
    # A reason whose quote is not in the transcript is flagged where it is shown.
    homeowner = evaluation.locator('[data-criterion="homeowner"]')
    expect(homeowner).to_have_attribute("data-verdict", "FAILURE")
    expect(homeowner.get_by_test_id("rationale-quote")).to_have_text(RENTS)
    assert reasons["criterion.homeowner"]["quoteFound"] is False
    expect(homeowner.get_by_test_id("quote-not-found")).to_be_visible()
    sentiment = page.get_by_test_id("preview-compare").locator('tr[data-field="userSentiment"] td').last
    expect(sentiment.get_by_test_id("rationale-quote")).to_have_text(reasons["userSentiment"]["quote"])
    session.check()


def test_an_only_changed_batch_rerun_shows_what_it_skipped_what_each_item_recomputed_and_why_outcomes_flipped(session: Session, studio: Studio) -> None:
    page = session.page
    agent_id = studio.agent_id(SOLAR)
    ids = [c["id"] for c in studio.gql("query($id: ID!) { agent(id: $id) { calls(first: 4, filter: { status: [ENDED] }) { nodes { id } } } }",
                                       {"id": agent_id})["agent"]["calls"]["nodes"]]
    recomputed, skipped = ids[:2], ids[2:]
    # All four get a current result from a checklist where one criterion met is a success: the homeowner one, met on
    # words the caller never said. Then only the success prompt changes, and two of them are rerun for it already:
    # nothing is left to recompute for those.
    rubric = {"type": "CHECKLIST", "threshold": 1, "criteria": CHECKLIST}
    studio.gql(SAVE, {"id": agent_id, "input": {"successRubric": rubric, "rationale": "EVALUATIONS"}})
    studio.gemini.responder = reasoning_model(unmet=("booked",), invented={"homeowner": OWNS})
    try:
        _rerun(studio, callIds=ids)
        prompt = studio.gql(RUBRIC, {"id": agent_id})["agent"]["draft"]["analysisConfig"]["successfulPrompt"]
        studio.gql(SAVE, {"id": agent_id, "input": {"successfulPrompt": prompt + " A homeowner must say so."}})
        studio.gemini.responder = reasoning_model(unmet=("booked", "homeowner"))
        _rerun(studio, callIds=skipped, onlyChanged=True)

        session.open_agent(studio.key, SOLAR)
        page.get_by_test_id("tab-conversations").click()
        for call_id in ids:
            page.locator(f'[data-testid="conversation-row"][data-id="{call_id}"]').get_by_test_id("conversation-tick").check()
        page.get_by_role("button", name="Rerun the ticked ones…").click()
        page.get_by_test_id("only-changed").check()
        page.get_by_test_id("batch-mode").check()
        page.get_by_test_id("estimate-button").click()
        expect(page.get_by_test_id("estimate-conversations")).to_have_text("2")
        expect(page.get_by_test_id("estimate-skipped")).to_contain_text("2 with nothing to recompute")
        expect(page.get_by_test_id("estimate-mode")).to_contain_text("batch")
        # Priced at the batch price: half the interactive estimate of the same rerun.
        dry = "mutation($input: RerunAnalysisInput!) { rerunAnalysis(input: $input) { estimate { costUsd } } }"
        costs = {mode: Decimal(studio.gql(dry, {"input": {"callIds": ids, "onlyChanged": True, "dryRun": True, "mode": mode}})
                               ["rerunAnalysis"]["estimate"]["costUsd"]) for mode in ("INTERACTIVE", "BATCH")}
        assert 0 < costs["BATCH"] and abs(costs["INTERACTIVE"] - 2 * costs["BATCH"]) <= Decimal("0.00000001")
        expect(page.get_by_test_id("estimate-cost").locator(".money")).to_have_attribute("title", f"${costs['BATCH']} exactly")
        expect(page.get_by_test_id("estimate-cost")).to_contain_text("at the batch price")
        page.get_by_test_id("start-rerun").click()
        expect(page.get_by_test_id("rerun-status")).to_have_text("SUCCEEDED", timeout=30_000)
    finally:
        studio.gemini.responder = None
    expect(page.get_by_test_id("job-mode")).to_contain_text("batch")
    expect(page.get_by_test_id("count-skipped")).to_contain_text("2")
    expect(page.get_by_test_id("batch")).to_have_count(1)
    expect(page.get_by_test_id("batch-state")).to_have_text("SUCCEEDED")
    job_id = re.search(r"job=([^&]+)", page.url).group(1)
    job = studio.gql("query($id: ID!) { rerunJob(id: $id) { mode skipped items { nodes { conversationId outputs } } } }",
                     {"id": job_id})["rerunJob"]
    assert job["mode"] == "BATCH" and job["skipped"] == 2
    assert {item["conversationId"]: item["outputs"] for item in job["items"]["nodes"]} == {i: ["successful"] for i in recomputed}
    items = page.get_by_test_id("rerun-item")
    expect(items).to_have_count(2)
    expect(items.get_by_test_id("item-outputs")).to_have_text(["successful", "successful"])
    # Both outcomes flipped: the homeowner criterion is now unmet, on the caller's words, where the old answer
    # rested on words the transcript lacks.
    expect(page.get_by_test_id("flipped-count")).to_have_text("2")
    first = items.first
    expect(first.get_by_test_id("item-evaluation").locator("del")).to_have_text("1 of 2 criteria met · needs 1 of 2")
    expect(first.get_by_test_id("item-evaluation").locator("ins")).to_have_text("0 of 2 criteria met · needs 1 of 2")
    first.get_by_test_id("item-why").click()
    detail = page.get_by_test_id("item-compare")
    before, after = (detail.locator('tr[data-field="evaluation"] td').nth(i) for i in (0, 1))
    old, new = before.locator('[data-criterion="homeowner"]'), after.locator('[data-criterion="homeowner"]')
    expect(old).to_have_attribute("data-verdict", "SUCCESS")
    expect(old.get_by_test_id("rationale-quote")).to_have_text(OWNS)
    expect(old.get_by_test_id("quote-not-found")).to_be_visible()
    expect(new).to_have_attribute("data-verdict", "FAILURE")
    expect(new.get_by_test_id("rationale-turn")).to_contain_text("turn")
    expect(new.get_by_test_id("quote-not-found")).to_have_count(0)
    # Only `successful` was asked again: the summary is carried over from the result it replaces.
    expect(detail.locator('tr[data-field="summary"] td').last.locator(".badge.carried")).to_have_text("carried over")
    expect(detail.locator('tr[data-field="successful"] td').last.locator(".badge.carried")).to_have_count(0)
    first.evaluate("row => row.scrollIntoView({ block: 'start' })")
    session.shot("rationale")
    session.check()
