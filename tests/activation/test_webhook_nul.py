"""A correctly signed SMS whose text or origin carries a NUL still starts its activation (issue W2 1/7)."""

from __future__ import annotations

import json

import pytest

from activation.models import ActivationJob, SmsReceipt
from chips.models import Chip
from tests.activation.conftest import sms_envelope

pytestmark = pytest.mark.django_db


def test_a_signed_sms_with_nul_characters_starts_its_activation(salvy, pending_chip, sent_tasks):
    envelope = sms_envelope(pending_chip, sms_id="sms-nul", code="654321")
    envelope["data"]["message"] = "Seu c\u0000ódigo do WhatsApp: 654-321"
    envelope["data"]["originPhoneNumber"] = "234\u000056"
    body = json.dumps(envelope).encode()  # "\u0000" escapes: valid JSON, unstorable in PostgreSQL text
    assert b"\\u0000" in body

    response = salvy.post(body=body)

    assert response.status_code == 200 and response.json()["status"] == "job_created"
    receipt = SmsReceipt.objects.get()
    assert receipt.origin == "23456" and "\x00" not in receipt.text and receipt.code == "654321"
    assert ActivationJob.objects.get().chip_id == pending_chip.pk
    pending_chip.refresh_from_db()
    assert pending_chip.status == Chip.Status.ACTIVATING
