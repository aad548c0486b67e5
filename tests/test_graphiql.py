"""Offline GraphiQL page: template rewriting, static route and the asset installer."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.testclient import TestClient

from graphql_api import graphiql
from graphql_api.graphiql import render_graphiql, static_route, vendor_dir, wants_graphiql

ROOT = Path(__file__).resolve().parents[1]
INSTALLER = ROOT / "scripts" / "install_graphiql_assets.sh"

CDN = "https://unpkg.com/"
REACT = "react@18.2.0/umd/react.production.min.js"
REACT_DOM = "react-dom@18.2.0/umd/react-dom.production.min.js"
COOKIE = "js-cookie@3.0.5/dist/js.cookie.min.js"
GRAPHIQL_JS = "graphiql@3.8.3/graphiql.min.js"
GRAPHIQL_CSS = "graphiql@3.8.3/graphiql.min.css"
EXPLORER_JS = "@graphiql/plugin-explorer@1.0.2/dist/index.umd.js"
EXPLORER_CSS = "@graphiql/plugin-explorer@1.0.2/dist/style.css"
SCRIPTS_IN_ORDER = [REACT, REACT_DOM, COOKIE, GRAPHIQL_JS, EXPLORER_JS]


def _vendor(tmp_path: Path, *files: str) -> Path:
    vendor = tmp_path / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    for rel in files:
        path = vendor / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("/* stub */")
    return vendor


def _loader_assets(page: str) -> list[dict]:
    match = re.search(r"var assets = (\[.*?\]);\n", page)
    assert match, "script loader not found"
    return json.loads(match.group(1))


def _link_tag(page: str, href: str) -> str:
    match = re.search(r'<link\b[^>]*href="' + re.escape(href) + r'"[^>]*>', page, re.S)
    assert match, f"no <link> with href={href}"
    return match.group(0)


def _template_urls() -> list[str]:
    return re.findall(r'(?:src|href)="(https://unpkg\.com/[^"]+)"', graphiql._template())


def test_template_is_the_one_this_module_targets():
    urls = _template_urls()
    assert [CDN + rel for rel in SCRIPTS_IN_ORDER] == [u for u in urls if u.endswith(".js")]
    assert {CDN + GRAPHIQL_CSS, CDN + EXPLORER_CSS} == {u for u in urls if u.endswith(".css")}


def test_local_files_are_used_and_missing_ones_come_from_cdn(tmp_path):
    vendor = _vendor(tmp_path, REACT, GRAPHIQL_JS, GRAPHIQL_CSS)
    page = render_graphiql(vendor_dir=vendor, static_prefix="/assets/vendor/")

    assets = _loader_assets(page)
    assert [a["cdn"] for a in assets] == [CDN + rel for rel in SCRIPTS_IN_ORDER]  # execution order kept
    local = {a["cdn"][len(CDN) :]: a["local"] for a in assets}
    assert local == {
        REACT: "/assets/vendor/" + REACT,
        REACT_DOM: None,
        COOKIE: None,
        GRAPHIQL_JS: "/assets/vendor/" + GRAPHIQL_JS,
        EXPLORER_JS: None,
    }
    assert all(a["integrity"].startswith("sha384-") for a in assets)

    # No external <script src> tags are left: the loader loads them all, in order.
    assert not re.search(r"<script\b[^>]*\bsrc=", page)
    # The page's own script waits for the loader.
    assert page.count('<script type="text/x-graphiql-deferred">') == 1
    assert "GraphiQL.createFetcher" in page.split('<script type="text/x-graphiql-deferred">', 1)[1]

    # CSS: local with CDN fallback, or CDN as in the original template.
    css = _link_tag(page, "/assets/vendor/" + GRAPHIQL_CSS)
    assert "onerror=" in css and CDN + GRAPHIQL_CSS in css.replace("&quot;", '"')
    assert 'integrity="sha384-' in css
    explorer_css = _link_tag(page, CDN + EXPLORER_CSS)
    assert "onerror" not in explorer_css


def test_cdn_fallback_for_local_scripts(tmp_path):
    page = render_graphiql(vendor_dir=_vendor(tmp_path, *SCRIPTS_IN_ORDER))
    assets = _loader_assets(page)
    assert all(a["local"] == "/static/vendor/" + a["cdn"][len(CDN) :] for a in assets)
    # On error the loader retries the same asset from the CDN before moving on.
    assert "var urls = asset.local ? [asset.local, asset.cdn] : [asset.cdn];" in page
    assert "attempt(n + 1)" in page


def test_everything_from_cdn_when_nothing_is_installed(tmp_path):
    page = render_graphiql(vendor_dir=tmp_path / "missing")
    assert all(a["local"] is None for a in _loader_assets(page))
    assert "/static/vendor" not in page
    for rel in (GRAPHIQL_CSS, EXPLORER_CSS):
        assert "onerror" not in _link_tag(page, CDN + rel)


def test_header_editor_prefilled_with_authorization(tmp_path):
    page = render_graphiql(vendor_dir=tmp_path)
    match = re.search(r"^\s*defaultHeaders: (\".*\"),$", page, re.M)
    assert match
    headers = json.loads(json.loads(match.group(1)))
    assert headers == {"Authorization": "Bearer <paste your API key>"}
    assert "<paste" not in match.group(1)  # escaped inside the inline script
    assert re.search(r"^\s*isHeadersEditorEnabled: true,$", page, re.M)
    assert re.search(r"^\s*shouldPersistHeaders: true,$", page, re.M)
    assert re.search(r'^\s*defaultEditorToolsVisibility: "headers",$', page, re.M)
    assert page.count("defaultEditorToolsVisibility:") == 1

    custom = render_graphiql(vendor_dir=tmp_path, default_headers={"X-Api-Key": "k"})
    assert '\\"X-Api-Key\\": \\"k\\"' in custom


def test_no_template_placeholders_left(tmp_path):
    page = render_graphiql(vendor_dir=_vendor(tmp_path, REACT))
    assert "{{" not in page and "}}" not in page


def test_subscriptions(tmp_path):
    enabled = render_graphiql(vendor_dir=tmp_path)
    assert re.search(r"createFetcher\(\{[^}]*\bsubscriptionUrl,", enabled)
    disabled = render_graphiql(vendor_dir=tmp_path, subscription_enabled=False)
    assert re.search(r"createFetcher\(\{[^}]*\bsubscriptionUrl: undefined,", disabled)


def test_subscription_placeholder_of_older_templates(tmp_path, monkeypatch):
    monkeypatch.setattr(graphiql, "_template", lambda: "<script>const s = {{ SUBSCRIPTION_ENABLED }};</script>")
    assert "const s = false;" in render_graphiql(vendor_dir=tmp_path, subscription_enabled=False)
    assert "const s = true;" in render_graphiql(vendor_dir=tmp_path)


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed")
def test_inline_scripts_are_valid_javascript(tmp_path):
    page = render_graphiql(vendor_dir=_vendor(tmp_path, REACT))
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", page, re.S)
    assert len(scripts) == 2
    for i, body in enumerate(scripts):
        path = tmp_path / f"inline{i}.js"
        path.write_text(body)
        subprocess.run(["node", "--check", str(path)], check=True)


def test_static_route_serves_vendor_files(tmp_path):
    static = tmp_path / "static"
    _vendor(static, REACT)
    app = Starlette(routes=[static_route(directory=static)])
    with TestClient(app) as client:
        response = client.get("/static/vendor/" + REACT)
        assert response.status_code == 200
        assert response.text == "/* stub */"
        assert client.get("/static/vendor/" + REACT_DOM).status_code == 404

    missing = Starlette(routes=[static_route(directory=tmp_path / "nope")])
    with TestClient(missing) as client:
        assert client.get("/static/vendor/" + REACT).status_code == 404


def test_vendor_dir_location():
    assert vendor_dir() == ROOT / "graphql_api" / "static" / "vendor"


def _request(method: str = "GET", accept: str = "", query: str = "") -> Request:
    return Request(
        {
            "type": "http",
            "method": method,
            "path": "/graphql",
            "query_string": query.encode(),
            "headers": [(b"accept", accept.encode())] if accept else [],
        }
    )


def test_wants_graphiql():
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert wants_graphiql(_request(accept=browser))
    assert not wants_graphiql(_request(accept=browser, query="query=%7B__typename%7D"))
    assert not wants_graphiql(_request(accept="application/json"))
    assert not wants_graphiql(_request())
    assert not wants_graphiql(_request("POST", accept=browser))


# --- installer --------------------------------------------------------------


def _run_installer(vendor: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALLER)],
        env={**os.environ, "GRAPHIQL_VENDOR_DIR": str(vendor), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_installer_without_npm_warns_and_succeeds(tmp_path):
    result = _run_installer(tmp_path / "vendor", NPM=str(tmp_path / "no-such-npm"))
    assert result.returncode == 0
    assert "npm not found" in result.stderr and "CDN" in result.stderr


def test_installer_with_failing_npm_warns_and_succeeds(tmp_path):
    fake = tmp_path / "npm"
    fake.write_text("#!/bin/sh\necho 'npm error network request failed' >&2\nexit 1\n")
    fake.chmod(0o755)
    result = _run_installer(tmp_path / "vendor", NPM=str(fake))
    assert result.returncode == 0
    assert "could not fetch" in result.stderr and "CDN" in result.stderr
    assert not (tmp_path / "vendor" / ".installed").exists()


@pytest.mark.skipif(shutil.which("npm") is None, reason="npm not installed")
def test_installer_twice_is_a_noop(tmp_path):
    vendor = tmp_path / "vendor"
    first = _run_installer(vendor)
    assert first.returncode == 0, first.stderr
    if not (vendor / ".installed").exists():
        pytest.skip(f"npm registry unreachable: {first.stderr.strip()}")
    files = {rel: vendor / rel for rel in [*SCRIPTS_IN_ORDER, GRAPHIQL_CSS, EXPLORER_CSS]}
    assert all(path.is_file() for path in files.values())
    assert "WARNING" not in first.stderr  # includes: every SRI hash matched
    mtimes = {rel: path.stat().st_mtime_ns for rel, path in files.items()}

    started = time.monotonic()
    second = _run_installer(vendor)
    assert second.returncode == 0, second.stderr
    assert "already installed" in second.stdout
    assert time.monotonic() - started < 10
    assert {rel: path.stat().st_mtime_ns for rel, path in files.items()} == mtimes

    page = render_graphiql(vendor_dir=vendor)
    assert all(a["local"] for a in _loader_assets(page))


def test_installed_assets_match_template_integrity():
    """The real vendor dir (when installed) holds byte-identical copies of the CDN files."""
    template = graphiql._template()
    tags = re.findall(r'(?:src|href)="https://unpkg\.com/([^"]+)"\s+integrity="([^"]+)"', template)
    assert len(tags) == 7
    installed = [(rel, sri) for rel, sri in tags if (vendor_dir() / rel).is_file()]
    if not installed:
        pytest.skip("GraphiQL assets not installed (run scripts/install_graphiql_assets.sh)")
    for rel, sri in installed:
        digest = hashlib.sha384((vendor_dir() / rel).read_bytes()).digest()
        assert "sha384-" + base64.b64encode(digest).decode() == sri, rel


def test_the_editor_starts_on_a_query_of_this_api(tmp_path):
    from graphql_api.graphiql import DEFAULT_QUERY

    html = render_graphiql(vendor_dir=tmp_path)
    assert "parameters.q || EXAMPLE_QUERY" not in html
    assert "query Overview" in html and "calls(first: 5)" in DEFAULT_QUERY
