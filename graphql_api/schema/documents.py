"""GraphQL documents before they run: parsed with a token limit, checked against the limits (operations,
depth, aliases, cost), validated, and kept in a cache bounded in bytes.

Every refusal here happens before any resolver or SQL runs and answers LIMIT_EXCEEDED with the limit's
name and value. The cost is the number of objects a selection can return, with connection sizes
(`first`) multiplied through, like GitHub's node limit.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    StringValueNode,
    VariableNode,
    Visitor,
    get_named_type,
    parse,
    specified_rules,
    validate,
    visit,
)
from graphql.error import GraphQLSyntaxError
from strawberry.extensions import SchemaExtension
import structlog

from graphql_api.config import Settings
from graphql_api.inputs import text_problem, unstorable_strings
from graphql_api.schema.extensions import INTERNAL_MESSAGE
from graphql_api.schema.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE

log = structlog.stdlib.get_logger(__name__)

# What a plain list (not a connection) is assumed to hold, for the cost.
LIST_SIZE_ESTIMATE = 10
# An introspection field costs this much, whatever it selects: the schema is finite, so its subtree is
# not walked, but asking for it many times in one document is refused.
INTROSPECTION_COST = 1_000
# Bytes a parsed document and its validation take per byte of text (measured on graphql-core 3.3:
# about 70 for alias-heavy documents); the cache is bounded by this estimate.
AST_BYTES_PER_TEXT_BYTE = 70


def limit_error(message: str, limit: str, value: int | float) -> GraphQLError:
    return GraphQLError(message, extensions={"code": "LIMIT_EXCEEDED", "limit": limit, "value": value})


@dataclass
class Shape:
    """What a document asks for, independent of its variables."""

    operations: int
    depth: int
    aliases: int
    introspection: bool


@dataclass
class Entry:
    document: DocumentNode
    size: int
    shape: Shape
    refusals: list[GraphQLError]  # the limits the shape breaks under this cache's settings
    validation: list[GraphQLError] | None = None
    bad_literals: list[tuple[StringValueNode, str]] | None = None
    # The cost of each operation that takes no variables (it can't change): operation node id -> cost.
    fixed_costs: dict[int, int] = field(default_factory=dict)


class DocumentCache:
    """Parsed documents by their text, least recently used first out, bounded in (estimated) bytes.

    Documents larger than `cacheable_document_bytes` are parsed every time and never kept.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self._entries: OrderedDict[str, Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, query: str) -> Entry:
        with self._lock:
            entry = self._entries.get(query)
            if entry is not None:
                self._entries.move_to_end(query)
                self.hits += 1
                return entry
        self.misses += 1
        entry = self._parse(query)
        # Only documents that may run are kept: a refused one must not cost memory after its answer.
        if len(query) <= self.settings.cacheable_document_bytes and not entry.refusals:
            with self._lock:
                if query not in self._entries:
                    self._entries[query] = entry
                    self._bytes += entry.size
                while self._bytes > self.settings.document_cache_bytes and self._entries:
                    _, evicted = self._entries.popitem(last=False)
                    self._bytes -= evicted.size
        return entry

    def _parse(self, query: str) -> Entry:
        limit = self.settings.max_tokens
        # Cheap bounds first: the parser needs tens of milliseconds to reach its token limit.
        if len(query) > self.settings.max_document_bytes:
            raise limit_error(
                f"The document is larger than {self.settings.max_document_bytes} bytes (MAX_DOCUMENT_BYTES).",
                "max_document_bytes", self.settings.max_document_bytes)
        if rough_token_count(query) > limit:
            raise _too_many_tokens(limit)
        try:
            document = parse(query, max_tokens=limit, no_location=False)
        except GraphQLSyntaxError as exc:
            if "tokens" in exc.message and "Parsing aborted" in exc.message:
                raise _too_many_tokens(limit) from None
            raise
        shape = shape_of(document)
        return Entry(document=document, size=len(query) * AST_BYTES_PER_TEXT_BYTE, shape=shape,
                     refusals=shape_errors(shape, self.settings))


# GraphQL's tokens, near enough to count them in C at regex speed: strings, block strings, comments (not
# counted), the spread, punctuators, numbers and names. Commas and white space are not tokens.
_TOKEN = re.compile(
    r'"""(?:[^"\\]|\\.|"(?!""))*"""|"(?:[^"\\\n]|\\.)*"|#[^\n\r]*|\.\.\.|[!$&():=@\[\]{|}]|-?[0-9][0-9.eE+-]*|[_A-Za-z][_0-9A-Za-z]*'
)


def rough_token_count(query: str) -> int:
    return sum(1 for match in _TOKEN.finditer(query) if match.group()[0] != "#")


