"""POST /webhooks/salvy: Svix signature first, validation, dedup, what each SMS does; GET /health/chip-activator."""

from __future__ import annotations

import json
import time

import pytest

from activation import services
from activation.models import ActivationJob, SmsReceipt
from activation.salvy import whatsapp_code
from activation.signing import signed_headers
from chips.models import Chip, ChipTransition
from sandbox.server import free_port
from tests.activation.conftest import SALVY_SECRET, URL, sms_envelope
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db
S = Chip.Status
Outcome = SmsReceipt.Outcome


def nothing_written(chip: Chip, history_rows: int) -> None:
    assert not SmsReceipt.objects.exists()
    assert not ActivationJob.objects.exists()
    chip.refresh_from_db()
    assert chip.status == S.PENDING
    assert ChipTransition.objects.filter(chip=chip).count() == history_rows


# --- a WhatsApp code for a pending chip -------------------------------------------------------------------------

def test_a_code_for_a_pending_chip_starts_its_activation_and_queues_the_submit_after_commit(
        salvy, pending_chip, sent_tasks):
    envelope = sms_envelope(pending_chip, sms_id="sms-1", code="654321")

    response = salvy.post(envelope, svix_id="msg_1")

    assert response.status_code == 200
    job = ActivationJob.objects.get()
    assert response.json() == {"status": "job_created", "job_id": job.pk}
    assert (job.chip_id, job.status, job.sms_code, job.sms_id, job.svix_id) == (
        pending_chip.pk, "queued", "654321", "sms-1", "msg_1")
    pending_chip.refresh_from_db()
    assert pending_chip.status == S.ACTIVATING
    row = ChipTransition.objects.filter(chip=pending_chip).first()
    assert (row.transition, row.actor_kind, row.actor_id) == ("start_activation", "webhook", "salvy")
    receipt = SmsReceipt.objects.get()
    assert (receipt.svix_id, receipt.sms_id, receipt.outcome, receipt.code, receipt.job_id, receipt.chip_id) == (
        "msg_1", "sms-1", Outcome.JOB_CREATED, "654321", job.pk, pending_chip.pk)
    assert [(t.name, t.args, t.countdown) for t in sent_tasks] == [(services.SUBMIT_TASK, (job.pk,), None)]


def test_nothing_is_queued_before_the_transaction_commits(client, pending_chip, sent_tasks, settings):
    settings.SALVY_WEBHOOK_SECRET = SALVY_SECRET
    body = json.dumps(sms_envelope(pending_chip)).encode()
    # Without the on-commit callbacks run (the test's transaction never commits), nothing reaches the broker.
    response = client.post(URL, data=body, content_type="application/json",
                           headers=signed_headers(SALVY_SECRET, "msg_x", body))
    assert response.json()["status"] == "job_created"
    assert sent_tasks == []


def test_the_chip_is_found_by_its_number_when_the_line_id_is_unknown(salvy, pending_chip):
    response = salvy.post(sms_envelope(pending_chip, line_id="some-other-line"))
    assert response.json()["status"] == "job_created"
    assert ActivationJob.objects.get().chip_id == pending_chip.pk


def test_the_code_falls_back_to_the_text(salvy, pending_chip):
    envelope = sms_envelope(pending_chip, code=None, text="Seu código do WhatsApp: 482-913. Não compartilhe.")
    assert salvy.post(envelope).json()["status"] == "job_created"
    assert ActivationJob.objects.get().sms_code == "482913"


@pytest.mark.parametrize(("data", "code"), [
    ({"detections": {"whatsapp": {"verificationCode": "123456"}}, "message": "x 999999"}, "123456"),
    ({"detections": {"whatsapp": {"verificationCode": "123-456"}}}, "123456"),
    ({"detections": {}, "message": "Seu código do WhatsApp: 123-456"}, "123456"),
    ({"message": "WhatsApp code 654321, do not share"}, "654321"),
    ({"message": "Ligue 11 98765-4321 agora"}, ""),  # digits of a phone number are not a code
    ({"message": "Promoção imperdível!"}, ""),
    # Salvy recognised another service's code: the text is not searched for a WhatsApp one.
    ({"detections": {"ifood": {"verificationCode": "777888"}}, "message": "iFood: 777888"}, ""),
])
def test_whatsapp_code(data, code):
    assert whatsapp_code(data) == code


