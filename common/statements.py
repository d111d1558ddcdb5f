"""Compiled statements, reused (W2 7/7).

The hot paths (a route decision, a reservation) build their SQL from querysets, so each rule stays written once,
in the ORM, next to the model it reads. Compiling a queryset costs more Python than PostgreSQL spends running it,
and the statement's shape (its SQL text) depends only on a few choices (the kind, the strategy, how many chips
are excluded), never on the values it compares with. A `StatementCache` compiles each shape once and reuses its
SQL with the values of each call, prepared on the server (`fetch`), so PostgreSQL also plans it once per
connection. Behind a connection pooler in transaction mode that does not track prepared statements (PgBouncer
before 1.21), set DATABASE_PREPARED_STATEMENTS=false.

How it knows where each value goes: the first time a shape is asked for, it is built twice, with two different
sets of stand-in values (sentinels); a parameter equal in both builds is a constant of the shape (a setting, a
status), one that differs is matched to the input (or to the value derived from `now` by `derive`) that had
those stand-ins. Anything else — a value the builder derived from an input in a way `derive` does not list, or
SQL text that changes with the values — is a programming error, raised at once (`StatementShapeError`), so a
statement is never reused with a stale value.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections

Build = Callable[..., tuple[str, list]]
Derive = Callable[[datetime], dict[str, Any]]

# Two moments far from any real one, on different hours, days and 25-hour buckets, and off the hour.
_NOW_A = datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=UTC)
_NOW_B = datetime(2003, 5, 7, 11, 13, 17, 19, tzinfo=UTC)
MAX_SHAPES = 512


_RAW_CURSOR = "_chipfarm_prepared_cursor"


def _raw_cursor(wrapper: Any) -> Any:
    """The psycopg cursor of `wrapper`'s connection that binds parameters on the server, so psycopg can prepare
    the statement, and takes the statement with its $1…$n placeholders as it is (nothing to parse per call). Only
    these cursors prepare: the rest of the ORM keeps Django's client-side binding. It is made once per connection
    (kept on it, so it goes with it); the caller does not close it. The connection gets the health check Django's
    own cursors get (common.postgresql: a poll of its socket), so a statement of a request that comes first on a
    connection PostgreSQL closed runs on a new one instead of failing."""
    wrapper.close_if_health_check_failed()
    wrapper.ensure_connection()
    raw = wrapper.connection
    cursor = getattr(raw, _RAW_CURSOR, None)
    if cursor is None or cursor.closed:
        if raw.prepare_threshold != 0:
            raw.prepare_threshold = 0  # prepare on first use; client-binding cursors never prepare
        cursor = _prepared_cursor_class()(raw)
        setattr(raw, _RAW_CURSOR, cursor)
    return cursor


class EncodedSQL(bytes):
    """A prepared statement's SQL, encoded once: psycopg would encode a str on every call, then hash it twice to
    find its prepared statement (a bytes object hashes once, and keeps it); Django's query log (DEBUG, tests)
    decodes it again on every call, so the text is kept for it."""

    text: str

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return self.text


def encoded(sql: str) -> EncodedSQL:
    sent = EncodedSQL(sql.encode())
    sent.text = sql
    return sent


@contextlib.contextmanager
def _executed(numbered: EncodedSQL, sql: str, params: list) -> Iterator[Any]:
    """A cursor that ran the statement: `numbered` prepared on the server, or `sql` bound by the client when
    DATABASE_PREPARED_STATEMENTS is off (`params` are the ones of the form that runs). When nothing reads the
    statements (no query log: DEBUG off and no test capturing; no execute wrapper) the prepared one runs on the
    psycopg cursor itself, with what Django's cursor would add besides: its broken-transaction check and its
    exceptions. Django's wrappers were 3.5 % of a refused route decision's Python (callgrind)."""
    if not settings.DATABASE_PREPARED_STATEMENTS:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            yield cursor
        return
    wrapper = connections[DEFAULT_DB_ALIAS]
    cursor = _raw_cursor(wrapper)  # kept for the connection's next statement: not closed
    if wrapper.queries_logged or wrapper.execute_wrappers:  # DEBUG, a test or a bench counting: Django's cursor
        cursor = wrapper._prepare_cursor(cursor)
        cursor.execute(numbered, params)
    else:  # what Django's cursor does besides logging: its transaction check, its exceptions
        wrapper.validate_no_broken_transaction()
        with wrapper.wrap_database_errors:
            cursor.execute(numbered, params)
    yield cursor


@functools.cache
def _prepared_cursor_class() -> type:
    from django.db.backends.postgresql.base import ServerBindingCursor
    from psycopg.raw_cursor import RawCursorMixin

    class PreparedCursor(RawCursorMixin, ServerBindingCursor):
        def _send_query_prepared(self, name, pgq, *, binary=None):
            # psycopg keeps the query for Django's query log only when it is not prepared: keep it here too.
            self._query = pgq
            return super()._send_query_prepared(name, pgq, binary=binary)

    return PreparedCursor


class StatementShapeError(RuntimeError):
    """A builder's parameters cannot be mapped to its inputs (see the module docstring)."""


