"""GraphiQL page that works offline.

Strawberry's ``graphiql.html`` loads React, js-cookie, GraphiQL and the explorer
plugin from unpkg.com. ``scripts/install_graphiql_assets.sh`` copies those exact
files (fetched with npm) to ``graphql_api/static/vendor/<package>@<version>/<path>``,
mirroring the unpkg URL layout. :func:`render_graphiql` rewrites the template so
every asset that exists locally is served by this server, keeping the CDN as a
fallback, and assets that are missing locally load from the CDN as before:

* stylesheets: the ``<link>`` points at the local file; ``onerror`` swaps its
  ``href`` to the CDN URL;
* scripts: the external ``<script>`` tags are replaced by a small inline loader
  that loads them one after another (preserving React -> ReactDOM -> GraphiQL
  order), each from the local copy first and from the CDN if that fails; the
  page's own inline script runs once all of them are loaded.

The SRI ``integrity`` hashes from the template are kept for local and CDN copies
alike, so a local file that is not byte-identical to the published one is
rejected by the browser and the CDN copy is used instead.

The header editor is enabled and opened, prefilled with an ``Authorization``
header to paste the API key into.
"""

from __future__ import annotations

import html as html_lib
import json
import re
from collections.abc import Mapping
from functools import lru_cache
from importlib import resources
from pathlib import Path

from starlette.requests import Request
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
import structlog

logger = structlog.stdlib.get_logger(__name__)

__all__ = [
    "CDN_PREFIX",
    "DEFAULT_HEADERS",
    "render_graphiql",
    "static_dir",
    "static_route",
    "vendor_dir",
    "wants_graphiql",
]

CDN_PREFIX = "https://unpkg.com/"
STATIC_MOUNT = "/static"
DEFAULT_STATIC_PREFIX = "/static/vendor"
DEFAULT_HEADERS: Mapping[str, str] = {"Authorization": "Bearer <paste your API key>"}

# Deferred inline scripts get this type so the browser does not run them at parse time.
_DEFERRED_TYPE = "text/x-graphiql-deferred"

# Attributes may be quoted values containing ">" (e.g. the inline SVG favicon).
_TAG_ATTRS = r"""(?:[^>"']|"[^"]*"|'[^']*')*"""
_SCRIPT_RE = re.compile(rf"<script\b(?P<attrs>{_TAG_ATTRS})>(?P<body>.*?)</script\s*>", re.S | re.I)
_LINK_RE = re.compile(rf"<link\b{_TAG_ATTRS}>", re.S | re.I)
_ATTR_RE = r'\b{name}\s*=\s*"(?P<value>[^"]*)"'
_PLACEHOLDER_RE = re.compile(r"\{\{\s*[A-Z_]+\s*\}\}")


def static_dir() -> Path:
    """``graphql_api/static``: served under ``/static`` by :func:`static_route`."""
    return Path(__file__).resolve().parent / "static"


def vendor_dir() -> Path:
    """``graphql_api/static/vendor``: where the installer puts the GraphiQL assets."""
    return static_dir() / "vendor"


class _LenientStaticFiles(StaticFiles):
    """StaticFiles that answers 404 (instead of raising) while the directory is missing."""

    async def check_config(self) -> None:
        if self.directory is not None and not Path(self.directory).is_dir():
            return
        await super().check_config()


def static_route(path: str = STATIC_MOUNT, directory: Path | None = None) -> Mount:
    """Starlette route serving ``graphql_api/static`` (hence the vendored GraphiQL
    assets under ``/static/vendor/...``). Works before the assets are installed."""
    directory = static_dir() if directory is None else directory
    return Mount(path, app=_LenientStaticFiles(directory=directory, check_dir=False), name="static")


def wants_graphiql(request: Request) -> bool:
    """True for a browser navigating to the endpoint: a GET that accepts HTML and
    carries no ``query`` parameter (a GET with ``?query=`` is a GraphQL request)."""
    return (
        request.method == "GET"
        and "text/html" in request.headers.get("accept", "")
        and "query" not in request.query_params
    )


