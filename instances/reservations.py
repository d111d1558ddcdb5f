"""Taking capacity: one conditional statement per reservation (W2 7/7).

A reservation is an `UPDATE … SET <counters + 1, the windows rolled> WHERE chip_id = (<the chip, if every cap in
effect holds> FOR UPDATE) RETURNING` on the chip's ChipCapacity row. The subquery is a Django queryset built from
the caps rule itself (instances.caps: `caps_annotations`, `usage_annotations`, the kind's share, the rolling
new-contact buckets), so the rule stays written once; PostgreSQL re-checks it on the newest version of the row
once it holds the lock, so the caps hold under any concurrency without a savepoint, a re-read or a save:

- `capacity_take_on(chip_id)`: that chip (the sticky path, the warmer's single reservations); waits for its lock;
- `capacity_take_best(strategy)`: the best chip the strategy orders first among those with room, rows other
  requests hold skipped (`SKIP LOCKED`), so concurrent requests spread over the pool instead of queueing; when
  every row with room was held at that moment, it waits for them once (a pool with room never refuses because
  its rows were busy);
- `capacity_reserve_batch`: many messages of a few chips at once (the warming dispatcher).

A counter of an older window counts as 0 in the same statement (the CASE in each SET), so a reset job that did
not run can neither block a chip nor let it pass a cap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import connection, connections, transaction
from django.db.models import BooleanField, F, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from chips.models import Chip
from common.statements import StatementCache
from instances.caps import (
    PRODUCTION_STATES,
    caps_annotations,
    caps_in_effect,
    day_window,
    epoch_hour,
    hour_window,
    kind_hour_cap_expression,
    moments,
    new_contact_bucket,
    new_contacts_annotation,
    new_contacts_room,
    rule_version,
    usage_annotations,
    usage_now,
)
from instances.kinds import MESSAGE_KINDS, kind_policy
from instances.models import ChipCapacity, RoutingPolicy
from instances.pool_full import pool_room_changed

logger = logging.getLogger(__name__)
TABLE = ChipCapacity._meta.db_table
SENDING = (Chip.Status.ACTIVE,)


# --- keeping the hot rows lean --------------------------------------------------------------------------------
# Every reservation writes a new version of one capacity row, and every pick reads the rows with room. PostgreSQL
# prunes a row's old versions only when no other backend has its page pinned at that moment — on a busy pool
# almost never — and autovacuum comes at most once a minute: a few thousand reservations in, each pick walks
# thousands of dead versions (measured: routed decisions fell from 1,450/s to 1,050/s over 8 s on 50 chips; with a
# VACUUM every 0.5 s they held 1,870/s). So a process that has made CAPACITY_VACUUM_EVERY reservations has the
# table vacuumed, on a connection of its own in a daemon thread (VACUUM cannot run in a transaction, and a
# request must not wait for it); an advisory lock keeps two processes from vacuuming at once. 0 turns it off.
VACUUM_LOCK = 0x63_61_70_76  # "capv"
_taken_since_vacuum = 0
_vacuum_lock = threading.Lock()
_vacuum_running = False


def capacity_taken(n: int = 1) -> None:
    """Count `n` reservations made in this process (see above); may start a vacuum of the table."""
    global _taken_since_vacuum, _vacuum_running
    _taken_since_vacuum += n
    every = settings.CAPACITY_VACUUM_EVERY
    if not every or _taken_since_vacuum < every or _vacuum_running:
        return
    with _vacuum_lock:
        if _vacuum_running:
            return
        _vacuum_running, _taken_since_vacuum = True, 0
    params = {k: v for k, v in connections["default"].get_connection_params().items()
              if k not in ("cursor_factory", "context", "prepare_threshold")}
    threading.Thread(target=_vacuum, args=(params,), name="capacity-vacuum", daemon=True).start()


def _vacuum(params: dict) -> None:
    global _vacuum_running
    import psycopg

    try:
        with psycopg.connect(**params, autocommit=True, connect_timeout=5) as conn:
            if conn.execute("SELECT pg_try_advisory_lock(%s)", [VACUUM_LOCK]).fetchone()[0]:
                conn.execute(f"VACUUM (SKIP_LOCKED) {TABLE}")
    except Exception as exc:  # never a request's problem: the next count tries again
        logger.warning("capacity vacuum failed: %s", exc.__class__.__name__)
    finally:
        _vacuum_running = False


def _vacuum_forget_in_child() -> None:  # a forked worker starts its own count, with no vacuum of its parent's
    global _taken_since_vacuum, _vacuum_running
    _taken_since_vacuum, _vacuum_running = 0, False


os.register_at_fork(after_in_child=_vacuum_forget_in_child)


def _sets(now: datetime, *, kind: str | None, new_contact: bool, n: str = "1") -> tuple[str, list]:
    """The SET list of a reservation of `n` messages (an SQL expression: "1", or a VALUES column); old-window
    counters restart from 0."""
    hw, dw = hour_window(now), day_window(now)
    sets = [f"hour_count = CASE WHEN c.hour_window = %s THEN c.hour_count ELSE 0 END + {n}"]
    params: list = [hw]
    for name in MESSAGE_KINDS:
        sets.append(f"hour_{name} = CASE WHEN c.hour_window = %s THEN c.hour_{name} ELSE 0 END "
                    f"+ {n if name == kind else 0}")
        params.append(hw)
    sets.append(f"day_count = CASE WHEN c.day_window = %s THEN c.day_count ELSE 0 END + {n}")
    params.append(dw)
    if new_contact:  # this hour's bucket (SQL arrays count from 1); the total loses what a reused bucket held
        i, hour = new_contact_bucket(now) + 1, epoch_hour(now)
        sets += ["new_contact_counts[%s] = CASE WHEN c.new_contact_hours[%s] = %s "
                 "THEN c.new_contact_counts[%s] ELSE 0 END + 1", "new_contact_hours[%s] = %s",
                 "new_contact_total = c.new_contact_total + 1 - CASE WHEN c.new_contact_hours[%s] = %s "
                 "THEN 0 ELSE GREATEST(COALESCE(c.new_contact_counts[%s], 0), 0) END"]
        params += [i, i, hour, i, i, hour, i, hour, i]
    sets += ["hour_window = %s", "day_window = %s", "last_routed_at = %s", "updated_at = %s"]
    params += [hw, dw, now, now]
    return ", ".join(sets), params


def room(now: datetime, *, kind: str | None = None, new_contact: bool = False, kind_rules: bool = True,
         statuses: tuple[str, ...] | None = SENDING, connected: bool = True) -> QuerySet[ChipCapacity]:
    """Capacity rows of chips that can take one more message now: the caps in effect (hour, day), the kind's
    trust minimum and hourly share (unless `kind_rules` is off: a reply on the contact's own chip), and for a new
    contact the reach-out restriction and the rolling new-contact allowance."""
    qs = ChipCapacity.objects.all()
    if statuses is not None:
        qs = qs.filter(chip__status__in=statuses)
    if connected:
        qs = qs.filter(chip__is_connected=True)
    qs = (qs.annotate(**usage_annotations(now, capacity_path=""),
                      **caps_annotations(chip_path="chip__", capacity_path="", statuses=statuses))
          .filter(used_hour__lt=F("cap_per_hour"), used_day__lt=F("cap_per_day")))
    if kind is not None and kind_rules:
        qs = (qs.filter(chip__trust_score__gte=kind_policy(kind).min_trust)
              .annotate(kind_cap=kind_hour_cap_expression(kind))
              .filter(**{f"used_hour_{kind}__lt": F("kind_cap")}))
    if new_contact:
        qs = (qs.filter(Q(restricted_until__isnull=True) | Q(restricted_until__lte=now))
              .annotate(new_used=new_contacts_annotation(now))
              .filter(new_contacts_room()))
    return qs


def capacity_take_sql(now: datetime, *, kind: str | None, new_contact: bool, kind_rules: bool = True,
                      statuses: tuple[str, ...] | None = SENDING, connected: bool = True,
                      strategy: str | None = None, chip_id: int | None = None, exclude: list[int] = (),
                      gate: str | None = None, wait: bool = False) -> tuple[str, list]:
    """The reservation as one statement: `UPDATE … SET <_sets> … FROM (<the row: `chip_id` if it has room, or the
    strategy's best with room outside `exclude`> FOR UPDATE [SKIP LOCKED]) AS pick WHERE c.chip_id = pick.chip_id
    RETURNING c.chip_id, ch.phone, ch.instance_name`. `gate`: an SQL condition the pick also needs (a statement
    that reads its context in the same statement: false, and no row is even looked at). `wait`: a pick waits for
    the rows other requests hold instead of skipping them (PostgreSQL re-checks the room on each row it waited
    for)."""
    rows = room(now, kind=kind, new_contact=new_contact, kind_rules=kind_rules, statuses=statuses,
                connected=connected)
    if gate is not None:
        rows = rows.filter(RawSQL(gate, [], output_field=BooleanField()))
    if strategy is None:
        chosen = rows.filter(chip_id=chip_id).values("chip_id")
    else:
        candidates = rows.exclude(chip_id__in=exclude) if exclude else rows
        # A pick that waits locks each row it tries, in its order, and keeps the lock of one it then finds full
        # (PostgreSQL re-checks a row it waited for, and moves on to the next). In the strategy's order — which
        # changes with every reservation, and breaks ties by chance — two waiting picks could each hold a row the
        # other waits for: a deadlock, broken only after deadlock_timeout (1 s; bench/route.py fell from ~3,000 to
        # ~600 decisions/s in the runs where it happened). So waiting picks all take the rows in one order, by id.
        chosen = (candidates.order_by("chip_id") if wait else _order(candidates, strategy)).values("chip_id")[:1]
    sub, sub_params = chosen.query.get_compiler(connection=connection).as_sql()
    # FOR UPDATE written here, so the statement also runs in autocommit (it is its own transaction); a pick skips
    # the rows other requests hold.
    sub += f" FOR UPDATE OF {TABLE}" + (" SKIP LOCKED" if strategy is not None and not wait else "")
    sets, set_params = _sets(now, kind=kind, new_contact=new_contact)
    # The picked row joins the UPDATE as a relation of its own (not `c.chip_id = (<pick>)`): when the row had a newer
    # version than the statement's snapshot, PostgreSQL re-checks the UPDATE on it (EvalPlanQual) with the pick as
    # it was — a scalar subquery would be run again there, and might pick another chip (the strategy's ties are
    # broken by chance), leaving this one not updated: a refusal with room.
    sql = (f"UPDATE {TABLE} AS c SET {sets} FROM {Chip._meta.db_table} AS ch, ({sub}) AS pick "
           f"WHERE ch.id = c.chip_id AND c.chip_id = pick.chip_id RETURNING c.chip_id, ch.phone, ch.instance_name")
    return sql, [*set_params, *sub_params]


def _take_statement(key: tuple, *, now: datetime, chip_id: int | None = None, exclude: list[int] = (),
                    then_params: list = ()) -> tuple[str, list]:
    """`capacity_take_sql` for a shape, and `then`, a statement that runs only when the reservation did (its CTE
    is `taken`)."""
    kind, new_contact, kind_rules, statuses, connected, strategy, then = key[:7]
    sql, params = capacity_take_sql(now, kind=kind, new_contact=new_contact, kind_rules=kind_rules,
                                    statuses=statuses, connected=connected, strategy=strategy, chip_id=chip_id,
                                    exclude=exclude, wait=key[-1] == "wait")
    if then is not None:
        sql = f"WITH taken AS ({sql}) {then}"
        params += list(then_params)
    return sql, params


_TAKE = StatementCache(_take_statement, derive=moments)


def _take(key: tuple, now: datetime, **inputs) -> list[tuple]:
    rows = _TAKE.fetch(key, now=now, **inputs)[0]
    if rows:
        capacity_taken()
    return rows


def capacity_take_on(chip_id: int, now: datetime, *, kind: str | None = None, new_contact: bool = False,
                     kind_rules: bool = True, statuses: tuple[str, ...] | None = SENDING, connected: bool = True,
                     then: tuple[str, list] | None = None) -> list[tuple]:
    """One message of `chip_id`'s capacity if the chip has room (see `room`); the rows RETURNING gave — (chip id,
    phone, instance name), or `then`'s — empty when refused. One statement: no transaction needed."""
    key = (kind, new_contact, kind_rules, statuses, connected, None, then and then[0],
           rule_version(statuses, kind if kind_rules else None))
    return _take(key, now, chip_id=chip_id, then_params=then[1] if then else [])


