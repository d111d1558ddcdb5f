"""Submit → poll → finish against the fake activator, step by step on a frozen clock; the sweep; retries; and
one run through a real Celery worker."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from activation import services, tasks
from activation.models import ActivationJob
from chips.models import Chip, ChipAlert, ChipTransition
from chips.services import Actor, chip_transition
from instances.models import InstanceLink
from tests.activation.conftest import EVOLUTION_URL, SALVY_SECRET, URL

pytestmark = pytest.mark.django_db
S = Chip.Status
J = ActivationJob.Status


def names(results: list[tuple[str, str]]) -> list[str]:
    return [f"{task.rsplit('.', 1)[1]}:{result}" for task, result in results]


def ours(sent_tasks) -> list:
    """The activation app's own tasks (alerts also queue chips.deliver_notifications)."""
    return [t for t in sent_tasks if t.name.startswith("activation.")]


def assert_short_countdowns(sent_tasks) -> None:
    """Nothing in the activation path waits in the broker for more than a minute (no hidden long sleeps)."""
    countdowns = [t.countdown for t in sent_tasks if t.countdown is not None]
    assert all(0 <= c <= 60 for c in countdowns), countdowns


# --- success ----------------------------------------------------------------------------------------------------

def test_submit_then_polls_until_success_and_the_chip_starts_warming(start_activation, runner, fake_activator,
                                                                     pending_chip, sent_tasks):
    job = start_activation(pending_chip, code="246810")

    results = runner.run_until_idle()

    # The fake answers running, running, success on the third poll.
    assert names(results) == ["submit_job:submitted", "poll_job:running", "poll_job:running", "poll_job:succeeded"]
    [remote] = fake_activator.jobs
    assert (remote.numero, remote.codigo_sms) == (pending_chip.phone.removeprefix("+55"), "246810")
    # The link is the pool's own, one per activation: no gateway address, no key (contracts/chip-activator.md).
    link = InstanceLink.objects.get(instance__chip=pending_chip, purpose="activation")
    assert remote.evolution_qr_url == f"{settings.PUBLIC_BASE_URL}/activation/link/{link.token}"
    assert EVOLUTION_URL not in remote.evolution_qr_url and link.end_reason == "linked"
    job.refresh_from_db()
    assert (job.status, job.activator_id, job.attempts, job.polls, job.next_poll_at) == (
        J.SUCCEEDED, remote.id, 1, 3, None)
    assert job.submitted_at <= job.started_at <= job.finished_at < job.deadline_at
    assert job.deadline_at == job.submitted_at + timedelta(minutes=10)
    pending_chip.refresh_from_db()
    assert pending_chip.status == S.WARMING and pending_chip.warming_phase == "rest"
    row = ChipTransition.objects.filter(chip=pending_chip).first()
    assert (row.transition, row.actor_kind, row.actor_id) == ("activation_succeeded", "task", services.POLL_TASK)
    # Polls are 10 s apart, queued as countdowns: no task ever sleeps.
    assert [t.countdown for t in ours(sent_tasks)] == [None, 10, 10, 10]
    assert_short_countdowns(sent_tasks)


def test_queue_full_twice_then_accepted_backs_off_and_succeeds(start_activation, runner, fake_activator,
                                                                pending_chip, sent_tasks):
    fake_activator.queue_full(2)
    job = start_activation(pending_chip)
    started = timezone.now()

    results = runner.run_until_idle()

    assert names(results)[:3] == ["submit_job:retry", "submit_job:retry", "submit_job:submitted"]
    assert names(results)[-1] == "poll_job:succeeded"
    submits = [t.countdown for t in sent_tasks if t.name == services.SUBMIT_TASK]
    assert submits == [None, 5, 10]
    job.refresh_from_db()
    assert (job.status, job.attempts) == (J.SUCCEEDED, 3)
    assert job.submitted_at == started + timedelta(seconds=15)
    assert len(fake_activator.jobs) == 1
    pending_chip.refresh_from_db()
    assert pending_chip.status == S.WARMING
    assert_short_countdowns(sent_tasks)


