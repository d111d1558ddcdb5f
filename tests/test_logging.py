"""Logging: masking of phones, SMS codes and secrets; request ids; JSON lines; a real flow leaks no phone."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest
from django.test import override_settings

from chips.models import Chip
from chips.notifications import notifications_deliver
from config.logging import JsonFormatter, MaskingFilter, RequestIdFilter, mask
from instances.models import ChipCapacity
from instances.services import instance_register
from tests.factories import chip_in_state

API_KEY = "cf_" + "Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGhI"


@pytest.mark.parametrize(("raw", "masked"), [
    ("+5511987654321", "+55*******4321"),
    ("send to +5511987654321 now", "send to +55*******4321 now"),
    ("5511987654321@s.whatsapp.net", "*********4321@s.whatsapp.net"),
    ("contact=11987654321;", "contact=*******4321;"),
    ("chip-5511912345678 linked", "chip-*********5678 linked"),
])
def test_phone_numbers_keep_only_their_last_four_digits(raw, masked):
    assert mask(raw) == masked


@pytest.mark.parametrize("raw", [
    "Seu código do WhatsApp: 123-456",
    "WhatsApp code 654321. Don't share it",
    "codigo=987 654",
    "sms received: 123-456",
])
def test_sms_codes_are_masked(raw):
    masked = mask(raw)
    assert not re.search(r"\d{3}[-\s]?\d{3}", masked), masked


@pytest.mark.parametrize(("raw", "secret"), [
    ("headers={'apikey': 'evo-secret-key-1'}", "evo-secret-key-1"),
    ("X-API-Key: " + API_KEY, API_KEY),
    ("key " + API_KEY + " used", API_KEY),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "eyJhbGciOiJIUzI1NiJ9"),
    ('{"token": "salvy-token-123"}', "salvy-token-123"),
    ("SALVY_API_TOKEN=dev-salvy-token", "dev-salvy-token"),
    ("X-Webhook-Secret: dev-evolution-webhook-secret", "dev-evolution-webhook-secret"),
    ("secret whsec_ZGV2LXNhbHZ5LXdlYmhvb2stc2VjcmV0 loaded", "ZGV2LXNhbHZ5LXdlYmhvb2stc2VjcmV0"),
    ("posting to https://hooks.slack.com/services/T000/B000/XXXXyyyy", "XXXXyyyy"),
])
def test_secrets_are_masked(raw, secret):
    assert secret not in mask(raw)


@pytest.mark.parametrize("text", [
    "chip 12345: warming → ready by task:orchestrator (demo walk)",
    "activation job 42 submitted as act_9f8e7d",
    "2026-11-24T10:00:00.123456+00:00 took 1234 ms",
    "request 3f2a9c1d0e8b4a7f9c6d5e4b3a2f1e0d",
])
def test_ordinary_text_is_left_alone(text):
    assert mask(text) == text


def test_masking_is_idempotent():
    once = mask(f"+5511987654321 code 123456 {API_KEY}")
    assert mask(once) == once


def _record(msg: str, *args, exc_info=None) -> logging.LogRecord:
    return logging.LogRecord("t", logging.INFO, __file__, 1, msg, args, exc_info)


def test_the_filter_masks_args_and_exception_text():
    try:
        raise ValueError("bad number +5511987654321")
    except ValueError:
        record = _record("sending %s with %s", "+5511987654321", f"apikey={API_KEY}", exc_info=sys.exc_info())

    assert MaskingFilter().filter(record) is True

    assert record.getMessage() == "sending +55*******4321 with apikey=***"
    assert "+5511987654321" not in record.exc_text and "+55*******4321" in record.exc_text


def test_json_lines_carry_the_fields():
    record = _record("hello %s", "world")
    RequestIdFilter().filter(record)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        record.exc_info = sys.exc_info()

    entry = json.loads(JsonFormatter().format(record))

    assert {k: entry[k] for k in ("level", "logger", "message", "request_id")} == {
        "level": "INFO", "logger": "t", "message": "hello world", "request_id": "-"}
    assert entry["timestamp"].endswith("+00:00")
    assert "RuntimeError: boom" in entry["exception"]


def test_the_console_handler_has_both_filters():
    from config.settings import base  # production only swaps the formatter (tests/test_deploy.py)

    root_handlers = logging.getLogger().handlers
    console = next(h for h in root_handlers if isinstance(h, logging.StreamHandler)
                   and any(isinstance(f, MaskingFilter) for f in h.filters))
    assert any(isinstance(f, RequestIdFilter) for f in console.filters)
    assert base.LOGGING["handlers"]["console"]["filters"] == ["request_id", "mask"]


@pytest.fixture
def json_log():
    """The production handler (both filters, JSON) on the root logger; yields a reader of its lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestIdFilter())
    handler.addFilter(MaskingFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    root.removeHandler(handler)


@pytest.mark.django_db
def test_a_request_logs_with_its_request_id(client, json_log):
    response = client.get("/no-such-page/5511987654321", headers={"X-Request-ID": "req-42.abc"})

    assert response.status_code == 404
    assert response["X-Request-ID"] == "req-42.abc"
    line = next(e for e in json_log() if e["logger"] == "django.request")
    assert line["request_id"] == "req-42.abc"
    assert line["message"] == "Not Found: /no-such-page/*********4321"


@pytest.mark.django_db
@pytest.mark.parametrize("header", [None, "x" * 65, "bad id", 'quote"d'])
def test_a_missing_or_unsafe_request_id_is_replaced(client, json_log, header):
    response = client.get("/no-such-page", headers={"X-Request-ID": header} if header else {})

    rid = response["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", rid)
    assert next(e for e in json_log() if e["logger"] == "django.request")["request_id"] == rid


@pytest.mark.django_db
@override_settings(SLACK_WEBHOOK_URL="", SLACK_OPERATIONS_WEBHOOK_URL="")
def test_a_representative_flow_logs_no_phone_number(client, settings, caplog, django_capture_on_commit_callbacks):
    caplog.set_level(logging.DEBUG)
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    instance_register(chip=chip)
    ChipCapacity.objects.create(chip=chip)
    phone_digits = chip.phone.lstrip("+")

    def post(event: str, instance: str, data: dict) -> None:
        body = {"event": event, "instance": instance, "data": data}
        response = client.post("/webhooks/evolution", data=json.dumps(body), content_type="application/json",
                               headers={"X-Webhook-Secret": settings.EVOLUTION_WEBHOOK_SECRET})
        assert response.status_code == 200

    # Evolution instances are often named after their number; contacts are numbers too.
    post("connection.update", "5511987650000", {"state": "open"})
    post("messages.upsert", chip.instance_name,
         {"key": {"id": "m1", "remoteJid": "5511955554444@s.whatsapp.net", "fromMe": False},
          "message": {"conversation": "Seu código do WhatsApp: 123-456"}})
    # A final ban: the chip's transition, its alert and the (unconfigured) Slack line that logs its text.
    with django_capture_on_commit_callbacks(execute=False):
        post("connection.update", chip.instance_name, {"state": "close", "statusReason": 403})
    notifications_deliver()

    chip.refresh_from_db()
    assert chip.status == Chip.Status.BANNED
    messages = [record.getMessage() for record in caplog.records]
    assert any("*" * 7 + chip.phone[-4:] in m for m in messages), messages  # the flow did log the number
    assert any("*********0000" in m for m in messages), messages
    for text in (caplog.text, *messages):
        assert phone_digits not in text
        assert "5511987650000" not in text and "5511955554444" not in text
        assert "123-456" not in text
