"""ActivatorClient against FakeActivator on loopback: the contract, the error kinds, and the fake's modes."""

from __future__ import annotations

import httpx
import pytest

from activation.client import ActivationStatus, ActivatorClient, ActivatorError, national_number
from sandbox.activator import FakeActivator
from sandbox.server import FakeServer, free_port

KEY = "test-activator-key"
QR_URL = "http://evolution.test/instance/connect/pool-0001"


@pytest.fixture(scope="module")
def fake_server():
    fake = FakeActivator(api_key=KEY)
    with FakeServer(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake(fake_server):
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture
def url(fake_server) -> str:
    return fake_server[1].url


@pytest.fixture
def activator(fake, url):
    with ActivatorClient(base_url=url, api_key=KEY, timeout=2.0) as client:
        yield client


def poll(client: ActivatorClient, activation_id: str, n: int) -> list[ActivationStatus]:
    return [client.status(activation_id) for _ in range(n)]


# --- happy paths -----------------------------------------------------------------------------------------------


def test_health_needs_no_key(fake, url):
    with ActivatorClient(base_url=url, api_key="wrong", timeout=2.0) as client:
        assert client.health()["status"] == "healthy"
    fake.set_health("degraded")
    with ActivatorClient(base_url=url, api_key=KEY, timeout=2.0) as client:
        assert client.health()["status"] == "degraded"


def test_submit_strips_the_country_code_and_sends_portuguese_fields(activator, fake):
    activation_id = activator.submit(number="+5511999990001", sms_code="123456", evolution_qr_url=QR_URL)
    [job] = fake.jobs
    assert (job.id, job.numero, job.codigo_sms, job.evolution_qr_url) == (activation_id, "11999990001", "123456",
                                                                          QR_URL)
    assert (job.polls, job.status) == (0, "queued")


def test_queue_shows_queued_and_current(activator):
    first = activator.submit(number="11999990001", sms_code="111111", evolution_qr_url=QR_URL)
    second = activator.submit(number="11999990002", sms_code="222222", evolution_qr_url=QR_URL)
    queue = activator.queue()
    assert queue["size"] == 2 and queue["current"] is None
    assert [item["activation_id"] for item in queue["items"]] == [first, second]
    activator.status(first)
    queue = activator.queue()
    assert queue["current"]["activation_id"] == first
    assert [item["activation_id"] for item in queue["items"]] == [second]


def test_default_mode_succeeds_on_the_third_poll(activator, fake):
    activation_id = activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
    statuses = poll(activator, activation_id, 4)
    assert [s.status for s in statuses] == ["running", "running", "success", "success"]
    final = statuses[-1]
    assert final.finished and final.succeeded and final.step is None and final.screenshot_path is None
    assert final.message and final.seconds >= 0
    assert set(final.raw) == {"status", "message", "tempo_segundos", "step", "screenshot_path"}
    assert fake.jobs[0].polls == 3  # a finished job is no longer counted


def test_succeed_after_n_polls(activator, fake):
    fake.succeed_after(5)
    activation_id = activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
    assert [s.status for s in poll(activator, activation_id, 5)] == ["running"] * 4 + ["success"]
    fake.succeed_after(1)
    quick = activator.submit(number="11999990002", sms_code="123456", evolution_qr_url=QR_URL)
    assert activator.status(quick).status == "success"


def test_fail_at_a_step_with_its_screenshot(activator, fake):
    fake.succeed_after(2)
    fake.fail_at("qr_scan", "/var/activator/shots/qr_scan-0001.png")
    first = activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
    second = activator.submit(number="11999990002", sms_code="123456", evolution_qr_url=QR_URL)
    for activation_id in (first, second):  # sticky: every job submitted after fail_at fails
        running, failed = poll(activator, activation_id, 2)
        assert running.status == "running" and running.step is None
        assert failed.status == "failed" and failed.finished and not failed.succeeded
        assert (failed.step, failed.screenshot_path) == ("qr_scan", "/var/activator/shots/qr_scan-0001.png")
        assert "qr_scan" in failed.message


def test_mode_applies_to_jobs_submitted_after_it_is_set(activator, fake):
    before = activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
    fake.fail_at("sms_code", "/shots/sms.png")
    after = activator.submit(number="11999990002", sms_code="123456", evolution_qr_url=QR_URL)
    assert poll(activator, before, 3)[-1].status == "success"
    assert poll(activator, after, 3)[-1].status == "failed"


def test_hang_stays_running(activator, fake):
    fake.hang()
    activation_id = activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
    assert {s.status for s in poll(activator, activation_id, 20)} == {"running"}
    assert fake.jobs[0].polls == 20


def test_queue_full_n_times_then_accepts(activator, fake):
    fake.queue_full(2)
    for _ in range(2):
        with pytest.raises(ActivatorError) as exc:
            activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
        assert (exc.value.kind, exc.value.status_code) == ("queue_full", 503) and exc.value.retryable
    assert activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
    assert len(fake.jobs) == 1


# --- error normalisation ---------------------------------------------------------------------------------------


def test_wrong_or_missing_key_is_unauthorized(fake, url):
    with ActivatorClient(base_url=url, api_key="wrong", timeout=2.0) as client:
        for call in (client.queue, lambda: client.status("x"),
                     lambda: client.submit(number="11999990001", sms_code="1", evolution_qr_url=QR_URL)):
            with pytest.raises(ActivatorError) as exc:
                call()
            assert (exc.value.kind, exc.value.status_code) == ("unauthorized", 401) and not exc.value.retryable
    assert httpx.get(f"{url}/queue").status_code == 401
    assert fake.jobs == []


def test_unknown_id_is_not_found(activator):
    with pytest.raises(ActivatorError) as exc:
        activator.status("does-not-exist")
    assert (exc.value.kind, exc.value.status_code) == ("not_found", 404)


def test_invalid_payload_is_bad_request(url, activator):
    response = httpx.post(f"{url}/activate", headers={"X-API-Key": KEY},
                          json={"numero": "+5511999990001", "codigo_sms": "1", "evolution_qr_url": QR_URL})
    assert response.status_code == 422
    with pytest.raises(ActivatorError) as exc:
        activator.submit(number="11999990001", sms_code="", evolution_qr_url=QR_URL)
    assert exc.value.kind == "bad_request" and not exc.value.retryable


def test_fail_next_is_a_retryable_server_error(activator, fake):
    fake.fail_next(1, status=500)
    with pytest.raises(ActivatorError) as exc:
        activator.queue()
    assert (exc.value.kind, exc.value.status_code) == ("server", 500) and exc.value.retryable
    assert activator.queue()["size"] == 0


def test_latency_above_the_timeout_is_a_timeout(fake, url):
    fake.set_latency(0.6)
    with ActivatorClient(base_url=url, api_key=KEY, timeout=0.2) as client, pytest.raises(ActivatorError) as exc:
        client.queue()
    assert exc.value.kind == "timeout" and exc.value.retryable


def test_nobody_listening_is_a_transport_error():
    client = ActivatorClient(base_url=f"http://127.0.0.1:{free_port()}", api_key=KEY, timeout=1.0)
    with client, pytest.raises(ActivatorError) as exc:
        client.health()
    assert exc.value.kind == "transport" and exc.value.retryable


def test_client_reads_settings_defaults(settings, fake, url):
    settings.CHIP_ACTIVATOR_URL = url
    settings.CHIP_ACTIVATOR_API_KEY = KEY
    with ActivatorClient() as client:
        assert client.queue()["size"] == 0


@pytest.mark.parametrize(("raw", "national"), [
    ("+5511999990001", "11999990001"),
    ("5511999990001", "11999990001"),
    ("11999990001", "11999990001"),
    ("(11) 99999-0001", "11999990001"),
    ("+551133334444", "1133334444"),
    ("55999990001", "55999990001"),  # DDD 55 (RS), already national
])
def test_national_number(raw, national):
    assert national_number(raw) == national


def test_national_number_rejects_garbage():
    with pytest.raises(ValueError):
        national_number("+1 555 0100")


# --- HTTP controls ---------------------------------------------------------------------------------------------


def test_http_controls(activator, fake, url):
    with httpx.Client(base_url=url, timeout=5.0) as http:
        assert http.post("/__fake__/succeed-after", json={"polls": 2}).status_code == 200
        ok = activator.submit(number="11999990001", sms_code="123456", evolution_qr_url=QR_URL)
        assert [s.status for s in poll(activator, ok, 2)] == ["running", "success"]

        assert http.post("/__fake__/fail-at", json={"step": "sms_code", "screenshot_path": "/s.png"}).status_code == 200
        bad = activator.submit(number="11999990002", sms_code="123456", evolution_qr_url=QR_URL)
        assert poll(activator, bad, 2)[-1].screenshot_path == "/s.png"

        assert http.post("/__fake__/hang").status_code == 200
        stuck = activator.submit(number="11999990003", sms_code="123456", evolution_qr_url=QR_URL)
        assert poll(activator, stuck, 5)[-1].status == "running"

        assert http.post("/__fake__/queue-full", json={"times": 1}).status_code == 200
        with pytest.raises(ActivatorError, match="503"):
            activator.submit(number="11999990004", sms_code="123456", evolution_qr_url=QR_URL)

        assert http.post("/__fake__/health", json={"status": "unhealthy"}).status_code == 200
        assert activator.health()["status"] == "unhealthy"

        assert http.post("/__fake__/fail-next", json={"n": 1, "status": 502}).status_code == 200
        with pytest.raises(ActivatorError) as exc:
            activator.health()
        assert exc.value.status_code == 502

        jobs = http.get("/__fake__/jobs").json()["jobs"]
        assert [(j["numero"], j["status"]) for j in jobs] == [
            ("11999990001", "success"), ("11999990002", "failed"), ("11999990003", "running")]
        assert {"id", "numero", "codigo_sms", "polls", "status"} <= set(jobs[0])

        assert http.post("/__fake__/fail-at", json={}).status_code == 400
        assert http.post("/__fake__/reset").status_code == 200
        assert fake.jobs == [] and activator.health()["status"] == "healthy"