def test_a_queue_that_stays_full_fails_the_job_after_five_attempts(start_activation, runner, fake_activator,
                                                                   pending_chip, sent_tasks):
    fake_activator.queue_full(99)
    job = start_activation(pending_chip)

    results = runner.run_until_idle()

    assert names(results) == ["submit_job:retry"] * 4 + ["submit_job:failed"]
    assert [t.countdown for t in ours(sent_tasks)] == [None, 5, 10, 20, 40]
    job.refresh_from_db()
    assert (job.status, job.attempts, job.step) == (J.FAILED, 5, "submit")
    assert "queue_full" in job.message
    pending_chip.refresh_from_db()
    assert (pending_chip.status, pending_chip.activation_attempts) == (S.PENDING, 1)
    assert "submit" in ChipAlert.objects.open().get(chip=pending_chip, kind="activation_failed").message


# --- failure and time-out ---------------------------------------------------------------------------------------

def test_a_failure_at_qr_scan_sends_the_chip_back_to_pending_with_an_alert_naming_step_and_screenshot(
        start_activation, runner, fake_activator, pending_chip):
    fake_activator.fail_at("qr_scan", "/shots/qr-1.png")
    job = start_activation(pending_chip)

    assert names(runner.run_until_idle())[-1] == "poll_job:failed"

    job.refresh_from_db()
    assert (job.status, job.step, job.screenshot_path) == (J.FAILED, "qr_scan", "/shots/qr-1.png")
    pending_chip.refresh_from_db()
    assert (pending_chip.status, pending_chip.activation_attempts) == (S.PENDING, 1)
    row = ChipTransition.objects.filter(chip=pending_chip).first()
    assert (row.transition, row.source, row.target) == ("activation_failed", S.ACTIVATING, S.PENDING)
    alert = ChipAlert.objects.open().get(chip=pending_chip, kind="activation_failed")
    assert alert.severity == ChipAlert.Severity.WARNING
    assert "qr_scan" in alert.message and "/shots/qr-1.png" in alert.message


def test_a_hanging_activation_times_out_at_ten_minutes_and_fails_cleanly(start_activation, runner, fake_activator,
                                                                         pending_chip, sent_tasks):
    fake_activator.hang()
    job = start_activation(pending_chip)

    results = runner.run_until_idle(limit=100)

    assert names(results)[-1] == "poll_job:timed_out"
    job.refresh_from_db()
    assert (job.status, job.step) == (J.TIMED_OUT, "timeout")
    assert job.finished_at == job.submitted_at + timedelta(minutes=10)  # not a poll earlier, not one later
    assert job.polls == 60
    pending_chip.refresh_from_db()
    assert (pending_chip.status, pending_chip.activation_attempts) == (S.PENDING, 1)
    alert = ChipAlert.objects.open().get(chip=pending_chip, kind="activation_failed")
    assert "timeout" in alert.message and "10 minutes" in alert.message
    assert_short_countdowns(sent_tasks)


def test_the_activator_losing_the_job_fails_it(start_activation, runner, fake_activator, pending_chip):
    job = start_activation(pending_chip)
    runner.run_next()  # submitted
    fake_activator.reset()  # the activator restarted and forgot its queue
    assert runner.run_next() == (services.POLL_TASK, J.FAILED)
    job.refresh_from_db()
    assert job.step == "lost"


def test_an_activator_outage_while_polling_keeps_polling_until_the_deadline(start_activation, runner,
                                                                            fake_activator, pending_chip):
    job = start_activation(pending_chip)
    runner.run_next()
    fake_activator.fail_next(3, status=502)
    results = runner.run_until_idle()
    assert names(results) == ["poll_job:submitted"] * 3 + ["poll_job:running"] * 2 + ["poll_job:succeeded"]
    job.refresh_from_db()
    assert job.status == J.SUCCEEDED


