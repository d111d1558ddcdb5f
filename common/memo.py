"""Values read once per unit of work instead of once per item (W2 7/7).

The drain applies a batch of gateway events in one transaction; each event's handler reads the same few rows (the
routing policy's binding TTL, the endpoints subscribed to an event type, the operator's opt-out rules). Inside
`memo_scope()` such a read is made once and reused for the rest of the scope; outside one, every call reads.

Only what cannot change because of the scope's own work belongs here, and a scope is one transaction: a lock a
read takes (the endpoints' FOR KEY SHARE) is held until its commit, so the remembered value stays covered by it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

T = TypeVar("T")
_scope: ContextVar[dict[Hashable, Any] | None] = ContextVar("chipfarm_memo", default=None)


@contextlib.contextmanager
def memo_scope() -> Iterator[None]:
    token = _scope.set({})
    try:
        yield
    finally:
        _scope.reset(token)


def memoized(key: Hashable, read: Callable[[], T]) -> T:
    """`read()`, once per `key` inside a `memo_scope`; every time outside one."""
    memo = _scope.get()
    if memo is None:
        return read()
    if key not in memo:
        memo[key] = read()
    return memo[key]
