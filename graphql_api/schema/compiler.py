"""The read engine: a query's selection compiled into one SQL statement in which PostgreSQL builds the JSON.

The resolvers (schema/types.py, schema/reruns.py) stay the reference and the fallback: the executor
(schema/execution.py) asks this module for the root fields it can compile, runs them as one statement and
hands each field's JSON to the response as it is; every other root field runs through the resolvers.

Three steps, two of them cached:

1. The *tree* of an operation (per operation and per value of the variables its @skip/@include read): the
   selected fields below each compilable root field, fragments and aliases resolved by graphql-core's own
   field collection, and the fields that take arguments (the *sites*).
2. *Binding*, per request: each site's arguments with the request's variables, checked exactly as the
   resolvers check them (page size, cursor, filter). A check that fails, or anything not compiled, sends
   the root field to the resolvers, which answer with the reference error.
3. The *statement* (per tree and per shape of the bound arguments: which filter conditions are present,
   and the page sizes): every other argument is a bind parameter, so one plan serves every request of the
   same shape; asyncpg keeps it prepared per connection, and PostgreSQL plans it once (db.py).

Not compiled (the resolvers answer): introspection, `__typename` at the root, a nested `Agent.calls/chats`
filter that names an agent, objects with more than 50 selected keys (json_build_object's limit). By-id
roots that find nothing (`agent`, `call`, `chat`, `rerunJob`), `calls`/`chats`/`rerunJobs` naming an agent
that does not exist, and anything else that is an error run through the resolvers too, so errors are
exactly the reference's.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterable
import dataclasses
from dataclasses import dataclass
from typing import Any

from graphql import GraphQLField, GraphQLList, GraphQLNonNull, GraphQLObjectType, OperationType
from graphql.execution.collect_fields import collect_subfields
from graphql.execution.values import get_argument_values
from graphql.language import DirectiveNode, FieldNode, VariableNode, visit, Visitor

from graphql_api.analysis import base
from graphql_api.reruns.planning import DRAFT, SOURCE_KEY
from graphql_api.schema.filters import ConversationFilter, selection_of
from graphql_api.schema.pagination import Keyset, decode_position, page_size

# A JSON value no stored row can produce (PostgreSQL text never holds NUL): a non-null relation that found
# no row. The statement's answer is then thrown away and the root field runs through the resolvers.
MISSING = b'"\\u0000missing"'
_MISSING_SQL = "'\"\\u0000missing\"'::json"
_MAX_KEYS = 50  # json_build_object takes at most 100 arguments
_TREE_CACHE_SIZE = 512
_SHAPES_PER_TREE = 32


class Unsupported(Exception):
    """This selection (or these arguments) is left to the resolvers."""


@dataclass(eq=False)
class Sel:
    """One selected field: its response key, its definition, its own selected fields, its argument site."""

    key: str
    name: str
    field: GraphQLField | None  # None for __typename
    node: FieldNode
    fragment_variables: Any
    children: list[Sel]
    parent: str = "Query"  # the name of the type the field is on
    site: int = -1


@dataclass(eq=False)
class Tree:
    """The compilable root fields of an operation, and every field among them that takes arguments."""

    roots: list[Sel]
    sites: list[Sel]
    operation: Any = None  # kept alive with the tree: the cache key holds its id
    sites_below: dict[str, list[int]] = dataclasses.field(default_factory=dict)  # root key -> the sites of it and its fields
    statements: _Lru | None = None  # per shape of the bound arguments


@dataclass(frozen=True)
class Bound:
    shape: tuple[Any, ...]
    values: dict[str, Any]


@dataclass(frozen=True)
class Statement:
    sql: str
    refs: tuple[tuple[int, str], ...]  # the parameter of each placeholder: (site, name); site -1: the workspace
    roots: tuple[str, ...]  # response key of each output column
    guards: int  # trailing boolean columns that must all be true


class _Lru(OrderedDict):
    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def get_or(self, key: Any, make: Callable[[], Any]) -> Any:
        try:
            self.move_to_end(key)
            return self[key]
        except KeyError:
            value = self[key] = make()
            if len(self) > self.size:
                self.popitem(last=False)
            return value


# ---- 1. the tree ---------------------------------------------------------------------------------

COMPILED_ROOTS = {"agents", "agent", "calls", "call", "chats", "chat", "rerunJobs", "rerunJob"}


def _directive_variables(operation: Any, fragments: dict[str, Any]) -> tuple[str, ...]:
    """Names of the variables that @skip/@include read anywhere in the operation or its fragments."""
    names: list[str] = []

    class Collect(Visitor):
        def enter_directive(self, node: DirectiveNode, *_: Any) -> None:
            if node.name.value in ("skip", "include"):
                for argument in node.arguments:
                    if isinstance(argument.value, VariableNode) and argument.value.name.value not in names:
                        names.append(argument.value.name.value)

    visit(operation, Collect())
    for details in fragments.values():
        visit(details.definition, Collect())
    return tuple(names)


def _named(type_: Any) -> Any:
    while isinstance(type_, (GraphQLNonNull, GraphQLList)):
        type_ = type_.of_type
    return type_


def build_tree(executor: Any, root_type: GraphQLObjectType, grouped: dict[str, list[Any]]) -> Tree:
    schema, sites = executor.schema, []

    def sel(parent: GraphQLObjectType, key: str, details: list[Any]) -> Sel:
        node = details[0].node
        name = node.name.value
        if name == "__typename":
            return Sel(key, name, None, node, None, [], parent.name)
        field = parent.fields.get(name)
        if field is None or name.startswith("__"):
            raise Unsupported(name)
        item = Sel(key, name, field, node, details[0].fragment_variable_values, [], parent.name)
        named = _named(field.type)
        if isinstance(named, GraphQLObjectType):
            sub = collect_subfields(
                schema, executor.fragments, executor.variable_values, executor.operation, named, details
            ).grouped_field_set
            item.children = [sel(named, k, d) for k, d in sub.items()]
        if field.args:
            item.site = len(sites)
            sites.append(item)
        return item

    roots = []
    for key, details in grouped.items():
        if details[0].node.name.value not in COMPILED_ROOTS:
            continue
        site_count = len(sites)
        try:
            roots.append(sel(root_type, key, details))
        except Unsupported:
            del sites[site_count:]
    below = {root.key: [sel.site for sel in _walk(root) if sel.site >= 0] for root in roots}
    return Tree(roots, sites, operation=executor.operation, statements=_Lru(_SHAPES_PER_TREE), sites_below=below)


# ---- 2. binding ----------------------------------------------------------------------------------

_FILTER_FIELDS = {
    "agentId": "agent_id", "versions": "versions", "startedAfter": "started_after", "startedBefore": "started_before",
    "successful": "successful", "userSentiment": "user_sentiment", "status": "status",
}
_LIST_CONDITIONS = ("versions", "statuses", "sentiments")


def _keyset(tag: str, args: dict[str, Any]) -> dict[str, Any]:
    page = Keyset.of(tag, args.get("first"), args.get("after"))
    return {"limit": page.limit, "has_after": page.after is not None, "after_at": page.after_at, "after_id": page.after_id}


def _bind_conversations(kind: str, args: dict[str, Any], nested: bool) -> Bound:
    values = _keyset(kind.lower(), args)
    raw = args.get("filter")
    flt = ConversationFilter(**{_FILTER_FIELDS[k]: v for k, v in raw.items()}) if raw else None
    if nested and flt is not None and flt.agent_id is not None:
        raise Unsupported("a nested filter naming an agent")  # checked against the parent row by the resolver
    selection = selection_of(kind, flt)  # BadUserInput: the resolver answers with the reference error
    conditions = {
        "agent_id": selection.agent_id, "versions": selection.versions, "started_from": selection.started_from,
        "started_to": selection.started_to, "statuses": selection.statuses, "successful": selection.successful,
        "sentiments": selection.sentiments,
    }
    shape: list[Any] = [values["has_after"]]
    for name, value in conditions.items():
        if value is None:
            continue
        if name in _LIST_CONDITIONS and len(value) == 1:
            # One value is an equality, which walks an index in listing order; several are a set.
            shape.append(name + "=")
            values[name] = value[0]
        else:
            shape.append(name)
            values[name] = value
    return Bound(tuple(shape), values)


def _bind(sel: Sel, parent: str, executor: Any) -> Bound:
    args = get_argument_values(sel.field, sel.node, executor.variable_values, sel.fragment_variables)
    name = sel.name
    if parent == "Query" and name in ("agent", "call", "chat", "rerunJob"):
        return Bound((), {"id": args["id"]})
    if name == "agents":
        values = _keyset("agent", args)
        return Bound((values["has_after"],), values)
    if name in ("calls", "chats"):
        return _bind_conversations("CALL" if name == "calls" else "CHAT", args, nested=parent != "Query")
    if name == "rerunJobs":
        values = _keyset("job", args)
        values["agent_id"] = args.get("agentId")
        return Bound((values["has_after"], values["agent_id"] is not None), values)
    if name == "items":
        statuses = args.get("status")
        values = {
            "limit": page_size(args.get("first")),
            "has_after": args.get("after") is not None,
            "after_seq": decode_position(args.get("after"), "item"),
            "statuses": [s.value for s in statuses] if statuses else None,
        }
        return Bound((values["statuses"] is not None,), values)
    raise Unsupported(f"arguments of {parent}.{name}")


# ---- 3. the statement ----------------------------------------------------------------------------


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class _Scope:
    """A row source in the statement: `alias.column`, recording the columns a page's inner query must select."""

    def __init__(self, alias: str, columns: set[str] | None = None):
        self.alias = alias
        self.columns = columns

    def __call__(self, column: str) -> str:
        if self.columns is not None:
            self.columns.add(column)
        return f"{self.alias}.{column}"


