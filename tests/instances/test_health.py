"""The periodic instance check (instances.health.instances_check) against the fake Evolution on loopback."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from chips.models import Chip
from instances.health import instances_check, instances_summary
from instances.models import Instance
from instances.services import instance_register
from instances.tasks import check_instances
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
NOW = datetime(2026, 11, 24, 13, 0, tzinfo=UTC)


@pytest.fixture
def linked(make_production_chip, fake_evolution):
    """n production chips whose instances exist in the fake in `state` (the DB rows start `unknown`)."""

    def _linked(n: int, state: str = "open") -> list[Chip]:
        chips = [make_production_chip() for _ in range(n)]
        fake_evolution.add_instances([c.instance_name for c in chips], state)
        return chips

    return _linked


def bulk_production_chips(n: int) -> list[Chip]:
    """Many active, connected chips with their Instance rows in three queries (for the pool-size test only:
    walking 55 chips through their transitions would be most of this file's run time)."""
    chips = Chip.objects.bulk_create([
        Chip(area_code="11", status=Chip.Status.ACTIVE, is_connected=True,
             instance_name=f"bulk-{uuid.uuid4().hex[:12]}")
        for _ in range(n)
    ])
    Instance.objects.bulk_create([Instance(chip=chip, name=chip.instance_name) for chip in chips])
    return chips


def states() -> dict[str, str]:
    return dict(Instance.objects.values_list("name", "state"))


def check_counting_queries(**kwargs):
    with CaptureQueriesContext(connection) as ctx:
        result = instances_check(**kwargs)
    return result, len(ctx.captured_queries)


def test_reads_every_state_and_writes_only_what_changed(linked, fake_evolution):
    chips = linked(3)
    names = sorted(c.instance_name for c in chips)

    first = instances_check(now=NOW)

    assert (first.checked, first.changed, first.unknown) == (3, 3, 0)
    assert sorted(first.changes) == [(name, "unknown", "open") for name in names]
    assert set(states().values()) == {"open"}
    assert set(Instance.objects.values_list("state_changed_at", flat=True)) == {NOW}
    assert fake_evolution.request_count("connectionState") == 3
    assert instances_summary()["last_check"] == {"at": NOW.isoformat(), "checked": 3, "changed": 3, "unknown": 0,
                                                  "gone": 0}

    before = dict(Instance.objects.values_list("name", "updated_at"))
    second = instances_check()

    assert (second.checked, second.changed, second.unknown, second.changes) == (3, 0, 0, [])
    assert dict(Instance.objects.values_list("name", "updated_at")) == before  # nothing was written
    assert fake_evolution.request_count("connectionState") == 6


def test_the_sql_does_not_grow_with_the_number_of_instances(linked, fake_evolution):
    linked(5)
    small_changed, q_small_changed = check_counting_queries()
    small_same, q_small_same = check_counting_queries()
    fake_evolution.add_instances([c.instance_name for c in bulk_production_chips(55)], "open")
    big_changed, q_big_changed = check_counting_queries()
    big_same, q_big_same = check_counting_queries()

    assert (small_changed.checked, small_changed.changed) == (5, 5)
    assert (big_changed.checked, big_changed.changed) == (60, 55)
    assert (small_same.changed, big_same.changed) == (0, 0)
    assert big_same.checked == 60
    assert q_small_same == q_big_same  # no changes: one read, nothing written, whatever the pool's size
    assert q_small_changed == q_big_changed  # changes: written in bulk, not one UPDATE per instance
    # instances + servers read; the changes in bulk (state, opened sessions, their chips, their links)
    assert q_big_same <= 3 and q_big_changed <= 7


def test_open_marks_the_chip_connected_close_disconnected_connecting_leaves_it(make_production_chip,
                                                                               fake_evolution):
    reconnected, dropped, pairing = (make_production_chip() for _ in range(3))
    Chip.objects.filter(pk=reconnected.pk).update(is_connected=False)
    fake_evolution.add_instances([reconnected.instance_name], "open")
    fake_evolution.add_instances([dropped.instance_name], "close")
    fake_evolution.add_instances([pairing.instance_name], "connecting")

    result = instances_check(now=NOW)

    assert (result.checked, result.changed, result.unknown) == (3, 3, 0)
    assert states() == {reconnected.instance_name: "open", dropped.instance_name: "close",
                        pairing.instance_name: "connecting"}
    for chip in (reconnected, dropped, pairing):
        chip.refresh_from_db()
    assert reconnected.is_connected and reconnected.connection_changed_at == NOW
    assert not dropped.is_connected and dropped.connection_changed_at == NOW
    assert pairing.is_connected and pairing.connection_changed_at != NOW
    assert {reconnected.status, dropped.status, pairing.status} == {Chip.Status.ACTIVE}  # status is not touched


@pytest.mark.parametrize("status", [500, 503, 404, 401, 200])
def test_a_failed_read_leaves_that_instance_unknown_and_the_others_read(linked, fake_evolution, status):
    chips = linked(4)
    Instance.objects.update(state=Instance.State.OPEN)
    fake_evolution.fail_next(1, status, route="connectionState")

    result = instances_check()

    assert (result.checked, result.changed, result.unknown) == (4, 1, 1)
    [(failed, old, new)] = result.changes
    assert (old, new) == ("open", "unknown")
    assert states() == {c.instance_name: ("unknown" if c.instance_name == failed else "open") for c in chips}
    # Unknown is not "disconnected": the chip's connected flag is left as it was.
    assert Chip.objects.get(instance_name=failed).is_connected


def test_a_timeout_leaves_that_instance_unknown_without_waiting_for_it(linked, fake_evolution, monkeypatch):
    chips = linked(4)
    Instance.objects.update(state=Instance.State.OPEN)
    monkeypatch.setattr(fake_evolution, "hang_seconds", 3.0)
    fake_evolution.fail_next(1, "timeout", route="connectionState")

    started = time.monotonic()
    result = instances_check(timeout=0.3)
    elapsed = time.monotonic() - started

    assert elapsed < 2.0
    assert (result.checked, result.changed, result.unknown) == (4, 1, 1)
    read = states()
    assert sorted(read.values()) == ["open", "open", "open", "unknown"]
    assert set(read) == {c.instance_name for c in chips}


def test_an_instance_missing_from_the_gateway_is_gone(make_production_chip, fake_evolution):
    present, missing = make_production_chip(), make_production_chip()
    fake_evolution.add_instances([present.instance_name], "open")

    result = instances_check()

    assert (result.checked, result.gone) == (2, 1)
    assert states() == {present.instance_name: "open", missing.instance_name: "gone"}
    missing.refresh_from_db()
    assert missing.is_connected is False


def test_concurrency_is_bounded(linked, fake_evolution):
    linked(12)
    fake_evolution.set_latency(0.05)
    fake_evolution.reset_stats()

    result = instances_check(concurrency=4)

    assert (result.checked, result.unknown) == (12, 0)
    assert 1 < fake_evolution.peak_in_flight <= 4


def test_retired_chips_are_not_checked(linked, fake_evolution):
    linked(2)
    retired = chip_in_state(status=Chip.Status.RETIRED)
    instance_register(chip=retired)
    fake_evolution.add_instances([retired.instance_name], "close")

    result = instances_check()

    assert (result.checked, result.changed) == (2, 2)
    assert fake_evolution.request_count("connectionState", instance=retired.instance_name) == 0
    assert Instance.objects.get(chip=retired).state == Instance.State.UNKNOWN


def test_the_command_prints_the_changes_and_a_summary(linked):
    chips = linked(2)
    out = StringIO()

    call_command("check_instances", "--concurrency", "1", stdout=out)

    lines = out.getvalue().splitlines()
    assert sorted(lines[:2]) == sorted(f"{c.instance_name}: unknown → open" for c in chips)
    assert lines[2:] == ["checked 2, changed 2, unknown 0"]

    out = StringIO()
    call_command("check_instances", stdout=out)
    assert out.getvalue().splitlines() == ["checked 2, changed 0, unknown 0"]


def test_the_celery_task_delegates_and_returns_the_counts(linked, fake_evolution):
    linked(3)
    fake_evolution.fail_next(1, 500, route="connectionState")

    # The failed one was unknown already (a new row): two changes, one unknown.
    assert check_instances.run() == {"checked": 3, "changed": 2, "unknown": 1, "gone": 0, "finals": 0}
    assert sorted(states().values()) == ["open", "open", "unknown"]
