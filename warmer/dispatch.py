"""The warming dispatcher: due actions claimed in a batch, sent concurrently, written back in bulk (W2 7/7).

    claim (one UPDATE … WHERE id IN (SELECT … FOR UPDATE SKIP LOCKED) RETURNING) → load (one query) →
    capacity for the whole batch (instances.reservations: one locking read, one update) → who talked before
    (one query) → the sends, concurrently, bounded (a thread pool; the typing pause is the gateway's own `delay`,
    so no worker sleeps) → results, metrics and the peers' replies written in bulk.

A run (`warming_dispatch_due`, the beat's task) sends batch after batch while actions are due, within
WARMER_DISPATCH_BUDGET_SECONDS: a backlog (the morning's first minute, a worker that was down) goes out in one run
rather than a batch a minute. Any number of dispatchers can sweep at once: a claimed row is never sent twice, and
a worker that dies mid-batch leaves claimed rows that `release_stale_claims` marks failed (never re-sent: sendText
is not idempotent).
"""

from __future__ import annotations

import functools
import logging
import os
import random
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from datetime import date, datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from instances import circuit, hours
from instances.gateway import Gateway, GatewayError, SendResult
from instances.reservations import capacity_reserve_batch
from instances.restriction import is_restricted
from instances.servers import gateway_kept
from instances.services import send_failure_observed
from warmer.models import ChipDailyMetrics, WarmingAction
from warmer.texts import REPLIES

logger = logging.getLogger(__name__)
A = WarmingAction.Status
rng = random.SystemRandom()


@dataclass
class DispatchReport:
    claimed: int = 0
    sent: int = 0
    skipped: int = 0
    failed: int = 0


# What the dispatch reads of a claimed action and its rows (a chip row alone has 14 timestamps to parse: loading
# every column was a fifth of the bookkeeping's CPU). The gateway server is loaded whole (a handful of rows).
_LOADED = ("chip_id", "peer_id", "kind", "text", "day", "typing_ms", "due_at", "chip__status", "chip__is_connected",
           "chip__instance_name", "chip__capacity__restricted_until", "chip__instance__server", "peer__phone",
           "peer__status")  # a chip's status is read as it loads (django_fsm's ConcurrentTransitionMixin)


def _claim(limit: int, now: datetime) -> list[int]:
    """One statement: lock the due rows nobody holds, mark them claimed, return their ids."""
    table = WarmingAction._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, claimed_at = %s, updated_at = %s WHERE id IN ("
            f"SELECT id FROM {table} WHERE status = %s AND due_at <= %s ORDER BY due_at LIMIT %s "
            f"FOR UPDATE SKIP LOCKED) RETURNING id",
            [A.CLAIMED, now, now, A.PLANNED, now, limit])
        return [row[0] for row in cursor.fetchall()]


