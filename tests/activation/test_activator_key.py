"""A 401/403 from the activator means our key is wrong: a configuration alert, submissions paused, no attempt
counted — it must not burn the chip's SMS codes and retire it (W2 3/7)."""

from __future__ import annotations

import pytest

from activation import services
from chips.models import Chip, ChipAlert

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_pause_left_behind():
    """The pause lives in the shared cache: no test may start or end with one."""
    from django.core.cache import cache

    cache.delete(services.PAUSE_KEY)
    yield
    cache.delete(services.PAUSE_KEY)


@pytest.mark.parametrize("status", [401, 403])
def test_an_activator_refusing_our_key_raises_one_configuration_alert_and_counts_no_attempt(
        start_activation, fake_activator, pending_chip, status):
    job = start_activation(pending_chip)
    fake_activator.fail_next(2, status)

    assert services.job_submit(job_id=job.pk) == "paused"
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("queued", 0)
    assert services.job_submit(job_id=job.pk) == "skipped"  # not due: submissions wait out the pause

    pending_chip.refresh_from_db()
    assert pending_chip.activation_attempts == 0 and pending_chip.status == Chip.Status.ACTIVATING
    (alert,) = ChipAlert.objects.filter(kind="activator_unauthorized")
    assert alert.severity == "critical" and alert.chip is None and "CHIP_ACTIVATOR_API_KEY" in alert.message
    assert fake_activator.jobs == []  # nothing was submitted


@pytest.mark.parametrize("status", [401, 403])
def test_a_poll_refused_for_our_key_parks_the_job_with_one_alert_and_it_goes_on_once_the_key_works(
        start_activation, runner, fake_activator, pending_chip, status):
    job = start_activation(pending_chip)
    assert runner.run_next() == (services.SUBMIT_TASK, "submitted")
    refusals = 15  # a minute apart: longer than the job's 10 minutes, which a wrong key must not use up
    fake_activator.fail_next(refusals, status)

    assert [runner.run_next() for _ in range(refusals)] == [(services.POLL_TASK, "paused")] * refusals

    job.refresh_from_db()
    pending_chip.refresh_from_db()
    assert (job.status, job.attempts) == ("submitted", 1) and "refused our key" in job.message
    assert pending_chip.activation_attempts == 0 and pending_chip.status == Chip.Status.ACTIVATING
    assert job.deadline_at > job.submitted_at + services.JOB_TIMEOUT
    (alert,) = ChipAlert.objects.filter(kind="activator_unauthorized")
    assert alert.severity == "critical" and "CHIP_ACTIVATOR_API_KEY" in alert.message
    from django.core.cache import cache

    assert cache.get(services.PAUSE_KEY)  # new submissions wait too

    # The key works again: the same activation is read on, and succeeds (the fake's third answered poll).
    results = runner.run_until_idle()

    assert results[-1] == (services.POLL_TASK, "succeeded") and len(results) == 3
    job.refresh_from_db()
    pending_chip.refresh_from_db()
    assert (job.status, job.attempts) == ("succeeded", 1)
    assert pending_chip.status == Chip.Status.WARMING and pending_chip.activation_attempts == 0
    assert ChipAlert.objects.filter(kind="activator_unauthorized").count() == 1