class _Builder:
    def __init__(self, bounds: list[Bound]):
        self.bounds = bounds
        self.refs: list[tuple[int, str]] = [(-1, "workspace")]
        self.aliases = itertools.count(1)

    def param(self, sel: Sel, name: str, cast: str) -> str:
        self.refs.append((sel.site, name))
        return f"${len(self.refs)}::{cast}"

    def alias(self, prefix: str) -> str:
        return f"{prefix}{next(self.aliases)}"

    # -- objects

    def obj(self, type_name: str, sels: list[Sel], scope: _Scope) -> str:
        if len(sels) > _MAX_KEYS:
            raise Unsupported("more than 50 keys in one object")
        fields = _TYPES[type_name]
        parts = []
        for sel in sels:
            if sel.name == "__typename":
                expr = _literal(type_name)
            else:
                handler = fields.get(sel.name)
                if handler is None:
                    raise Unsupported(f"{type_name}.{sel.name}")
                expr = handler(self, sel, scope)
            parts.append(f"{_literal(sel.key)}, {expr}")
        return "json_build_object(" + ", ".join(parts) + ")"

    def one(self, type_name: str, sel: Sel, table: str, where: Callable[[_Scope], str], *, nullable: bool) -> str:
        """A relation to one row: its object, null when there is none (or MISSING where it can't be null)."""
        alias = self.alias(table[0])
        scope = _Scope(alias)
        sub = f"(SELECT {self.obj(type_name, sel.children, scope)} FROM {table} {alias} WHERE {where(scope)})"
        return sub if nullable else f"coalesce({sub}, {_MISSING_SQL})"

    def many(self, type_name: str, sel: Sel, table: str, where: Callable[[_Scope], str], order: str) -> str:
        alias = self.alias(table[0])
        scope = _Scope(alias)
        item = self.obj(type_name, sel.children, scope)
        return (f"(SELECT coalesce(json_agg({item} ORDER BY {order.format(a=alias)}), '[]'::json) "
                f"FROM {table} {alias} WHERE {where(scope)})")

    # -- connections

    def connection(
        self,
        sel: Sel,
        node_type: str,
        table: str,
        where: Callable[[_Scope], list[str]],
        order: list[tuple[str, bool]],
        cursor: Callable[[_Scope], str],
        keys: Iterable[str],
    ) -> str:
        """A page as the resolvers make it (schema/pagination.py): `limit + 1` rows, the extra one telling
        whether a next page exists; cursors, page info and nodes built over the page's rows."""
        inner = self.alias("q")
        columns: set[str] = set(keys)
        row = _Scope("p", columns)
        # The page size is written in the statement, not bound: a generic plan (db.py) that doesn't know the
        # LIMIT assumes a tenth of the table and sorts all of it instead of walking an index.
        limit = str(int(self.bounds[sel.site].values["limit"]))
        conditions = where(_Scope(inner))
        parts = []
        in_page = f"FILTER (WHERE p._n <= {limit})"
        for part in sel.children:
            if part.name == "__typename":
                expr = _literal(f"{node_type}Connection")
            elif part.name == "edges":
                edge_parts = []
                for edge in part.children:
                    if edge.name == "cursor":
                        value = cursor(row)
                    elif edge.name == "node":
                        value = self.obj(node_type, edge.children, row)
                    else:
                        value = _literal(f"{node_type}Edge")
                    edge_parts.append(f"{_literal(edge.key)}, {value}")
                expr = (f"coalesce(json_agg(json_build_object({', '.join(edge_parts)}) ORDER BY p._n) {in_page}, "
                        "'[]'::json)")
            elif part.name == "nodes":
                expr = f"coalesce(json_agg({self.obj(node_type, part.children, row)} ORDER BY p._n) {in_page}, '[]'::json)"
            elif part.name == "pageInfo":
                info_parts = []
                # Built only for the fields selected: a parameter no expression uses can't be typed by PostgreSQL.
                page_info: dict[str, Callable[[], str]] = {
                    "hasNextPage": lambda: f"coalesce(max(p._total), 0) > {limit}",
                    "hasPreviousPage": lambda: self.param(sel, "has_after", "boolean"),
                    "startCursor": lambda: f"max(CASE WHEN p._n = 1 AND p._n <= {limit} THEN {cursor(row)} END)",
                    "endCursor": lambda: f"max(CASE WHEN p._n = least(p._total, {limit}) THEN {cursor(row)} END)",
                    "__typename": lambda: "'PageInfo'",
                }
                for info in part.children:
                    info_parts.append(f"{_literal(info.key)}, {page_info[info.name]()}")
                expr = f"json_build_object({', '.join(info_parts)})"
            else:
                raise Unsupported(part.name)
            parts.append(f"{_literal(part.key)}, {expr}")
        order_sql = ", ".join(f"{inner}.{column}{' DESC' if desc else ''}" for column, desc in order)
        outer_order = ", ".join(f"q.{column}{' DESC' if desc else ''}" for column, desc in order)
        select = ", ".join(f"{inner}.{column}" for column in sorted(columns))
        # GROUP BY (): one row whatever the page holds, also when no part aggregates (only __typename, or
        # pageInfo { hasPreviousPage }), which would otherwise give a row per page row, or none for an empty page.
        return (
            f"(SELECT json_build_object({', '.join(parts)}) FROM ("
            f"SELECT q.*, row_number() OVER (ORDER BY {outer_order}) AS _n, count(*) OVER () AS _total FROM ("
            f"SELECT {select} FROM {table} {inner} WHERE {' AND '.join(conditions)} "
            f"ORDER BY {order_sql} LIMIT {limit} + 1) q) p GROUP BY ())"
        )

    def conversations(self, sel: Sel, kind: str, parent_agent: str | None) -> str:
        bound = self.bounds[sel.site]
        shape = set(bound.shape[1:])

        def where(c: _Scope) -> list[str]:
            conditions = [f"{c('workspace_id')} = $1::bigint", f"{c('kind')} = '{kind}'"]
            if parent_agent is not None:
                conditions.append(f"{c('agent_id')} = {parent_agent}")
            for name, column, cast, op in (
                ("agent_id", "agent_id", "text", "= {}"),
                ("versions", "agent_version", "int[]", "= ANY({})"),
                ("versions=", "agent_version", "int", "= {}"),
                ("started_from", "started_at", "timestamptz", ">= {}"),
                ("started_to", "started_at", "timestamptz", "< {}"),
                ("statuses", "status", "text[]", "= ANY({})"),
                ("statuses=", "status", "text", "= {}"),
                ("successful", "current_successful", "boolean", "= {}"),
                ("sentiments", "current_sentiment", "text[]", "= ANY({})"),
                ("sentiments=", "current_sentiment", "text", "= {}"),
            ):
                if name in shape:
                    conditions.append(f"{c(column)} {op.format(self.param(sel, name.rstrip('='), cast))}")
            if bound.shape[0]:
                conditions.append(
                    f"({c('sort_at')}, {c('conversation_id')}) < "
                    f"({self.param(sel, 'after_at', 'timestamptz')}, {self.param(sel, 'after_id', 'text')})"
                )
            return conditions

        tag = kind.lower()
        return self.connection(
            sel, "Call" if kind == "CALL" else "Chat", "conversations", where,
            [("sort_at", True), ("conversation_id", True)],
            lambda p: f"gql_cursor('{tag}', {p('sort_at')}, {p('conversation_id')})",
            ("sort_at", "conversation_id"),
        )

    # -- the statement

    def root(self, sel: Sel) -> tuple[str, list[str]]:
        """A root field's JSON expression, and the guards under which it is the resolvers' answer."""
        name = sel.name
        if name in ("agent", "call", "chat", "rerunJob"):
            if name == "agent":
                return self.one("Agent", sel, "agents",
                                lambda a: f"{a('workspace_id')} = $1::bigint AND {a('agent_id')} = {self.param(sel, 'id', 'text')}",
                                nullable=True), []
            if name == "rerunJob":
                return self.one("RerunJob", sel, "rerun_jobs",
                                lambda j: f"{j('workspace_id')} = $1::bigint AND {j('job_id')} = {self.param(sel, 'id', 'text')}",
                                nullable=True), []
            kind = name.upper()
            return self.one("Call" if kind == "CALL" else "Chat", sel, "conversations",
                            lambda c: f"{c('workspace_id')} = $1::bigint AND {c('conversation_id')} = "
                                      f"{self.param(sel, 'id', 'text')} AND {c('kind')} = '{kind}'",
                            nullable=True), []
        if name == "agents":
            bound = self.bounds[sel.site]

            def where(a: _Scope) -> list[str]:
                conditions = [f"{a('workspace_id')} = $1::bigint"]
                if bound.shape[0]:
                    conditions.append(f"({a('created_at')}, {a('agent_id')}) > "
                                      f"({self.param(sel, 'after_at', 'timestamptz')}, {self.param(sel, 'after_id', 'text')})")
                return conditions

            return self.connection(sel, "Agent", "agents", where, [("created_at", False), ("agent_id", False)],
                                   lambda p: f"gql_cursor('agent', {p('created_at')}, {p('agent_id')})",
                                   ("created_at", "agent_id")), []
        if name in ("calls", "chats"):
            kind = "CALL" if name == "calls" else "CHAT"
            guards = []
            if "agent_id" in self.bounds[sel.site].shape:
                guards.append(f"EXISTS (SELECT 1 FROM agents WHERE workspace_id = $1::bigint AND agent_id = "
                              f"{self.param(sel, 'agent_id', 'text')})")
            return self.conversations(sel, kind, None), guards
        if name == "rerunJobs":
            bound = self.bounds[sel.site]
            has_after, by_agent = bound.shape
            guards = []
            if by_agent:
                guards.append(f"EXISTS (SELECT 1 FROM agents WHERE workspace_id = $1::bigint AND agent_id = "
                              f"{self.param(sel, 'agent_id', 'text')})")

            def where(j: _Scope) -> list[str]:
                conditions = [f"{j('workspace_id')} = $1::bigint"]
                if by_agent:
                    conditions.append(f"{j('agent_id')} = {self.param(sel, 'agent_id', 'text')}")
                if has_after:
                    conditions.append(f"({j('created_at')}, {j('job_id')}) < "
                                      f"({self.param(sel, 'after_at', 'timestamptz')}, {self.param(sel, 'after_id', 'text')})")
                return conditions

            return self.connection(sel, "RerunJob", "rerun_jobs", where, [("created_at", True), ("job_id", True)],
                                   lambda p: f"gql_cursor('job', {p('created_at')}, {p('job_id')})",
                                   ("created_at", "job_id")), guards
        raise Unsupported(name)


