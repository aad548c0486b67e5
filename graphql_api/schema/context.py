"""The per-request (or per-WebSocket-connection) GraphQL context."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import strawberry

from graphql_api.errors import Unauthenticated
from graphql_api.schema.loaders import Loaders
from graphql_api.workspaces import Workspace

if TYPE_CHECKING:
    from graphql_api.schema.compiler import ReadEngine
    from graphql_api.services import Services


@dataclass
class Context:
    services: Services
    request: Any = None
    response: Any = None
    workspace: Workspace | None = None
    auth_error: str | None = None
    key_prefix: str | None = None
    connection_params: dict[str, Any] | None = None
    # Without a read engine every field runs through its resolver.
    read_engine: ReadEngine | None = None
    # Set where the response is encoded with orjson (HTTP, WebSocket): JSON made elsewhere (by PostgreSQL for
    # compiled fields, once per event for subscribers sharing it) reaches the response as orjson.Fragment.
    json_fragments: bool = False
    compiled_roots: int = 0  # root fields of this request the read engine answered
    _loaders: Loaders | None = field(default=None, repr=False)

    @property
    def db(self):
        return self.services.db

    def require_workspace(self) -> Workspace:
        if self.workspace is None:
            raise Unauthenticated(
                self.auth_error or "Send your API key as `Authorization: Bearer <key>`."
            )
        return self.workspace

    @property
    def loaders(self) -> Loaders:
        if self._loaders is None:
            self._loaders = Loaders(self.services.db, self.require_workspace().id)
        return self._loaders

    def reset_loaders(self) -> None:
        """A WebSocket connection keeps one context; each operation gets fresh loaders."""
        self._loaders = None


Info = strawberry.Info[Context, None]
