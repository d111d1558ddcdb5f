"""Routing outbound traffic across production chips (DESIGN §4), in a few statements (W2 7/7).

`contact_route` answers "which chip sends to this contact now?" and reserves one unit of that chip's capacity in
the same transaction:

1. one query reads everything the decision depends on: the routing policy (kill switch, strategy, binding TTL),
   whether the contact opted out or wrote within 24 h, and their current binding with its chip;
2. the sticky path is then one statement: the conditional reservation on the bound chip (instances.reservations:
   an UPDATE whose WHERE is the caps rule, re-checked by PostgreSQL under the row lock) with the binding's
   touch in the same statement;
3. a new contact is one statement that picks the best chip with room and reserves it (`SKIP LOCKED`: concurrent
   requests spread instead of queueing), and writes the binding;
4. and in business hours a contact who is new to the pool is routed in one statement: the read of (1) and the pick
   of (3) together (`_fresh_route`). The pick runs only when that read clears it — the contact unbound and not
   opted out, sending not paused, and the policy's strategy and binding TTL the ones the statement was built for
   (the last ones this process read) — and otherwise the decision goes on from what it read, as above.

Caps hold under any concurrency because the reservation's own WHERE decides, on the newest row version; no
savepoint, no re-read, no lost update. A chip's send circuit (instances.circuit, in Redis) is read at most once a
second per process (CIRCUIT_GATES_CACHE_SECONDS); a half-open chip's one trial is leased before it is used. A pool
a pick found full is remembered for a second per process (instances.pool_full): meanwhile a new contact, or one
leaving their chip, is refused after the read of (1) alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from django.db import IntegrityError, OperationalError, connection, transaction
from django.db.models import BooleanField, Exists, ExpressionWrapper, F, Q, QuerySet, Value
from django.utils import timezone

from chips.models import Chip
from common.exceptions import DomainError
from common.statements import StatementCache
from instances import circuit, hours
from instances.bindings import contact_moved_emit
from instances.caps import PRODUCTION_STATES, moments, rule_version
from instances.kinds import DEFAULT_KIND, MESSAGE_KINDS, REPLY, kind_policy
from instances.models import ChipCapacity, ContactBinding, RoutingPolicy
from instances.optouts import suppression_blocks
from instances.pool_full import pool_found_full, pool_generation, pool_known_full
from instances.reservations import (
    SENDING,
    capacity_refusal,
    capacity_rows_ensure_due,
    capacity_take_best,
    capacity_take_on,
    capacity_take_sql,
    capacity_taken,
)

logger = logging.getLogger(__name__)
Gates = tuple[set[int], set[int]]  # (blocked, on trial): instances.circuit.routing_gates

# Kept for callers that size their work by it: how many chips a new contact may be tried on (SKIP LOCKED picks).
MAX_CANDIDATES = 3
REPLY_WINDOW = timedelta(hours=24)
# The columns of a binding written in SQL (routing and the drain's inbound statement), in this order.
BINDING_COLUMNS = ("contact, chip_id, origin, previous_chip_id, move_reason, last_used_at, expires_at, released_at, "
                   "created_at, updated_at")
# A new contact's binding on the chip a reservation took (its CTE is `taken`); RETURNING is the caller's.
_BIND_TAKEN = (f"INSERT INTO {ContactBinding._meta.db_table} ({BINDING_COLUMNS}) SELECT %s, taken.chip_id, %s, NULL, "
               f"'', %s, %s, NULL, %s, %s FROM taken")
_BIND_NEW = f"{_BIND_TAKEN} RETURNING chip_id, (SELECT phone FROM taken), (SELECT instance_name FROM taken), id"
_BINDING_TOUCH = (f"UPDATE {ContactBinding._meta.db_table} AS b SET last_used_at = %s, expires_at = %s, "
                  f"updated_at = %s FROM taken WHERE b.id = %s RETURNING b.id")


class RoutingRefused(DomainError):
    """Sending is refused for a reason the caller can act on (503 with a stable code)."""

    status_code = 503
    code = "no_capacity"

    def __init__(self, message: str, *, code: str, retry_after: int | None = None, **extra: object) -> None:
        super().__init__(message, code=code, **extra)
        self.retry_after = retry_after


class NotAReply(DomainError):
    status_code = 409
    code = "not_a_reply"


@dataclass(frozen=True)
class RouteDecision:
    chip_id: int
    phone: str
    instance: str
    binding: str  # "sticky" | "new" | "moved"
    binding_id: int


def _seconds_until_next_hour(now: datetime) -> int:
    """Whole seconds to the end of `now`'s hour window (instances.caps.hour_window), at least 1."""
    return max(1, 3600 - now.minute * 60 - now.second - (1 if now.microsecond else 0))


