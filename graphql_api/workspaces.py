"""Workspaces and their API keys: keys are stored as sha256 hashes and looked up through a short cache that a
revocation clears at once; the connections authenticated with a key end when it is revoked."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
import weakref
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import structlog

from graphql_api.db import Database

log = structlog.stdlib.get_logger(__name__)

KEY_PREFIX = "ak_"
PREFIX_LENGTH = 10  # the part of a key stored in clear, to find it and to tell keys apart in listings
MAX_KEY_LENGTH = 128
# A revoked key keeps working in a process that missed the revocation notice for at most this long.
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


@dataclass(frozen=True)
class Identity:
    """Who a valid key speaks for: the key's id (to close its connections when it is revoked) and its workspace."""

    key_id: int
    workspace: Workspace


class Sessions:
    """The long-lived connections (WebSockets) of this process, each bound to the key it authenticated with once
    admitted, so that caps can count them and revoking a key can end them."""

    def __init__(self) -> None:
        self._open: dict[Hashable, Callable[[], None]] = {}  # session -> what ends it
        self._key_of: dict[Hashable, int] = {}  # admitted session -> its key id
        self._by_key: dict[int, set[Hashable]] = {}  # key id -> its admitted sessions
        self.refused: Counter[str] = Counter()  # refused connections by reason, for metrics
        self.revoked_closed = 0

    def open(self, session: Hashable, *, end: Callable[[], None]) -> None:
        self._open[session] = end

    def bind(self, session: Hashable, key_id: int) -> None:
        self._key_of[session] = key_id
        self._by_key.setdefault(key_id, set()).add(session)

    def close(self, session: Hashable) -> None:
        self._open.pop(session, None)
        key_id = self._key_of.pop(session, None)
        if key_id is not None:
            sessions = self._by_key.get(key_id, set())
            sessions.discard(session)
            if not sessions:
                self._by_key.pop(key_id, None)

    def count(self, key_id: int | None = None) -> int:
        """Open sessions, admitted or not; with a key id, those admitted with that key."""
        return len(self._open) if key_id is None else len(self._by_key.get(key_id, ()))

    @property
    def admitted(self) -> int:
        return len(self._key_of)

    @property
    def key_ids(self) -> list[int]:
        return list(self._by_key)

    def end(self, key_id: int) -> int:
        """End every session of a revoked key (each closes itself); how many there were."""
        sessions = self._by_key.pop(key_id, set())
        for session in sessions:
            del self._key_of[session]
            end = self._open.get(session)
            if end is not None:
                end()
        self.revoked_closed += len(sessions)
        return len(sessions)


