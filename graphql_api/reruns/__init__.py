"""Reruns: planning (targets, estimate, job), workers (claim, analyze, commit) and progress (LISTEN fan-out)."""

# A job in one of these states is over: nothing of it runs any more.
FINAL_STATUSES = frozenset({"SUCCEEDED", "PARTIALLY_FAILED", "FAILED", "CANCELED"})
