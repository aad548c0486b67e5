"""Test helpers that ship with the package: a Gemini-compatible HTTP server for tests and benchmarks."""

from graphql_api.testing.gemini_server import ErrorReply, GeminiTestServer, RecordedRequest, example_from_schema

__all__ = ["ErrorReply", "GeminiTestServer", "RecordedRequest", "example_from_schema"]
