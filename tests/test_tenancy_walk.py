"""Tenancy over the whole schema: every field that takes an id, found by walking the schema, answers an id of
another workspace exactly as it answers an id that exists nowhere: NOT_FOUND, the same message but for the id.

A new id-taking field is checked without any change here. One whose id kind can't be told from its name, or
that no query reaches, fails the test until it is given a kind (ID_KINDS in tests.fuzz_support) or an entry
in SPECIAL below.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from graphql import (
    GraphQLEnumType,
    GraphQLInputObjectType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    get_named_type,
    is_leaf_type,
)
from websockets.sync.client import connect

from tests.fuzz_support import (
    ID_KINDS,
    UNKNOWN_IDS,
    TableDigest,
    Target,
    _required,
    access_paths,
    api_schema,
    error_code,
    id_kind,
    render_path,
    running_target,
)


@dataclass(frozen=True)
class IdSite:
    """An id a field takes: `Mutation.rerunAnalysis` at `input.callIds` (a list)."""

    type_name: str
    field: str
    path: tuple[str, ...]  # the argument, then input fields down to the id

    @property
    def name(self) -> str:
        return f"{self.type_name}.{self.field}({'.'.join(self.path)})"


@dataclass(frozen=True)
class Special:
    code: str  # the code both ids answer with instead of NOT_FOUND
    why: str


# Fields whose id is not looked up but compared with something the request already names. Both ids must
# still answer alike; they answer this code. Keyed by IdSite.name.
SPECIAL: dict[str, Special] = {
    f"Agent.{field}(filter.agentId)": Special(
        "BAD_USER_INPUT", "a nested list's filter may only name the agent being listed; any other id is a mismatch"
    )
    for field in ("calls", "chats")
}


def id_sites(schema: Any) -> list[IdSite]:
    """Every argument of every field in the schema that is an ID, a list of IDs, or an input holding one."""
    sites = []

    def walk(type_: Any, path: tuple[str, ...], seen: frozenset[str]) -> list[tuple[str, ...]]:
        named = get_named_type(type_)
        if named.name == "ID":
            return [path]
        if isinstance(named, GraphQLInputObjectType) and named.name not in seen:
            return [p for name, f in named.fields.items() for p in walk(f.type, (*path, name), seen | {named.name})]
        return []

    for type_name, type_ in sorted(schema.type_map.items()):
        if type_name.startswith("__") or not isinstance(type_, GraphQLObjectType):
            continue
        for field_name, field_def in type_.fields.items():
            for arg_name, arg in field_def.args.items():
                sites.extend(IdSite(type_name, field_name, path) for path in walk(arg.type, (arg_name,), frozenset()))
    return sites


def minimal(type_: Any, target: Target, owner: str, name: str) -> Any:
    """The smallest valid value of a type: required input fields only, own ids for ids."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return [minimal(type_.of_type, target, owner, name)]
    if isinstance(type_, GraphQLInputObjectType):
        return {n: minimal(f.type, target, type_.name, n) for n, f in type_.fields.items() if _required(f)}
    if isinstance(type_, GraphQLEnumType):
        return next(iter(type_.values))
    scalar = {"String": "x", "Int": 1, "Boolean": False, "DateTime": "2026-01-01T00:00:00Z", "Decimal": "1"}
    if type_.name in scalar:
        return scalar[type_.name]
    pool = ID_KINDS.get(id_kind(name, owner))
    if type_.name == "ID" and pool:
        return target.own.ids[pool[0]][-1]
    raise LookupError(f"no minimal value for {type_.name} at {owner}.{name}")


def with_id(type_: Any, path: tuple[str, ...], ident: str, target: Target, owner: str) -> Any:
    """A value of an argument's type with `ident` at `path` (in a one-item list where the type is a list)."""
    if isinstance(type_, GraphQLNonNull):
        type_ = type_.of_type
    if isinstance(type_, GraphQLList):
        return [with_id(type_.of_type, path, ident, target, owner)]
    if not path:
        return ident
    value = minimal(type_, target, owner, "") if isinstance(type_, GraphQLInputObjectType) else {}
    value = {k: v for k, v in value.items() if k != path[0]}
    value[path[0]] = with_id(type_.fields[path[0]].type, path[1:], ident, target, type_.name)
    return value


