"""The fake Evolution behaves like 2.3.7 where the first build's fake guessed (field notes §1-§3, §6, §8).

No database: the gateway client against the fake on loopback, the fake's deliveries inspected directly.
"""

from __future__ import annotations

import pytest

from instances.gateway import GatewayError
from instances.gateway.evolution import EvolutionGateway
from sandbox.evolution import QR_TTL_SECONDS, FakeEvolution
from sandbox.server import FakeServer

KEY = "test-evolution-key"
PHONE, CONTACT = "5511999990001", "5511988887777"


@pytest.fixture(scope="module")
def served():
    fake = FakeEvolution(api_key=KEY)
    with FakeServer(fake.app) as server:
        fake.server_url = server.url
        yield fake, server


@pytest.fixture
def fake(served):
    fake, _ = served
    fake.reset()
    return fake


@pytest.fixture
def gw(served):
    with EvolutionGateway(base_url=served[1].url, api_key=KEY, timeout=5) as client:
        yield client


def open_instance(fake: FakeEvolution, gw: EvolutionGateway, name: str = "pool-1") -> str:
    gw.create_instance(name, webhook=gw.webhook_config(url="http://127.0.0.1:9/hook", secret="s"))
    fake.webhook_attempts = 1
    fake.link(name, PHONE)
    return name


def test_an_error_receipt_carries_no_error_code(fake, gw):
    name = open_instance(fake, gw)
    sent = gw.send_text(name, number=CONTACT, text="Olá")
    assert sent.status == "PENDING"

    (record,) = fake.ack(name, sent.message_id, "ERROR")

    assert set(record["payload"]["data"]) == {"keyId", "remoteJid", "fromMe", "status", "instanceId", "messageId"}


def test_a_restricted_instance_accepts_new_chats_and_refuses_them_later(fake, gw):
    name = open_instance(fake, gw)
    gw.send_text(name, number=CONTACT, text="primeira")  # a chat it already has
    fake.restrict(name)

    known = gw.send_text(name, number=CONTACT, text="de novo")
    new = gw.send_text(name, number="5511977776666", text="olá")

    assert {known.status, new.status} == {"PENDING"}
    (receipt,) = fake.deliver_queued()
    assert receipt["payload"]["data"]["keyId"] == new.message_id and receipt["payload"]["data"]["status"] == "ERROR"


def test_fetch_instances_keeps_the_last_final_close_after_a_relink(fake, gw):
    name = open_instance(fake, gw)
    fake.close(name, 401)
    (row,) = gw.list_instances()
    assert (row.status, row.disconnection_code) == ("close", 401) and row.disconnection_at is not None

    fake.link(name, PHONE)
    (row,) = gw.list_instances()
    assert (row.status, row.disconnection_code) == ("open", 401)  # written only by final closes


def test_webhooks_can_be_lost(fake, gw):
    name = open_instance(fake, gw)
    fake.drop_webhooks(2)
    fake.close(name, 403)
    assert [d["status_code"] for d in fake.deliveries[-3:]] == [None, None, fake.deliveries[-1]["status_code"]]
    assert fake.deliveries[-3]["error"].startswith("dropped")


def test_delete_of_an_open_instance_logs_out_first_and_then_404s(fake, gw):
    name = open_instance(fake, gw)
    gw.delete(name)
    events = [(d["event"], (d["payload"]["data"] or {}).get("statusReason")) for d in fake.deliveries[-4:]]
    assert events == [("status.instance", None), ("logout.instance", None), ("connection.update", 401),
                      ("remove.instance", None)]
    with pytest.raises(GatewayError) as exc:
        gw.connection_state(name)
    assert exc.value.kind == "not_found"
    assert gw.list_instances() == []


def test_a_dead_socket_reports_open_fails_sends_refuses_delete_until_a_restart(fake, gw):
    name = open_instance(fake, gw)
    fake.kill_socket(name)

    assert gw.connection_state(name) == "open"
    with pytest.raises(GatewayError) as send:
        gw.send_text(name, number=CONTACT, text="x")
    with pytest.raises(GatewayError) as delete:
        gw.delete(name)
    assert send.value.kind == "connection_closed" and send.value.status_code == 500
    assert delete.value.kind == "bad_request" and delete.value.status_code == 400
    assert name in fake.instance_names()

    gw.restart(name)
    assert gw.send_text(name, number=CONTACT, text="y").status == "PENDING"


