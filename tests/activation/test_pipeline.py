"""A pipeline that never stalls silently: lost SMS webhooks, chips activating with no job (W2 3/7)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import time_machine
from django.utils import timezone

from activation.models import ActivationJob, SmsReceipt
from chipfarm.pipeline import pipeline_sweep
from chips.models import Chip, ChipAlert
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db


def later(minutes: int):
    return time_machine.travel(timezone.now() + timedelta(minutes=minutes))


def test_a_pending_chip_whose_sms_webhook_was_lost_is_activated_through_the_salvy_inbox(
        make_salvy_chip, fake_salvy, sent_tasks):
    chip = make_salvy_chip()
    fake_salvy.deliver_sms(chip.provider_line_id, "Seu código do WhatsApp: 246-810", "246810")  # no webhook URL

    assert pipeline_sweep().polled == []  # not waiting long enough yet
    with later(16):
        report = pipeline_sweep()

    assert report.started == [chip.pk] and report.alerted == []
    chip.refresh_from_db()
    assert chip.status == Chip.Status.ACTIVATING
    job = ActivationJob.objects.get(chip=chip)
    assert job.sms_code == "246810" and job.svix_id.startswith("inbox:")
    assert SmsReceipt.objects.get().outcome == "job_created"
    with later(40):
        assert pipeline_sweep().started == []  # the same SMS never starts a second activation


def test_a_pending_chip_with_no_code_alerts_after_15_minutes(make_salvy_chip, fake_salvy):
    chip = make_salvy_chip()
    with later(14):
        assert pipeline_sweep().alerted == []
    with later(16):
        assert pipeline_sweep().alerted == [chip.pk]
    alert = ChipAlert.objects.get(chip=chip, kind="no_sms_code")
    assert alert.severity == "warning" and "16" in alert.message and "cancel" in alert.action_taken


def test_an_activating_chip_without_a_live_job_goes_back_to_pending_with_an_alert(db):
    chip = chip_in_state(status=Chip.Status.ACTIVATING)
    with later(3):
        assert pipeline_sweep().reset == [chip.pk]
    chip.refresh_from_db()
    assert chip.status == Chip.Status.PENDING
    assert ChipAlert.objects.filter(chip=chip, kind="activation_orphaned").exists()
