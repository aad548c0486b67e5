"""Analyzers that turn a transcript and an analysis config into a typed result."""