def test_three_failed_activations_retire_the_chip_and_ask_chipfarm_to_cancel_its_line(
        start_activation, runner, fake_activator, pending_chip, sent_tasks):
    fake_activator.fail_at("sms_code", "/shots/code.png")
    for attempt in (1, 2, 3):
        start_activation(pending_chip)
        assert names(runner.run_until_idle())[-1] == "poll_job:failed"
        pending_chip.refresh_from_db()
        assert pending_chip.activation_attempts == attempt
        if attempt < 3:
            assert pending_chip.status == S.PENDING
            assert not [t for t in sent_tasks if t.name == services.CANCEL_LINE_TASK]

    assert pending_chip.status == S.RETIRED
    retire = ChipTransition.objects.filter(chip=pending_chip).first()
    assert (retire.transition, retire.actor_kind) == ("retire", "task")
    assert "3 times" in retire.reason
    cancels = [t for t in sent_tasks if t.name == services.CANCEL_LINE_TASK]
    assert [(t.args, t.kwargs) for t in cancels] == [((), {"chip_id": pending_chip.pk, "reason": "technical-issues"})]
    critical = ChipAlert.objects.open().get(chip=pending_chip, kind="activation_gave_up")
    assert critical.severity == ChipAlert.Severity.CRITICAL and "retired" in critical.message
    warning = ChipAlert.objects.open().get(chip=pending_chip, kind="activation_failed")
    assert warning.occurrences == 3 and "sms_code" in warning.message


def test_a_job_whose_chip_was_retired_while_queued_is_not_submitted(start_activation, runner, fake_activator,
                                                                   pending_chip):
    job = start_activation(pending_chip)
    chip_transition(chip=pending_chip.pk, transition="retire", actor=Actor.system("operator"))

    assert runner.run_next() == (services.SUBMIT_TASK, J.FAILED)

    assert fake_activator.jobs == []
    job.refresh_from_db()
    pending_chip.refresh_from_db()
    assert (job.status, job.step, pending_chip.status) == (J.FAILED, "submit", S.RETIRED)


# --- idempotency ------------------------------------------------------------------------------------------------

def test_redelivered_tasks_on_a_finished_job_do_nothing(start_activation, runner, pending_chip, sent_tasks,
                                                        fake_activator, django_capture_on_commit_callbacks):
    job = start_activation(pending_chip)
    runner.run_until_idle()
    job.refresh_from_db()
    before = (job.status, job.polls, job.attempts, job.updated_at, len(sent_tasks), len(fake_activator.jobs))

    with django_capture_on_commit_callbacks(execute=True):
        assert services.job_submit(job_id=job.pk) == "skipped"
        assert services.job_poll(job_id=job.pk) == "skipped"
        assert services.job_poll(job_id=10**9) == "skipped"

    job.refresh_from_db()
    assert (job.status, job.polls, job.attempts, job.updated_at, len(sent_tasks), len(fake_activator.jobs)) == before
    assert ChipTransition.objects.filter(chip=pending_chip, transition="activation_succeeded").count() == 1


def test_a_duplicate_submit_delivery_posts_once(start_activation, runner, pending_chip, sent_tasks, fake_activator,
                                                django_capture_on_commit_callbacks):
    job = start_activation(pending_chip)
    assert runner.run_next() == (services.SUBMIT_TASK, "submitted")
    with django_capture_on_commit_callbacks(execute=True):
        assert services.job_submit(job_id=job.pk) == "skipped"
    assert len(fake_activator.jobs) == 1


def test_a_stray_poll_before_its_time_is_dropped_and_the_live_chain_goes_on(start_activation, runner, pending_chip,
                                                                            django_capture_on_commit_callbacks):
    job = start_activation(pending_chip)
    runner.run_next()  # submitted; the chain's first poll is due in 10 s
    with django_capture_on_commit_callbacks(execute=True):
        assert services.job_poll(job_id=job.pk) == "skipped"  # e.g. a sweep re-queue racing the chain
    job.refresh_from_db()
    assert job.polls == 0
    assert names(runner.run_until_idle())[-1] == "poll_job:succeeded"


def test_the_tasks_delegate_to_their_service(start_activation, pending_chip, clock, sent_tasks,
                                             django_capture_on_commit_callbacks):
    job = start_activation(pending_chip)
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.submit_job.run(job.pk) == "submitted"
    clock.shift(timedelta(seconds=10))
    with django_capture_on_commit_callbacks(execute=True):
        assert tasks.poll_job.run(job.pk) == "running"
        assert tasks.sweep_jobs.run() == {"polls_requeued": [], "submits_requeued": [], "timed_out": []}
    job.refresh_from_db()
    assert (job.status, job.attempts, job.polls) == (J.RUNNING, 1, 1)
    assert [(t.name, t.countdown) for t in sent_tasks] == [
        (services.SUBMIT_TASK, None), (services.POLL_TASK, 10), (services.POLL_TASK, 10)]