def ids_for(site: IdSite, schema: Any, target: Target) -> tuple[list[str], list[str], str | None]:
    """(ids of the other workspace, ids that exist nowhere, an own id) for the kind a site names."""
    field_def = schema.type_map[site.type_name].fields[site.field]
    kind = id_kind(site.path[-1], get_named_type(field_def.type).name)
    pools = ID_KINDS.get(kind)
    if not pools:
        raise LookupError(f"the id kind {kind!r} is unknown: add it to ID_KINDS or the site to SPECIAL")
    foreign = [target.other.ids[pool][-1] for pool in pools]
    unknown = [UNKNOWN_IDS[pool] for pool in pools]
    return foreign, unknown, target.own.ids[pools[0]][-1]


def operation(site: IdSite, schema: Any, target: Target, paths: dict) -> tuple[str, Any]:
    """(document, a function from the id to the variables) reaching the site's field with `$a0`... for its arguments."""
    type_ = schema.type_map[site.type_name]
    field_def = type_.fields[site.field]
    owner = get_named_type(field_def.type).name
    kind = {"Mutation": "mutation", "Subscription": "subscription"}.get(site.type_name, "query")
    if kind == "query" and site.type_name not in paths:
        raise LookupError(f"no query reaches a {site.type_name}: add the site to SPECIAL with a way to reach it")
    declarations, arguments, fixed = [], [], {}
    for n, (arg_name, arg) in enumerate(field_def.args.items()):
        if arg_name != site.path[0] and not _required(arg):
            continue
        declarations.append(f"$a{n}: {arg.type}")
        arguments.append(f"{arg_name}: $a{n}")
        if arg_name != site.path[0]:
            fixed[f"a{n}"] = minimal(arg.type, target, owner, arg_name)
        else:
            site_var, site_arg = f"a{n}", arg
    selection = "" if is_leaf_type(get_named_type(field_def.type)) else " { __typename }"
    inner = f"{site.field}({', '.join(arguments)}){selection}"
    document = f"{kind} Walk({', '.join(declarations)}) {{ {render_path(paths.get(site.type_name, ()), inner)} }}"

    def variables(ident: str) -> dict:
        return {**fixed, site_var: with_id(site_arg.type, site.path[1:], ident, target, owner)}

    return document, variables


def normalized(value: Any, ident: str) -> Any:
    """The answer with the id blanked out everywhere, so two answers compare but for the id."""
    return json.loads(json.dumps(value).replace(json.dumps(ident)[1:-1], "<id>"))


def ask(target: Target, client: httpx.Client, document: str, variables: dict) -> Any:
    if document.startswith("subscription"):
        return subscribe(target, document, variables)
    response = client.post("/graphql", json={"query": document, "variables": variables}, headers=target.own.auth)
    return {"status": response.status_code, "body": response.json()}


def subscribe(target: Target, document: str, variables: dict) -> Any:
    """The first message a subscription gets over graphql-transport-ws."""
    url = target.base_url.replace("http", "ws", 1) + "/graphql"
    with connect(url, subprotocols=["graphql-transport-ws"], open_timeout=10, close_timeout=2) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": target.own.auth}))
        assert json.loads(ws.recv(timeout=10))["type"] == "connection_ack"
        ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": {"query": document, "variables": variables}}))
        message = json.loads(ws.recv(timeout=10))
        ws.send(json.dumps({"id": "1", "type": "complete"}))
    errors = message.get("payload") if message["type"] == "error" else (message.get("payload") or {}).get("errors")
    return {"status": message["type"], "body": {"errors": errors, "data": (message.get("payload") or {}).get("data") if message["type"] == "next" else None}}