# --- duplicates -------------------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_same_sms_delivered_five_times_by_svix_starts_one_activation(live_server, fake_salvy, make_salvy_chip,
                                                                          sent_tasks):
    """Through the fake Salvy: five Svix attempts of one message (same svix-id, fresh timestamp and signature)."""
    chip = make_salvy_chip()
    fake_salvy.webhook_url = live_server.url + URL

    delivered = fake_salvy.deliver_sms(chip.provider_line_id, "Seu código do WhatsApp: 123-456", "123456", times=5)

    assert delivered.status_codes == [200] * 5
    job = ActivationJob.objects.get()
    assert (job.chip_id, job.sms_code, job.sms_id, job.svix_id) == (chip.pk, "123456", delivered.sms["id"],
                                                                    delivered.svix_id)
    assert list(SmsReceipt.objects.values_list("outcome", flat=True)) == [Outcome.JOB_CREATED]
    chip.refresh_from_db()
    assert chip.status == S.ACTIVATING
    assert ChipTransition.objects.filter(chip=chip, transition="start_activation").count() == 1
    assert [t.name for t in sent_tasks] == [services.SUBMIT_TASK]


def test_the_same_sms_id_in_five_new_deliveries_starts_one_activation(salvy, pending_chip, sent_tasks):
    envelope = sms_envelope(pending_chip, sms_id="sms-dup")

    answers = [salvy.post(envelope).json()["status"] for _ in range(5)]

    assert answers == ["job_created"] + ["duplicate"] * 4
    assert ActivationJob.objects.count() == 1
    outcomes = sorted(SmsReceipt.objects.values_list("outcome", flat=True))
    assert outcomes == [Outcome.DUPLICATE] * 4 + [Outcome.JOB_CREATED]
    assert len(sent_tasks) == 1


def test_the_same_svix_id_again_answers_duplicate_and_records_nothing_new(salvy, pending_chip):
    envelope = sms_envelope(pending_chip)
    assert salvy.post(envelope, svix_id="msg_same").json()["status"] == "job_created"
    response = salvy.post(envelope, svix_id="msg_same")
    assert (response.status_code, response.json()) == (200, {"status": "duplicate"})
    assert SmsReceipt.objects.count() == 1 and ActivationJob.objects.count() == 1


# --- authentication before anything else ------------------------------------------------------------------------

@pytest.mark.parametrize("forgery", ["wrong_secret", "stale", "future", "tampered", "no_headers"])
def test_a_bad_or_stale_signature_is_401_before_any_query_and_writes_nothing(
        salvy, pending_chip, sent_tasks, django_assert_num_queries, forgery):
    history = ChipTransition.objects.filter(chip=pending_chip).count()
    body = json.dumps(sms_envelope(pending_chip)).encode()
    kwargs = {
        "wrong_secret": {"secret": "whsec_" + "d3Jvbmctc2VjcmV0"},
        "stale": {"timestamp": int(time.time()) - 301},
        "future": {"timestamp": int(time.time()) + 301},
        "tampered": {"headers": signed_headers(SALVY_SECRET, "msg_t", body.replace(b"123456", b"654321"))},
        "no_headers": {"headers": {}},
    }[forgery]

    with django_assert_num_queries(0):
        response = salvy.post(body=body, **kwargs)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature" and response.json()["message"]
    nothing_written(pending_chip, history)
    assert sent_tasks == []