def _instant(column: str) -> str:
    return f"gql_instant({column})"


def _leaf(column: str, wrap: Callable[[str], str] = lambda c: c) -> Callable[[_Builder, Sel, _Scope], str]:
    return lambda _b, _sel, scope: wrap(scope(column))


def _config(source: Callable[[_Scope], Callable[[str], str]]) -> Callable[[_Builder, Sel, _Scope], str]:
    """AnalysisConfig from a version's columns or from a config snapshot (jsonb): `source(scope)(key)`
    gives the text of a key, and `source(scope)('data_fields')` the data fields' jsonb."""

    def handler(builder: _Builder, sel: Sel, scope: _Scope) -> str:
        get = source(scope)
        parts = []
        for field in sel.children:
            name = field.name
            if name == "__typename":
                value = "'AnalysisConfig'"
            elif name in ("summaryPrompt", "successfulPrompt", "userSentimentPrompt"):
                default = {"summaryPrompt": base.DEFAULT_SUMMARY_PROMPT, "successfulPrompt": base.DEFAULT_SUCCESSFUL_PROMPT,
                           "userSentimentPrompt": base.DEFAULT_USER_SENTIMENT_PROMPT}[name]
                value = f"coalesce(nullif({get(_CONFIG_KEYS[name])}, ''), {_literal(default)})"
            elif name.endswith("IsDefault"):
                value = f"({get(_CONFIG_KEYS[name.removesuffix('IsDefault')])} IS NULL)"
            elif name == "model":
                value = get("model")
            elif name == "dataFields":
                value = _data_fields(builder, field, get("data_fields"))
            elif name == "successRubric":
                value = _rubric(builder, field, get("success_rubric"))
            elif name == "rationale":
                value = f"coalesce({get('rationale')}, 'NONE')"
            else:
                raise Unsupported(f"AnalysisConfig.{name}")
            parts.append(f"{_literal(field.key)}, {value}")
        return f"json_build_object({', '.join(parts)})"

    return handler