def warming_dispatch(*, limit: int = 100, now: datetime | None = None, client: Gateway | None = None,
                     concurrency: int | None = None) -> DispatchReport:
    """Send one batch of due actions (see the module docstring); returns what became of them."""
    from warmer.services import PEER_STATES  # the peers the warmer talks to (one definition, in services)

    now = now or timezone.now()
    with transaction.atomic():
        ids = _claim(limit, now)
    report = DispatchReport(claimed=len(ids))
    if not ids:
        return report
    actions = list(WarmingAction.objects.filter(pk__in=ids)
                   .select_related("chip", "peer", "chip__capacity", "chip__instance__server")
                   .only(*_LOADED).order_by("due_at"))
    done: dict[int, tuple[str, str, str]] = {}  # action id → (status, note, message id)
    ready: list[WarmingAction] = []
    open_now = hours.is_business_time(now)
    for action in actions:
        chip, peer = action.chip, action.peer
        restricted = is_restricted(getattr(chip, "capacity", None), now)
        if not open_now:
            done[action.pk] = (A.SKIPPED, "outside business hours", "")
        elif chip.status not in PEER_STATES or not chip.is_connected or restricted or not peer.phone:
            done[action.pk] = (A.SKIPPED, f"chip {chip.status}{'' if chip.is_connected else ', disconnected'}"
                                          f"{', restricted' if restricted else ''}", "")
        else:
            ready.append(action)
    granted = capacity_reserve_batch(wants=Counter(a.chip_id for a in ready), now=now)
    sendable: list[WarmingAction] = []
    for action in ready:
        if granted.get(action.chip_id, 0) > 0:
            granted[action.chip_id] -= 1
            sendable.append(action)
        else:
            done[action.pk] = (A.SKIPPED, "the chip's cap for today is reached", "")
    talked = _pairs_that_talked({(a.chip_id, a.peer_id) for a in sendable})
    results = _send_all(sendable, client, concurrency or settings.WARMER_DISPATCH_CONCURRENCY)
    bumps: dict[tuple[int, date], Counter] = defaultdict(Counter)
    replies: list[WarmingAction] = []
    for action in sendable:
        result = results[action.pk]
        if isinstance(result, GatewayError):
            done[action.pk] = (A.FAILED, str(result), "")
            bumps[(action.chip_id, action.day)]["send_failures"] += 1
            continue
        done[action.pk] = (A.SENT, "", result.message_id)
        is_reply = action.kind == WarmingAction.Kind.REPLY
        first_time = (action.chip_id, action.peer_id) not in talked
        bumps[(action.chip_id, action.day)].update(sent=1, replies_sent=int(is_reply),
                                                   new_peers=int(first_time and not is_reply))
        talked |= {(action.chip_id, action.peer_id), (action.peer_id, action.chip_id)}
        if not is_reply:
            replies.append(action)
    with transaction.atomic():
        _write_results(done, bumps, timezone.now())
        _plan_replies(replies, now)
    for action in sendable:  # what a failed send says about the session (rare: one by one)
        if isinstance(results[action.pk], GatewayError):
            send_failure_observed(chip_id=action.chip_id, error=results[action.pk])
    # A send the gateway accepted closes the chip's send circuit (a half-open trial passed) and ends a failure
    # streak: once per chip of the batch, after its failures.
    for chip_id in sorted({a.chip_id for a in sendable if not isinstance(results[a.pk], GatewayError)}):
        circuit.circuit_success(chip_id=chip_id)
    for status, _note, _id in done.values():
        key = {A.SENT: "sent", A.FAILED: "failed"}.get(status, "skipped")
        setattr(report, key, getattr(report, key) + 1)
    return report


def warming_dispatch_due(*, limit: int = 100, budget_seconds: float | None = None) -> DispatchReport:
    """`warming_dispatch` batch after batch while a batch comes back full, starting none after `budget_seconds`
    (WARMER_DISPATCH_BUDGET_SECONDS); what became of every action it claimed. (A peer's reply is planned at least
    90 s ahead: a run never chases its own replies.)"""
    budget = settings.WARMER_DISPATCH_BUDGET_SECONDS if budget_seconds is None else budget_seconds
    deadline, total = time.monotonic() + budget, DispatchReport()
    while True:
        report = warming_dispatch(limit=limit)
        for field in fields(DispatchReport):
            setattr(total, field.name, getattr(total, field.name) + getattr(report, field.name))
        if report.claimed < limit or time.monotonic() >= deadline:
            return total


def _pairs_that_talked(pairs: set[tuple[int, int]]) -> set[tuple[int, int]]:
    """Of these (chip, peer) pairs, those that exchanged a sent message before, in either direction: one query."""
    if not pairs:
        return set()
    chips = {c for pair in pairs for c in pair}
    rows = (WarmingAction.objects.filter(status=A.SENT, chip_id__in=chips, peer_id__in=chips)
            .values_list("chip_id", "peer_id").order_by().distinct())  # (ordered by due_at, every row was distinct)
    seen = set(rows)
    return {p for p in pairs if p in seen or (p[1], p[0]) in seen}


def _send_all(actions: list[WarmingAction], client: Gateway | None,
              concurrency: int) -> dict[int, SendResult | GatewayError]:
    """The HTTP part, concurrently (no database here): the process's kept client of each server the batch touches
    (instances.servers.gateway_kept: the batches of one run reuse its connections), on the process's kept threads."""
    clients: dict[int | None, Gateway] = {}
    for action in actions:
        instance = getattr(action.chip, "instance", None)
        key = instance.server_id if instance is not None else None
        if client is None and key not in clients:
            clients[key] = gateway_kept(instance.server if instance is not None else None)

    def send(action: WarmingAction) -> tuple[int, SendResult | GatewayError]:
        instance = getattr(action.chip, "instance", None)
        gw = client or clients[instance.server_id if instance is not None else None]
        try:
            return action.pk, gw.send_text(action.chip.instance_name, number=action.peer.phone.lstrip("+"),
                                           text=action.text, delay_ms=action.typing_ms or None)
        except GatewayError as exc:
            return action.pk, exc

    if len(actions) <= 1:
        return dict(map(send, actions))
    return dict(_senders(concurrency).map(send, actions))


