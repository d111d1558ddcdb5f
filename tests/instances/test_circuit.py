"""The per-chip send circuit breaker (instances.circuit): 3 consecutive gateway failures open it, the chip takes no
traffic for 5 minutes, then one trial send decides; in Redis, shared by every process; Redis down fails open."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from instances import circuit
from instances.gateway import GatewayError
from instances.models import DeliveryEvent, InboundMessage, OutboundMessage
from instances.routing import RoutingRefused, capacity_reserve, contact_route
from instances.services import message_send, send_failure_observed, send_success_observed
from tests.instances.conftest import BUSINESS_TIME

pytestmark = pytest.mark.django_db
NOW = BUSINESS_TIME
FIVE_MINUTES = timedelta(seconds=300)


def contact(n: int) -> str:
    return f"+55119{n:08d}"


def fail(chip_id: int, n: int = 1, *, kind: str = "server", status: int | None = 503, now=None) -> None:
    for _ in range(n):
        send_failure_observed(chip_id=chip_id, error=GatewayError(kind, status_code=status), now=now)


def test_three_consecutive_failures_open_it_five_minutes_then_one_trial_closes_it(make_production_chip):
    with time_machine.travel(NOW, tick=False) as clock:
        chip, other = make_production_chip(per_hour=50), make_production_chip(per_hour=50)
        fail(chip.pk, 2)
        send_success_observed(chip_id=chip.pk)  # a success in between: the count starts over
        fail(chip.pk, 2)
        assert circuit.circuit_state(chip_id=chip.pk).state == "closed"
        fail(chip.pk, 1)  # the third in a row
        state = circuit.circuit_state(chip_id=chip.pk)
        assert (state.state, state.failures, state.open_until) == ("open", 3, NOW + FIVE_MINUTES)

        # No traffic for five minutes: new contacts go elsewhere, its own contacts move, the warmer is refused.
        assert {contact_route(contact=contact(n)).chip_id for n in range(4)} == {other.pk}
        assert capacity_reserve(chip_id=chip.pk) is False
        clock.shift(FIVE_MINUTES - timedelta(seconds=1))
        assert contact_route(contact=contact(10)).chip_id == other.pk

        # Half-open: exactly one trial goes through (least loaded: the idle chip is tried first).
        clock.shift(timedelta(seconds=1))
        assert circuit.circuit_state(chip_id=chip.pk).state == "half_open"
        trial = contact_route(contact=contact(20))
        assert trial.chip_id == chip.pk
        assert circuit.circuit_state(chip_id=chip.pk).trial_in_flight
        assert contact_route(contact=contact(21)).chip_id == other.pk  # the trial is out: nobody else
        send_success_observed(chip_id=chip.pk)  # the trial passed
        assert circuit.circuit_state(chip_id=chip.pk).state == "closed"
        assert contact_route(contact=contact(22)).chip_id == chip.pk


def test_a_failed_trial_opens_it_again_for_another_five_minutes(make_production_chip):
    with time_machine.travel(NOW, tick=False) as clock:
        chip = make_production_chip(per_hour=50)
        fail(chip.pk, 3)
        clock.shift(FIVE_MINUTES)
        assert contact_route(contact=contact(1)).chip_id == chip.pk  # the trial
        fail(chip.pk, 1)  # it failed
        state = circuit.circuit_state(chip_id=chip.pk)
        assert (state.state, state.open_until, state.times_opened) == ("open", NOW + 2 * FIVE_MINUTES, 2)
        with pytest.raises(RoutingRefused) as refused:
            contact_route(contact=contact(2))
        assert refused.value.code == "no_capacity"
        clock.shift(FIVE_MINUTES)
        assert circuit.circuit_acquire(chip_id=chip.pk) == "trial"


def test_a_trial_that_never_reports_is_handed_to_another_sender_after_its_lease(make_production_chip):
    with time_machine.travel(NOW, tick=False) as clock:
        chip = make_production_chip(per_hour=50)
        fail(chip.pk, 3)
        clock.shift(FIVE_MINUTES)
        assert circuit.circuit_acquire(chip_id=chip.pk) == "trial"
        assert circuit.circuit_acquire(chip_id=chip.pk) == "busy"
        clock.shift(timedelta(seconds=61))  # CIRCUIT_TRIAL_SECONDS: the sender died with it
        assert circuit.circuit_acquire(chip_id=chip.pk) == "trial"


def test_half_open_lets_exactly_one_of_many_concurrent_callers_through(make_production_chip):
    chip = make_production_chip(per_hour=50)
    moment = datetime.now(UTC)
    fail(chip.pk, 3, now=moment)
    later = moment + FIVE_MINUTES
    answers: list[str] = []
    barrier = threading.Barrier(20)

    def caller() -> None:
        barrier.wait(timeout=10)
        answers.append(circuit.circuit_acquire(chip_id=chip.pk, now=later))

    threads = [threading.Thread(target=caller) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(answers) == ["busy"] * 19 + ["trial"]


def test_what_counts_against_the_chip(make_production_chip):
    chip = make_production_chip()
    fail(chip.pk, 5, kind="not_on_whatsapp", status=400)  # the contact has no WhatsApp: not the chip's fault
    fail(chip.pk, 5, kind="unauthorized", status=401)     # our key
    assert circuit.circuit_state(chip_id=chip.pk).state == "closed"
    # Every failure is still a delivery fact for the early warning.
    assert DeliveryEvent.objects.filter(chip=chip, kind=DeliveryEvent.Kind.SEND_FAILED).count() == 10


@pytest.mark.parametrize(("status", "seconds"), [(429, 300), (403, 3600)])
def test_a_refusal_opens_it_at_once_for_its_class(make_production_chip, status, seconds):
    with time_machine.travel(NOW, tick=False):
        chip = make_production_chip()
        fail(chip.pk, 1, kind="bad_request", status=status)
        state = circuit.circuit_state(chip_id=chip.pk)
    assert (state.state, state.open_until) == ("open", NOW + timedelta(seconds=seconds))
    assert str(status) in state.reason


def test_message_send_feeds_the_circuit_from_the_gateways_answers(world, fake_evolution, business_hours):
    chip = world.chip(max_per_hour=50)
    fake_evolution.fail_next(3, 503, route="sendText")
    outcomes = [message_send(contact=contact(n), text=f"Olá {n}", idempotency_key=f"k{n}").message.status
                for n in range(3)]
    assert outcomes == ["failed"] * 3
    assert circuit.circuit_state(chip_id=chip.pk).state == "open"
    with pytest.raises(RoutingRefused):
        message_send(contact=contact(9), text="Olá", idempotency_key="k9")
    assert OutboundMessage.objects.count() == 3  # the refused one was never stored nor sent
    assert fake_evolution.request_count("sendText") == 3


def test_redis_down_never_blocks_sending_nor_breaks_routing(make_production_chip, settings, caplog):
    chip = make_production_chip(per_hour=50)
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": "redis://127.0.0.1:1/0"}}
    with time_machine.travel(NOW, tick=True):
        fail(chip.pk, 5)  # recorded nowhere, raises nothing
        assert contact_route(contact=contact(1)).chip_id == chip.pk
    state = circuit.circuit_state(chip_id=chip.pk)
    assert (state.state, state.known) == ("closed", False)
    assert "failing open" in caplog.text


def test_metrics_show_the_circuits(client, make_production_chip):
    chip, _other = make_production_chip(), make_production_chip()
    fail(chip.pk, 3)
    text = client.get("/metrics").content.decode()
    assert 'chipfarm_circuits{state="open"} 1' in text
    assert f'chipfarm_circuit_state{{chip_id="{chip.pk}",state="open"}} 1' in text
    assert f'chipfarm_circuit_failures{{chip_id="{chip.pk}"}} 3' in text
    assert "chipfarm_circuits_up 1" in text
    assert 'chipfarm_chip_health{level="ok"} 2' in text


# --- shared by every process: a real Celery worker records the failures, this process routes around them ----------

@pytest.fixture
def worker_with_confirmations(fake_evolution, tmp_path):
    """A real worker whose opt-out confirmations go to the fake Evolution (its sends are the worker's own)."""
    from tests.celery_worker import celery_worker

    env = {"EVOLUTION_API_URL": fake_evolution.server_url, "EVOLUTION_API_KEY": fake_evolution.api_key,
           "OPTOUT_CONFIRMATION_TEXT": "Pronto, você não receberá mais mensagens."}
    with celery_worker(prefix="chipfarm-circuit", log_dir=tmp_path, extra_env=env) as (queue, _log):
        yield queue


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_failures_recorded_by_a_worker_open_the_circuit_for_this_process(
        world, fake_evolution, worker_with_confirmations, settings):
    from datetime import time

    from instances import hours
    from instances.tasks import confirm_opt_out

    # The worker stamps its failures with the real clock, so this side routes at the real time too: all day.
    settings.BUSINESS_HOURS_START, settings.BUSINESS_HOURS_END = time(0, 0), time(23, 59, 59)
    if hours.is_holiday(hours.business_day(datetime.now(UTC))):
        pytest.skip("today is a national holiday: the router refuses all day")
    chip, other = world.chip(max_per_hour=50), world.chip(max_per_hour=50)
    inbound = [InboundMessage.objects.create(chip=chip, contact=contact(n), gateway_message_id=f"IN{n}",
                                             text="PARAR", binding="new") for n in range(3)]
    fake_evolution.fail_next(3, 503, route="sendText")
    for message in inbound:  # three sends by the worker, three gateway failures seen there
        result = confirm_opt_out.apply_async(args=[message.pk], queue=worker_with_confirmations,
                                             ignore_result=False).get(timeout=30)
        assert result == "failed"

    # This process reads the worker's circuit: the chip takes no traffic.
    assert circuit.circuit_state(chip_id=chip.pk).state == "open"
    assert {contact_route(contact=contact(10 + n)).chip_id for n in range(3)} == {other.pk}
    # Five minutes on, one trial from here closes what the worker opened.
    with time_machine.travel(datetime.now(UTC) + FIVE_MINUTES + timedelta(seconds=1), tick=False):
        outcome = message_send(contact=contact(20), text="Olá de novo", idempotency_key="trial")
        assert (outcome.message.chip_id, outcome.message.status) == (chip.pk, "sent")
        assert circuit.circuit_state(chip_id=chip.pk).state == "closed"


def _opened_elsewhere(chip_id: int, now: datetime) -> None:
    """What another process's three failures do in Redis (its own process forgets its kept gates, not this one)."""
    for _ in range(3):
        circuit._script("failure", circuit._FAILURE)(
            keys=[circuit._key(chip_id), circuit._tracked()],
            args=[now.timestamp(), 3, 300, 0, chip_id, "server (HTTP 503)", circuit.KEY_TTL])


def test_routing_keeps_what_it_read_of_the_circuits_for_a_moment(make_production_chip, settings):
    settings.CIRCUIT_GATES_CACHE_SECONDS = 0.3
    with time_machine.travel(NOW, tick=False) as clock:
        chip, other = make_production_chip(per_hour=50), make_production_chip(per_hour=50)
        assert circuit.routing_gates(now=NOW) == (set(), set())  # read and kept
        _opened_elsewhere(chip.pk, NOW)
        assert circuit.routing_gates(now=NOW) == (set(), set())  # another process's change: not seen yet
        import time

        time.sleep(0.35)  # the kept view goes stale (real time: time travel does not move it)
        assert circuit.routing_gates(now=NOW) == ({chip.pk}, set())
        # The kept times still end the open period on time: half-open five minutes on, with no new read.
        _opened_elsewhere(other.pk, NOW)
        clock.shift(FIVE_MINUTES)
        assert circuit.routing_gates(now=NOW + FIVE_MINUTES) == (set(), {chip.pk})


def test_a_change_made_in_this_process_is_seen_by_its_next_decision(make_production_chip, settings):
    settings.CIRCUIT_GATES_CACHE_SECONDS = 3600  # nothing goes stale by itself during this test
    with time_machine.travel(NOW, tick=False) as clock:
        chip, other = make_production_chip(per_hour=50), make_production_chip(per_hour=50)
        assert circuit.routing_gates(now=NOW) == (set(), set())
        fail(chip.pk, 3)  # opened here
        assert circuit.routing_gates(now=NOW) == ({chip.pk}, set())
        assert contact_route(contact=contact(1)).chip_id == other.pk
        clock.shift(FIVE_MINUTES)
        assert circuit.routing_gates(now=NOW + FIVE_MINUTES) == (set(), {chip.pk})
        assert contact_route(contact=contact(2)).chip_id == chip.pk  # the trial, leased here
        assert circuit.routing_gates(now=NOW + FIVE_MINUTES) == ({chip.pk}, set())  # its trial is out
        send_success_observed(chip_id=chip.pk)  # closed here
        assert circuit.routing_gates(now=NOW + FIVE_MINUTES) == (set(), set())


def test_gates_read_with_no_keeping_see_every_change_at_once(make_production_chip, settings):
    settings.CIRCUIT_GATES_CACHE_SECONDS = 0
    with time_machine.travel(NOW, tick=False):
        chip = make_production_chip(per_hour=50)
        assert circuit.routing_gates(now=NOW) == (set(), set())
        _opened_elsewhere(chip.pk, NOW)
        assert circuit.routing_gates(now=NOW) == ({chip.pk}, set())