# --- the sweep: chains that died with a worker ------------------------------------------------------------------

def test_the_sweep_finishes_a_job_whose_polling_stopped(start_activation, runner, pending_chip, clock, sent_tasks,
                                                        django_capture_on_commit_callbacks):
    job = start_activation(pending_chip)
    runner.run_next()  # submitted, first poll queued...
    runner.run_next()  # ...and run once (running)
    assert [t.name for t in runner.drop_pending()] == [services.POLL_TASK]  # the worker dies with the next poll
    clock.shift(timedelta(minutes=5))
    job.refresh_from_db()
    assert job.status == J.RUNNING and job.next_poll_at < timezone.now() - timedelta(minutes=4)

    with django_capture_on_commit_callbacks(execute=True):
        result = services.jobs_sweep()

    assert (result.polls_requeued, result.submits_requeued, result.timed_out) == ([job.pk], [], [])
    assert names(runner.run_until_idle()) == ["poll_job:running", "poll_job:succeeded"]
    job.refresh_from_db()
    pending_chip.refresh_from_db()
    assert (job.status, pending_chip.status) == (J.SUCCEEDED, S.WARMING)
    assert_short_countdowns(sent_tasks)


def test_the_sweep_revives_a_job_only_once_and_leaves_live_chains_alone(start_activation, runner, pending_chip,
                                                                        clock, django_capture_on_commit_callbacks):
    live = start_activation(pending_chip)
    runner.run_next()  # submitted; its poll is due in 10 s and the chain is alive
    clock.shift(timedelta(seconds=65))  # 55 s overdue: not yet considered dead
    with django_capture_on_commit_callbacks(execute=True):
        assert services.jobs_sweep().polls_requeued == []
    clock.shift(timedelta(seconds=10))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.jobs_sweep().polls_requeued == [live.pk]
        assert services.jobs_sweep().polls_requeued == []  # its due-at moved to now


def test_the_sweep_times_out_a_dead_job_past_its_deadline(start_activation, runner, pending_chip, clock,
                                                          django_capture_on_commit_callbacks):
    job = start_activation(pending_chip)
    runner.run_next()
    runner.drop_pending()
    clock.shift(timedelta(minutes=11))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.jobs_sweep().timed_out == [job.pk]
    job.refresh_from_db()
    pending_chip.refresh_from_db()
    assert (job.status, job.step, pending_chip.status) == (J.TIMED_OUT, "timeout", S.PENDING)
    assert "timeout" in ChipAlert.objects.open().get(chip=pending_chip, kind="activation_failed").message


def test_the_sweep_resubmits_a_job_queued_for_over_two_minutes(start_activation, runner, pending_chip, clock,
                                                               fake_activator, django_capture_on_commit_callbacks):
    job = start_activation(pending_chip)
    runner.drop_pending()  # the submit task was lost (say Redis was down at commit)
    clock.shift(timedelta(seconds=90))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.jobs_sweep().submits_requeued == []
    clock.shift(timedelta(seconds=40))
    with django_capture_on_commit_callbacks(execute=True):
        assert services.jobs_sweep().submits_requeued == [job.pk]
    assert names(runner.run_until_idle())[-1] == "poll_job:succeeded"
    assert len(fake_activator.jobs) == 1


# --- operators: retry -------------------------------------------------------------------------------------------

@pytest.fixture
def failed_job(start_activation, runner, fake_activator, pending_chip) -> ActivationJob:
    fake_activator.fail_at("qr_scan", "/shots/1.png")
    job = start_activation(pending_chip)
    runner.run_until_idle()
    fake_activator.reset()
    job.refresh_from_db()
    assert job.status == J.FAILED
    return job