def _too_many_tokens(limit: int) -> GraphQLError:
    return limit_error(f"The document has more than {limit} tokens (MAX_TOKENS).", "max_tokens", limit)


# ---- shape: operations, depth, aliases ------------------------------------------------------------


def shape_of(document: DocumentNode) -> Shape:
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    memo: dict[str, tuple[int, int, bool]] = {}

    def walk(selection_set: SelectionSetNode | None, visiting: frozenset[str]) -> tuple[int, int, bool]:
        """(depth, aliases, introspection) of a selection set, fragments expanded (each counted per use)."""
        if selection_set is None:
            return 0, 0, False
        depth = aliases = 0
        introspection = False
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name in ("__schema", "__type"):
                    introspection = True
                    d, a = 1, 0  # finite: not walked (see INTROSPECTION_COST)
                else:
                    d, a, i = walk(selection.selection_set, visiting)
                    d, introspection = d + 1, introspection or i
                aliases += a + (selection.alias is not None)
                depth = max(depth, d)
            elif isinstance(selection, InlineFragmentNode):
                d, a, i = walk(selection.selection_set, visiting)
                depth, aliases, introspection = max(depth, d), aliases + a, introspection or i
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name in visiting or name not in fragments:
                    continue  # a cycle or an unknown fragment: validation refuses it
                if name not in memo:
                    memo[name] = walk(fragments[name].selection_set, visiting | {name})
                d, a, i = memo[name]
                depth, aliases, introspection = max(depth, d), aliases + a, introspection or i
        return depth, aliases, introspection

    depth = aliases = 0
    introspection = False
    for operation in operations:
        d, a, i = walk(operation.selection_set, frozenset())
        depth, aliases, introspection = max(depth, d), aliases + a, introspection or i
    return Shape(operations=len(operations), depth=depth, aliases=aliases, introspection=introspection)


def shape_errors(shape: Shape, settings: Settings) -> list[GraphQLError]:
    errors = []
    if shape.operations > settings.max_operations:
        errors.append(limit_error(
            f"The document has {shape.operations} operations; at most {settings.max_operations} are allowed (MAX_OPERATIONS).",
            "max_operations", settings.max_operations))
    if shape.depth > settings.max_depth:
        errors.append(limit_error(
            f"The selection is {shape.depth} levels deep; at most {settings.max_depth} are allowed (MAX_DEPTH).",
            "max_depth", settings.max_depth))
    if shape.aliases > settings.max_aliases:
        errors.append(limit_error(
            f"The document uses {shape.aliases} aliases; at most {settings.max_aliases} are allowed (MAX_ALIASES).",
            "max_aliases", settings.max_aliases))
    if shape.introspection and not settings.introspection:
        errors.append(GraphQLError(
            "Introspection is turned off here (ENVIRONMENT=production; INTROSPECTION=1 turns it on). "
            "The schema is published as schema.graphql.",
            extensions={"code": "FORBIDDEN"}))
    return errors


# ---- cost -------------------------------------------------------------------------------------------


def operation_cost(schema: GraphQLSchema, document: DocumentNode, operation: OperationDefinitionNode,
                   variables: dict[str, Any]) -> int:
    """Objects the operation can return at most, with each connection's `first` multiplied through."""
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    root = {"query": schema.query_type, "mutation": schema.mutation_type, "subscription": schema.subscription_type}[
        operation.operation.value]
    memo: dict[tuple[str, str], int] = {}

    def size_of(node: FieldNode, field_type: Any, parent: GraphQLObjectType) -> int:
        named = get_named_type(field_type)
        if named.name.endswith("Connection"):
            first = _argument(node, "first", variables)
            return max(0, min(first if isinstance(first, int) else DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE))
        unwrapped = field_type.of_type if isinstance(field_type, GraphQLNonNull) else field_type
        if isinstance(unwrapped, GraphQLList):
            # The nodes and edges of a connection are already counted by the connection's size.
            return 1 if parent.name.endswith("Connection") else LIST_SIZE_ESTIMATE
        return 1

    def cost(selection_set: SelectionSetNode | None, parent: Any, visiting: frozenset[str]) -> int:
        if selection_set is None or not isinstance(parent, GraphQLObjectType):
            return 0
        total = 0
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                name = selection.name.value
                if name in ("__schema", "__type"):
                    total += INTROSPECTION_COST
                    continue
                definition = parent.fields.get(name)
                if definition is None or selection.selection_set is None:
                    continue  # a leaf (or unknown: validation refused it)
                child = get_named_type(definition.type)
                total += size_of(selection, definition.type, parent) * (1 + cost(selection.selection_set, child, visiting))
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                target = schema.get_type(condition.name.value) if condition else parent
                total += cost(selection.selection_set, target, visiting)
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                fragment = fragments.get(name)
                if fragment is None or name in visiting:
                    continue
                target = schema.get_type(fragment.type_condition.name.value)
                key = (name, getattr(target, "name", ""))
                if key not in memo:
                    memo[key] = cost(fragment.selection_set, target, visiting | {name})
                total += memo[key]
        return total

    return cost(operation.selection_set, root, frozenset())