class Authenticator:
    """Resolves a bearer key to its workspace, caching answers (including misses) briefly; forgets a key and ends
    its sessions as soon as this process hears that it was revoked."""

    def __init__(self, db: Database):
        self._db = db
        self._cache: dict[bytes, tuple[float, Identity | None]] = {}
        self._revocations = 0  # revocations heard: a lookup that overlapped one reads again
        self.sessions = Sessions()
        _AUTHENTICATORS.add(self)

    async def workspace_for(self, key: str) -> Workspace | None:
        identity = await self.identify(key)
        return identity.workspace if identity is not None else None

    async def identify(self, key: str) -> Identity | None:
        digest = hash_key(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[0] > now:
            return hit[1]
        if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_LENGTH:
            identity = None
        else:
            for _ in range(3):
                revocations = self._revocations
                identity = await self._lookup(key, digest)
                if revocations == self._revocations:
                    break
                # A revocation was heard while the row was read: it may be this key's, so read again (it has
                # committed). Whoever uses the answer does so before the next notice can be heard.
            else:
                return identity  # revocations keep coming: answer, but cache nothing
        if len(self._cache) >= AUTH_CACHE_MAX:
            self._cache.clear()
        self._cache[digest] = (now + AUTH_CACHE_TTL_S, identity)
        return identity

    async def _lookup(self, key: str, digest: bytes) -> Identity | None:
        # Found by the public prefix, confirmed by comparing hashes in constant time.
        identity = None
        for row in await self._db.fetch_all("api_keys_by_prefix", key_prefix=key[:PREFIX_LENGTH]):
            if hmac.compare_digest(bytes(row["key_hash"]), digest):
                identity = Identity(key_id=row["key_id"], workspace=Workspace(id=row["id"], name=row["name"]))
        return identity

    def key_revoked(self, key_id: int) -> int:
        """Forget the key's cached answer and end its sessions; how many sessions were ended."""
        self._revocations += 1
        for digest, (_, identity) in list(self._cache.items()):
            if identity is not None and identity.key_id == key_id:
                del self._cache[digest]
        return self.sessions.end(key_id)

    def forget_all(self) -> None:
        """Forget every cached answer: revocations may have been missed while this process was not listening."""
        self._revocations += 1
        self._cache.clear()


# Every authenticator of this process, so that the process's one listener connection can tell those of its
# database that a key was revoked.
_AUTHENTICATORS: weakref.WeakSet[Authenticator] = weakref.WeakSet()


def key_revoked(*, db: Database, key_id: int) -> int:
    """A revocation notice (or a revocation found by `recheck_sessions`): the authenticators on this database forget
    the key and end its sessions. How many sessions were ended."""
    ended = sum(a.key_revoked(key_id) for a in list(_AUTHENTICATORS) if a._db is db)
    log.info("api_key_revoked", key_id=key_id, sessions_closed=ended)
    return ended


async def recheck_sessions(*, db: Database, forget_cached: bool = False) -> None:
    """Ends the sessions of keys revoked without this process hearing of it (the listener was away); with
    `forget_cached`, also drops every cached answer."""
    authenticators = [a for a in list(_AUTHENTICATORS) if a._db is db]
    if forget_cached:
        for authenticator in authenticators:
            authenticator.forget_all()
    key_ids = sorted({k for a in authenticators for k in a.sessions.key_ids})
    if key_ids:
        for row in await db.fetch_all("api_keys_not_live", key_ids=key_ids):
            key_revoked(db=db, key_id=row["key_id"])


@dataclass(frozen=True)
class ApiKeyInfo:
    id: int
    prefix: str
    workspace: str
    created_at: datetime
    revoked_at: datetime | None


def _key_info(row: Any, workspace: str | None = None) -> ApiKeyInfo:
    return ApiKeyInfo(
        id=row["id"], prefix=row["key_prefix"], workspace=workspace or row["workspace"],
        created_at=row["created_at"], revoked_at=row["revoked_at"],
    )


async def list_api_keys(*, db: Database, workspace_name: str | None = None) -> list[ApiKeyInfo]:
    return [_key_info(row) for row in await db.fetch_all("api_keys_list", workspace=workspace_name)]


@dataclass(frozen=True)
class Revocation:
    revoked: list[ApiKeyInfo]
    matched: list[ApiKeyInfo]  # every key the argument designates, revoked earlier or now


async def revoke_api_key(*, db: Database, prefix_or_key: str) -> Revocation:
    """Revoke the key designated by its public prefix (as listed) or by the whole key. A prefix shared by several
    unrevoked keys (unlikely: 42 random bits) revokes nothing: the whole key tells them apart."""
    prefix_or_key = prefix_or_key.strip()
    whole = len(prefix_or_key) > PREFIX_LENGTH
    matched = [_key_info(row) for row in await db.fetch_all(
        "api_keys_matching", key_prefix=prefix_or_key[:PREFIX_LENGTH], key_hash=hash_key(prefix_or_key) if whole else None,
    )] if prefix_or_key.startswith(KEY_PREFIX) and len(prefix_or_key) <= MAX_KEY_LENGTH else []
    live = [key for key in matched if key.revoked_at is None]
    if len(live) != 1:
        return Revocation(revoked=[], matched=matched)
    row = await db.fetch_one("api_key_revoke", key_id=live[0].id)
    revoked = [_key_info(row, live[0].workspace)] if row is not None else []
    return Revocation(revoked=revoked, matched=matched)


def bearer_key(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()