def _order(qs: QuerySet, strategy: str) -> QuerySet:
    """The strategy's order of the chips with room. Least loaded: fewest messages today, then this hour; among
    equally loaded chips the operator's priority, then chance — concurrent picks (every API replica's) spread over
    them instead of all reaching for the lowest id, where each but one would find the row just taken and re-check
    it (bench/route.py: about a tenth more decisions a second on 8 threads)."""
    if strategy == RoutingPolicy.Strategy.ROUND_ROBIN:
        return qs.order_by(F("last_routed_at").asc(nulls_first=True), "chip_id")
    if strategy == RoutingPolicy.Strategy.PRIORITY:
        return qs.order_by("-priority", "used_day", "chip_id")
    return qs.order_by("used_day", "used_hour", "-priority", "?")


def capacity_take_best(now: datetime, *, strategy: str, kind: str, exclude: set[int],
                       then: tuple[str, list] | None = None) -> tuple | None:
    """One new contact's message on the best chip with room (the strategy's order; rows held by other requests
    skipped, then waited for if that left none): (chip id, phone, instance name) — or `then`'s row — or None when
    no chip can take it."""
    key = (kind, True, True, SENDING, True, strategy, then and then[0], rule_version(SENDING, kind), len(exclude))
    inputs = {"exclude": sorted(exclude), "then_params": then[1] if then else []}
    rows = _take(key, now, **inputs) or _take((*key, "wait"), now, **inputs)
    return rows[0] if rows else None