def test_the_admin_retry_action_starts_a_new_job_with_the_same_code(failed_job, operator_client, runner,
                                                                    pending_chip, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        response = operator_client.post("/admin/activation/activationjob/",
                                        {"action": "retry", "_selected_action": [failed_job.pk]})
    assert response.status_code == 302

    retry = ActivationJob.objects.exclude(pk=failed_job.pk).get()
    assert (retry.retry_of_id, retry.sms_code, retry.sms_id, retry.svix_id, retry.status) == (
        failed_job.pk, failed_job.sms_code, failed_job.sms_id, "", J.QUEUED)
    row = ChipTransition.objects.filter(chip=pending_chip).first()
    assert (row.transition, row.actor_kind, row.actor_id) == ("start_activation", "user", "operator")
    assert names(runner.run_until_idle())[-1] == "poll_job:succeeded"
    pending_chip.refresh_from_db()
    assert pending_chip.status == S.WARMING


def test_retry_is_refused_for_a_chip_that_is_no_longer_pending(failed_job, start_activation, sent_tasks):
    start_activation(failed_job.chip)  # a new SMS already started another activation
    with pytest.raises(services.JobNotRetryable, match="not pending"):
        services.job_retry(job_id=failed_job.pk, actor=Actor.system("test"))


def test_a_viewer_cannot_retry(failed_job, viewer_client, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        viewer_client.post("/admin/activation/activationjob/", {"action": "retry", "_selected_action": [failed_job.pk]})
    assert ActivationJob.objects.count() == 1
    failed_job.chip.refresh_from_db()
    assert failed_job.chip.status == S.PENDING


def test_the_job_changelist_does_not_grow_in_queries(operator_client, start_activation, runner,
                                                     django_assert_max_num_queries):
    from tests.factories import chip_in_state

    for _ in range(8):
        start_activation(chip_in_state(status=S.PENDING))
    runner.run_until_idle()
    with django_assert_max_num_queries(12):
        response = operator_client.get("/admin/activation/activationjob/")
    assert response.status_code == 200 and response.content.count(b"action-checkbox") >= 8
    with django_assert_max_num_queries(12):
        assert operator_client.get("/admin/activation/smsreceipt/").status_code == 200


# --- through a real Celery worker -------------------------------------------------------------------------------

@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_sms_to_warming_through_a_real_celery_worker(activation_worker, routed_to_worker, live_server, fake_salvy,
                                                     make_salvy_chip, fake_evolution, settings):
    """Fake Salvy → live Django → Redis → a real worker → the fake activator, with no step run by the test."""
    from instances.services import instance_create

    activation_worker.fake.reset()
    activation_worker.fake.succeed_after(1)
    fake_evolution.auto_qr = True
    settings.PUBLIC_BASE_URL = live_server.url
    chip = make_salvy_chip()
    instance_create(chip=chip, name=chip.instance_name)  # provisioning's part: the session the activator links
    fake_salvy.webhook_url = live_server.url + URL
    assert fake_salvy.webhook_secret == SALVY_SECRET

    delivered = fake_salvy.deliver_sms(chip.provider_line_id, "Seu código do WhatsApp: 135-790", "135790", times=2)
    assert delivered.status_codes == [200, 200]

    deadline = time.monotonic() + 30
    while Chip.objects.get(pk=chip.pk).status != S.WARMING and time.monotonic() < deadline:
        time.sleep(0.2)
    chip.refresh_from_db()
    assert chip.status == S.WARMING, activation_worker.log.read_text()[-3000:]
    history = list(ChipTransition.objects.filter(chip=chip).order_by("created_at", "id")
                   .values_list("transition", "actor_kind", "actor_id"))
    assert history == [
        ("provisioned", "system", "demo"),
        ("start_activation", "webhook", "salvy"),
        ("activation_succeeded", "task", services.POLL_TASK),
    ]
    job = ActivationJob.objects.get()
    assert (job.status, job.attempts, job.polls, job.sms_code) == (J.SUCCEEDED, 1, 1, "135790")
    [remote] = activation_worker.fake.jobs
    assert (remote.id, remote.codigo_sms, remote.numero) == (job.activator_id, "135790",
                                                             chip.phone.removeprefix("+55"))
    assert remote.evolution_qr_url.startswith(f"{live_server.url}/activation/link/")
