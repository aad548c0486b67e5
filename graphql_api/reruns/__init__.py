"""Rerun jobs: planning, workers and progress streaming."""