def _refusal_statement(key: tuple, *, now: datetime, chip_id: int) -> tuple[str, list]:
    kind = key[0]
    query = (ChipCapacity.objects.filter(chip_id=chip_id, chip__status__in=PRODUCTION_STATES)
             .annotate(**usage_annotations(now, capacity_path=""),
                       **caps_annotations(chip_path="chip__", capacity_path="", statuses=PRODUCTION_STATES))
             .annotate(kind_cap=kind_hour_cap_expression(kind))
             .values_list("used_hour", "used_day", "cap_per_hour", "cap_per_day", f"used_hour_{kind}", "kind_cap",
                          "chip__trust_score"))
    return query.query.get_compiler(connection=connection).as_sql()


_REFUSAL = StatementCache(_refusal_statement, derive=moments)


def capacity_refusal(chip_id: int, now: datetime, *, kind: str, kind_rules: bool = True) -> str | None:
    """Why a production chip has no room for one more message of `kind` now (a contact's move reason), read back
    from the rule `room` holds (the caps in effect, the kind's trust minimum and share unless `kind_rules` is off);
    None when the chip has no capacity row."""
    rows = _REFUSAL.fetch((kind, rule_version(PRODUCTION_STATES, kind)), now=now, chip_id=chip_id)[0]
    if not rows:
        return None
    used_hour, used_day, per_hour, per_day, used_kind, kind_cap, trust = rows[0]
    policy = kind_policy(kind)
    if used_hour >= per_hour or used_day >= per_day:
        return "chip at its cap"
    if kind_rules and trust < policy.min_trust:
        return f"trust {trust} below the {kind} minimum {policy.min_trust}"
    if kind_rules and used_kind >= kind_cap:
        return f"chip at its {kind} share of the hour"
    return "chip at its cap"


