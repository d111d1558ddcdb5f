"""A batch of work in one transaction: what every item reads the same is read once, and append-only rows are
inserted together (W2 7/7).

The drain applies a batch of gateway events in one transaction. Each event's handler reads the same few rows (the
routing policy's binding TTL, the endpoints subscribed to an event type, the operator's opt-out rules) and
appends a row nobody reads back while the batch runs (its DeliveryEvent). Inside `batch_scope()`:

- `memoized(key, read)` reads once per key and reuses the value for the rest of the scope;
- `insert_later(row)` keeps an unsaved model instance and inserts all of them, per model in the order given, with
  one `COPY` when the scope ends (before the transaction commits; nothing when it fails); a row whose id is needed
  at once is numbered from its model's sequence;
- `after_batch(key, items, flush)` gathers what the events hand on (the business app's deliveries to queue) and
  calls `flush` once with all of it, when the rows are in.

Outside a scope, every `memoized` call reads and `insert_later` saves at once, so callers need not know.

Only what the scope's own work cannot change belongs in `memoized`, and only rows nothing reads back during the
scope in `insert_later`. A scope is one transaction: a lock a read takes (the endpoints' FOR KEY SHARE) is held
until its commit, so the remembered value stays covered by it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.db import connection, models

T = TypeVar("T")


ID_BLOCK = 100  # ids taken from a model's sequence at a time, for the rows `insert_later` must number


@dataclass
class _Scope:
    memo: dict[Hashable, Any] = field(default_factory=dict)
    rows: dict[type[models.Model], list[models.Model]] = field(default_factory=dict)
    ids: dict[type[models.Model], list[int]] = field(default_factory=dict)
    later: dict[Hashable, tuple[Callable[[list], None], list]] = field(default_factory=dict)


_scope: ContextVar[_Scope | None] = ContextVar("chipfarm_batch", default=None)


@contextlib.contextmanager
def batch_scope() -> Iterator[None]:
    """Open inside the batch's transaction (`with transaction.atomic(), batch_scope():`)."""
    scope = _Scope()
    token = _scope.set(scope)
    try:
        yield
        for model, rows in scope.rows.items():
            rows_copy(model, rows)
        for flush, items in scope.later.values():
            flush(items)
    finally:
        _scope.reset(token)


def rows_copy(model: type[models.Model], rows: list[models.Model]) -> None:
    """Insert `rows` (unsaved instances of `model`) as `bulk_create` would — each field's value as saving it gives
    it (`pre_save`, then `get_db_prep_save`: defaults, auto_now_add, JSON) — with PostgreSQL's COPY: no SQL text
    of a row's worth of placeholders to build and bind per value (bulk_create was a fifth of a drain batch's
    Python). Rows with an id keep it; the others take theirs from the column's sequence and are not told it (as
    the scope's contract says, nothing reads them back). No signals are sent, as with bulk_create."""
    fields = [f for f in model._meta.concrete_fields if not f.generated]
    if any(f.db_default is not models.NOT_PROVIDED for f in fields):  # a default the database computes
        model.objects.bulk_create(rows)
        return
    table = connection.ops.quote_name(model._meta.db_table)
    for with_pk in (True, False):
        group = [row for row in rows if (row.pk is not None) is with_pk]
        if not group:
            continue
        columns = fields if with_pk else [f for f in fields if not f.primary_key]
        names = ", ".join(connection.ops.quote_name(f.column) for f in columns)
        with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy:
            for row in group:
                row._prepare_related_fields_for_save(operation_name="bulk_create")  # a parent numbered after
                copy.write_row([f.get_db_prep_save(f.pre_save(row, True), connection) for f in columns])
                row._state.adding, row._state.db = False, connection.alias


def memoized(key: Hashable, read: Callable[[], T]) -> T:
    """`read()`, once per `key` inside a `batch_scope`; every time outside one."""
    scope = _scope.get()
    if scope is None:
        return read()
    if key not in scope.memo:
        scope.memo[key] = read()
    return scope.memo[key]


def batching() -> bool:
    """Is a `batch_scope` open (rows given to `insert_later` wait for its end)?"""
    return _scope.get() is not None


def after_batch(key: Hashable, items: list, flush: Callable[[list], None]) -> None:
    """`flush(every item given under key)`, once, when the scope ends (its rows inserted, before it commits); at
    once outside a scope. The first `flush` given for a key is the one called."""
    scope = _scope.get()
    if scope is None:
        flush(list(items))
        return
    scope.later.setdefault(key, (flush, []))[1].extend(items)


def insert_later(row: models.Model, *, numbered: bool = False) -> None:
    """Insert `row` (an unsaved model instance) when the scope ends, with the scope's other rows of its model; at
    once outside a scope. `numbered`: the caller needs `row.pk` now (another row or an event names it) — it is
    taken from the model's own sequence (ID_BLOCK at a time), as the insert would have. A row that refers to it
    inserts fine before it: the project's foreign keys are checked at commit (DEFERRABLE INITIALLY DEFERRED)."""
    scope = _scope.get()
    if scope is None:
        row.save(force_insert=True)
        return
    model = type(row)
    if numbered:
        free = scope.ids.setdefault(model, [])
        if not free:
            with connection.cursor() as cursor:
                cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
                               [model._meta.db_table, model._meta.pk.column, ID_BLOCK])
                free.extend(sorted((n for (n,) in cursor.fetchall()), reverse=True))
        row.pk = free.pop()
    scope.rows.setdefault(model, []).append(row)