def _policy_refusal(*, is_paused: bool, paused_reason: str, now: datetime, open_now: bool | None = None) -> None:
    """The kill switch and business hours (one rule for `contact_route` and `sending_ensure_allowed`). `open_now`:
    whether `now` is business time, when the caller already knows."""
    if is_paused:
        raise RoutingRefused(f"Sending is paused: {paused_reason or 'no reason given'}.", code="paused")
    if not (hours.is_business_time(now) if open_now is None else open_now):
        opens = hours.next_business_start(now)
        raise RoutingRefused(
            f"Outside business hours; sending opens at {opens.isoformat()}.",
            code="outside_business_hours",
            retry_after=max(1, int((opens - now).total_seconds())),
        )


def sending_ensure_allowed(now: datetime) -> RoutingPolicy:
    """Refuse when paused or outside business hours; returns the policy otherwise."""
    policy = RoutingPolicy.load()
    _policy_refusal(is_paused=policy.is_paused, paused_reason=policy.paused_reason, now=now)
    return policy


def _kind_valid(kind: str) -> None:
    if kind not in MESSAGE_KINDS:
        raise DomainError(f"Unknown message kind {kind!r}.", code="invalid_input", status_code=422, field="kind")


def _contact_refusal(*, contact: str, kind: str, suppressed: bool, wrote: bool) -> None:
    """The contact-side rules of a message's kind: an opted-out contact is only answered, and an answer is one only
    when the contact wrote within 24 h (WhatsApp's own window for replies)."""
    from instances.optouts import ensure_not_suppressed

    if kind == REPLY and not wrote:
        raise NotAReply("A reply needs a message from the contact in the last 24 hours.", field="kind")
    ensure_not_suppressed(contact, kind=kind, suppressed=suppressed)


def _wrote_lately(contact: str, now: datetime) -> QuerySet:
    from instances.models import InboundMessage

    return InboundMessage.objects.filter(contact=contact, received_at__gte=now - REPLY_WINDOW)


_BINDING_FIELDS = {"b_id": "pk", "b_chip": "chip_id", "b_status": "chip__status",
                   "b_connected": "chip__is_connected", "b_phone": "chip__phone", "b_instance": "chip__instance_name"}


_POLICY_COLUMNS = ("is_paused", "paused_reason", "strategy", "binding_ttl_days", "suppressed", "wrote")


def _context_statement(reply: bool, *, now: datetime, contact: str) -> tuple[str, list]:
    """The policy row with the contact's opt-out and last-24 h message, LEFT JOIN the contact's current binding
    with its chip: one index lookup of the binding (at most one is current: the unique partial index), however
    many of its fields the decision reads."""
    from instances.optouts import suppressions_of

    policy = (RoutingPolicy.objects.filter(pk=1)
              .annotate(suppressed=Exists(suppressions_of(contact)),
                        wrote=Exists(_wrote_lately(contact, now)) if reply else Value(True))
              .values(*_POLICY_COLUMNS))
    # `b_live`: the binding has not expired (past its TTL, the contact's chip is chosen afresh).
    binding = (ContactBinding.objects.current().filter(contact=contact).order_by()
               .values(**{name: F(field) for name, field in _BINDING_FIELDS.items()},
                       b_live=ExpressionWrapper(Q(expires_at__gt=now), output_field=BooleanField()))[:1])
    policy_sql, policy_params = policy.query.get_compiler(connection=connection).as_sql()
    binding_sql, binding_params = binding.query.get_compiler(connection=connection).as_sql()
    columns = ", ".join([*(f'p."{c}"' for c in _POLICY_COLUMNS),
                         *(f'b."{c}"' for c in [*_BINDING_FIELDS, "b_live"])])
    return (f"SELECT {columns} FROM ({policy_sql}) p LEFT JOIN ({binding_sql}) b ON TRUE",
            [*policy_params, *binding_params])


