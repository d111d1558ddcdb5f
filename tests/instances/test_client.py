"""EvolutionClient against the fake Evolution server (both on loopback, no database)."""

from __future__ import annotations

import asyncio
import json
import pickle
import threading

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from instances.gateway import ConnectInfo as ConnectResult
from instances.gateway import GatewayError as EvolutionError
from instances.gateway.evolution import WEBHOOK_EVENTS, normalize_messages
from instances.gateway.evolution import EvolutionGateway as EvolutionClient
from instances.gateway.evolution.bulk import fetch_connection_states
from sandbox.evolution import FakeEvolution, build_app
from sandbox.server import FakeServer, free_port

KEY = "test-evolution-key"
SECRET = "test-webhook-secret"
PHONE = "5511999990001"
CONTACT = "5511988887777"


class Receiver:
    """A tiny webhook receiver: /hook answers 200, /reject 403, /flaky 500; records everything."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[dict] = []

        async def receive(request: Request) -> JSONResponse:
            body = await request.json()
            with self.lock:
                self.calls.append({"path": request.url.path, "headers": dict(request.headers), "body": body})
            status = {"reject": 403, "flaky": 500}.get(request.path_params["kind"], 200)
            return JSONResponse({"ok": status == 200}, status_code=status)

        self.app = Starlette(
            routes=[Route("/{kind}", receive, methods=["POST"]), Route("/{kind}/{suffix}", receive, methods=["POST"])]
        )

    def events(self, path: str = "/hook") -> list[tuple[str, dict]]:
        with self.lock:
            return [(c["body"]["event"], c) for c in self.calls if c["path"] == path]

    def clear(self) -> None:
        with self.lock:
            self.calls.clear()


@pytest.fixture(scope="module")
def fake():
    return FakeEvolution(api_key=KEY)


@pytest.fixture(scope="module")
def server(fake):
    with FakeServer(fake.app) as srv:
        fake.server_url = srv.url
        yield srv


@pytest.fixture(scope="module")
def receiver_server():
    receiver = Receiver()
    with FakeServer(receiver.app) as srv:
        srv.receiver = receiver
        yield srv


@pytest.fixture
def receiver(receiver_server):
    receiver_server.receiver.clear()
    return receiver_server.receiver


@pytest.fixture
def hook_url(receiver_server):
    return receiver_server.url + "/hook"


@pytest.fixture(autouse=True)
def _clean(fake):
    fake.reset()
    yield
    fake.reset()


@pytest.fixture
def client(server):
    with EvolutionClient(base_url=server.url, api_key=KEY, timeout=2.0) as c:
        yield c


def linked(fake: FakeEvolution, client: EvolutionClient, name: str = "pool-1", **create_kw) -> str:
    client.create_instance(name, **create_kw)
    fake.link(name, PHONE)
    return name


# ------------------------------------------------------------------------------------ instance lifecycle


def test_create_returns_201_and_stores_the_webhook_block(fake, client, hook_url):
    created = client.create_instance("pool-1", webhook=client.webhook_config(url=hook_url, secret=SECRET))

    assert fake.requests[-1]["route"] == "create" and fake.requests[-1]["status"] == 201
    assert created["instance"]["instanceName"] == "pool-1"
    assert created["instance"]["integration"] == "WHATSAPP-BAILEYS"
    assert created["instance"]["status"] == "close" and "qrcode" not in created
    assert created["hash"] == fake.instance_info("pool-1")["token"]
    assert created["webhook"]["webhookHeaders"] == {"X-Webhook-Secret": SECRET}
    hook = fake.instance_info("pool-1")["webhook"]
    assert hook["url"] == hook_url and hook["enabled"] is True
    assert hook["headers"] == {"X-Webhook-Secret": SECRET}
    assert hook["events"] == list(WEBHOOK_EVENTS) and hook["webhookByEvents"] is False


def test_create_body_is_exactly_what_evolution_expects():
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"instance": {"instanceName": "x"}, "hash": "H"})

    with EvolutionClient(
        base_url="http://evo.test", api_key="k", timeout=1, transport=httpx.MockTransport(handler)
    ) as c:
        c.create_instance(
            "pool-7", number="+55 11 99999-0001", webhook=c.webhook_config(url="http://rx/hook", secret="s")
        )
    request = seen[0]
    assert request.headers["apikey"] == "k"
    assert request.url.path == "/instance/create"
    assert json.loads(request.content) == {
        "instanceName": "pool-7",
        "integration": "WHATSAPP-BAILEYS",
        "qrcode": False,
        "number": "5511999990001",
        "webhook": {
            "url": "http://rx/hook",
            "byEvents": False,
            "base64": False,
            "headers": {"X-Webhook-Secret": "s"},
            "events": list(WEBHOOK_EVENTS),
        },
    }


def test_create_with_qrcode_returns_the_first_qr(fake, client):
    created = client.create_instance("pool-qr", qrcode=True)
    assert created["instance"]["status"] == "connecting"
    assert created["qrcode"]["count"] == 1 and created["qrcode"]["code"].startswith("2@")


def test_create_of_a_taken_name_is_exists_even_with_a_bad_key(fake, client, server):
    client.create_instance("pool-1")
    with pytest.raises(EvolutionError) as exc:
        client.create_instance("pool-1")
    assert exc.value.kind == "exists" and exc.value.status_code == 403
    assert exc.value.messages == ['This name "pool-1" is already in use.']
    with EvolutionClient(base_url=server.url, api_key="wrong", timeout=2) as bad, pytest.raises(EvolutionError) as e2:
        bad.create_instance("pool-1")
    assert e2.value.kind == "exists"  # name-in-use is checked before the key


def test_unknown_instance_is_not_found_even_with_a_bad_key(client, server):
    with EvolutionClient(base_url=server.url, api_key="wrong", timeout=2) as bad, pytest.raises(EvolutionError) as exc:
        bad.connection_state("ghost")
    err = exc.value
    assert err.kind == "not_found" and err.status_code == 404 and not err.retryable
    assert err.messages == ['The "ghost" instance does not exist']
    assert "connectionState 'ghost'" in str(err) and "404" in str(err)


def test_bad_key_on_a_known_instance_is_unauthorized(fake, client, server):
    client.create_instance("pool-1")
    with EvolutionClient(base_url=server.url, api_key="wrong", timeout=2) as bad, pytest.raises(EvolutionError) as exc:
        bad.connection_state("pool-1")
    assert exc.value.kind == "unauthorized" and exc.value.messages == ["Unauthorized"]
    token = fake.instance_info("pool-1")["token"]  # the instance token is accepted for its own instance
    with EvolutionClient(base_url=server.url, api_key=token, timeout=2) as own:
        assert own.connection_state("pool-1") == "close"


def test_connect_before_and_after_the_qr_and_once_open(fake, client):
    client.create_instance("pool-1")
    first = client.connect("pool-1")
    assert isinstance(first, ConnectResult)
    assert first.count == 0 and first.code is None and first.image is None and first.raw == {"count": 0}
    assert client.connection_state("pool-1") == "connecting"

    assert fake.qr("pool-1")["count"] == 1
    second = client.connect("pool-1")
    assert second.count == 1 and second.code.startswith("2@") and second.pairing_code is None
    assert second.image.startswith("data:image/png;base64,")

    fake.link("pool-1", PHONE)
    third = client.connect("pool-1")
    assert third.state == "open" and third.code is None and third.count is None


def test_connect_with_number_requests_a_pairing_code(fake, client):
    client.create_instance("pool-1")
    client.connect("pool-1", number="5511999990001")
    fake.qr("pool-1")
    result = client.connect("pool-1")
    assert result.pairing_code and len(result.pairing_code) == 8


def test_connection_state_follows_link_and_final_close(fake, client):
    linked(fake, client)
    assert client.connection_state("pool-1") == "open"
    fake.close("pool-1", 428)  # transient: reconnects by itself
    assert client.connection_state("pool-1") == "open"
    fake.close("pool-1", 403)
    assert client.connection_state("pool-1") == "close"


def test_fetch_instances(fake, client):
    linked(fake, client, "pool-1")
    client.create_instance("pool-2")
    fake.close("pool-1", 403)
    rows = client.fetch_instances()
    assert {r["name"] for r in rows} == {"pool-1", "pool-2"}
    (row,) = client.fetch_instances(name="pool-1")
    assert row["connectionStatus"] == "close" and row["disconnectionReasonCode"] == 403
    assert row["ownerJid"] == f"{PHONE}@s.whatsapp.net" and row["token"]
    with pytest.raises(EvolutionError) as exc:
        client.fetch_instances(name="ghost")
    assert exc.value.kind == "not_found"


def test_set_webhook(fake, client, hook_url):
    client.create_instance("pool-1")
    assert client.find_webhook("pool-1") is None
    client.set_webhook("pool-1", client.webhook_config(url=hook_url, secret="other-secret"))
    assert fake.requests[-1]["status"] == 201
    found = client.find_webhook("pool-1")
    assert found.url == hook_url and found.enabled is True and found.events == WEBHOOK_EVENTS
    assert found.secret == "other-secret"
    assert fake.instance_info("pool-1")["webhook"]["headers"] == {"X-Webhook-Secret": "other-secret"}
    bad = client.webhook_config(url=hook_url, secret="s")
    with pytest.raises(EvolutionError) as exc:
        client.set_webhook("pool-1", type(bad)(url=bad.url, secret=bad.secret, events=("NEW_JWT_TOKEN",)))
    assert exc.value.kind == "bad_request" and "is not one of enum values" in exc.value.messages[0]


def test_logout_then_logout_again(fake, client):
    linked(fake, client)
    assert client.logout("pool-1") is None
    assert client.connection_state("pool-1") == "close"
    assert fake.instance_info("pool-1")["disconnectionReasonCode"] == 401
    with pytest.raises(EvolutionError) as exc:
        client.logout("pool-1")
    assert exc.value.kind == "bad_request" and exc.value.messages == ['The "pool-1" instance is not connected']


def test_delete_then_not_found(fake, client):
    linked(fake, client)
    assert client.delete("pool-1") is None
    with pytest.raises(EvolutionError) as exc:
        client.connection_state("pool-1")
    assert exc.value.kind == "not_found"


def test_restart_on_a_closed_instance_is_an_error_body(fake, client):
    client.create_instance("pool-1")
    with pytest.raises(EvolutionError) as exc:
        client.restart("pool-1")
    err = exc.value
    assert err.kind == "error_body" and err.status_code == 200 and err.messages == ["[object Object]"]
    fake.link("pool-1", PHONE)
    assert client.restart("pool-1") is None
    assert fake.requests[-1]["status"] == 200 and client.connection_state("pool-1") == "open"


def test_200_with_error_true_is_an_error_body_and_is_not_retried(fake, client):
    client.create_instance("pool-1")
    fake.fail_next(1, status=200, route="connect")
    with pytest.raises(EvolutionError) as exc:
        client.connect("pool-1")
    assert exc.value.kind == "error_body" and not exc.value.retryable
    assert fake.request_count("connect") == 1


# ------------------------------------------------------------------------------------ sendText


def test_send_text_returns_the_key_id_and_sends_exactly_once(fake, client):
    linked(fake, client)
    result = client.send_text("pool-1", number=CONTACT, text="Olá!")
    assert result.message_id.startswith("3EB0") and len(result.message_id) == 22
    assert result.remote_jid == f"{CONTACT}@s.whatsapp.net" and result.status == "PENDING"
    assert result.raw["pushName"] == "Você" and result.raw["message"] == {"conversation": "Olá!"}
    assert fake.requests[-1]["status"] == 201
    (sent,) = fake.sent_messages
    assert sent["key_id"] == result.message_id and sent["text"] == "Olá!" and sent["instance"] == "pool-1"


def test_send_text_failure_is_raised_once_and_never_retried(fake, client):
    linked(fake, client)
    fake.fail_next(1, status=500)
    with pytest.raises(EvolutionError) as exc:
        client.send_text("pool-1", number=CONTACT, text="hi")
    err = exc.value
    assert err.kind == "connection_closed" and err.status_code == 500 and err.retryable
    assert err.messages == ["Connection Closed"]
    assert fake.request_count("sendText") == 1
    assert fake.sent_messages == []


def test_send_text_to_a_number_not_on_whatsapp(fake, client):
    linked(fake, client)
    fake.mark_not_on_whatsapp("5511900000000")
    with pytest.raises(EvolutionError) as exc:
        client.send_text("pool-1", number="5511900000000", text="hi")
    assert exc.value.kind == "not_on_whatsapp" and exc.value.status_code == 400
    assert exc.value.messages == ["number 5511900000000 not on WhatsApp"]


def test_send_text_validation_error_is_bad_request(fake, client):
    linked(fake, client)
    with pytest.raises(EvolutionError) as exc:
        client.send_text("pool-1", number=CONTACT, text="   ")
    assert exc.value.kind == "bad_request" and exc.value.messages == ["Text is required"]


# ------------------------------------------------------------------------------------ timeouts, transport


def test_read_timeout_is_kind_timeout_and_reads_retry_once(fake, server):
    fake.add_instances(["pool-1"])
    fake.set_latency(1.0)
    with EvolutionClient(base_url=server.url, api_key=KEY, timeout=0.2) as quick, pytest.raises(EvolutionError) as e:
        quick.connection_state("pool-1")
    assert e.value.kind == "timeout" and e.value.status_code is None and e.value.retryable
    assert "no response" in str(e.value)
    assert fake.request_count("connectionState") == 2  # idempotent read: one retry


def test_a_5xx_on_a_read_is_retried_once(fake, client):
    fake.add_instances(["pool-1"])
    fake.fail_next(1, status=503)
    assert client.connection_state("pool-1") == "open"
    assert fake.request_count("connectionState") == 2


def test_transport_error_when_nothing_listens():
    with (
        EvolutionClient(base_url=f"http://127.0.0.1:{free_port()}", api_key=KEY, timeout=1) as dead,
        pytest.raises(EvolutionError) as exc,
    ):
        dead.send_text("pool-1", number=CONTACT, text="hi")
    assert exc.value.kind == "transport" and exc.value.status_code is None and exc.value.retryable


def test_non_json_bodies_are_handled():
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.startswith("/instance/connectionState"):
            return httpx.Response(200, text="<html>proxy</html>")
        return httpx.Response(502, text="<html>Bad Gateway</html>")

    with EvolutionClient(
        base_url="http://evo.test", api_key="k", timeout=1, transport=httpx.MockTransport(handler)
    ) as c:
        with pytest.raises(EvolutionError) as exc:
            c.connection_state("pool-1")
        assert exc.value.kind == "error_body" and exc.value.payload is None
        with pytest.raises(EvolutionError) as exc:
            c.send_text("pool-1", number=CONTACT, text="hi")
        assert exc.value.kind == "server" and exc.value.status_code == 502
        assert exc.value.messages == ["non-JSON body: <html>Bad Gateway</html>"]


def test_message_normalisation_and_pickling():
    assert normalize_messages("Unauthorized") == ["Unauthorized"]
    assert normalize_messages([['instance requires property "text"']]) == ['instance requires property "text"']
    assert normalize_messages([{"jid": "1@s.whatsapp.net", "exists": False, "number": "1"}]) == [
        "number 1 not on WhatsApp"
    ]
    assert normalize_messages([{"a": 1}]) == ['{"a":1}']
    err = EvolutionError("server", operation="sendText", instance="p", status_code=500, messages=["x"])
    clone = pickle.loads(pickle.dumps(err))
    assert (clone.kind, clone.status_code, clone.messages, str(clone)) == ("server", 500, ["x"], str(err))


# ------------------------------------------------------------------------------------ bulk states


def test_fetch_connection_states_is_concurrent_and_bounded(fake, server):
    # 200 reads at 50 ms each: ~10 s one after the other; here at most 50 overlap (4 waves).
    names = [f"bulk-{i:04d}" for i in range(200)]
    fake.add_instances(names)
    fake.set_latency(0.05)
    states = asyncio.run(fetch_connection_states(names, concurrency=50, base_url=server.url, api_key=KEY, timeout=5))
    assert states == dict.fromkeys(names, "open")
    assert fake.request_count("connectionState") == 200
    assert 25 <= fake.peak_in_flight <= 50


def test_fetch_connection_states_turns_failures_into_values(fake, server):
    names = [f"bulk-{i:04d}" for i in range(60)]
    fake.add_instances(names)
    fake.fail_next(7, status=500, route="connectionState")
    states = asyncio.run(
        fetch_connection_states([*names, "ghost"], concurrency=10, base_url=server.url, api_key=KEY, timeout=5)
    )
    errors = {n: v for n, v in states.items() if isinstance(v, EvolutionError)}
    assert len(states) == 61
    assert states["ghost"].kind == "not_found"
    assert sorted(e.kind for n, e in errors.items() if n != "ghost") == ["connection_closed"] * 7
    assert sum(1 for v in states.values() if v == "open") == 53
    assert fake.request_count("connectionState") == 61  # no retries inside a sweep


def test_fetch_connection_states_timeout_becomes_a_value(fake, server):
    fake.add_instances(["slow"])
    fake.fail_next(1, status="timeout")
    states = asyncio.run(fetch_connection_states(["slow"], base_url=server.url, api_key=KEY, timeout=0.2))
    assert states["slow"].kind == "timeout"


# ------------------------------------------------------------------------------------ webhooks


def test_link_close_inbound_send_and_ack_deliver_envelopes(fake, client, receiver, hook_url, server):
    client.create_instance("pool-1", webhook=client.webhook_config(url=hook_url, secret=SECRET))
    records = fake.link("pool-1", PHONE)
    assert [r["status_code"] for r in records] == [200, 200]
    (_, c1), (_, c2) = receiver.events()
    assert c1["body"]["data"] == {"instance": "pool-1", "state": "connecting", "statusReason": 200}
    assert "sender" not in c1["body"]
    assert c2["body"]["data"]["state"] == "open" and c2["body"]["data"]["wuid"] == f"{PHONE}@s.whatsapp.net"
    assert c2["body"]["sender"] == f"{PHONE}@s.whatsapp.net"
    for call in (c1, c2):
        assert call["headers"]["x-webhook-secret"] == SECRET
        body = call["body"]
        assert body["event"] == "connection.update" and body["instance"] == "pool-1"
        assert body["destination"] == hook_url and body["server_url"] == server.url
        assert body["apikey"] == fake.instance_info("pool-1")["token"] and body["date_time"].endswith("Z")

    receiver.clear()
    message_id = fake.inbound("pool-1", CONTACT, "Oi!")
    ((event, call),) = receiver.events()
    data = call["body"]["data"]
    assert event == "messages.upsert"
    assert data["key"] == {"remoteJid": f"{CONTACT}@s.whatsapp.net", "fromMe": False, "id": message_id}
    assert data["message"]["conversation"] == "Oi!" and data["messageType"] == "conversation"

    receiver.clear()
    sent = client.send_text("pool-1", number=CONTACT, text="Olá")
    ((event, call),) = receiver.events()
    assert event == "send.message" and call["body"]["data"]["key"]["id"] == sent.message_id

    receiver.clear()
    fake.ack("pool-1", sent.message_id, "DELIVERY_ACK")
    fake.ack("pool-1", sent.message_id, "ERROR")
    (_, ok), (_, failed) = receiver.events()
    assert ok["body"]["event"] == "messages.update"
    assert {k: v for k, v in ok["body"]["data"].items() if k != "messageId"} == {
        "keyId": sent.message_id,
        "remoteJid": f"{CONTACT}@s.whatsapp.net",
        "fromMe": True,
        "status": "DELIVERY_ACK",
        "instanceId": fake.instance_info("pool-1")["id"],
    }
    # 2.3.7 forwards no error code with an ERROR receipt (field notes §1): the same keys, nothing more.
    assert set(failed["body"]["data"]) == {"keyId", "remoteJid", "fromMe", "status", "instanceId", "messageId"}
    assert failed["body"]["data"]["status"] == "ERROR"

    receiver.clear()
    fake.close("pool-1", 403)
    events = receiver.events()
    assert [e for e, _ in events] == ["status.instance", "logout.instance", "connection.update"]
    assert events[0][1]["body"]["data"]["disconnectionReasonCode"] == 403
    assert events[1][1]["body"]["data"] is None
    assert events[2][1]["body"]["data"] == {"instance": "pool-1", "state": "close", "statusReason": 403}


def test_transient_close_and_qr_events_and_set_webhook_secret(fake, client, receiver, hook_url):
    client.create_instance("pool-1")
    client.set_webhook("pool-1", client.webhook_config(url=hook_url, secret="rotated"))
    fake.qr("pool-1")
    fake.link("pool-1", PHONE)
    receiver.clear()
    fake.close("pool-1", 515)
    events = receiver.events()
    assert [c["body"]["data"]["state"] for _, c in events] == ["connecting", "open"]
    assert all(c["headers"]["x-webhook-secret"] == "rotated" for _, c in events)

    receiver.clear()
    fake.link("pool-1", PHONE)
    fake.qr("pool-1")
    ((event, call),) = receiver.events()[-1:]
    assert event == "qrcode.updated"
    assert call["body"]["data"]["qrcode"]["base64"].startswith("data:image/png;base64,")


def test_delivery_retries_are_bounded_and_skip_non_retryable(fake, client, receiver, receiver_server):
    fake.webhook_backoff = (0.01,)
    try:
        client.create_instance(
            "flaky", webhook=client.webhook_config(url=receiver_server.url + "/flaky", secret=SECRET)
        )
        client.create_instance(
            "reject", webhook=client.webhook_config(url=receiver_server.url + "/reject", secret=SECRET)
        )
        dead_url = f"http://127.0.0.1:{free_port()}/webhooks/evolution"
        client.create_instance("dead", webhook=client.webhook_config(url=dead_url, secret=SECRET))
        flaky = fake.inbound("flaky", CONTACT, "x")
        fake.inbound("reject", CONTACT, "x")
        fake.inbound("dead", CONTACT, "x")  # receiver not running: recorded, never raised
    finally:
        fake.webhook_backoff = (0.05, 0.1, 0.2, 0.4)
    by_instance = {d["instance"]: d for d in fake.deliveries}
    assert by_instance["flaky"]["status_code"] == 500 and by_instance["flaky"]["attempts"] == fake.webhook_attempts
    assert by_instance["reject"]["status_code"] == 403 and by_instance["reject"]["attempts"] == 1
    assert by_instance["dead"]["status_code"] is None and by_instance["dead"]["error"]
    assert len([c for c in receiver.calls if c["body"]["data"]["key"]["id"] == flaky]) == fake.webhook_attempts


def test_http_controls_drive_the_fake(fake, client, server, receiver, hook_url):
    client.create_instance("pool-1", webhook=client.webhook_config(url=hook_url, secret=SECRET))
    with httpx.Client(base_url=server.url + "/__fake__", timeout=5) as ctl:
        r = ctl.post("/link/pool-1", json={"number": PHONE})
        assert r.status_code == 200 and [d["status_code"] for d in r.json()["deliveries"]] == [200, 200]
        assert client.connection_state("pool-1") == "open"
        message_id = ctl.post("/inbound/pool-1", json={"from": CONTACT, "text": "Oi"}).json()["message_id"]
        assert receiver.events()[-1][1]["body"]["data"]["key"]["id"] == message_id
        assert ctl.post("/close/pool-1", json={"code": 401}).status_code == 200
        assert client.connection_state("pool-1") == "close"
        assert ctl.post("/link/ghost", json={"number": PHONE}).status_code == 404
        ctl.post("/add-instances", json={"names": ["a", "b"]})
        ctl.post("/fail-next", json={"n": 1, "status": 500, "route": "sendText"})
        with pytest.raises(EvolutionError):
            client.send_text("a", number=CONTACT, text="x")
        stats = ctl.get("/stats").json()
        assert stats["instances"] == 3 and stats["requests"]["sendText"] == 1
        assert ctl.post("/reset").status_code == 200
    assert fake.instance_names() == []


def test_welcome_needs_no_key_and_unknown_routes_answer_like_express(server):
    root = httpx.get(server.url + "/")
    assert root.status_code == 200 and root.json()["message"].startswith("Welcome to the Evolution API")
    missing = httpx.get(server.url + "/foo")
    assert missing.status_code == 404
    assert missing.json() == {"status": 404, "error": "Not Found", "response": {"message": ["Cannot GET /foo"]}}


def test_build_app_exposes_the_fake():
    app = build_app("k", None)
    assert isinstance(app.state.fake, FakeEvolution) and app.state.fake.api_key == "k"