@pytest.mark.parametrize("hostile", ["bad_base64", "commas", "float_ts", "huge_ts", "not_utf8", "blank"])
def test_hostile_signature_input_is_401_never_500(salvy, pending_chip, sent_tasks, hostile):
    history = ChipTransition.objects.filter(chip=pending_chip).count()
    body = json.dumps(sms_envelope(pending_chip)).encode()
    good = signed_headers(SALVY_SECRET, "msg_h", body)
    headers, raw = {
        "bad_base64": ({**good, "svix-signature": "v1,abc"}, body),
        "commas": ({**good, "svix-signature": "v1,a,b,c"}, body),
        "float_ts": ({**good, "svix-timestamp": f"{time.time():.3f}"}, body),
        "huge_ts": ({**good, "svix-timestamp": "9" * 5000}, body),
        "not_utf8": (good, b"\xff" + body),
        "blank": ({"svix-id": " ", "svix-timestamp": " ", "svix-signature": " "}, body),
    }[hostile]

    response = salvy.post(body=raw, headers=headers)

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_signature"
    nothing_written(pending_chip, history)
    assert sent_tasks == []


def test_a_signature_just_inside_the_five_minute_window_is_accepted(salvy, pending_chip):
    response = salvy.post(sms_envelope(pending_chip), timestamp=int(time.time()) - 290)
    assert response.json()["status"] == "job_created"


# --- malformed deliveries ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "field"), [
    (b"not json", "body"),
    (b"[1, 2]", "body"),
    (b'{"data": {}}', "type"),
    (b'{"type": "sms.received", "data": "x"}', "data"),
    (b'{"type": "sms.received", "data": {"virtualPhoneAccountId": "l1", "message": "123456"}}', "data.id"),
    (b'{"type": "sms.received", "data": {"id": "s1", "message": "123456"}}', "data.virtualPhoneAccountId"),
    (b'{"type": "sms.received", "data": {"id": 5, "virtualPhoneAccountId": "l1"}}', "data.id"),
    (b'{"type": "sms.received", "data": {"id": "s1", "virtualPhoneAccountId": "l1", "message": 1}}',
     "data.message"),
])
def test_malformed_deliveries_are_422_with_the_field_and_write_nothing(salvy, pending_chip, body, field):
    history = ChipTransition.objects.filter(chip=pending_chip).count()
    response = salvy.post(body=body)
    assert response.status_code == 422
    assert response.json()["field"] == field and response.json()["code"] == "invalid_input"
    assert response.json()["message"]
    nothing_written(pending_chip, history)


def test_nul_characters_are_stripped_and_the_code_still_counts(salvy, pending_chip):
    envelope = sms_envelope(pending_chip, code=None, text="Seu código do WhatsApp: 123-456\u0000")
    body = json.dumps(envelope).encode()  # ensure_ascii: the NUL travels as the escape \\u0000
    assert b"\\u0000" in body
    assert salvy.post(body=body).json()["status"] == "job_created"
    receipt = SmsReceipt.objects.get()
    assert (receipt.text, receipt.code) == ("Seu código do WhatsApp: 123-456", "123456")


def test_other_event_types_are_ignored(salvy, pending_chip):
    response = salvy.post({"type": "virtual_phone_account.canceled", "data": {"id": "x"}})
    assert (response.status_code, response.json()) == (200, {"status": "ignored",
                                                              "type": "virtual_phone_account.canceled"})
    assert not SmsReceipt.objects.exists()


# --- SMS that start nothing: recorded and answered 200 ----------------------------------------------------------

def test_an_sms_without_a_code_is_recorded_and_the_chip_waits(salvy, pending_chip, sent_tasks):
    response = salvy.post(sms_envelope(pending_chip, code=None, text="Promoção: 50% de desconto!"))
    assert (response.status_code, response.json()) == (200, {"status": "no_code"})
    receipt = SmsReceipt.objects.get()
    assert (receipt.outcome, receipt.chip_id, receipt.code, receipt.text) == (
        Outcome.NO_CODE, pending_chip.pk, "", "Promoção: 50% de desconto!")
    pending_chip.refresh_from_db()
    assert pending_chip.status == S.PENDING and not ActivationJob.objects.exists() and sent_tasks == []