def check_site(site: IdSite, schema: Any, target: Target, client: httpx.Client, paths: dict, digest: TableDigest) -> list[str]:
    """What is wrong with a site's tenancy; empty when its answers to foreign and unknown ids can't be told apart."""
    try:
        foreign, unknown, own = ids_for(site, schema, target)
        document, variables = operation(site, schema, target, paths)
    except LookupError as exc:
        return [f"{site.name}: not walked: {exc}"]
    special = SPECIAL.get(site.name)
    expected = special.code if special else "NOT_FOUND"
    problems = []
    answers = {}
    before = digest()
    for ident in [*foreign, *unknown]:
        answer = ask(target, client, document, variables(ident))
        codes = [error_code(e) for e in answer["body"].get("errors") or ()]
        if codes != [expected] or error_data(answer["body"], site):
            problems.append(f"{site.name}: id {ident!r} ({'other workspace' if ident in foreign else 'exists nowhere'}) answered "
                            f"{_short(answer)}; expected one {expected} error and no data")
        answers[ident] = normalized(answer, ident)
    if digest() != before:
        problems.append(f"{site.name}: a refused id changed tables")
    shapes = {json.dumps(a, sort_keys=True) for a in answers.values()}
    if len(shapes) > 1:
        problems.append(f"{site.name}: the answers to an id of another workspace and to an unknown id differ: "
                        + " | ".join(f"{i!r}: {_short(a)}" for i, a in answers.items()))
    if not special:
        answer = ask(target, client, document, variables(own))
        if "NOT_FOUND" in [error_code(e) for e in answer["body"].get("errors") or ()]:
            problems.append(f"{site.name}: an id of the caller's own workspace ({own!r}) answered NOT_FOUND: {_short(answer)}")
    return problems


def error_data(body: dict, site: IdSite) -> bool:
    """Whether the answer holds data for the walked field (a list that came back empty counts as data)."""
    node: Any = body.get("data")
    while isinstance(node, dict) and node:
        if site.field in node:
            return node[site.field] is not None
        node = next(iter(node.values()))
    return False


def _short(answer: Any) -> str:
    text = json.dumps(answer)
    return text if len(text) < 400 else text[:400] + "…"


def _walk(db_url: str, data_dir: Path) -> tuple[list[IdSite], list[str]]:
    schema = api_schema()
    sites = id_sites(schema)
    stale = [f"SPECIAL names {name}, which the schema no longer has" for name in SPECIAL if name not in {s.name for s in sites}]
    with running_target(db_url, data_dir) as target:
        paths = access_paths(schema, target.own)
        digest = TableDigest(db_url)
        try:
            with httpx.Client(base_url=target.base_url, timeout=30) as client:
                problems = [p for site in sites for p in check_site(site, schema, target, client, paths, digest)]
        finally:
            digest.close()
    return sites, stale + problems


async def test_every_id_taking_field_answers_not_found_alike_for_other_workspaces_and_unknown_ids(db_url: str, tmp_path: Path) -> None:
    sites, problems = await asyncio.to_thread(_walk, db_url, tmp_path)
    walked = {site.name for site in sites}
    # The walk must see the fields every client uses; an empty walk would prove nothing.
    assert {"Query.agent(id)", "Mutation.rerunAnalysis(input.callIds)", "Subscription.rerunProgress(jobId)"} <= walked, walked
    assert not problems, f"{len(problems)} tenancy problems over {len(sites)} id-taking sites:\n" + "\n".join(problems)


def test_an_id_field_the_walk_cannot_place_fails_it() -> None:
    """A field whose id names no known kind, or that no query reaches, is reported rather than skipped."""
    from graphql import build_schema

    from graphql_api.schema import schema as served

    schema = build_schema(
        served.as_str()
        + "\ntype Widget { id: ID! parts(partId: ID!): Int }"
        + "\nextend type Query { widget(widgetId: ID!): Widget }"
    )

    class Nobody:
        own = other = type("W", (), {"ids": {}})()

    problems = {
        site.name: check_site(site, schema, Nobody, None, {}, None)  # type: ignore[arg-type]
        for site in id_sites(schema)
        if site.field in ("widget", "parts")
    }
    assert set(problems) == {"Query.widget(widgetId)", "Widget.parts(partId)"}
    assert all(len(p) == 1 and "not walked" in p[0] for p in problems.values()), problems