def test_a_never_connected_instance_fails_sends_with_its_own_500(fake, gw):
    gw.create_instance("fresh")
    with pytest.raises(GatewayError) as exc:
        gw.send_text("fresh", number=CONTACT, text="x")
    assert exc.value.kind == "connection_closed" and "onWhatsApp" in exc.value.messages[0]


def test_a_qr_lives_45_seconds_and_only_the_live_code_links(fake, gw):
    clock = [1000.0]
    fake.clock = lambda: clock[0]
    gw.create_instance("pool-qr", qrcode=True)
    first = gw.connect("pool-qr")
    assert first.code.startswith("2@") and first.image.startswith("data:image/png;base64,")
    assert len(first.image) > 500  # a real, scannable QR image, not a 1×1 square

    clock[0] += QR_TTL_SECONDS
    second = gw.connect("pool-qr")
    assert second.code != first.code and second.count == first.count + 1
    with pytest.raises(ValueError):
        fake.scan("pool-qr", first.code, PHONE)  # a rotated code is dead
    fake.scan("pool-qr", second.code, PHONE)
    assert gw.connection_state("pool-qr") == "open"


def test_after_the_qr_limit_the_socket_is_refused_and_closed(fake, gw):
    clock = [0.0]
    fake.clock = lambda: clock[0]
    gw.create_instance("pool-qr", qrcode=True, webhook=gw.webhook_config(url="http://127.0.0.1:9/hook", secret="s"))
    fake.webhook_attempts = 1
    clock[0] += QR_TTL_SECONDS * 31

    gw.connect("pool-qr")

    notice, refused = (d["payload"]["data"] for d in fake.deliveries[-2:])
    assert notice == {"message": "QR code limit reached, please login again", "statusCode": 500}
    assert refused == {"instance": "pool-qr", "state": "refused", "statusReason": 428}
    assert gw.connection_state("pool-qr") == "close"


def test_without_whatsapp_connect_gives_no_qr_and_the_state_stays_close(fake, gw):
    fake.whatsapp_reachable = False
    gw.create_instance("pool-1")
    assert gw.connect("pool-1").count == 0
    assert gw.connection_state("pool-1") == "close"
    assert len(fake.connecting_flood("pool-1", 5)) == 0  # no webhook configured: nothing delivered


def test_lid_addressed_inbound_substitutes_the_phone_or_keeps_only_the_lid(fake, gw):
    gw.create_instance("pool-1", webhook=gw.webhook_config(url="http://127.0.0.1:9/hook", secret="s"))
    fake.webhook_attempts = 1
    fake.inbound("pool-1", None, "oi", lid="123456789012345", addressing="lid")
    fake.inbound("pool-1", CONTACT, "oi", lid="123456789012345", addressing="lid")
    fake.inbound("pool-1", CONTACT, "oi", lid="123456789012345", addressing="pn")
    keys = [d["payload"]["data"]["key"] for d in fake.deliveries[-3:]]
    assert keys[0]["remoteJid"] == "123456789012345@lid" and "remoteJidAlt" not in keys[0]
    assert keys[1]["remoteJid"] == keys[1]["remoteJidAlt"] == f"{CONTACT}@s.whatsapp.net"
    assert keys[2]["remoteJid"] == f"{CONTACT}@s.whatsapp.net" and keys[2]["remoteJidAlt"] == "123456789012345@lid"


def test_envelope_date_time_is_sao_paulo_time_mislabelled_as_utc(fake, gw):
    from datetime import UTC, datetime

    name = open_instance(fake, gw)
    stamp = fake.deliveries[-1]["payload"]["date_time"]
    assert stamp.endswith("Z") and name
    skew = datetime.now(UTC).replace(tzinfo=None) - datetime.fromisoformat(stamp[:-1])
    assert 2.9 * 3600 < skew.total_seconds() < 3.1 * 3600
