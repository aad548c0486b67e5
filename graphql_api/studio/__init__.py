"""The studio, the page for people: `GET /studio` serves graphql_api/static/studio/index.html (its scripts and
styles are static files beside it) and `GET /` redirects there. graphql-ws's browser build, which it uses for
the rerunProgress subscription, is installed at setup from the npm registry with GraphiQL's assets."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from graphql_api.graphiql import DEFAULT_STATIC_PREFIX, static_dir, vendor_dir

# Pinned here and in scripts/install_graphiql_assets.sh, which checks the downloaded file against the hash.
GRAPHQL_WS = "graphql-ws@6.4.2/umd/graphql-ws.min.js"
GRAPHQL_WS_INTEGRITY = "sha384-mxvR4Mzbsb6QVx/9xI2gtQikQA6m8zMDBFnu3l//4/ROsWt7y2sUGWd+/tYQqDm7"
_SLOT = "<!-- graphql-ws -->"


def render_studio() -> str:
    """The page, loading graphql-ws when it is installed; without it the page polls for progress instead."""
    page = (static_dir() / "studio" / "index.html").read_text("utf-8")
    script = ""
    if (vendor_dir() / GRAPHQL_WS).is_file():
        script = f'<script src="{DEFAULT_STATIC_PREFIX}/{GRAPHQL_WS}" integrity="{GRAPHQL_WS_INTEGRITY}" defer></script>'
    return page.replace(_SLOT, script, 1)


async def studio_page(request: Request) -> Response:
    # Read at each request (a few kB): an install or an edit shows without a restart.
    return HTMLResponse(render_studio(), headers={"Cache-Control": "no-cache"})


async def to_studio(request: Request) -> Response:
    # The fragment of `/#key=...` survives the redirect: browsers keep it when the Location has none.
    return RedirectResponse("/studio", status_code=302)