_CONTEXT = StatementCache(_context_statement, derive=lambda now: {"now": now, "reply_since": now - REPLY_WINDOW})


def _context(contact: str, kind: str, now: datetime) -> dict:
    """Everything the decision reads, in one query (the policy row, the contact's opt-out and last-24 h message,
    the current binding and its chip)."""
    rows, names = _CONTEXT.fetch(kind == REPLY, now=now, contact=contact)
    row = rows[0] if rows else None
    if row is None:  # a fresh database: the policy row is created with its defaults, then read again
        RoutingPolicy.load()
        return _context(contact, kind, now)
    return _policy_seen(dict(zip(names, row, strict=True)))


# The routing policy's strategy and binding TTL (days) as this process last read them: what `_fresh_route` builds
# its statement for (the statement checks them, so a changed policy costs one decision the slower way).
_policy_last: tuple[str, int] | None = None


def _policy_seen(ctx: dict) -> dict:
    global _policy_last
    _policy_last = (ctx["strategy"], ctx["binding_ttl_days"])
    return ctx


def _fresh_statement(key: tuple, *, now: datetime, contact: str, exclude: list[int], ttl_days: int,
                     expires: datetime) -> tuple[str, list]:
    """The context read (`_context_statement`) and, when it clears the pick (`go`), the new contact's reservation
    on the best chip (instances.reservations) and their binding: one statement. (OFFSET 0 keeps the read a
    subquery of its own: inlined, its opt-out test would be planned and run twice, for `go` and for the row.)"""
    kind, strategy = key[:2]
    context_sql, context_params = _context_statement(False, now=now, contact=contact)
    go = "q.b_id IS NULL AND NOT q.is_paused AND q.strategy = %s AND q.binding_ttl_days = %s"
    if suppression_blocks(kind):
        go += " AND NOT q.suppressed"
    take_sql, take_params = capacity_take_sql(now, kind=kind, new_contact=True, strategy=strategy, exclude=exclude,
                                              gate="(SELECT go FROM ctx)")
    sql = (f"WITH ctx AS (SELECT q.*, {go} AS go FROM ({context_sql} OFFSET 0) q), taken AS ({take_sql}), "
           f"bound AS ({_BIND_TAKEN} RETURNING id, chip_id) "
           f"SELECT ctx.*, bound.chip_id AS t_chip, taken.phone AS t_phone, taken.instance_name AS t_instance, "
           f"bound.id AS t_binding FROM ctx LEFT JOIN taken ON TRUE LEFT JOIN bound ON TRUE")
    return sql, [strategy, ttl_days, *context_params, *take_params, contact, ContactBinding.Origin.ROUTED, now,
                 expires, now, now]


_FRESH = StatementCache(_fresh_statement, derive=moments)


def _pick(now: datetime, strategy: str, kind: str, exclude: set[int], blocked: set[int],
          then: tuple[str, list] | None = None) -> tuple | None:
    """`capacity_take_best` (waiting for the rows other requests hold when it skipped them all), unless this process
    found the pool outside the open circuits (`blocked`) full for the kind within ROUTING_FULL_POOL_SECONDS
    (instances.pool_full). What `exclude` adds to `blocked` — a contact's own chip that refused them, a half-open
    chip whose trial another request holds — cannot take a new contact of the kind now either, so a pick that
    finds no room is remembered for the pool outside `blocked`."""
    version, since = rule_version(SENDING, kind), pool_generation()
    if pool_known_full(kind, now, version, blocked):
        return None
    chosen = capacity_take_best(now, strategy=strategy, kind=kind, exclude=exclude, then=then)
    if chosen is None:
        pool_found_full(kind, now, version, blocked, since=since)
    return chosen


def _pick_new(contact: str, now: datetime, strategy: str, kind: str, exclude: set[int], blocked: set[int],
              ttl: timedelta) -> tuple | None:
    """`_pick` for a contact new to the pool, their binding written in the same statement."""
    then = (_BIND_NEW, [contact, ContactBinding.Origin.ROUTED, now, now + ttl, now, now])
    return _pick(now, strategy, kind, exclude, blocked, then)


