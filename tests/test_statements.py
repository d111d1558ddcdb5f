"""Compiled statements, reused (common.statements): a reused statement is exactly the one a fresh compile gives,
and a builder whose values cannot be traced to its inputs is refused instead of reused with a stale value."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from common.statements import StatementCache, StatementShapeError
from instances import reservations, routing
from instances.caps import moments, rule_version
from instances.kinds import MESSAGE_KINDS
from instances.models import RoutingPolicy

MOMENTS = [datetime(2026, 11, 24, 13, 0, tzinfo=UTC), datetime(2026, 11, 24, 13, 59, 59, tzinfo=UTC),
           datetime(2026, 12, 31, 23, 30, tzinfo=UTC), datetime(2027, 3, 1, 2, 0, 1, tzinfo=UTC)]


def test_a_reused_statement_is_what_a_fresh_compile_gives():
    cache = StatementCache(lambda key, *, now, name, ids: (f"SELECT {key} WHERE a = %s AND b = %s AND c IN "
                                                         f"({', '.join(['%s'] * len(ids))}) AND d = %s",
                                                         [now, name, *ids, 7]))
    assert cache.sql("x", now=MOMENTS[0], name="a", ids=[1, 2]) == (
        "SELECT x WHERE a = %s AND b = %s AND c IN (%s, %s) AND d = %s", [MOMENTS[0], "a", 1, 2, 7])
    assert cache.sql("x", now=MOMENTS[1], name="b", ids=[5, 3])[1] == [MOMENTS[1], "b", 5, 3, 7]


def test_a_value_derived_from_no_input_is_refused():
    cache = StatementCache(lambda key, *, now: ("SELECT %s", [now + timedelta(hours=1)]))
    with pytest.raises(StatementShapeError, match="no known input"):
        cache.sql("k", now=MOMENTS[0])
    varying = StatementCache(lambda key, *, now, n: (f"SELECT {n}", []))
    with pytest.raises(StatementShapeError, match="changes with its values"):
        varying.sql("k", now=MOMENTS[0], n=3)


@pytest.mark.django_db
@pytest.mark.parametrize("kind", MESSAGE_KINDS)
def test_reservations_and_the_routing_read_reuse_exactly_what_they_would_compile(kind):
    then = ("SELECT chip_id FROM taken WHERE %s < %s", [MOMENTS[0], MOMENTS[1]])
    shapes = [
        ((kind, False, True, reservations.SENDING, True, None, None, rule_version(reservations.SENDING, kind)),
         {"chip_id": 42, "then_params": []}),
        ((kind, True, True, reservations.SENDING, True, RoutingPolicy.Strategy.LEAST_LOADED, then[0],
          rule_version(reservations.SENDING, kind), 2), {"exclude": [9, 4], "then_params": then[1]}),
        ((None, False, True, None, False, None, None, rule_version(None, None)), {"chip_id": 7, "then_params": []}),
    ]
    for now in MOMENTS:
        for key, inputs in shapes:
            sql, params = reservations._take_statement(key, now=now, **inputs)
            assert reservations._TAKE.sql(key, now=now, **inputs) == (sql, list(params))
        ctx_key = kind == "reply"
        sql, params = routing._context_statement(ctx_key, now=now, contact="+5511911112222")
        assert routing._CONTEXT.sql(ctx_key, now=now, contact="+5511911112222") == (sql, list(params))
        assert set(moments(now)) >= {"now", "hour_window", "day_window", "bucket"}


@pytest.mark.django_db
def test_the_hot_statements_are_prepared_on_the_server_unless_turned_off(settings):
    from django.db import connection

    def prepared() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE statement LIKE %s", ["%routingpolicy%"])
            return cursor.fetchone()[0]

    before = prepared()
    routing._context("+5511911113333", "follow_up", MOMENTS[0])
    routing._context("+5511911114444", "follow_up", MOMENTS[1])
    assert prepared() == before + 1  # once per shape and connection, whatever the values
    settings.DATABASE_PREPARED_STATEMENTS = False
    assert routing._context("+5511911115555", "reply", MOMENTS[2])["strategy"]
    assert prepared() == before + 1  # the same statement, bound by the client: nothing more prepared


def test_statements_go_to_the_server_numbered_as_compiled_once():
    from common.statements import _numbered

    slots = ((True, "now"), (False, "active"), (True, "name"), (True, "now"), (False, 3), (False, 2.5),
             (False, "it's"))
    assert _numbered("SELECT %s, %s WHERE a LIKE '%%x' AND b = %s AND c < %s AND d = %s AND e = %s AND f = %s",
                     slots) == (
        "SELECT $1, 'active' WHERE a LIKE '%x' AND b = $2 AND c < $1 AND d = 3 AND e = $3 AND f = 'it''s'",
        ((True, "now"), (True, "name"), (False, 2.5)))
    with pytest.raises(StatementShapeError, match="placeholders"):
        _numbered("SELECT %s, %s", ((True, "a"),))
    with pytest.raises(StatementShapeError, match="placeholders"):
        _numbered("SELECT %s", ((True, "a"), (True, "b")))


@pytest.mark.django_db
def test_a_prepared_statement_reads_back_its_columns_and_rows_on_every_call():
    cache = StatementCache(lambda key, *, now, name: ("SELECT %s::text AS who, %s::timestamptz AS at, 1 AS one",
                                                      [name, now]))
    for n, now in enumerate(MOMENTS):
        assert cache.fetch("k", now=now, name=f"n{n}") == ([(f"n{n}", now, 1)], ["who", "at", "one"])


@pytest.mark.django_db(transaction=True)
def test_a_statement_nobody_logs_runs_on_psycopg_with_djangos_errors_and_checks():
    from django.db import IntegrityError, connection, transaction
    from django.db.transaction import TransactionManagementError
    from django.test.utils import CaptureQueriesContext

    from common.statements import Statement

    with connection.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE statement_fast_path (id integer PRIMARY KEY)")
    insert = Statement("INSERT INTO statement_fast_path (id) VALUES (%s) RETURNING id")
    assert not connection.queries_logged and not connection.execute_wrappers  # the fast path
    assert insert.fetchone([7]) == (7,)
    with pytest.raises(IntegrityError):  # psycopg's UniqueViolation, translated as Django's cursor would
        insert.fetchone([7])
    with transaction.atomic():
        with pytest.raises(IntegrityError), transaction.atomic():
            insert.fetchone([7])
        connection.needs_rollback = True  # a failed statement inside the block: Django refuses the next one
        with pytest.raises(TransactionManagementError):
            insert.fetchone([8])
        connection.needs_rollback = False
    with CaptureQueriesContext(connection) as ctx:  # someone reads the statements: Django's cursor logs it
        assert insert.fetchone([9]) == (9,)
    assert [q["sql"].split()[0] for q in ctx.captured_queries] == ["INSERT"]