Slot = tuple[bool, Any]  # (True, the input's name) or (False, the constant)


@dataclass(frozen=True)
class _Template:
    sql: str  # with %s placeholders (Django's client-side binding)
    slots: tuple[Slot, ...]  # its parameters
    numbered: EncodedSQL  # for the server (prepared): $1…$n, one per distinct input, the shape's constants written in
    numbered_slots: tuple[Slot, ...]  # the parameters of `numbered`


_PLACEHOLDER = re.compile(r"%([%s])")


def _literal(value: Any) -> str | None:
    """`value` as an SQL literal, for the constants of a shape (a status, a cap, a flag); None: keep it a
    parameter."""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, str) and len(value) <= 200 and value.isprintable():
        return "'" + value.replace("'", "''") + "'"  # standard_conforming_strings: a backslash is a backslash
    return None


def _numbered(sql: str, slots: tuple[Slot, ...]) -> tuple[str, tuple[Slot, ...]]:
    """`sql` for the server, converted once (psycopg would parse it on every call): each %s becomes $k — the same
    $k wherever the same input goes (a statement that compares with the hour window eight times sends it once) —
    or, for a constant of the shape, its literal; %% becomes %."""
    numbers: dict[Slot, int] = {}
    pending = iter(slots)

    def placeholder(match: re.Match) -> str:
        if match.group(1) == "%":
            return "%"
        try:
            named, source = next(pending)
        except StopIteration:
            raise StatementShapeError("the SQL has more placeholders than parameters") from None
        if not named and (literal := _literal(source)) is not None:
            return literal
        slot = (named, source) if named else (False, len(numbers), source)  # a kept constant is its own
        if slot not in numbers:
            numbers[slot] = len(numbers) + 1
        return f"${numbers[slot]}"

    numbered = _PLACEHOLDER.sub(placeholder, sql)
    if next(pending, None) is not None:
        raise StatementShapeError("the SQL has fewer placeholders than parameters")
    return numbered, tuple((True, slot[1]) if slot[0] else (False, slot[2]) for slot in numbers)


def _stand_in(value: Any, k: int, variant: int) -> Any:
    """A value of the same type as `value`, unique to (input k, variant)."""
    if isinstance(value, bool):
        raise StatementShapeError("a boolean input changes the shape: put it in the key")
    if isinstance(value, int):
        return -(10**9 * (variant + 1) + k)
    if isinstance(value, str):
        return f"\x1fstand-in {variant}:{k}\x1f"
    if isinstance(value, datetime):
        return datetime(1971 + k, 1, 1, 1, 1, 1, variant + 1, tzinfo=UTC)
    if isinstance(value, date):
        return date(1971 + k, 2, 1 + variant)
    raise StatementShapeError(f"no stand-in for an input of type {type(value).__name__}")


class Statement:
    """One fixed SQL text (%s placeholders), run as a StatementCache runs its shapes: prepared on the server with
    its placeholders numbered once (unless DATABASE_PREPARED_STATEMENTS is off) — for a hot statement with no
    shape to vary (the webhook's insert)."""

    def __init__(self, sql: str) -> None:
        self.sql = sql
        n_params = sum(1 for match in _PLACEHOLDER.finditer(sql) if match.group(1) == "s")
        numbered, _slots = _numbered(sql, tuple((True, n) for n in range(n_params)))
        self.numbered = encoded(numbered)

    def fetchone(self, params: list) -> tuple | None:
        with _executed(self.numbered, self.sql, params) as cursor:
            return cursor.fetchone()

    def execute(self, params: list) -> int:
        """Run it for its effect: the number of rows it changed."""
        with _executed(self.numbered, self.sql, params) as cursor:
            return cursor.rowcount