def _fresh_route(contact: str, kind: str, now: datetime, open_now: bool, gates: Gates) -> RouteDecision | dict | None:
    """A contact new to the pool, in one statement (module docstring, 4): the decision, or the context it read
    (the pick did not run — `go` false — or found no chip with room it could lock, and `_route_once` tries again,
    waiting for the rows other requests hold; or the pool is known full, and only the context is read, the pick
    counted as `tried`: instances.pool_full), or None when this path does not apply (a reply, outside business
    hours — `open_now` false —, a half-open chip whose trial is free, no policy read yet). What the statement
    cannot tell — no room, or rooms held by other requests — costs a second statement only on a pick that fails,
    once a second per process (the full pool is then remembered): the first build asked it in every statement."""
    policy = _policy_last
    if policy is None or kind == REPLY or not open_now:
        return None
    blocked, trial = gates
    if trial:
        return None
    strategy, ttl_days = policy
    version = rule_version(SENDING, kind)
    if pool_known_full(kind, now, version, blocked):  # the pick would find no room: only the context is read
        ctx = _context(contact, kind, now)
        ctx["tried"] = ctx["b_id"] is None
        return ctx
    rows, names = _FRESH.fetch((kind, strategy, len(blocked), version), now=now, contact=contact,
                               exclude=sorted(blocked), ttl_days=ttl_days, expires=now + timedelta(days=ttl_days))
    if not rows:  # no policy row yet
        return None
    ctx = _policy_seen(dict(zip(names, rows[0], strict=True)))
    if ctx["t_binding"] is None:
        return ctx
    capacity_taken()
    logger.info("contact bound to chip %s (new contact)", ctx["t_chip"])
    return RouteDecision(chip_id=ctx["t_chip"], phone=ctx["t_phone"] or "", instance=ctx["t_instance"] or "",
                         binding="new", binding_id=ctx["t_binding"])


def _counted(route: Callable[..., RouteDecision]) -> Callable[..., RouteDecision]:
    """Count each decision for /metrics: "routed", or the refusal code (counting never raises)."""

    @functools.wraps(route)
    def counted(**kwargs: object) -> RouteDecision:
        from config import counters  # lazily: instances never imports config at module level

        try:
            decision = route(**kwargs)
        except RoutingRefused as exc:
            counters.incr("route_decisions", exc.code)
            raise
        counters.incr("route_decisions", "routed")
        return decision

    return counted


@_counted
def contact_route(*, contact: str, kind: str = DEFAULT_KIND, now: datetime | None = None) -> RouteDecision:
    """Pick the chip for `contact` and reserve one message of its capacity (see module docstring).

    Sticky first: the contact's current binding, if its chip is available and has room for the kind. Otherwise a
    new chip by the policy's strategy, among those the kind allows (instances.kinds: trust minimum, hourly share),
    and the binding is created or moved (recorded on the binding). A reply always goes to the contact's own chip
    while it is in production, within the hard caps and its send circuit.
    Raises RoutingRefused with code paused / outside_business_hours / no_capacity (naming the kind); ContactOptedOut
    (409) for a contact who opted out, unless `kind` is a reply; NotAReply (409) for a reply to a contact who did
    not write within 24 h. Nothing is reserved when it refuses.
    """
    now = now or timezone.now()
    _kind_valid(kind)
    open_now = hours.is_business_time(now)
    for _attempt in range(3):
        # Each step below is one statement (its own transaction) or opens its own; inside a caller's transaction
        # an attempt runs in a savepoint, so a lost race is undone without breaking the caller's.
        guard = transaction.atomic() if connection.in_atomic_block else contextlib.nullcontext()
        try:
            with guard:
                gates = circuit.routing_gates(now=now)
                ctx = _fresh_route(contact, kind, now, open_now, gates)
                if isinstance(ctx, RouteDecision):
                    return ctx
                ctx = ctx or _context(contact, kind, now)
                _contact_refusal(contact=contact, kind=kind, suppressed=ctx["suppressed"], wrote=ctx["wrote"])
                _policy_refusal(is_paused=ctx["is_paused"], paused_reason=ctx["paused_reason"], now=now,
                                open_now=open_now)
                return _route_once(contact, now, ctx, kind, gates)
        except IntegrityError:
            # Another request bound this contact between our read and our insert: route again, sticky.
            continue
        except OperationalError as exc:
            # PostgreSQL broke a lock cycle by failing us: nothing was reserved; try again.
            if not isinstance(exc.__cause__, psycopg.errors.DeadlockDetected):
                raise
            logger.warning("routing deadlock for a contact; retrying")
            continue
    raise RoutingRefused("The contact is being routed concurrently; retry.", code="no_capacity", retry_after=1)