@lru_cache(maxsize=1)
def _template() -> str:
    """Strawberry's GraphiQL page, read from the installed package."""
    try:
        from strawberry.http.ides import get_graphql_ide_html
    except ImportError:  # older/newer strawberry without the helper
        return (resources.files("strawberry") / "static" / "graphiql.html").read_text("utf-8")
    return get_graphql_ide_html("graphiql")


def _attr(tag: str, name: str) -> str | None:
    match = re.search(_ATTR_RE.format(name=name), tag, re.I)
    return html_lib.unescape(match.group("value")) if match else None


def _local_url(cdn_url: str, vendor: Path, static_prefix: str) -> str | None:
    """Local URL for a CDN URL when its file is installed in ``vendor``."""
    if not cdn_url.startswith(CDN_PREFIX):
        return None
    rel = cdn_url[len(CDN_PREFIX) :].split("?", 1)[0].split("#", 1)[0]
    parts = rel.split("/")
    if not rel or any(part in ("", ".", "..") for part in parts):
        return None
    if not vendor.joinpath(*parts).is_file():
        return None
    return static_prefix.rstrip("/") + "/" + rel


def _js(value: object) -> str:
    """JSON literal that is safe inside an inline <script>."""
    return (
        json.dumps(value)
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


_LOADER_JS = """
(function () {
  var assets = %(assets)s;
  var deferredType = %(deferred_type)s;

  function runDeferred() {
    var nodes = document.querySelectorAll('script[type="' + deferredType + '"]');
    for (var i = 0; i < nodes.length; i++) {
      var script = document.createElement("script");
      script.text = nodes[i].text;
      nodes[i].parentNode.replaceChild(script, nodes[i]);
    }
  }

  function whenParsed(callback) {
    if (document.readyState === "loading") {
      document.addEventListener("DOMContentLoaded", callback);
    } else {
      callback();
    }
  }

  function load(index) {
    if (index >= assets.length) {
      whenParsed(runDeferred);
      return;
    }
    var asset = assets[index];
    var urls = asset.local ? [asset.local, asset.cdn] : [asset.cdn];
    (function attempt(n) {
      var script = document.createElement("script");
      script.src = urls[n];
      script.async = false;
      script.crossOrigin = "anonymous";
      if (asset.integrity) script.integrity = asset.integrity;
      script.onload = function () {
        load(index + 1);
      };
      script.onerror = function () {
        if (n + 1 < urls.length) {
          console.warn("GraphiQL: " + urls[n] + " failed to load, trying " + urls[n + 1]);
          attempt(n + 1);
          return;
        }
        whenParsed(function () {
          var root = document.getElementById("graphiql");
          if (root) root.textContent = "Could not load " + urls.join(" or ");
        });
      };
      document.head.appendChild(script);
    })(0);
  }

  load(0);
})();
"""


def _rewrite_links(page: str, vendor: Path, static_prefix: str) -> str:
    def replace(match: re.Match[str]) -> str:
        tag = match.group(0)
        href = _attr(tag, "href")
        local = _local_url(href, vendor, static_prefix) if href else None
        if local is None:
            return tag
        new = re.sub(_ATTR_RE.format(name="href"), lambda _: f'href="{html_lib.escape(local)}"', tag, count=1)
        onerror = f"this.onerror=null;this.href={json.dumps(href)};"
        end = "/>" if new.rstrip().endswith("/>") else ">"
        body = new.rstrip()[: -len(end)].rstrip()
        return f'{body}\n      onerror="{html_lib.escape(onerror)}"\n    {end}'

    return _LINK_RE.sub(replace, page)


def _rewrite_scripts(page: str, vendor: Path, static_prefix: str) -> str:
    """Replace CDN <script src> tags by the sequential loader; defer later inline scripts."""
    assets: list[dict[str, str | None]] = []
    first_external: int | None = None
    pieces: list[str] = []
    pos = 0
    for match in _SCRIPT_RE.finditer(page):
        attrs = match.group("attrs")
        src = _attr(attrs, "src")
        pieces.append(page[pos : match.start()])
        pos = match.end()
        if src is not None and src.startswith(CDN_PREFIX):
            assets.append(
                {
                    "cdn": src,
                    "local": _local_url(src, vendor, static_prefix),
                    "integrity": _attr(attrs, "integrity"),
                }
            )
            if first_external is None:
                first_external = len(pieces)
                pieces.append("")  # placeholder for the loader
        elif src is None and first_external is not None and _attr(attrs, "type") is None:
            pieces.append(f'<script type="{_DEFERRED_TYPE}">{match.group("body")}</script>')
        else:
            pieces.append(match.group(0))
    pieces.append(page[pos:])
    if first_external is None:
        return page
    loader = _LOADER_JS % {"assets": _js(assets), "deferred_type": _js(_DEFERRED_TYPE)}
    pieces[first_external] = f"<script>{loader}</script>"
    return "".join(pieces)


def _set_graphiql_props(page: str, props: Mapping[str, str]) -> str:
    """Set (replace or add) props of the ``React.createElement(GraphiQL, {...})`` call."""
    anchor = re.search(r"React\.createElement\(\s*GraphiQL\s*,\s*\{", page)
    if anchor is None:
        logger.warning("graphiql_template_changed", props_not_set=",".join(props))
        return page
    end = page.find("}", anchor.end())
    body = page[anchor.end() : end]
    for name, value in props.items():
        prop_re = re.compile(rf"(?m)^(?P<indent>[ \t]*){re.escape(name)}\s*:[^\n]*?,?[ \t]*$")
        if prop_re.search(body):
            body = prop_re.sub(lambda m, n=name, v=value: f"{m.group('indent')}{n}: {v},", body, count=1)
        else:
            body = f"\n          {name}: {value}," + body
    return page[: anchor.end()] + body + page[end:]


# What a newcomer sees first: the agents, and a page of calls with their current analysis.
DEFAULT_QUERY = """# Paste your API key into the Headers tab below, then press the run button.
query Overview {
  agents(first: 10) {
    nodes { id name channel draft { version analysisConfig { model summaryPrompt } } }
  }
  calls(first: 5) {
    nodes {
      id callStatus startedAt agent { name } agentVersion { version }
      analysis { summary successful userSentiment customData }
    }
    pageInfo { hasNextPage endCursor }
  }
}
"""


def render_graphiql(
    *,
    vendor_dir: Path,
    static_prefix: str = DEFAULT_STATIC_PREFIX,
    subscription_enabled: bool = True,
    default_headers: Mapping[str, str] | None = None,
) -> str:
    """Strawberry's GraphiQL page, loading assets from ``static_prefix`` when present
    in ``vendor_dir`` (with CDN fallback) and from the CDN otherwise, with the header
    editor open and prefilled with ``default_headers`` (default: Authorization)."""
    page = _template()

    # Template variables used by (some) strawberry versions.
    page = page.replace("{{ SUBSCRIPTION_ENABLED }}", json.dumps(subscription_enabled))
    if not subscription_enabled:
        page = re.sub(
            r"(GraphiQL\.createFetcher\(\{[^}]*?)\bsubscriptionUrl\s*(?::[^,}\n]*)?,?",
            r"\1subscriptionUrl: undefined,",
            page,
            count=1,
            flags=re.S,
        )
    leftover = _PLACEHOLDER_RE.findall(page)
    if leftover:
        logger.warning("graphiql_placeholders_unknown", placeholders=",".join(sorted(set(leftover))))

    headers = DEFAULT_HEADERS if default_headers is None else default_headers
    page = _set_graphiql_props(
        page,
        {
            "defaultEditorToolsVisibility": _js("headers"),
            "isHeadersEditorEnabled": "true",
            "shouldPersistHeaders": "true",
            "defaultHeaders": _js(json.dumps(dict(headers), indent=2)),
        },
    )

    # Strawberry's page starts the editor on its own welcome text; start it on a query of this API.
    page = page.replace("parameters.q || EXAMPLE_QUERY", "parameters.q || " + _js(DEFAULT_QUERY), 1)
    page = _rewrite_links(page, vendor_dir, static_prefix)
    return _rewrite_scripts(page, vendor_dir, static_prefix)