def _missing_rows_statement(key: tuple, *, now: datetime) -> tuple[str, list]:
    query = (Chip.objects.filter(status__in=key, capacity__isnull=True).order_by("pk")
             .values_list("pk", flat=True)[:1000]).query
    return query.get_compiler(connection=connection).as_sql()


_MISSING_ROWS = StatementCache(_missing_rows_statement)
ROW_STATES = (*SENDING, Chip.Status.COOLING, Chip.Status.WARMING, Chip.Status.READY)


# How often a process's routing looks for chips without a capacity row when a reservation is refused. A refusal
# is common (a saturated pool answers no_capacity all day) and the look is a query of its own; a chip is missing
# a row only between its creation and its first reservation, and a chip saved in this process (`rows_check_soon`,
# on Chip's post_save) makes the next refusal look at once.
ROWS_CHECK_SECONDS = 5.0
_rows_checked_at = float("-inf")


def rows_check_soon(**_signal: object) -> None:
    global _rows_checked_at
    _rows_checked_at = float("-inf")


def capacity_rows_ensure_due() -> int:
    """`capacity_rows_ensure`, at most every ROWS_CHECK_SECONDS (0 when not due): the routing's look after a
    refused reservation."""
    global _rows_checked_at
    moment = time.monotonic()
    if moment - _rows_checked_at < ROWS_CHECK_SECONDS:
        return 0
    _rows_checked_at = moment
    return capacity_rows_ensure()


