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
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
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
        env = {"GEMINI_API_KEY": "test-key", "GEMINI_BASE_URL": gemini.base_url, "GEMINI_RETRY_BASE_DELAY_S": "0.05",
               "ANALYSIS_CONCURRENCY": "2"}
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