_CONFIG_KEYS = {"summaryPrompt": "summary_prompt", "successfulPrompt": "successful_prompt",
                "userSentimentPrompt": "user_sentiment_prompt"}


def _elements(builder: _Builder, sel: Sel, source: str, values: Callable[[str, Sel], str]) -> str:
    """The selected fields of each element of a jsonb array, in order: `values(element, field)` is the SQL
    of one field, `element` the jsonb of one element."""
    e = builder.alias("e")
    parts = ", ".join(f"{_literal(field.key)}, {values(f'{e}.v', field)}" for field in sel.children)
    return (f"(SELECT coalesce(json_agg(json_build_object({parts}) ORDER BY {e}.o), '[]'::json) "
            f"FROM jsonb_array_elements({source}) WITH ORDINALITY AS {e}(v, o))")


def _text_or_empty(key: str) -> Callable[[str], str]:
    return lambda v: f"coalesce({v}->'{key}', '\"\"'::jsonb)"


def _data_fields(builder: _Builder, sel: Sel, fields_jsonb: str) -> str:
    return _elements(builder, sel, fields_jsonb, lambda v, field: {
        "__typename": lambda _: "'DataField'",
        "name": lambda v: f"{v}->'name'",
        "type": lambda v: f"{v}->'type'",
        "description": lambda v: f"coalesce({v}->>'description', '')",
        "examples": lambda v: f"coalesce(nullif({v}->'examples', 'null'::jsonb), '[]'::jsonb)",
        "choices": lambda v: f"nullif({v}->'choices', 'null'::jsonb)",
        "required": lambda v: f"coalesce(({v}->'required') = 'true'::jsonb, false)",
    }[field.name](v))


