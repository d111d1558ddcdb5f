"""chips.run_transition: the task delegates to the service, and runs through a real worker."""

from __future__ import annotations

import time

import pytest

from chips.models import Chip
from chips.tasks import chip_run_transition
from tests.factories import chip_in_state

S = Chip.Status


@pytest.mark.django_db
def test_task_delegates_to_the_service_with_a_task_actor():
    chip = chip_in_state(status=S.ACTIVE)
    assert chip_run_transition.run(chip.pk, "cool_down", "too hot", "pytest") == S.COOLING
    row = Chip.objects.get(pk=chip.pk).transitions.first()
    assert (row.transition, row.actor_kind, row.actor_id, row.reason) == ("cool_down", "task", "pytest", "too hot")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_transition_through_a_real_celery_worker_and_redis(celery_worker_queue):
    chip = chip_in_state(status=S.ACTIVE)

    result = chip_run_transition.apply_async(args=[chip.pk, "cool_down", "via worker"], queue=celery_worker_queue)

    assert result.get(timeout=30) == S.COOLING
    deadline = time.monotonic() + 10
    while Chip.objects.get(pk=chip.pk).status != S.COOLING and time.monotonic() < deadline:
        time.sleep(0.1)
    chip.refresh_from_db()
    assert chip.status == S.COOLING
    row = chip.transitions.first()
    assert (row.transition, row.actor_kind, row.reason) == ("cool_down", "task", "via worker")


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_refused_transition_in_the_worker_fails_the_task_and_changes_nothing(celery_worker_queue):
    chip = chip_in_state(status=S.WARMING)
    result = chip_run_transition.apply_async(args=[chip.pk, "resume"], queue=celery_worker_queue)
    with pytest.raises(Exception, match="“Resume” is not possible now"):
        result.get(timeout=30)
    assert Chip.objects.get(pk=chip.pk).status == S.WARMING
