"""An executor that runs a subscription event's selection once for every subscriber sharing it.

A rerun's progress event goes to every subscriber of the job. Subscribers that sent the same
document with the same variables get the same answer, so the first one to execute it stores the
result on the event and the others reuse it: fan-out costs a send per subscriber, not an execution.
"""

from __future__ import annotations

from typing import Any

import orjson
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class SharedEvent:
    """Mixed into a subscription payload whose result may be shared by subscribers."""

    def shared_results(self) -> dict[Any, Any]:
        cache = self.__dict__.get("_shared_results")
        if cache is None:
            cache = self.__dict__["_shared_results"] = {}
        return cache


class _Cached:
    """Stands in for a per-event executor when the event's result is already known."""

    def __init__(self, result: Any):
        self.result = result

    def execute_operation(self, *_: Any, **__: Any) -> Any:
        return self.result


class SharedEventExecutor(StrawberryGraphQLCoreExecutionContext):
    def _shared_key(self) -> tuple[int, bytes]:
        return (id(self.operation), orjson.dumps(self.variable_values, option=orjson.OPT_SORT_KEYS, default=str))

    def build_per_event_executor(self, payload: Any) -> Any:
        if isinstance(payload, SharedEvent):
            hit = payload.shared_results().get(self._shared_key())
            if hit is not None:
                return _Cached(hit[1])
        # A subscription is one operation with one context; each event reads fresh rows, not the first event's.
        reset = getattr(self.context_value, "reset_loaders", None)
        if reset is not None:
            reset()
        return super().build_per_event_executor(payload)

    def execute_operation(self, *args: Any, **kwargs: Any) -> Any:
        payload = self.root_value
        if not isinstance(payload, SharedEvent):
            return super().execute_operation(*args, **kwargs)
        cache = payload.shared_results()
        # The operation object is kept in the entry, so its id can't be reused while the entry lives.
        key = self._shared_key()
        result = super().execute_operation(*args, **kwargs)
        if self.is_awaitable(result):
            async def store() -> Any:
                done = await result
                cache[key] = (self.operation, done)
                return done

            return store()
        cache[key] = (self.operation, result)
        return result
