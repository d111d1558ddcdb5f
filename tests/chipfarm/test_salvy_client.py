"""SalvyClient against FakeSalvy on loopback, and the fake's Svix-signed `sms.received` webhooks."""

from __future__ import annotations

import json
import re
import threading
import time

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from activation.salvy import InboundSms, salvy_sms_parse
from activation.signing import SignatureError, sign, signed_headers, verify
from chipfarm.client import SalvyClient, SalvyError, SalvyLine
from sandbox.salvy import DEFAULT_WEBHOOK_SECRET, FakeSalvy
from sandbox.server import FakeServer, free_port

TOKEN = "test-salvy-token"
SECRET = DEFAULT_WEBHOOK_SECRET


class Receiver:
    """Our side of the webhook, reduced to what matters here: verify the signature inside the request."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.accepted: list[tuple[dict[str, str], dict]] = []
        self.rejected: list[str] = []
        self.app = Starlette(routes=[Route("/webhooks/salvy", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        try:
            verify(SECRET, request.headers, body)
        except SignatureError as exc:
            with self.lock:
                self.rejected.append(exc.reason)
            return PlainTextResponse(exc.reason, status_code=401)
        with self.lock:
            self.accepted.append((dict(request.headers), json.loads(body)))
        return Response(status_code=204)

    def clear(self) -> None:
        with self.lock:
            self.accepted.clear()
            self.rejected.clear()


@pytest.fixture(scope="module")
def receiver():
    rec = Receiver()
    with FakeServer(rec.app) as server:
        rec.url = server.url + "/webhooks/salvy"
        yield rec


@pytest.fixture(scope="module")
def fake_server(receiver):
    fake = FakeSalvy(token=TOKEN, webhook_url=receiver.url, webhook_secret=SECRET)
    with FakeServer(fake.app) as server:
        yield fake, server
    fake.close()


@pytest.fixture
def fake(fake_server, receiver):
    fake, _server = fake_server
    fake.reset()
    fake.webhook_url = receiver.url
    receiver.clear()
    return fake


@pytest.fixture
def url(fake_server) -> str:
    return fake_server[1].url


@pytest.fixture
def salvy(fake, url):
    with SalvyClient(base_url=url, token=TOKEN, timeout=2.0) as client:
        yield client


# --- happy paths -----------------------------------------------------------------------------------------------


def test_area_codes_lists_stock_and_follows_set_stock(salvy, fake):
    available = salvy.area_codes()
    assert 11 in available and 19 not in available
    assert 19 in salvy.area_codes(available_only=False)
    fake.set_stock(11, False)
    fake.set_stock(27, True)
    assert 11 not in salvy.area_codes() and 27 in salvy.area_codes()


def test_provision_get_and_list(salvy, fake):
    first = salvy.provision(area_code=11, name="pool-0001")
    second = salvy.provision(area_code=21, name="pool-0002")
    assert isinstance(first, SalvyLine)
    assert first.name == "pool-0001" and first.status == "active"
    assert re.fullmatch(r"\+55119\d{8}", first.phone_number)
    assert re.fullmatch(r"\+55219\d{8}", second.phone_number)
    assert first.phone_number != second.phone_number
    assert first.created_at is not None and first.created_at.tzinfo is not None
    assert first.canceled_at is None and first.cancel_reason is None
    assert set(first.raw) == {"id", "name", "phoneNumber", "status", "createdAt", "canceledAt", "cancelReason",
                              "redirectPhoneNumber", "redirectExpiresAt"}
    assert salvy.get(first.id) == first
    assert [line.id for line in salvy.list_lines()] == [first.id, second.id]
    assert set(fake.lines) == {first.id, second.id}


def test_phone_numbers_are_unique(salvy):
    numbers = {salvy.provision(area_code=11, name=f"pool-{i}").phone_number for i in range(25)}
    assert len(numbers) == 25


def test_cancel_sends_reason_and_marks_the_line(salvy, fake):
    line = salvy.provision(area_code=11, name="pool-0001")
    salvy.cancel(line.id, reason="whatsapp-ban")
    assert fake.canceled == [(line.id, "whatsapp-ban")]
    got = salvy.get(line.id)
    assert got.status == "canceled" and got.cancel_reason == "whatsapp-ban" and got.canceled_at is not None
    with pytest.raises(SalvyError) as exc:
        salvy.cancel(line.id, reason="unnecessary")
    assert exc.value.kind == "bad_request" and exc.value.code == "already_canceled" and not exc.value.retryable


def test_cancel_rejects_an_unknown_reason_before_calling(salvy):
    with pytest.raises(ValueError):
        salvy.cancel("whatever", reason="because")


@pytest.mark.parametrize("where", ["query", "body"])
def test_fake_accepts_the_cancel_reason_in_either_place(salvy, url, where):
    line = salvy.provision(area_code=11, name="pool-0001")
    kwargs = {"params": {"reason": "unnecessary"}} if where == "query" else {"json": {"reason": "unnecessary"}}
    response = httpx.request("DELETE", f"{url}/api/v2/virtual-phone-accounts/{line.id}",
                             headers={"Authorization": f"Bearer {TOKEN}"}, **kwargs)
    assert response.status_code == 204
    response = httpx.request("DELETE", f"{url}/api/v2/virtual-phone-accounts/{line.id}",
                             headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code in (400, 409)


def test_list_sms_reads_the_inbox(salvy, fake, url):
    line = salvy.provision(area_code=11, name="pool-0001")
    assert salvy.list_sms(line.id) == []
    fake.webhook_url = None  # inbox only: the polling fallback
    fake.deliver_sms(line.id, "Seu código do WhatsApp: 123-456", code="123456", sms_id="sms-1")
    fake.deliver_sms(line.id, "Promoção imperdível")
    sms = salvy.list_sms(line.id)
    assert [s.text for s in sms] == ["Seu código do WhatsApp: 123-456", "Promoção imperdível"]
    first = sms[0]
    assert isinstance(first, InboundSms)
    # The inbox's items carry no line id: the client fills in the one it asked for.
    assert (first.sms_id, first.line_id, first.code) == ("sms-1", line.id, "123456")
    assert first.phone == line.phone_number and first.origin and first.received_at is not None
    assert sms[1].code == ""
    [item, _] = httpx.get(f"{url}/api/v2/virtual-phone-accounts/{line.id}/sms-messages",
                          headers={"Authorization": f"Bearer {TOKEN}"}).json()["smsMessages"]
    assert set(item) == {"id", "receivedAt", "originPhoneNumber", "destinationPhoneNumber", "message", "detections"}
    assert fake.deliveries == []


def _inbox(items: list) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, json={"smsMessages": items}))


def test_list_sms_strips_nul_characters_as_the_webhook_does():
    body = b'{"smsMessages": [{"id": "s1", "message": "c\\u00f3digo 123\\u0000456", "detections": {}}]}'
    transport = httpx.MockTransport(lambda request: httpx.Response(200, content=body))
    with SalvyClient(base_url="http://salvy.test", token="t", timeout=1.0, transport=transport) as client:
        [sms] = client.list_sms("line-1")
    assert (sms.text, sms.code, sms.line_id) == ("código 123456", "123456", "line-1")


@pytest.mark.parametrize(("item", "field"), [
    ({"message": "hi"}, "data.id"),
    ({"id": 5}, "data.id"),
    ({"id": "s1", "message": 1}, "data.message"),
    ({"id": "s1", "detections": []}, "data.detections"),
    ("not an object", "data"),
])
def test_a_malformed_inbox_item_is_a_server_error_naming_the_field(item, field):
    client = SalvyClient(base_url="http://salvy.test", token="t", timeout=1.0, transport=_inbox([item]))
    with client, pytest.raises(SalvyError) as exc:
        client.list_sms("line-1")
    assert exc.value.kind == "server" and field in exc.value.message


# --- error normalisation ---------------------------------------------------------------------------------------


def test_bad_token_is_unauthorized(fake, url):
    with SalvyClient(base_url=url, token="wrong", timeout=2.0) as client, pytest.raises(SalvyError) as exc:
        client.list_lines()
    assert (exc.value.kind, exc.value.status_code, exc.value.code) == ("unauthorized", 401, "unauthorized")
    assert not exc.value.retryable


def test_unknown_line_is_not_found(salvy):
    for call in (lambda: salvy.get("nope"), lambda: salvy.list_sms("nope"),
                 lambda: salvy.cancel("nope", reason="unnecessary")):
        with pytest.raises(SalvyError) as exc:
            call()
        assert (exc.value.kind, exc.value.status_code, exc.value.code) == ("not_found", 404, "not_found")


def test_no_stock_is_its_own_kind(salvy, fake):
    fake.set_stock(31, False)
    with pytest.raises(SalvyError) as exc:
        salvy.provision(area_code=31, name="pool-0001")
    assert (exc.value.kind, exc.value.status_code, exc.value.code) == ("no_stock", 422, "area_code_unavailable")
    assert not exc.value.retryable
    assert fake.lines == {}


def test_bad_request(salvy):
    with pytest.raises(SalvyError) as exc:
        salvy.provision(area_code=1, name="pool-0001")
    assert exc.value.kind == "bad_request" and exc.value.status_code == 400


def test_fail_next_is_a_retryable_server_error_then_recovers(salvy, fake):
    fake.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(SalvyError) as exc:
            salvy.area_codes()
        assert (exc.value.kind, exc.value.status_code) == ("server", 503) and exc.value.retryable
    assert salvy.area_codes()


def test_latency_above_the_timeout_is_a_timeout(fake, url):
    fake.set_latency(0.6)
    with SalvyClient(base_url=url, token=TOKEN, timeout=0.2) as client, pytest.raises(SalvyError) as exc:
        client.list_lines()
    assert exc.value.kind == "timeout" and exc.value.status_code is None and exc.value.retryable


def test_nobody_listening_is_a_transport_error():
    client = SalvyClient(base_url=f"http://127.0.0.1:{free_port()}", token=TOKEN, timeout=1.0)
    with client, pytest.raises(SalvyError) as exc:
        client.list_lines()
    assert exc.value.kind == "transport" and exc.value.retryable


def test_client_reads_settings_defaults(settings, fake, url):
    settings.SALVY_API_URL = url
    settings.SALVY_API_TOKEN = TOKEN
    with SalvyClient() as client:
        assert 11 in client.area_codes()


def test_v3_style_paginated_list_is_read_too():
    line = {"id": "l1", "name": "n", "phoneNumber": "+5511912345678", "status": "active",
            "createdAt": "2025-09-03T00:00:00Z", "canceledAt": None, "cancelReason": None}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json={"data": [line], "pagination": {}}))
    with SalvyClient(base_url="http://salvy.test", token="t", timeout=1.0, transport=transport) as client:
        assert [x.phone_number for x in client.list_lines()] == ["+5511912345678"]


# --- webhooks --------------------------------------------------------------------------------------------------


def test_deliver_sms_posts_a_signed_webhook_that_verify_accepts(salvy, fake, receiver):
    line = salvy.provision(area_code=11, name="pool-0001")
    result = fake.deliver_sms(line.id, "Seu código do WhatsApp: 123-456", code="123456", sms_id="sms-42")
    assert result.status_codes == [204]
    assert receiver.rejected == []
    [(headers, envelope)] = receiver.accepted
    assert headers["svix-id"] == result.svix_id and headers["svix-signature"].startswith("v1,")
    assert abs(int(headers["svix-timestamp"]) - time.time()) < 10
    assert headers["content-type"] == "application/json"
    assert envelope["type"] == "sms.received" and envelope["timestamp"].endswith("Z")
    assert envelope["data"] == {
        "id": "sms-42", "virtualPhoneAccountId": line.id, "receivedAt": envelope["data"]["receivedAt"],
        "originPhoneNumber": envelope["data"]["originPhoneNumber"], "destinationPhoneNumber": line.phone_number,
        "message": "Seu código do WhatsApp: 123-456", "detections": {"whatsapp": {"verificationCode": "123456"}},
    }
    assert envelope == result.envelope
    # The webhook's data parses, with the one Salvy SMS parser, as the same SMS the inbox holds.
    assert salvy_sms_parse(envelope["data"]) == salvy.list_sms(line.id)[0]
    [delivery] = fake.deliveries
    assert (delivery.svix_id, delivery.sms_id, delivery.status_code) == (result.svix_id, "sms-42", 204)


def test_deliver_sms_repeats_with_the_same_svix_id(salvy, fake, receiver):
    line = salvy.provision(area_code=11, name="pool-0001")
    result = fake.deliver_sms(line.id, "codigo 654321", code="654321", svix_id="msg_fixed", times=3)
    assert result.status_codes == [204, 204, 204]
    assert [h["svix-id"] for h, _ in receiver.accepted] == ["msg_fixed"] * 3
    assert len({json.dumps(body, sort_keys=True) for _, body in receiver.accepted}) == 1
    assert [d.status_code for d in fake.deliveries] == [204, 204, 204]
    assert len(salvy.list_sms(line.id)) == 1  # one SMS, three deliveries


def test_deliver_sms_without_a_code_has_no_detections(salvy, fake, receiver):
    line = salvy.provision(area_code=11, name="pool-0001")
    fake.deliver_sms(line.id, "spam")
    [(_, envelope)] = receiver.accepted
    assert envelope["data"]["detections"] == {}


def test_deliver_sms_to_an_unknown_line_raises(fake):
    with pytest.raises(KeyError):
        fake.deliver_sms("nope", "hello")


def test_receiver_rejects_tampered_wrong_secret_and_stale_deliveries(salvy, fake, receiver):
    body = b'{"type":"sms.received","timestamp":"2025-09-03T00:00:00Z","data":{"id":"x"}}'
    good = signed_headers(SECRET, "msg_raw", body)
    assert fake.send_raw_webhook(body, good) == 204
    assert fake.send_raw_webhook(body.replace(b'"x"', b'"y"'), good) == 401
    assert fake.send_raw_webhook(body, signed_headers("whsec_d3Jvbmc=", "msg_raw", body)) == 401
    stale_ts = int(time.time()) - 6 * 60
    stale = {"svix-id": "msg_raw", "svix-timestamp": str(stale_ts), "svix-signature": sign(SECRET, "msg_raw",
                                                                                          stale_ts, body)}
    assert fake.send_raw_webhook(body, stale) == 401
    assert fake.send_raw_webhook(body, {"content-type": "application/json"}) == 401
    assert receiver.rejected == ["no matching signature", "no matching signature", "timestamp too old",
                                 "missing svix-id header"]
    assert [d.status_code for d in fake.deliveries] == [204, 401, 401, 401, 401]


def test_webhook_receiver_down_is_recorded_not_raised(salvy, fake):
    line = salvy.provision(area_code=11, name="pool-0001")
    fake.webhook_url = f"http://127.0.0.1:{free_port()}/hook"
    result = fake.deliver_sms(line.id, "codigo 111222", code="111222")
    assert result.status_codes == [None]
    assert fake.deliveries[0].error


# --- HTTP controls ---------------------------------------------------------------------------------------------


def test_http_controls(salvy, fake, url, receiver):
    http = httpx.Client(base_url=url, timeout=5.0)
    assert http.post("/__fake__/stock", json={"area_code": 41, "available": False}).status_code == 200
    assert 41 not in salvy.area_codes()
    line = salvy.provision(area_code=11, name="pool-0001")
    response = http.post("/__fake__/sms", json={"line_id": line.id, "text": "codigo 999888",
                                                       "code": "999888", "svix_id": "msg_http", "times": 2})
    assert response.status_code == 200
    assert response.json()["status_codes"] == [204, 204]
    assert [h["svix-id"] for h, _ in receiver.accepted] == ["msg_http", "msg_http"]
    assert http.post("/__fake__/sms", json={"line_id": "nope", "text": "x"}).status_code == 404
    assert http.post("/__fake__/fail-next", json={"n": 1, "status": 500}).status_code == 200
    with pytest.raises(SalvyError) as exc:
        salvy.list_lines()
    assert exc.value.kind == "server"
    state = http.get("/__fake__/state").json()
    assert [x["id"] for x in state["lines"]] == [line.id] and state["areaCodes"]["41"] is False
    assert len(state["deliveries"]) == 2
    assert http.post("/__fake__/webhook", json={"url": None}).json() == {"ok": True, "url": None}
    assert fake.webhook_url is None
    assert http.post("/__fake__/latency", json={"seconds": 0}).status_code == 200
    assert http.post("/__fake__/reset").status_code == 200
    assert salvy.list_lines() == [] and 41 in salvy.area_codes()
    assert http.post("/__fake__/stock", json={}).status_code == 400
    http.close()


def test_unknown_routes_answer_salvy_style_errors(url):
    response = httpx.get(f"{url}/api/v9/nothing", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 404 and set(response.json()) == {"code", "message", "publicDetails"}