def _gate(chip_id: int, trial: set[int], now: datetime) -> bool:
    """May this chip take a send past its circuit? A half-open chip's one trial is leased here."""
    return chip_id not in trial or circuit.allows(circuit.circuit_acquire(chip_id=chip_id, now=now))


def _route_once(contact: str, now: datetime, ctx: dict, kind: str, gates: Gates) -> RouteDecision:
    ttl = timedelta(days=ctx["binding_ttl_days"])
    blocked, trial = gates
    move_reason = ""
    bound = ctx["b_id"] is not None
    if bound:
        chip_id, status, connected = ctx["b_chip"], ctx["b_status"], ctx["b_connected"]
        # The contact wrote within 24 h: their own chip answers while it is in production (resting included).
        bound_reply = kind == REPLY and status in PRODUCTION_STATES and connected
        if not ctx["b_live"] and not bound_reply:
            move_reason = "binding expired"
        elif not bound_reply and (status != Chip.Status.ACTIVE or not connected):
            move_reason = f"chip left production ({status}{'' if connected else ', disconnected'})"
        elif chip_id in blocked or not _gate(chip_id, trial, now):
            move_reason = "send circuit open"
        else:
            options = {"kind": kind, "kind_rules": not bound_reply,
                       "statuses": PRODUCTION_STATES if bound_reply else SENDING,
                       "then": (_BINDING_TOUCH, [now, now + ttl, now, ctx["b_id"]])}
            taken = capacity_take_on(chip_id, now, **options)
            if not taken and capacity_rows_ensure_due():  # the chip may have had no capacity row yet
                taken = capacity_take_on(chip_id, now, **options)
            if taken:
                return RouteDecision(chip_id=chip_id, phone=ctx["b_phone"] or "", instance=ctx["b_instance"] or "",
                                     binding="sticky", binding_id=ctx["b_id"])
            # Why it refused is read only if the contact does move (a saturated pool refuses them instead).
            move_reason = functools.partial(capacity_refusal, chip_id, now, kind=kind, kind_rules=not bound_reply)

    # An expired binding's chip may well be picked again; a chip that just refused is not retried.
    exclude = set(blocked)
    if bound and move_reason != "binding expired":  # (a refusal's reason is not: the chip refused)
        exclude.add(ctx["b_chip"])
    if not bound and not trial:  # a new contact: the pick, the reservation and the binding in one statement
        # `tried`: the pool is known full (`_fresh_route`); a pick of that statement that found no room is run again
        # here, waiting for the rows other requests held, so a pool with room never refuses.
        chosen = None if ctx.get("tried") else _pick_new(contact, now, ctx["strategy"], kind, exclude, blocked, ttl)
        if chosen is None and capacity_rows_ensure_due():
            chosen = _pick_new(contact, now, ctx["strategy"], kind, exclude, blocked, ttl)
        if chosen is None:
            _no_capacity(kind, now)
        logger.info("contact bound to chip %s (new contact)", chosen[0])
        return RouteDecision(chip_id=chosen[0], phone=chosen[1] or "", instance=chosen[2] or "", binding="new",
                             binding_id=chosen[3])
    if pool_known_full(kind, now, rule_version(SENDING, kind), blocked) and not capacity_rows_ensure_due():
        _no_capacity(kind, now)  # no chip could take them: refused without opening the move's transaction
    with transaction.atomic():  # a move (release, bind, tell the app) or a pick that may have to undo a trial
        return _bind_elsewhere(contact, now, ctx, kind, exclude, gates, move_reason, ttl)


def _no_capacity(kind: str, now: datetime) -> None:
    rule = kind_policy(kind)
    raise RoutingRefused(
        f"No production chip can take a {kind} message for this contact now (a {kind} message needs trust "
        f">= {rule.min_trust} and at most {rule.hourly_share} % of a chip's hourly cap).",
        code="no_capacity", retry_after=_seconds_until_next_hour(now), kind=kind,
    )