def _rubric(builder: _Builder, sel: Sel, rubric_jsonb: str) -> str:
    """AnalysisConfig.successRubric from its jsonb (a column, or a snapshot's key that may be absent or null)."""
    values = {
        "__typename": lambda v: "'SuccessRubric'",
        "type": lambda v: f"{v}->'type'",
        "threshold": lambda v: f"nullif({v}->'threshold', 'null'::jsonb)",
        "scaleMin": lambda v: f"nullif({v}->'scale_min', 'null'::jsonb)",
        "scaleMax": lambda v: f"nullif({v}->'scale_max', 'null'::jsonb)",
        "criteria": lambda v: _elements(builder, field, f"coalesce({v}->'criteria', '[]'::jsonb)", lambda c, f: {
            "__typename": "'RubricCriterion'", "name": f"{c}->'name'", "prompt": f"{c}->'prompt'"}[f.name]),
    }
    parts = []
    for field in sel.children:
        parts.append(f"{_literal(field.key)}, {values[field.name](rubric_jsonb)}")
    return (f"CASE WHEN jsonb_typeof({rubric_jsonb}) = 'object' "
            f"THEN json_build_object({', '.join(parts)}) END")


_RATIONALE = {"__typename": None, "reason": "reason", "quote": "quote", "turn": "turn", "quoteFound": "quote_found"}


def _rationale_object(sel: Sel, rationale_jsonb: str, typename: str) -> str:
    """A Rationale from its jsonb ({reason, quote, turn, quote_found}); null when absent."""
    parts = []
    for field in sel.children:
        key = _RATIONALE[field.name]
        value = f"'{typename}'" if key is None else (
            f"coalesce({rationale_jsonb}->'quote_found', 'false'::jsonb)" if key == "quote_found"
            else f"nullif({rationale_jsonb}->'{key}', 'null'::jsonb)")
        parts.append(f"{_literal(field.key)}, {value}")
    return f"CASE WHEN jsonb_typeof({rationale_jsonb}) = 'object' THEN json_build_object({', '.join(parts)}) END"


def _evaluation(builder: _Builder, sel: Sel, scope: _Scope) -> str:
    """AnalysisResult.evaluation from the evaluation column, its criteria's rationale from the rationale column."""
    e = scope("evaluation")
    parts = []
    for field in sel.children:
        name = field.name
        if name == "__typename":
            value = "'SuccessEvaluation'"
        elif name in ("type", "verdict", "level"):
            value = f"nullif({e}->'{name}', 'null'::jsonb)"
        elif name in ("score", "threshold", "scaleMin", "scaleMax"):
            key = {"scaleMin": "scale_min", "scaleMax": "scale_max"}.get(name, name)
            value = f"nullif({e}->'{key}', 'null'::jsonb)"
        elif name == "criteria":
            rationale = scope("rationale")
            value = _elements(builder, field, f"coalesce({e}->'criteria', '[]'::jsonb)", lambda c, f: {
                "__typename": lambda: "'CriterionVerdict'",
                "name": lambda: f"{c}->'name'",
                "verdict": lambda: f"{c}->'verdict'",
                "rationale": lambda: _rationale_object(f, f"({rationale}->('{base.CRITERION_PREFIX}' || ({c}->>'name')))",
                                                       "Rationale"),
            }[f.name]())
        else:
            raise Unsupported(f"SuccessEvaluation.{name}")
        parts.append(f"{_literal(field.key)}, {value}")
    return f"CASE WHEN {e} IS NOT NULL THEN json_build_object({', '.join(parts)}) END"


def _output_rationale(builder: _Builder, sel: Sel, scope: _Scope) -> str:
    """AnalysisResult.rationale in types.output_order, like outputSources."""
    o = builder.alias("o")
    parts = []
    for field in sel.children:
        if field.name == "output":
            value = f"{o}.k"
        elif field.name == "__typename":
            value = "'OutputRationale'"
        else:
            key = _RATIONALE[field.name]
            value = (f"coalesce({o}.v->'quote_found', 'false'::jsonb)" if key == "quote_found"
                     else f"nullif({o}.v->'{key}', 'null'::jsonb)")
        parts.append(f"{_literal(field.key)}, {value}")
    rank = " ".join(f"WHEN '{name}' THEN {i}" for name, i in _PRESET_RANK.items())
    return (f"(SELECT coalesce(json_agg(json_build_object({', '.join(parts)}) "
            f"ORDER BY CASE {o}.k {rank} ELSE 4 END, {o}.k COLLATE \"C\"), '[]'::json) "
            f"FROM jsonb_each(coalesce({scope('rationale')}, '{{}}'::jsonb)) AS {o}(k, v))")


def _columns(scope: _Scope) -> Callable[[str], str]:
    return lambda key: scope(key)


_JSONB_CONFIG_KEYS = ("data_fields", "success_rubric")


def _snapshot(column: str) -> Callable[[_Scope], Callable[[str], str]]:
    def source(scope: _Scope) -> Callable[[str], str]:
        return lambda key: f"({scope(column)}->'{key}')" if key in _JSONB_CONFIG_KEYS else f"({scope(column)}->>'{key}')"

    return source


def _agent_of(column: str, *, nullable: bool = False) -> Callable[[_Builder, Sel, _Scope], str]:
    return lambda b, sel, s: b.one(
        "Agent", sel, "agents",
        lambda a: f"{a('workspace_id')} = $1::bigint AND {a('agent_id')} = {s(column)}", nullable=nullable)


