"""Routing (DESIGN §4): caps under concurrency, stickiness, refusals, the kill switch."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.db.models import Sum

from chips.models import Chip
from chips.services import Actor, chip_transition
from instances.bindings import bindings_move
from instances.models import ChipCapacity, ContactBinding, RoutingPolicy
from instances.routing import RoutingRefused, contact_route
from instances.services import sending_pause, sending_resume
from tests.instances.conftest import BUSINESS_TIME

pytestmark = pytest.mark.django_db


def contact(n: int) -> str:
    return f"+55119{n:08d}"


def route_in_threads(n_threads: int, per_thread: int, kind_of=lambda i, j: None) -> Counter:
    """`n_threads` threads released together, each routing `per_thread` contacts of its own (`kind_of(i, j)`: the
    message kind, None for the default); the outcomes counted: "routed" or the refusal's code, prefixed by the
    kind when one is given."""
    results: Counter = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(n_threads)

    def worker(i: int) -> None:
        try:
            barrier.wait(timeout=30)
            for j in range(per_thread):
                kind = kind_of(i, j)
                try:
                    contact_route(contact=contact(i * 1000 + j), **({"kind": kind} if kind else {}))
                    outcome = "routed"
                except RoutingRefused as exc:
                    outcome = exc.code
                with lock:
                    results[f"{kind} {outcome}" if kind else outcome] += 1
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return results


@pytest.mark.django_db(transaction=True)
def test_fifty_threads_never_push_a_chip_over_its_caps(make_production_chip, business_hours, settings):
    settings.KIND_HOURLY_SHARE = {**settings.KIND_HOURLY_SHARE, "follow_up": 100}  # the whole hour (see below)
    chips = [make_production_chip(per_hour=7, per_day=9, new_contacts=1000) for _ in range(5)]

    results = route_in_threads(50, 4)

    # 5 chips × 7 per hour = 35: exactly that many reservations, never more, the rest refused.
    assert results == {"routed": 35, "no_capacity": 165}
    caps = ChipCapacity.objects.filter(chip__in=chips)
    assert caps.aggregate(total=Sum("hour_count"))["total"] == 35
    assert all(c.hour_count == 7 and c.hour_follow_up == 7 for c in caps)
    assert ContactBinding.objects.current().count() == 35


@pytest.mark.django_db(transaction=True)
def test_threads_racing_for_equally_loaded_chips_are_never_refused_while_there_is_room(make_production_chip,
                                                                                      business_hours):
    """Concurrent picks take rows other requests updated a moment before; PostgreSQL re-checks those, and the
    re-check must keep the row the pick chose (a pick run again there could choose another chip by chance and
    leave the request refused with room to spare)."""
    chips = [make_production_chip(per_hour=10**6, per_day=10**6, new_contacts=10**6) for _ in range(4)]

    results = route_in_threads(8, 60)

    assert results == {"routed": 480}
    assert ChipCapacity.objects.filter(chip__in=chips).aggregate(total=Sum("hour_count"))["total"] == 480


@pytest.mark.django_db(transaction=True)
def test_fifty_threads_never_push_a_chip_over_its_kind_share(make_production_chip, business_hours):
    chips = [make_production_chip(per_hour=7, per_day=9, new_contacts=1000) for _ in range(5)]

    results = route_in_threads(50, 4, kind_of=lambda i, j: "prospecting" if (i + j) % 2 else "follow_up")

    # Per chip and hour: follow-ups 50 % of 7 = 3, prospecting 25 % of 7 = 1; never more under 50 threads.
    assert results["follow_up routed"] == 15 and results["prospecting routed"] == 5
    for capacity in ChipCapacity.objects.filter(chip__in=chips):
        assert (capacity.hour_follow_up, capacity.hour_prospecting, capacity.hour_count) == (3, 1, 4)


def test_caps_hourly_then_daily_and_a_missed_reset_does_not_matter(make_production_chip, settings):
    settings.KIND_HOURLY_SHARE = {**settings.KIND_HOURLY_SHARE, "follow_up": 100}  # the hard caps, not the share
    chip = make_production_chip(per_hour=2, per_day=3, new_contacts=100)
    with time_machine.travel(BUSINESS_TIME, tick=False):
        contact_route(contact=contact(1))
        contact_route(contact=contact(2))
        with pytest.raises(RoutingRefused) as exc:
            contact_route(contact=contact(3))
        assert exc.value.code == "no_capacity" and exc.value.retry_after == 3600
    # An hour later no reset job ran, yet the new hour counts from zero; the daily cap still holds.
    with time_machine.travel(BUSINESS_TIME + timedelta(hours=1), tick=False):
        contact_route(contact=contact(3))
        with pytest.raises(RoutingRefused):
            contact_route(contact=contact(4))
    # The next business day counts from zero too (the stale counters are simply an older window).
    with time_machine.travel(BUSINESS_TIME + timedelta(days=1), tick=False):
        assert contact_route(contact=contact(4)).chip_id == chip.pk
    capacity = ChipCapacity.objects.get(chip=chip)
    assert (capacity.day_count, capacity.hour_count) == (1, 1)


def test_new_contacts_cap_per_rolling_24h_but_known_contacts_still_served(make_production_chip, business_hours):
    make_production_chip(per_hour=50, per_day=50, new_contacts=2)
    contact_route(contact=contact(1))
    contact_route(contact=contact(2))
    with pytest.raises(RoutingRefused):
        contact_route(contact=contact(3))
    assert contact_route(contact=contact(1)).binding == "sticky"


def test_sticky_until_the_chip_leaves_production_then_rebinds(make_production_chip, business_hours):
    first = make_production_chip(per_hour=50)
    decision = contact_route(contact=contact(1))
    assert (decision.chip_id, decision.binding) == (first.pk, "new")
    second = make_production_chip(per_hour=50)
    for _ in range(3):  # least-loaded would now prefer `second`, stickiness keeps `first`
        d = contact_route(contact=contact(1))
        assert (d.chip_id, d.binding) == (first.pk, "sticky")

    chip_transition(chip=first.pk, transition="retire", actor=Actor.system("test"))

    moved = contact_route(contact=contact(1))
    assert (moved.chip_id, moved.binding) == (second.pk, "moved")
    old, new = ContactBinding.objects.filter(contact=contact(1)).order_by("id")
    assert old.released_at is not None and new.released_at is None
    assert new.previous_chip_id == first.pk and "retired" in new.move_reason


def test_binding_ttl_passes_then_rebinds(make_production_chip):
    with time_machine.travel(BUSINESS_TIME, tick=False):
        make_production_chip(per_hour=50)
        first = contact_route(contact=contact(1))
    with time_machine.travel(BUSINESS_TIME + timedelta(days=29), tick=False):
        assert contact_route(contact=contact(1)).binding == "sticky"
    # the TTL runs from the last use: 31 days of silence expire it
    with time_machine.travel(BUSINESS_TIME + timedelta(days=29 + 31), tick=False):
        again = contact_route(contact=contact(1))
    assert again.binding == "moved" and again.chip_id == first.chip_id
    assert ContactBinding.objects.filter(contact=contact(1)).order_by("id").last().move_reason == "binding expired"


def test_banned_and_disconnected_chips_are_not_routed_to(make_production_chip, business_hours):
    banned = make_production_chip(per_hour=50)
    chip_transition(chip=banned.pk, transition="ban", actor=Actor.system("t"))
    offline = make_production_chip(per_hour=50)
    Chip.objects.filter(pk=offline.pk).update(is_connected=False)
    with pytest.raises(RoutingRefused) as exc:
        contact_route(contact=contact(1))
    assert exc.value.code == "no_capacity"
    assert not ContactBinding.objects.exists()


def test_restricted_chip_takes_no_new_contact(make_production_chip, business_hours):
    chip = make_production_chip(per_hour=50)
    contact_route(contact=contact(1))
    ChipCapacity.objects.filter(chip=chip).update(restricted_until=BUSINESS_TIME + timedelta(hours=5))
    with pytest.raises(RoutingRefused):
        contact_route(contact=contact(2))
    assert contact_route(contact=contact(1)).binding == "sticky"


@pytest.mark.parametrize(
    ("moment", "code"),
    [
        (datetime(2026, 11, 24, 10, 59, tzinfo=UTC), "outside_business_hours"),  # 07:59 in São Paulo
        (datetime(2026, 11, 24, 23, 0, tzinfo=UTC), "outside_business_hours"),  # 20:00 in São Paulo
        (datetime(2026, 11, 20, 13, 0, tzinfo=UTC), "outside_business_hours"),  # Black Awareness Day
        (datetime(2026, 12, 25, 13, 0, tzinfo=UTC), "outside_business_hours"),  # Christmas
    ],
)
def test_outside_hours_and_holidays_refuse_and_reserve_nothing(make_production_chip, moment, code):
    chip = make_production_chip(per_hour=50)
    with time_machine.travel(moment, tick=False), pytest.raises(RoutingRefused) as exc:
        contact_route(contact=contact(1))
    assert exc.value.code == code and exc.value.retry_after > 0
    assert ChipCapacity.objects.get(chip=chip).hour_count == 0
    assert not ContactBinding.objects.exists()


def test_retry_after_points_at_the_next_opening(make_production_chip):
    make_production_chip()
    thursday_evening = datetime(2026, 11, 19, 23, 30, tzinfo=UTC)  # 20:30 in São Paulo
    with time_machine.travel(thursday_evening, tick=False), pytest.raises(RoutingRefused) as exc:
        contact_route(contact=contact(1))
    # Friday the 20th is a holiday: the next opening is Saturday 08:00 BRT = 11:00 UTC.
    assert exc.value.retry_after == int((datetime(2026, 11, 21, 11, 0, tzinfo=UTC)
                                         - datetime(2026, 11, 19, 23, 30, tzinfo=UTC)).total_seconds())


def test_kill_switch_refuses_with_paused_and_resumes(make_production_chip, business_hours):
    chip = make_production_chip(per_hour=50)
    sending_pause(reason="incident 42", by="ana")
    with pytest.raises(RoutingRefused) as exc:
        contact_route(contact=contact(1))
    assert exc.value.code == "paused" and "incident 42" in exc.value.message
    assert ChipCapacity.objects.get(chip=chip).hour_count == 0
    policy = sending_resume(by="ana")
    assert not policy.is_paused
    assert contact_route(contact=contact(1)).chip_id == chip.pk


@pytest.mark.parametrize(("strategy", "expected"), [("round_robin", [0, 1, 2, 0]), ("priority", [2, 2, 2, 2]),
                                                     ("least_loaded", [2, 1, 0, 2])])
def test_strategies(make_production_chip, business_hours, strategy, expected):
    """Least loaded: the priority breaks a tie in load."""
    chips = [make_production_chip(per_hour=50, priority=p) for p in (0, 1, 5)]
    RoutingPolicy.objects.update_or_create(id=1, defaults={"strategy": strategy})
    picked = [contact_route(contact=contact(n)).chip_id for n in range(4)]
    assert picked == [chips[i].pk for i in expected]


def test_least_loaded_spreads_equally_loaded_chips_by_chance(make_production_chip, business_hours):
    """Among chips of the same load and priority the pick is random: every chip is taken once before any twice,
    and not always in the order they were made (concurrent picks do not all reach for the same row)."""
    from instances.pool_full import pool_room_changed

    chips = [make_production_chip(per_hour=50) for _ in range(4)]
    orders = set()
    for attempt in range(12):
        picked = [contact_route(contact=contact(10 * attempt + n)).chip_id for n in range(4)]
        assert sorted(picked) == sorted(c.pk for c in chips), picked
        orders.add(tuple(picked))
        ChipCapacity.objects.update(hour_count=0, day_count=0, hour_follow_up=0)  # equally loaded again
        pool_room_changed()
    assert len(orders) > 1


def test_bindings_move_moves_every_current_binding(make_production_chip, business_hours):
    old = make_production_chip(per_hour=50)
    for n in range(3):
        contact_route(contact=contact(n))
    new = make_production_chip(per_hour=50)
    assert bindings_move(from_chip_id=old.pk, to_chip_id=new.pk, reason="replacement") == 3
    assert set(ContactBinding.objects.current().values_list("chip_id", flat=True)) == {new.pk}
    assert contact_route(contact=contact(0)).chip_id == new.pk


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fresh", [True, False], ids=["one-statement path", "after a policy change"])
def test_a_pick_that_finds_every_chip_with_room_held_waits_for_them_instead_of_refusing(make_production_chip,
                                                                                         fresh):
    """`SKIP LOCKED` spreads concurrent requests over the pool; when it skips every chip with room (other requests
    hold their rows this instant), the pick waits for them once: a pool with room never answers no_capacity."""
    import psycopg
    from django.db import connections

    from instances import routing

    with time_machine.travel(BUSINESS_TIME, tick=False):
        free, full = make_production_chip(per_hour=20), make_production_chip(per_hour=20)
        contact_route(contact=contact(1))  # the policy is read (this process's one-statement path is on)
        ChipCapacity.objects.filter(chip=full).update(hour_count=20, hour_window=BUSINESS_TIME)
        if not fresh:
            routing._policy_last = ("round_robin", 30)  # as if another process had just changed it
        used = ChipCapacity.objects.get(chip=free).hour_count
        params = connections["default"].get_connection_params()
        holder = psycopg.connect(**{k: v for k, v in params.items() if k != "cursor_factory"})
        holder.execute("SELECT 1 FROM instances_chipcapacity WHERE chip_id = %s FOR UPDATE", [free.pk])
        outcome: dict = {}

        def route() -> None:
            try:
                outcome["decision"] = contact_route(contact=contact(2))
            except RoutingRefused as exc:
                outcome["refused"] = exc.code
            finally:
                connection.close()

        thread = threading.Thread(target=route)
        try:
            thread.start()
            thread.join(timeout=1.0)
            assert thread.is_alive(), outcome  # waiting for the held row, not refused
        finally:
            holder.commit()  # the other request is done with it
            holder.close()
            thread.join(timeout=10)
    assert outcome["decision"].chip_id == free.pk, outcome
    assert ChipCapacity.objects.get(chip=free).hour_count == used + 1
