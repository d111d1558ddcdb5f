"""A route decision in a few statements (W2 7/7): the count of one decision on each path, and the rolling
new-contact allowance kept in hourly buckets of the capacity row."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext

from instances.caps import caps_in_effect, new_contacts_used
from instances.models import ChipCapacity, ContactBinding
from instances.routing import RoutingRefused, contact_route
from tests.instances.conftest import BUSINESS_TIME

CONTACT = "+5511977776666"


def statements(ctx: CaptureQueriesContext) -> list[str]:
    """Everything the decision sent to PostgreSQL, transaction control included."""
    return [q["sql"] for q in ctx.captured_queries]


@pytest.mark.django_db(transaction=True)
def test_a_new_contact_takes_one_statement_and_a_sticky_one_two(make_production_chip):
    with time_machine.travel(BUSINESS_TIME, tick=False):
        chips = [make_production_chip(per_hour=20) for _ in range(3)]
        contact_route(contact="+5511900000001")  # warm: the policy row exists, as in a running pool

        with CaptureQueriesContext(connection) as new:
            first = contact_route(contact=CONTACT)
        with CaptureQueriesContext(connection) as sticky:
            again = contact_route(contact=CONTACT)

    assert first.binding == "new" and again.binding == "sticky" and again.chip_id == first.chip_id
    assert first.chip_id in {c.pk for c in chips}
    # New to the pool: the read (policy, opt-out, binding), the pick, the reservation and the binding in one
    # statement. Known: the same read finds the binding, then one statement reserves and touches it.
    assert len(statements(new)) == 1, statements(new)
    assert statements(new)[0].startswith("WITH ctx AS (")
    assert len(statements(sticky)) == 2, statements(sticky)
    assert statements(sticky)[1].startswith("WITH taken AS (UPDATE")
    assert ChipCapacity.objects.get(chip_id=first.chip_id).hour_count == 2


@pytest.mark.django_db(transaction=True)
def test_a_move_stays_within_five_statements_and_tells_the_app(make_production_chip, monkeypatch):
    from instances import reservations

    with time_machine.travel(BUSINESS_TIME, tick=False):
        full = make_production_chip(per_hour=1)
        make_production_chip(per_hour=20)
        first = contact_route(contact=CONTACT)
        assert first.chip_id == full.pk or contact_route(contact="+5511900000002")
        if first.chip_id != full.pk:  # make the bound chip the full one
            ContactBinding.objects.filter(contact=CONTACT).update(chip=full)
            ChipCapacity.objects.filter(chip=full).update(hour_count=1, hour_window=BUSINESS_TIME,
                                                          hour_follow_up=1)
        # Not the moment of the periodic look for chips without a capacity row (at most every ROWS_CHECK_SECONDS,
        # sooner after a chip is saved in this process, as these were just now).
        monkeypatch.setattr(reservations, "_rows_checked_at", time.monotonic())
        with CaptureQueriesContext(connection) as moved:
            again = contact_route(contact=CONTACT)
    assert again.binding == "moved" and again.chip_id != full.pk
    assert ContactBinding.objects.get(pk=again.binding_id).move_reason == "chip at its cap"  # read as it moved
    sent = [q for q in statements(moved) if q not in ("BEGIN", "COMMIT")]
    # read, the bound chip's refused take, the take elsewhere, why the bound chip refused, release + bind — and
    # the contact.moved event with its deliveries
    assert len([q for q in sent if "outbox_" not in q]) <= 5, "\n".join(q[:140] for q in sent)


@pytest.mark.django_db
def test_new_contacts_count_over_a_rolling_24_hours_from_the_buckets(make_production_chip):
    with time_machine.travel(BUSINESS_TIME, tick=False) as clock:
        chip = make_production_chip(per_hour=50, per_day=500, new_contacts=3)
        for n in range(3):
            assert contact_route(contact=f"+55119000000{n:02d}").chip_id == chip.pk
        capacity = ChipCapacity.objects.get(chip=chip)
        assert new_contacts_used(capacity, BUSINESS_TIME) == 3
        with pytest.raises(RoutingRefused):  # the allowance is used up
            contact_route(contact="+5511900000099")
        assert contact_route(contact="+5511900000001").binding == "sticky"  # a known contact still goes through

        clock.move_to(BUSINESS_TIME + timedelta(hours=23, minutes=59))  # still inside 24 h
        with pytest.raises(RoutingRefused):
            contact_route(contact="+5511900000098")
        clock.move_to(BUSINESS_TIME + timedelta(hours=25, minutes=1))  # the first hour's bucket is out
        assert contact_route(contact="+5511900000097").chip_id == chip.pk
    capacity.refresh_from_db()
    assert new_contacts_used(capacity, BUSINESS_TIME + timedelta(hours=25, minutes=1)) == 1
    assert caps_in_effect(chip, capacity).new_contacts_per_day == 3
    assert ContactBinding.objects.filter(chip=chip, origin="routed").count() == 4


@pytest.mark.django_db(transaction=True)
def test_a_refusal_takes_one_statement_and_a_chip_without_its_capacity_row_is_still_found(make_production_chip,
                                                                                         monkeypatch):
    from chips.demo import chip_in_state
    from chips.models import Chip
    from instances import reservations
    from instances.services import instance_register

    with time_machine.travel(BUSINESS_TIME, tick=False):
        make_production_chip(per_hour=2)
        contact_route(contact="+5511900000001")  # the pool's one follow-up this hour (half the hourly cap)
        with pytest.raises(RoutingRefused):
            contact_route(contact="+5511900000002")  # looks for chips without a row: there are none
        with CaptureQueriesContext(connection) as refused, pytest.raises(RoutingRefused):
            contact_route(contact="+5511900000003")
        # The read with its refused pick: a saturated pool does not look for missing rows on every refusal.
        assert len(statements(refused)) == 1, statements(refused)

        # A chip saved in this process with no capacity row: the next refusal looks at once, and takes it.
        saved = chip_in_state(status=Chip.Status.ACTIVE)
        instance_register(chip=saved)
        assert not ChipCapacity.objects.filter(chip=saved).exists()
        assert contact_route(contact="+5511900000004").chip_id == saved.pk

        # One made where this process did not see it (its post_save ran elsewhere): found within ROWS_CHECK_SECONDS.
        unseen = chip_in_state(status=Chip.Status.ACTIVE)
        instance_register(chip=unseen)
        monkeypatch.setattr(reservations, "_rows_checked_at", time.monotonic())  # as if it were another process
        ChipCapacity.objects.filter(chip=saved).update(hour_count=99)  # the saved chip is full
        with pytest.raises(RoutingRefused):
            contact_route(contact="+5511900000005")  # not due: refused without looking
        monkeypatch.setattr(reservations, "_rows_checked_at", time.monotonic() - reservations.ROWS_CHECK_SECONDS)
        assert contact_route(contact="+5511900000006").chip_id == unseen.pk


@pytest.mark.django_db(transaction=True)
def test_the_one_statement_path_goes_by_the_policy_and_the_contact_it_reads(make_production_chip):
    """The one statement picks only when its own read clears it; otherwise the decision goes on from that read, so
    a changed policy, an opt-out, the kill switch or a binding made meanwhile are never routed past."""
    from instances import routing
    from instances.models import ContactSuppression, RoutingPolicy
    from instances.optouts import ContactOptedOut

    with time_machine.travel(BUSINESS_TIME, tick=False):
        busy, idle = make_production_chip(per_hour=20), make_production_chip(per_hour=20)
        ChipCapacity.objects.filter(chip=busy).update(priority=9)
        assert contact_route(contact="+5511900000001").chip_id == busy.pk  # least loaded: a tie, the first chip
        assert routing._policy_last == ("least_loaded", RoutingPolicy.load().binding_ttl_days)

        # Another process changed the strategy: this process's statement is for the old one, so it does not pick;
        # the decision goes by the policy it just read (priority: the busy chip again, where least loaded would
        # take the idle one), and the next one is one statement.
        RoutingPolicy.objects.filter(pk=1).update(strategy=RoutingPolicy.Strategy.PRIORITY, binding_ttl_days=3)
        with CaptureQueriesContext(connection) as changed:
            first = contact_route(contact="+5511900000002")
        assert first.chip_id == busy.pk and len(statements(changed)) == 2
        binding = ContactBinding.objects.get(pk=first.binding_id)
        assert binding.expires_at == BUSINESS_TIME + timedelta(days=3)
        with CaptureQueriesContext(connection) as settled:
            second = contact_route(contact="+5511900000003")
        assert second.chip_id == busy.pk and len(statements(settled)) == 1
        assert ContactBinding.objects.get(pk=second.binding_id).expires_at == BUSINESS_TIME + timedelta(days=3)

        # An opted-out contact is refused, and nothing is reserved.
        ContactSuppression.objects.create(contact="+5511900000004", source="api")
        used = sorted(ChipCapacity.objects.values_list("hour_count", flat=True))
        with pytest.raises(ContactOptedOut):
            contact_route(contact="+5511900000004")
        # Paused: refused, nothing reserved, nobody bound.
        RoutingPolicy.objects.filter(pk=1).update(is_paused=True, paused_reason="incident")
        with pytest.raises(RoutingRefused) as paused:
            contact_route(contact="+5511900000005")
        assert paused.value.code == "paused"
        assert sorted(ChipCapacity.objects.values_list("hour_count", flat=True)) == used
        assert not ContactBinding.objects.filter(contact__in=["+5511900000004", "+5511900000005"]).exists()

        # A contact bound meanwhile (by an inbound message, say) is routed sticky, not bound twice.
        RoutingPolicy.objects.filter(pk=1).update(is_paused=False)
        ContactBinding.objects.create(contact="+5511900000006", chip=idle, origin="inbound",
                                      last_used_at=BUSINESS_TIME, expires_at=BUSINESS_TIME + timedelta(days=3))
        again = contact_route(contact="+5511900000006")
        assert (again.binding, again.chip_id) == ("sticky", idle.pk)
        assert ContactBinding.objects.filter(contact="+5511900000006").count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_process_that_made_many_reservations_has_the_capacity_table_vacuumed(make_production_chip, settings,
                                                                                   monkeypatch):
    """Hot rows keep their old versions until a vacuum (instances.reservations): every CAPACITY_VACUUM_EVERY
    reservations a process has the table vacuumed, in the background, on a connection of its own."""
    from instances import reservations

    def vacuums() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = %s", [reservations.TABLE])
            return cursor.fetchone()[0]

    settings.CAPACITY_VACUUM_EVERY = 5
    with time_machine.travel(BUSINESS_TIME, tick=False):
        make_production_chip(per_hour=50, per_day=500, new_contacts=500)
        monkeypatch.setattr(reservations, "_taken_since_vacuum", 0)  # what earlier tests reserved does not count
        before = vacuums()
        for n in range(4):
            contact_route(contact=f"+55119000001{n:02d}")
        time.sleep(0.5)
        assert vacuums() == before  # four: not yet
        contact_route(contact="+5511900000199")  # the fifth
        deadline = time.monotonic() + 10
        while vacuums() == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert vacuums() == before + 1
    while reservations._vacuum_running:  # its connection is closed before the test database is torn down
        time.sleep(0.05)


@pytest.mark.django_db(transaction=True)
def test_picks_that_wait_for_held_rows_take_them_in_one_order(make_production_chip):
    """A pick whose skip-locked try found every row with room held waits for them — locking each row it tries and
    keeping the lock of one it then finds full. Two such picks in different orders (the strategy's, broken by
    chance) could each hold a row the other waits for: a deadlock that PostgreSQL breaks only after a second. They
    all wait in one order, by id: here the pick waits for the lower id while the least loaded chip is free again."""
    import threading

    from django.db import connections, transaction

    from instances.caps import day_window
    from instances.reservations import capacity_take_best

    low, high = sorted((make_production_chip(per_hour=20) for _ in range(2)), key=lambda chip: chip.pk)
    now = BUSINESS_TIME + timedelta(minutes=5)
    ChipCapacity.objects.filter(chip=low).update(day_window=day_window(now), day_count=7)  # `high` is least loaded
    release = {chip.pk: threading.Event() for chip in (low, high)}
    held = threading.Barrier(3)
    chosen: list = []

    def hold(chip_id: int) -> None:
        try:
            with transaction.atomic():
                ChipCapacity.objects.select_for_update().get(chip_id=chip_id)
                held.wait()
                release[chip_id].wait(10)
        finally:
            connections.close_all()

    def pick() -> None:
        try:
            chosen.append(capacity_take_best(now, strategy="least_loaded", kind="follow_up", exclude=set()))
        finally:
            connections.close_all()

    holders = [threading.Thread(target=hold, args=(chip.pk,)) for chip in (low, high)]
    for t in holders:
        t.start()
    held.wait()
    picker = threading.Thread(target=pick)
    picker.start()

    def waiting() -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND "
                           "wait_event_type = 'Lock' AND query LIKE 'UPDATE instances_chipcapacity%%'")
            return cursor.fetchone()[0] == 1

    deadline = time.monotonic() + 10
    while not waiting() and time.monotonic() < deadline:
        time.sleep(0.02)
    release[high.pk].set()  # the least loaded chip is free: a pick in the strategy's order would take it now
    time.sleep(0.5)
    assert not chosen and waiting()  # still waiting for the lowest id
    release[low.pk].set()
    picker.join(10)
    for t in holders:
        t.join(10)
    assert [row[0] for row in chosen] == [low.pk]