class StatementCache:
    """Shapes of one statement (key → SQL and where each parameter comes from), safe across threads."""

    def __init__(self, build: Build, *, derive: Derive | None = None) -> None:
        self._build = build
        self._derive = derive or (lambda now: {"now": now})
        self._templates: dict[Hashable, _Template] = {}
        self._names: dict[Hashable, list[str]] = {}  # the column names of each shape, read on its first run
        self._lock = threading.Lock()

    def _resolve(self, key: Hashable, now: datetime, inputs: dict[str, Any], *,
                 numbered: bool = False) -> tuple[_Template, list]:
        template = self._templates.get(key)
        if template is None:
            template = self._compile(key, now, inputs)
        values = {**self._derive(now), **self._flat(inputs)}
        slots = template.numbered_slots if numbered else template.slots
        return template, [values[slot] if named else slot for named, slot in slots]

    def sql(self, key: Hashable, *, now: datetime, **inputs: Any) -> tuple[str, list]:
        """The SQL of shape `key` and its parameters for `now` and `inputs` (the builder's keyword arguments
        besides `key` and `now`, each a scalar or a list of scalars)."""
        template, params = self._resolve(key, now, inputs)
        return template.sql, params

    def fetch(self, key: Hashable, *, now: datetime, **inputs: Any) -> tuple[list[tuple], list[str]]:
        """Run shape `key` for `now` and `inputs`: its rows and column names. Prepared on the server (once per
        connection and shape: PostgreSQL plans it once) unless DATABASE_PREPARED_STATEMENTS is off."""
        template, params = self._resolve(key, now, inputs, numbered=settings.DATABASE_PREPARED_STATEMENTS)
        with _executed(template.numbered, template.sql, params) as cursor:
            names = self._names.get(key)
            if names is None:
                names = self._names[key] = [column.name for column in cursor.description or ()]
            return (cursor.fetchall() if names else []), names

    @staticmethod
    def _flat(inputs: dict[str, Any]) -> dict[str, Any]:
        flat: dict[str, Any] = {}
        for name, value in inputs.items():
            if isinstance(value, list | tuple):
                flat.update({f"{name}[{i}]": item for i, item in enumerate(value)})
            else:
                flat[name] = value
        return flat

    def _variant(self, key: Hashable, inputs: dict[str, Any], variant: int) -> tuple[str, list, dict]:
        stand_now = (_NOW_A, _NOW_B)[variant]
        stand = {name: _stand_in(value, k, variant) for k, (name, value) in enumerate(self._flat(inputs).items())}
        rebuilt = {name: ([stand[f"{name}[{i}]"] for i in range(len(value))] if isinstance(value, list | tuple)
                          else stand[name]) for name, value in inputs.items()}
        sql, params = self._build(key, now=stand_now, **rebuilt)
        return sql, list(params), {**self._derive(stand_now), **stand}

    def _compile(self, key: Hashable, now: datetime, inputs: dict[str, Any]) -> _Template:
        sql_a, params_a, named_a = self._variant(key, inputs, 0)
        sql_b, params_b, named_b = self._variant(key, inputs, 1)
        if sql_a != sql_b or len(params_a) != len(params_b):
            raise StatementShapeError(f"the SQL of shape {key!r} changes with its values: put them in the key")
        by_pair: dict[tuple[Any, Any], str] = {}
        for name in self._derive(now):
            if named_a[name] == named_b[name]:  # it would pass for a constant
                raise StatementShapeError(f"{name!r} is the same at both stand-in moments")
        for name in named_a:
            pair = (named_a[name], named_b[name])
            if pair in by_pair:
                raise StatementShapeError(f"inputs {by_pair[pair]!r} and {name!r} are not told apart")
            by_pair[pair] = name
        slots: list[tuple[bool, Any]] = []
        for a, b in zip(params_a, params_b, strict=True):
            if a == b and type(a) is type(b):
                slots.append((False, a))
            elif (a, b) in by_pair:
                slots.append((True, by_pair[a, b]))
            else:
                raise StatementShapeError(f"shape {key!r}: a parameter ({a!r}) comes from no known input")
        numbered, numbered_slots = _numbered(sql_a, tuple(slots))
        template = _Template(sql=sql_a, slots=tuple(slots), numbered=encoded(numbered), numbered_slots=numbered_slots)
        with self._lock:
            if len(self._templates) >= MAX_SHAPES:  # keys that hold a changed setting or plan: start afresh
                self._templates.clear()
                self._names.clear()
            self._templates.setdefault(key, template)
        return template