def _argument(node: FieldNode, name: str, variables: dict[str, Any]) -> Any:
    for argument in node.arguments or ():
        if argument.name.value == name:
            value = argument.value
            if isinstance(value, IntValueNode):
                return int(value.value)
            if isinstance(value, VariableNode):
                return variables.get(value.name.value)
    return None


def _selected_operation(document: DocumentNode, name: str | None) -> OperationDefinitionNode | None:
    operations = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    if name is None:
        return operations[0] if len(operations) == 1 else None
    return next((o for o in operations if o.name and o.name.value == name), None)


# ---- the extension ----------------------------------------------------------------------------------


def _services(execution_context: Any) -> Any:
    return getattr(execution_context.context, "services", None)


class Documents(SchemaExtension):
    """Parse through the cache and check the limits, validate (cached), then check what only the request
    tells: the operation to run is named when there are several, the cost with the variables' page sizes,
    and strings PostgreSQL can store. A refusal fills `pre_execution_errors`, so nothing runs."""

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        services = _services(context)
        if services is not None and context.query:
            entry = services.documents.get(context.query)  # raises on syntax errors and on MAX_TOKENS
            context.graphql_document = entry.document
            self._entry = entry
        yield

    def on_validate(self) -> Iterator[None]:
        # Before the yield: Strawberry decides whether to execute before it leaves the validation step.
        context = self.execution_context
        services = _services(context)
        entry = getattr(self, "_entry", None)
        if services is not None and entry is not None:
            try:
                context.pre_execution_errors = self._check(context, services.settings, entry)
            except Exception:  # a bug here must not pass for the client's mistake
                log.exception("document_check_failed")
                context.pre_execution_errors = [GraphQLError(INTERNAL_MESSAGE, extensions={"code": "INTERNAL"})]
        yield

    def _check(self, context: Any, settings: Settings, entry: Entry) -> list[GraphQLError]:
        if entry.refusals:
            return entry.refusals
        if entry.validation is None:
            entry.validation = validate(context.schema._schema, entry.document, specified_rules)
        if entry.validation:
            return entry.validation
        provided = context._provided_operation_name
        operation = _selected_operation(entry.document, provided)
        if operation is None:
            if provided is None:
                count = entry.shape.operations
                return [GraphQLError(
                    f"The document has {count} operations; say which one to run with `operationName`.",
                    extensions={"code": "BAD_USER_INPUT", "argument": "operationName"})]
            return []  # not reached: Strawberry refuses an unknown name before validation
        variables = context.variables or {}
        errors = [
            GraphQLError(f"`{path}` {problem}.", extensions={"code": "BAD_USER_INPUT", "argument": path})
            for path, problem in unstorable_strings(variables, "variables")
        ]
        errors += [
            GraphQLError(f"A string in the document {problem}.", nodes=[node], extensions={"code": "BAD_USER_INPUT"})
            for node, problem in _bad_literals(entry)
        ]
        if errors:
            return errors
        if operation.variable_definitions:
            spent = operation_cost(context.schema._schema, entry.document, operation, variables)
        else:
            spent = entry.fixed_costs.get(id(operation))
            if spent is None:
                spent = entry.fixed_costs[id(operation)] = operation_cost(
                    context.schema._schema, entry.document, operation, variables)
        if spent > settings.max_cost:
            return [limit_error(
                f"The operation could return up to {spent} objects; at most {settings.max_cost} are allowed "
                "(MAX_COST). Ask for smaller pages (`first`) or fewer aliases, and page with `after`.",
                "max_cost", settings.max_cost)]
        return []  # validated here: Strawberry's own validation is skipped


class _StringLiterals(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.bad: list[tuple[StringValueNode, str]] = []

    def enter_string_value(self, node: StringValueNode, *_: object) -> None:
        problem = text_problem(node.value)
        if problem is not None:
            self.bad.append((node, problem))


def _bad_literals(entry: Entry) -> list[tuple[StringValueNode, str]]:
    """String literals of the document that PostgreSQL can't store (found once per cached document)."""
    if entry.bad_literals is None:
        literals = _StringLiterals()
        visit(entry.document, literals)
        entry.bad_literals = literals.bad
    return entry.bad_literals