def _version_of(agent_column: str, version_column: str) -> Callable[[_Builder, Sel, _Scope], str]:
    return lambda b, sel, s: b.one(
        "AgentVersion", sel, "agent_versions",
        lambda v: f"{v('workspace_id')} = $1::bigint AND {v('agent_id')} = {s(agent_column)} "
                  f"AND {v('version')} = {s(version_column)}", nullable=False)


def _result_by_id(column: str) -> Callable[[_Builder, Sel, _Scope], str]:
    return lambda b, sel, s: b.one(
        "AnalysisResult", sel, "analysis_results",
        lambda r: f"{r('workspace_id')} = $1::bigint AND {r('id')} = {s(column)}", nullable=True)


def _conversation_fields(kind: str) -> dict[str, Callable[[_Builder, Sel, _Scope], str]]:
    prefix = "call" if kind == "CALL" else "chat"
    fields: dict[str, Callable[[_Builder, Sel, _Scope], str]] = {
        "id": _leaf("conversation_id"),
        f"{prefix}Type": _leaf("conversation_type"),
        f"{prefix}Status": _leaf("status", lambda c: f"upper({c})"),
        "startedAt": _leaf("started_at", _instant),
        "endedAt": _leaf("ended_at", _instant),
        "transcript": _leaf("transcript"),
        "metadata": _leaf("metadata"),
        "agent": _agent_of("agent_id"),
        "agentVersion": _version_of("agent_id", "agent_version"),
        "analysis": lambda b, sel, s: b.one(
            "AnalysisResult", sel, "analysis_results",
            lambda r: f"{r('workspace_id')} = $1::bigint AND {r('conversation_id')} = {s('conversation_id')} "
                      f"AND {r('is_current')}", nullable=True),
        "analysisHistory": lambda b, sel, s: b.many(
            "AnalysisResult", sel, "analysis_results",
            lambda r: f"{r('workspace_id')} = $1::bigint AND {r('conversation_id')} = {s('conversation_id')} "
                      f"AND NOT {r('is_current')}", "{a}.id DESC"),
    }
    if kind == "CALL":
        fields.update({
            "direction": _leaf("direction"),
            "fromNumber": _leaf("from_number"),
            "toNumber": _leaf("to_number"),
            "durationMs": _leaf("duration_ms"),
            "disconnectionReason": _leaf("disconnection_reason"),
            "transcriptObject": _utterances,
        })
    else:
        fields["messages"] = _messages
    return fields


def _utterances(builder: _Builder, sel: Sel, scope: _Scope) -> str:
    def word(v: str, field: Sel) -> str:
        return {"__typename": lambda _: "'Word'", "word": _text_or_empty("word"),
                "start": lambda v: f"{v}->'start'", "end": lambda v: f"{v}->'end'"}[field.name](v)

    def utterance(v: str, field: Sel) -> str:
        if field.name == "words":
            words = f"{v}->'words'"
            return f"CASE WHEN jsonb_typeof({words}) = 'array' THEN {_elements(builder, field, words, word)} END"
        return {"__typename": lambda _: "'Utterance'", "role": _text_or_empty("role"),
                "content": _text_or_empty("content")}[field.name](v)

    return _elements(builder, sel, scope("utterances"), utterance)


def _messages(builder: _Builder, sel: Sel, scope: _Scope) -> str:
    return _elements(builder, sel, scope("utterances"), lambda v, field: {
        "__typename": lambda _: "'Message'",
        "role": _text_or_empty("role"),
        "content": _text_or_empty("content"),
        "createdAt": lambda v: f"CASE WHEN jsonb_typeof({v}->'created_timestamp') = 'number' THEN "
                               f"gql_instant(to_timestamp(({v}->>'created_timestamp')::float8 / 1000)) END",
    }[field.name](v))


def _agent_conversations(kind: str) -> Callable[[_Builder, Sel, _Scope], str]:
    return lambda b, sel, s: b.conversations(sel, kind, s("agent_id"))


def _rerun_items(builder: _Builder, sel: Sel, scope: _Scope) -> str:
    bound = builder.bounds[sel.site]

    def where(i: _Scope) -> list[str]:
        conditions = [f"{i('workspace_id')} = $1::bigint", f"{i('job_id')} = {scope('job_id')}",
                      f"{i('seq')} > {builder.param(sel, 'after_seq', 'int')}"]
        if bound.shape[0]:
            conditions.append(f"{i('status')} = ANY({builder.param(sel, 'statuses', 'text[]')})")
        return conditions

    return builder.connection(sel, "RerunItem", "rerun_items", where, [("seq", False)],
                              lambda p: f"gql_position_cursor('item', {p('seq')})", ("seq",))


def _item_conversation(kind: str) -> Callable[[_Builder, Sel, _Scope], str]:
    return lambda b, sel, s: b.one(
        "Call" if kind == "CALL" else "Chat", sel, "conversations",
        lambda c: f"{c('workspace_id')} = $1::bigint AND {c('conversation_id')} = {s('conversation_id')} "
                  f"AND {c('kind')} = '{kind}'", nullable=True)


_IMPACT_KEYS = {"compared": "compared", "withoutPreviousResult": "without_previous_result",
                "flippedToSuccessful": "flipped_to_successful", "flippedToUnsuccessful": "flipped_to_unsuccessful",
                "sentimentChanged": "sentiment_changed"}
_FIELD_IMPACT = {"__typename": lambda _v: "'CustomFieldImpact'", "name": lambda v: f"{v}->'name'",
                 "changed": lambda v: f"{v}->'changed'"}