@functools.cache
def _senders(size: int) -> ThreadPoolExecutor:
    """The process's sending threads, `size` of them, kept from batch to batch (starting them per batch cost more
    than a send); a forked child starts its own."""
    return ThreadPoolExecutor(max_workers=max(1, size), thread_name_prefix="warmer-send")


os.register_at_fork(after_in_child=_senders.cache_clear)


_COUNTERS = ("new_peers", "replies_sent", "send_failures", "sent")


def _write_results(done: dict[int, tuple[str, str, str]], bumps: dict[tuple[int, date], Counter],
                   now: datetime) -> None:
    """Every action's outcome in one UPDATE … FROM (VALUES …), every chip-day's counters in one upsert."""
    table = WarmingAction._meta.db_table
    with connection.cursor() as cursor:
        if done:
            values = ", ".join(["(%s, %s, %s, %s)"] * len(done))
            params = [x for pk, (status, note, mid) in done.items() for x in (pk, status, note[:300], mid[:64])]
            cursor.execute(
                f"UPDATE {table} AS a SET status = v.status, note = v.note, evolution_message_id = v.mid, "
                f"done_at = %s, updated_at = %s FROM (VALUES {values}) AS v(id, status, note, mid) "
                f"WHERE a.id = v.id::bigint", [now, now, *params])
        if bumps:
            metrics = ChipDailyMetrics._meta.db_table
            columns = ", ".join(_COUNTERS)
            sets = ", ".join(f"{n} = {metrics}.{n} + EXCLUDED.{n}" for n in _COUNTERS)
            rows = ", ".join([f"(%s, %s, {', '.join(['%s'] * len(_COUNTERS))}, 0, 0, %s, %s)"] * len(bumps))
            params = [x for (chip_id, day), c in bumps.items()
                      for x in (chip_id, day, *[c[n] for n in _COUNTERS], now, now)]
            cursor.execute(
                f"INSERT INTO {metrics} (chip_id, day, {columns}, received, delivery_failures, created_at, "
                f"updated_at) VALUES {rows} ON CONFLICT (chip_id, day) DO UPDATE SET {sets}, "
                f"updated_at = EXCLUDED.updated_at", params)


def _plan_replies(sent: list[WarmingAction], now: datetime) -> None:
    """Each peer answers after a human delay, inside business hours, never with a text it already sent to that
    chip that day (one read of the day's texts, one insert)."""
    from warmer.services import typing_ms

    if not sent:
        return
    plans = []
    for action in sent:
        due = now + timedelta(seconds=rng.uniform(90, 15 * 60))
        if not hours.is_business_time(due):
            due = hours.next_business_start(due) + timedelta(seconds=rng.uniform(60, 45 * 60))
        plans.append((action, due, hours.business_day(due)))
    used: dict[tuple[int, int, date], set[str]] = defaultdict(set)
    lookup = Q()
    for action, _due, day in plans:
        lookup |= Q(chip_id=action.peer_id, peer_id=action.chip_id, day=day)
    for chip_id, peer_id, day, text in WarmingAction.objects.filter(lookup).values_list("chip_id", "peer_id", "day",
                                                                                         "text"):
        used[(chip_id, peer_id, day)].add(text)
    rows = []
    for action, due, day in plans:
        taken = used[(action.peer_id, action.chip_id, day)]
        options = [t for t in REPLIES if t not in taken]
        if not options:
            continue  # every reply text went to this peer today: this one stays unanswered
        text = rng.choice(options)
        taken.add(text)
        rows.append(WarmingAction(chip_id=action.peer_id, peer_id=action.chip_id, kind=WarmingAction.Kind.REPLY,
                                  text=text, day=day, due_at=due, reply_to_id=action.pk, typing_ms=typing_ms(text)))
    WarmingAction.objects.bulk_create(rows, ignore_conflicts=True)


def release_stale_claims(*, older_than: timedelta = timedelta(minutes=10), now: datetime | None = None) -> int:
    """Claimed rows of a worker that died mid-send: marked failed, never re-sent (sendText is not
    idempotent; a lost warming message is harmless, a duplicate is not)."""
    now = now or timezone.now()
    return WarmingAction.objects.filter(status=A.CLAIMED, claimed_at__lt=now - older_than).update(
        status=A.FAILED, note="claimed by a worker that did not finish", done_at=now, updated_at=now)
