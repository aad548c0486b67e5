"""GraphQL API server for reading agents and conversations and rerunning their post-call/chat analysis."""

# Every module logs through structlog: importing the package routes it into the standard library's logging.
from graphql_api import logs as _logs  # noqa: F401