def _impact(builder: _Builder, sel: Sel, scope: _Scope) -> str:
    """RerunJob.impact: the jsonb of rerun_impact (migration 011) as of the job row's counters, like the loader."""
    m = builder.alias("m")
    parts = []
    for field in sel.children:
        if field.name == "__typename":
            value = "'RerunImpact'"
        elif field.name == "customDataChanged":
            value = _elements(builder, field, f"{m}.v->'custom_data_changed'", lambda v, f: _FIELD_IMPACT[f.name](v))
        elif field.name in _IMPACT_KEYS:
            value = f"{m}.v->'{_IMPACT_KEYS[field.name]}'"
        else:
            raise Unsupported(f"RerunImpact.{field.name}")
        parts.append(f"{_literal(field.key)}, {value}")
    return (f"(SELECT json_build_object({', '.join(parts)}) "
            f"FROM rerun_impact({scope('job_id')}, {scope('succeeded')} + {scope('failed')}) AS {m}(v))")


def _output_sources(builder: _Builder, sel: Sel, scope: _Scope) -> str:
    """AnalysisResult.outputSources in types.output_order: presets first, then custom fields by name."""
    o = builder.alias("o")
    values = {
        "__typename": "'AnalysisOutputSource'",
        "output": f"{o}.k",
        "resultId": f"coalesce({scope('output_sources')}->>{o}.k, {scope('id')}::text)",
        "carriedOver": f"({scope('output_sources')} ? {o}.k)",
    }
    parts = ", ".join(f"{_literal(field.key)}, {values[field.name]}" for field in sel.children)
    rank = " ".join(f"WHEN '{name}' THEN {i}" for name, i in _PRESET_RANK.items())
    return (f"(SELECT coalesce(json_agg(json_build_object({parts}) "
            f"ORDER BY CASE {o}.k {rank} ELSE 4 END, {o}.k COLLATE \"C\"), '[]'::json) "
            f"FROM jsonb_object_keys(coalesce({scope('output_fingerprints')}, '{{}}'::jsonb)) AS {o}(k))")


_PRESET_RANK = {base.SUMMARY: 0, base.SUCCESSFUL: 1, base.USER_SENTIMENT: 2, base.IN_VOICEMAIL: 3}


_TYPES: dict[str, dict[str, Callable[[_Builder, Sel, _Scope], str]]] = {
    "Agent": {
        "id": _leaf("agent_id"),
        "name": _leaf("name"),
        "channel": _leaf("channel"),
        "createdAt": _leaf("created_at", _instant),
        "draft": lambda b, sel, s: b.one(
            "AgentVersion", sel, "agent_versions",
            lambda v: f"{v('workspace_id')} = $1::bigint AND {v('agent_id')} = {s('agent_id')} AND NOT {v('is_published')}",
            nullable=False),
        "versions": lambda b, sel, s: b.many(
            "AgentVersion", sel, "agent_versions",
            lambda v: f"{v('workspace_id')} = $1::bigint AND {v('agent_id')} = {s('agent_id')}", "{a}.version DESC"),
        "calls": _agent_conversations("CALL"),
        "chats": _agent_conversations("CHAT"),
    },
    "AgentVersion": {
        "id": lambda _b, _sel, s: f"{s('agent_id')} || '@' || {s('version')}",
        "agentId": _leaf("agent_id"),
        "version": _leaf("version"),
        "isPublished": _leaf("is_published"),
        "isLatestDraft": _leaf("is_published", lambda c: f"NOT {c}"),
        "title": _leaf("title"),
        "createdAt": _leaf("created_at", _instant),
        "publishedAt": _leaf("published_at", _instant),
        "configUpdatedAt": _leaf("config_updated_at", _instant),
        "revision": _leaf("revision"),
        "analysisConfig": _config(_columns),
        "agent": _agent_of("agent_id"),
        "configChanges": lambda b, sel, s: b.many(
            "ConfigChange", sel, "agent_version_changes",
            lambda c: f"{c('workspace_id')} = $1::bigint AND {c('agent_id')} = {s('agent_id')} "
                      f"AND {c('version')} = {s('version')}", "{a}.id DESC"),
    },
    "ConfigChange": {
        "changedAt": _leaf("changed_at", _instant),
        "changedFields": _leaf("changed_fields", lambda c: f"to_json({c})"),
        "origin": _leaf("origin", lambda c: f"upper({c})"),
        "before": _config(_snapshot("before_config")),
        "after": _config(_snapshot("after_config")),
    },
    "AnalysisResult": {
        "id": _leaf("id", lambda c: f"{c}::text"),
        "conversationId": _leaf("conversation_id"),
        "trigger": _leaf("trigger"),
        "model": _leaf("model"),
        "summary": _leaf("summary"),
        "successful": _leaf("successful"),
        "userSentiment": _leaf("user_sentiment"),
        "inVoicemail": _leaf("in_voicemail"),
        "customData": _leaf("custom_data"),
        "inputTokens": _leaf("input_tokens"),
        "outputTokens": _leaf("output_tokens"),
        "costUsd": _leaf("cost_usd", lambda c: f"{c}::text"),
        "charged": _leaf("charged"),
        "createdAt": _leaf("created_at", _instant),
        "agentVersion": _version_of("agent_id", "agent_version"),
        "outputSources": _output_sources,
        "evaluation": _evaluation,
        "rationale": _output_rationale,
    },
    "Call": _conversation_fields("CALL"),
    "Chat": _conversation_fields("CHAT"),
    "RerunJob": {
        "id": _leaf("job_id"),
        "status": _leaf("status"),
        "total": _leaf("total"),
        "succeeded": _leaf("succeeded"),
        "failed": _leaf("failed"),
        "canceled": _leaf("canceled"),
        "skipped": _leaf("skipped"),
        "pending": lambda _b, _sel, s: f"({s('total')} - {s('succeeded')} - {s('failed')} - {s('canceled')})",
        "estimatedCostUsd": _leaf("estimated_cost_usd", lambda c: f"{c}::text"),
        "estimatedInputTokens": _leaf("estimated_input_tokens"),
        "estimatedOutputTokens": _leaf("estimated_output_tokens"),
        "costUsd": _leaf("cost_usd", lambda c: f"{c}::text"),
        "configVersion": _leaf("config_version"),
        "configSource": _leaf("config_snapshot", lambda c: f"coalesce({c}->>'{SOURCE_KEY}', '{DRAFT}')"),
        "mode": _leaf("mode"),
        "batches": lambda b, sel, s: b.many(
            "RerunBatch", sel, "rerun_batches", lambda r: f"{r('job_id')} = {s('job_id')}", "{a}.batch_id"),
        "config": _config(_snapshot("config_snapshot")),
        "targets": _leaf("targets"),
        "requestedBy": _leaf("requested_by"),
        "cancelRequestedAt": _leaf("cancel_requested_at", _instant),
        "createdAt": _leaf("created_at", _instant),
        "startedAt": _leaf("started_at", _instant),
        "finishedAt": _leaf("finished_at", _instant),
        "agent": _agent_of("agent_id"),
        "items": _rerun_items,
        "impact": _impact,
        "retryOf": lambda b, sel, s: b.one(
            "RerunJob", sel, "rerun_jobs",
            lambda j: f"{j('workspace_id')} = $1::bigint AND {j('job_id')} = ({s('targets')}->>'retryOf')", nullable=True),
        "retries": lambda b, sel, s: b.many(
            "RerunJob", sel, "rerun_jobs",
            lambda j: f"{j('workspace_id')} = $1::bigint AND ({j('targets')}->>'retryOf') = {s('job_id')}",
            "{a}.created_at DESC, {a}.job_id DESC"),
    },
    "RerunBatch": {
        "name": _leaf("display_name"),
        "providerName": _leaf("provider_name"),
        "state": _leaf("state"),
        "items": _leaf("items"),
        "recorded": _leaf("recorded"),
        "error": _leaf("error"),
        "createdAt": _leaf("created_at", _instant),
        "submittedAt": _leaf("submitted_at", _instant),
        "finishedAt": _leaf("finished_at", _instant),
    },
    "RerunItem": {
        "conversationId": _leaf("conversation_id"),
        "status": _leaf("status"),
        "error": _leaf("error"),
        "attempts": _leaf("attempts"),
        "outputs": _leaf("outputs", lambda c: f"to_json({c})"),
        "startedAt": _leaf("started_at", _instant),
        "finishedAt": _leaf("finished_at", _instant),
        "result": _result_by_id("result_id"),
        "previousResult": _result_by_id("previous_result_id"),
        "call": _item_conversation("CALL"),
        "chat": _item_conversation("CHAT"),
    },
}


