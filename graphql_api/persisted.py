"""Persisted operations: a client may send the sha256 of a document instead of the document (Apollo's
automatic persisted queries), and a deployment may accept only an allow-list of documents.

PERSISTED_QUERIES=off    documents only; a hash is ignored
PERSISTED_QUERIES=auto   a known hash stands for its document; an unknown one answers
                         `PersistedQueryNotFound` and the client sends the document with its hash once
PERSISTED_QUERIES=only   only the documents of PERSISTED_QUERIES_FILE run, sent by hash or in full
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import orjson

from graphql_api.errors import ApiError, BadUserInput, Forbidden

NOT_FOUND_MESSAGE = "PersistedQueryNotFound"  # what Apollo's client looks for before sending the document


class PersistedQueryNotFound(BadUserInput):
    def __init__(self) -> None:
        super().__init__(NOT_FOUND_MESSAGE, reason="PERSISTED_QUERY_NOT_FOUND")


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def load_allow_list(path: Path) -> dict[str, str]:
    """Documents by hash, from a JSON object {hash: document} or a JSON array of documents."""
    loaded = orjson.loads(path.read_bytes())
    documents = loaded.values() if isinstance(loaded, dict) else loaded
    if not isinstance(documents, (list, type({}.values()))) or not all(isinstance(d, str) for d in documents):
        raise SystemExit(f"{path}: expected a JSON array of documents or an object of hash -> document")
    allowed = {sha256_hex(d): d for d in documents}
    if isinstance(loaded, dict):
        wrong = [h for h, d in loaded.items() if h != sha256_hex(d)]
        if wrong:
            raise SystemExit(f"{path}: {len(wrong)} hashes don't match their documents (first: {wrong[0]})")
    return allowed


class PersistedQueries:
    def __init__(self, *, mode: str, allow_list: dict[str, str] | None = None, max_bytes: int = 8 << 20,
                 max_document_bytes: int = 64 << 10):
        self.mode = mode
        self.allow_list = allow_list or {}
        self.max_bytes = max_bytes
        self.max_document_bytes = max_document_bytes
        self._known: OrderedDict[str, str] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def resolve(self, query: str | None, extensions: dict[str, Any] | None) -> str | None:
        """The document to run: `query`, or the one its persisted hash stands for. Raises a coded error."""
        persisted = (extensions or {}).get("persistedQuery") if self.mode != "off" else None
        if persisted is None:
            if self.mode == "only" and query is not None and sha256_hex(query) not in self.allow_list:
                raise _not_allowed()
            return query
        if not isinstance(persisted, dict) or persisted.get("version") != 1 or not isinstance(persisted.get("sha256Hash"), str):
            raise BadUserInput("`extensions.persistedQuery` must be {\"version\": 1, \"sha256Hash\": \"<hex>\"}.")
        digest = persisted["sha256Hash"].lower()
        if query is not None:
            if sha256_hex(query) != digest:
                raise BadUserInput("`extensions.persistedQuery.sha256Hash` is not the sha256 of `query`.")
            if self.mode == "only" and digest not in self.allow_list:
                raise _not_allowed()
            self._remember(digest, query)
            return query
        known = self.allow_list.get(digest) or self._recall(digest)
        if known is None:
            if self.mode == "only":
                raise _not_allowed()
            raise PersistedQueryNotFound()
        return known

    def _remember(self, digest: str, query: str) -> None:
        if self.mode != "auto" or len(query) > self.max_document_bytes:
            return
        with self._lock:
            if digest in self._known:
                return
            self._known[digest] = query
            self._bytes += len(query)
            while self._bytes > self.max_bytes:
                _, evicted = self._known.popitem(last=False)
                self._bytes -= len(evicted)

    def _recall(self, digest: str) -> str | None:
        with self._lock:
            query = self._known.get(digest)
            if query is not None:
                self._known.move_to_end(digest)
            return query


def _not_allowed() -> ApiError:
    return Forbidden("Only allow-listed operations run here (PERSISTED_QUERIES=only); this document is not on the list.")