def capacity_rows_ensure() -> int:
    """Give every chip that can send a capacity row (a reservation only sees chips that have one); how many it
    created. Cheap when there is nothing to do (one query)."""
    missing = [pk for (pk,) in _MISSING_ROWS.fetch(ROW_STATES, now=timezone.now())[0]]
    if missing:
        ChipCapacity.objects.bulk_create([ChipCapacity(chip_id=pk) for pk in missing], ignore_conflicts=True)
        pool_room_changed()  # chips a pick could not see until now
    return len(missing)


def capacity_reserve_batch(*, wants: dict[int, int], now: datetime) -> dict[int, int]:
    """Take up to `wants[chip_id]` messages of each chip's capacity (the warmer's own traffic, no message kind);
    returns what each chip was granted. One locking read of the rows (in chip order: two dispatchers never
    deadlock) and one UPDATE … FROM (VALUES …) for all of them, under the same caps in effect."""
    if not wants:
        return {}
    with transaction.atomic():
        ChipCapacity.objects.bulk_create([ChipCapacity(chip_id=chip_id) for chip_id in wants], ignore_conflicts=True)
        rows = list(ChipCapacity.objects.select_for_update(of=("self",)).select_related("chip")
                    .filter(chip_id__in=list(wants)).order_by("chip_id"))
        granted: dict[int, int] = {}
        for capacity in rows:
            caps, used = caps_in_effect(capacity.chip, capacity), usage_now(capacity, now)
            granted[capacity.chip_id] = max(0, min(wants[capacity.chip_id], caps.per_hour - used.hour,
                                                   caps.per_day - used.day))
        counts = [(chip_id, n) for chip_id, n in granted.items() if n]
        if counts:
            sets, params = _sets(now, kind=None, new_contact=False, n="v.n::int")
            values = ", ".join(["(%s, %s)"] * len(counts))
            with connection.cursor() as cursor:
                cursor.execute(f"UPDATE {TABLE} AS c SET {sets} FROM (VALUES {values}) AS v(chip_id, n) "
                               f"WHERE c.chip_id = v.chip_id::bigint",
                               [*params, *[x for row in counts for x in row]])
            capacity_taken(len(counts))
    return granted