def build_statement(bounds: list[Bound], roots: list[Sel]) -> Statement:
    """One statement for the root fields that compile; a root field that doesn't is left out of it."""
    builder = _Builder(bounds)
    columns, guards, keys = [], [], []
    for sel in roots:
        refs = len(builder.refs)
        try:
            expr, root_guards = builder.root(sel)
        except (Unsupported, KeyError):
            del builder.refs[refs:]
            continue
        columns.append(f"({expr})::text")
        guards.extend(root_guards)
        keys.append(sel.key)
    if not columns:
        raise Unsupported("no root field compiles")
    select = ", ".join(columns + [f"({g})" for g in guards])
    return Statement(f"SELECT {select}", tuple(builder.refs), tuple(keys), len(guards))


# ---- the engine ----------------------------------------------------------------------------------


@dataclass
class Prepared:
    """What one request runs: the statement, its arguments, and the root fields it answers."""

    statement: Statement
    args: list[Any]
    roots: list[Sel]


class ReadEngine:
    """Compiles and caches; the executor runs what it prepares (schema/execution.py)."""

    def __init__(self) -> None:
        self._trees = _Lru(_TREE_CACHE_SIZE)
        self.compiled = 0  # root fields answered by a compiled statement
        self.resolved = 0  # root fields of queries answered by the resolvers
        self._directives: dict[int, tuple[Any, tuple[str, ...]]] = {}

    def prepare(self, executor: Any, root_type: GraphQLObjectType, grouped: dict[str, list[Any]], workspace_id: int) -> Prepared | None:
        operation = executor.operation
        if operation.operation != OperationType.QUERY:
            return None
        directive_names = self._directive_names(operation, executor.fragments)
        variables = executor.variable_values
        coerced = getattr(variables, "coerced", variables) or {}
        key = (id(operation), tuple(coerced.get(name) for name in directive_names))
        tree: Tree = self._trees.get_or(key, lambda: build_tree(executor, root_type, grouped))
        if not tree.roots:
            return None
        bounds: list[Bound | None] = []
        for site in tree.sites:
            try:
                bounds.append(_bind(site, site.parent, executor))
            except Exception:  # the resolvers answer with the reference error, or run what isn't compiled
                bounds.append(None)
        roots = [root for root in tree.roots if all(bounds[site] is not None for site in tree.sites_below[root.key])]
        if not roots:
            return None
        # A statement per shape of the arguments, and per page size, which it holds as a literal.
        shape = tuple((b.shape, b.values.get("limit")) if b is not None else None for b in bounds)

        def build() -> Statement | None:
            try:
                return build_statement(bounds, roots)  # type: ignore[arg-type]
            except Unsupported:
                return None  # remembered: the resolvers answer this shape

        statement = tree.statements.get_or((shape, tuple(root.key for root in roots)), build)  # type: ignore[union-attr]
        if statement is None:
            return None
        args = [workspace_id if site < 0 else bounds[site].values[name] for site, name in statement.refs]  # type: ignore[union-attr]
        return Prepared(statement, args, [root for root in roots if root.key in statement.roots])

    def _directive_names(self, operation: Any, fragments: dict[str, Any]) -> tuple[str, ...]:
        hit = self._directives.get(id(operation))
        if hit is not None and hit[0] is operation:
            return hit[1]
        names = _directive_variables(operation, fragments)
        if len(self._directives) >= _TREE_CACHE_SIZE:
            self._directives.clear()
        self._directives[id(operation)] = (operation, names)
        return names


def _walk(sel: Sel) -> Iterable[Sel]:
    yield sel
    for child in sel.children:
        yield from _walk(child)