def _bind_elsewhere(contact: str, now: datetime, ctx: dict, kind: str, exclude: set[int], gates: Gates,
                    move_reason: str | Callable[[], str | None], ttl: timedelta) -> RouteDecision:
    """`move_reason`: why the contact leaves their chip, or how to read it (the chip refused: `capacity_refusal`)."""
    bound = ctx["b_id"] is not None
    chosen = _take_best(now, ctx["strategy"], kind, exclude, gates)
    if chosen is None and capacity_rows_ensure_due():
        chosen = _take_best(now, ctx["strategy"], kind, exclude, gates)
    if chosen is None:
        _no_capacity(kind, now)
    if callable(move_reason):
        move_reason = move_reason() or "chip at its cap"
    chip_id, phone, instance = chosen
    binding_id = _bind(contact, chip_id, now=now, ttl=ttl, previous=ctx["b_id"] if bound else None,
                       move_reason=move_reason)
    if bound and ctx["b_chip"] != chip_id:
        contact_moved_emit(contact=contact, old=(ctx["b_chip"], ctx["b_phone"]), new=(chip_id, phone),
                           reason=move_reason, now=now)
    logger.info("contact bound to chip %s (%s)", chip_id, move_reason or "new contact")
    return RouteDecision(chip_id=chip_id, phone=phone or "", instance=instance or "",
                         binding="moved" if bound else "new", binding_id=binding_id)


class _Raced(IntegrityError):
    """Another request released this contact's binding first: the attempt is undone and routed again."""


def _bind(contact: str, chip_id: int, *, now: datetime, ttl: timedelta, previous: int | None,
          move_reason: str) -> int:
    """The contact's new binding (one statement; a move releases the previous one in the same statement)."""
    table, columns = ContactBinding._meta.db_table, BINDING_COLUMNS
    values = [contact, chip_id, ContactBinding.Origin.ROUTED, move_reason[:200], now, now + ttl, now, now]
    if previous is None:
        sql = f"INSERT INTO {table} ({columns}) VALUES (%s, %s, %s, NULL, %s, %s, %s, NULL, %s, %s) RETURNING id"
        params = values
    else:  # the insert reads the release's row, so the old binding is out of the unique index first
        sql = (f"WITH released AS (UPDATE {table} SET released_at = %s, updated_at = %s WHERE id = %s AND "
               f"released_at IS NULL RETURNING chip_id) INSERT INTO {table} ({columns}) SELECT %s, %s, %s, "
               f"released.chip_id, %s, %s, %s, NULL, %s, %s FROM released RETURNING id")
        params = [now, now, previous, *values]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None:
        raise _Raced("the binding was released by another request")
    return row[0]


def _take_best(now: datetime, strategy: str, kind: str, exclude: set[int], gates: Gates) -> tuple | None:
    """The best chip with room, reserved. While some chip is half-open its pick runs in a savepoint: a trial
    another request leased first undoes this one's reservation and the next chip is tried."""
    blocked, trial = gates
    for _attempt in range(MAX_CANDIDATES):
        if not trial:
            return _pick(now, strategy, kind, exclude, blocked)
        savepoint = transaction.savepoint()
        chosen = _pick(now, strategy, kind, exclude, blocked)
        if chosen is None or _gate(chosen[0], trial, now):
            transaction.savepoint_commit(savepoint)
            return chosen
        transaction.savepoint_rollback(savepoint)
        exclude = exclude | {chosen[0]}
    return None


def capacity_reserve(*, chip_id: int, now: datetime | None = None) -> bool:
    """Take one message of a chip's capacity outside contact routing (the warmer's own traffic), under the same
    caps and send circuit as `contact_route`. Returns False when one refuses."""
    now = now or timezone.now()
    blocked, trial = circuit.routing_gates(now=now)
    if chip_id in blocked or not _gate(chip_id, trial, now):
        return False
    with transaction.atomic():
        ChipCapacity.objects.get_or_create(chip_id=chip_id)
        return bool(capacity_take_on(chip_id, now, statuses=None, connected=False))


__all__ = ["MAX_CANDIDATES", "RouteDecision", "RoutingRefused", "capacity_reserve", "contact_route",
           "sending_ensure_allowed"]
