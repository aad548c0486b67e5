"""Workspaces and their API keys: keys are stored as sha256 hashes and looked up through a short cache."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from graphql_api.db import Database

KEY_PREFIX = "ak_"
PREFIX_LENGTH = 10  # the part of a key stored in clear, to find it and to tell keys apart in listings
MAX_KEY_LENGTH = 128
# A revoked key keeps working in a running process for at most this long.
AUTH_CACHE_TTL_S = 30.0
AUTH_CACHE_MAX = 10_000


@dataclass(frozen=True)
class Workspace:
    id: int
    name: str


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def ensure_workspace(*, db: Database, name: str) -> Workspace:
    row = await db.fetch_one("workspace_ensure", name=name)
    assert row is not None
    return Workspace(id=row["id"], name=row["name"])


async def create_api_key(*, db: Database, workspace_name: str) -> tuple[Workspace, str]:
    """Create the workspace when missing and a new key for it; the key is returned once and never stored."""
    workspace = await ensure_workspace(db=db, name=workspace_name)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    await db.execute("api_key_insert", workspace_id=workspace.id, key_hash=hash_key(key), key_prefix=key[:PREFIX_LENGTH])
    return workspace, key


class Authenticator:
    """Resolves a bearer key to its workspace, caching answers (including misses) briefly."""

    def __init__(self, db: Database):
        self._db = db
        self._cache: dict[bytes, tuple[float, Workspace | None]] = {}

    async def workspace_for(self, key: str) -> Workspace | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        workspace = None
        if key.startswith(KEY_PREFIX) and len(key) <= MAX_KEY_LENGTH:
            # Found by the public prefix, confirmed by comparing hashes in constant time.
            for row in await self._db.fetch_all("api_keys_by_prefix", key_prefix=key[:PREFIX_LENGTH]):
                if hmac.compare_digest(bytes(row["key_hash"]), digest):
                    workspace = Workspace(id=row["id"], name=row["name"])
        if len(self._cache) >= AUTH_CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + AUTH_CACHE_TTL_S, workspace)
        return workspace


def bearer_key(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