def test_an_sms_for_an_unknown_line_is_recorded(salvy, pending_chip, sent_tasks):
    response = salvy.post(sms_envelope(line_id="line-nobody-has", phone="+5511911112222"))
    assert (response.status_code, response.json()) == (200, {"status": "unknown_line"})
    receipt = SmsReceipt.objects.get()
    assert (receipt.outcome, receipt.chip_id, receipt.line_id, receipt.phone) == (
        Outcome.UNKNOWN_LINE, None, "line-nobody-has", "+5511911112222")
    assert not ActivationJob.objects.exists() and sent_tasks == []


@pytest.mark.parametrize("status", [S.ACTIVATING, S.WARMING, S.RETIRED])
def test_a_code_for_a_chip_that_is_not_pending_is_recorded_and_changes_nothing(salvy, sent_tasks, status):
    chip = chip_in_state(status=status)
    history = ChipTransition.objects.filter(chip=chip).count()
    response = salvy.post(sms_envelope(chip))
    assert (response.status_code, response.json()) == (200, {"status": "chip_not_pending"})
    assert SmsReceipt.objects.get().outcome == Outcome.CHIP_NOT_PENDING
    chip.refresh_from_db()
    assert chip.status == status and ChipTransition.objects.filter(chip=chip).count() == history
    assert not ActivationJob.objects.exists() and sent_tasks == []


def test_a_retired_chip_that_shares_a_number_does_not_hide_the_live_one(salvy):
    retired = chip_in_state(status=S.RETIRED)
    live = chip_in_state(status=S.PENDING)
    live.phone = retired.phone  # Salvy handed the number out again
    live.save()
    assert salvy.post(sms_envelope(phone=retired.phone, line_id="")).json()["status"] == "job_created"
    assert ActivationJob.objects.get().chip_id == live.pk


def test_only_post_is_allowed(client):
    assert client.get(URL).status_code == 405


# --- GET /health/chip-activator ---------------------------------------------------------------------------------

HEALTH = "/health/chip-activator"


def test_activator_health_needs_an_api_key(client, fake_activator):
    response = client.get(HEALTH)
    assert response.status_code == 401 and response.json()["code"] == "unauthorized"
    assert client.get(HEALTH, headers={"X-API-Key": "cf_wrong"}).status_code == 401


def test_activator_health_answers_its_body_and_queue_size(api, fake_activator, sent_tasks, salvy, pending_chip):
    response = api.get(HEALTH)
    assert response.status_code == 200
    assert response.json()["status"] == "healthy" and response.json()["queue_size"] == 0

    job = ActivationJob.objects.get(pk=salvy.post(sms_envelope(pending_chip)).json()["job_id"])
    assert services.job_submit(job_id=job.pk) == "submitted"
    assert api.get(HEALTH).json()["queue_size"] == 1


def test_a_degraded_activator_is_still_up(api, fake_activator):
    fake_activator.set_health("degraded")
    response = api.get(HEALTH)
    assert response.status_code == 200 and response.json()["status"] == "degraded"


def test_an_unhealthy_activator_is_503(api, fake_activator):
    fake_activator.set_health("unhealthy")
    response = api.get(HEALTH)
    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "activator_unavailable" and "unhealthy" in body["message"]


def test_an_unreachable_activator_is_503(api, fake_activator, settings):
    settings.CHIP_ACTIVATOR_URL = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    response = api.get(HEALTH)
    assert response.status_code == 503 and response.json()["code"] == "activator_unavailable"


def test_an_activator_that_refuses_our_key_is_503(api, fake_activator, settings):
    settings.CHIP_ACTIVATOR_API_KEY = "not-the-key"
    response = api.get(HEALTH)
    assert response.status_code == 503 and "unauthorized" in response.json()["message"]

