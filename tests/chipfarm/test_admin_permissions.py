"""The admin's rules, across every registered screen: Viewers change nothing, nobody but superusers is offered a
delete, read-only pages have no Save button, periodic-task actions need the change permission, and both groups
see the warming page."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt
from django.apps import apps
from django.contrib import admin
from django.contrib.auth.models import Group
from django.test import RequestFactory
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from activation.models import ActivationJob
from chipfarm.models import ChipRelease, OrchestratorOperation, PoolSnapshot
from chips.models import Chip, Notification
from chips.services import alert_raise
from instances.models import ChipCapacity, DeliveryEvent, OutboundMessage, RoutingPolicy
from instances.services import instance_register, sending_pause, sending_resume
from outbox import services as outbox_services
from tests.factories import chip_in_state
from warmer.models import TrustBreakdown

pytestmark = pytest.mark.django_db
S = Chip.Status
FINGERPRINTED_APPS = ["chips", "instances", "activation", "warmer", "chipfarm", "outbox", "django_celery_beat",
                      "axes", "auth"]


def fingerprint() -> dict[str, list[dict]]:
    """Every row of every table an admin action could touch."""
    return {m._meta.label: list(m._default_manager.order_by("pk").values())
            for label in FINGERPRINTED_APPS for m in apps.get_app_config(label).get_models()}


@pytest.fixture
def everything(settings):
    """At least one row behind every admin screen, in states where the actions have something to do."""
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    return populate("1")


def populate(tag: str) -> dict:
    chips = {status: chip_in_state(status=status) for status in (S.PENDING, S.WARMING, S.READY, S.ACTIVE,
                                                                 S.DEGRADED, S.RETIRED)}
    warm = chips[S.WARMING]
    warm.set_trust(95)
    warm.warming_phase = "operation"
    warm.warming_started_at = timezone.now() - timedelta(days=30)
    warm.save()
    active = chips[S.ACTIVE]
    instance_register(chip=active)
    ChipCapacity.objects.create(chip=active)
    OutboundMessage.objects.create(idempotency_key=f"k{tag}", contact="+5511988887777", chip=active, text="oi")
    DeliveryEvent.objects.create(chip=active, kind="delivered")
    TrustBreakdown.objects.create(chip=active, score=90, components={"age": 20.0})
    alert_raise(kind="disconnected", severity="warning", message="offline", chip=active)
    alert_raise(kind="pool", severity="critical", message="pool alert", dedup_key=f"pool-{tag}")
    OrchestratorOperation.objects.create(kind="auto_provision", reason="short")
    PoolSnapshot.objects.create(taken_at=timezone.now(), counts={"active": 1}, health="healthy")
    ChipRelease.objects.create(chip=chips[S.RETIRED], reason="test")
    ActivationJob.objects.create(chip=chips[S.PENDING], status="failed", sms_code="123456", sms_id=f"sms_{tag}")
    Notification.objects.create(channel="alerts", text="hello")
    sending_pause(reason="first" if tag == "1" else f"pause {tag}", by="ana")
    sending_resume(by="ana")
    RoutingPolicy.load()
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.MINUTES)
    names = ("t-on", "t-off") if tag == "1" else (f"more-on-{tag}", f"more-off-{tag}")
    PeriodicTask.objects.create(name=names[0], task="chipfarm.run_cycle", interval=every, enabled=True)
    PeriodicTask.objects.create(name=names[1], task="chipfarm.run_cycle", interval=every, enabled=False)
    outbox_services.endpoint_create(url=f"http://127.0.0.1:9/hook{tag}")
    outbox_services.event_emit(type="ping", data={})
    AccessAttempt.objects.create(username=f"alice{tag}", ip_address="127.0.0.1", user_agent="x",
                                 path_info="/admin/login/", failures_since_start=5, get_data="", post_data="",
                                 http_accept="*/*")
    return chips


def _user(django_user_model, name: str, group: str | None = None, superuser: bool = False):
    if superuser:
        return django_user_model.objects.create_superuser(name, f"{name}@example.com", "pw")
    user = django_user_model.objects.create_user(name, password="pw", is_staff=True)
    user.groups.add(Group.objects.get(name=group))
    return user


def _request(user):
    request = RequestFactory().get("/admin/")
    request.user = user
    return request


def _urls(model_admin, name: str, *args) -> str | None:
    opts = model_admin.model._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_{name}", args=args)
    except NoReverseMatch:
        return None


@pytest.mark.parametrize("group", ["Operators", "Viewers"])
def test_no_admin_screen_offers_delete_to_non_superusers(everything, django_user_model, client, group):
    user = _user(django_user_model, f"u-{group}", group)
    request = _request(user)
    client.force_login(user)
    for model, model_admin in admin.site._registry.items():
        assert not model_admin.has_delete_permission(request), model
        assert "delete_selected" not in model_admin.get_actions(request), model
        obj = model_admin.get_queryset(request).first()
        if obj is None:
            continue
        assert not model_admin.has_delete_permission(request, obj), model
        if model_admin.has_view_or_change_permission(request, obj):
            page = client.get(_urls(model_admin, "change", obj.pk)).content.decode()
            assert "deletelink" not in page, model
            changelist = client.get(_urls(model_admin, "changelist"), follow=True).content.decode()
            assert 'value="delete_selected"' not in changelist, model


def test_superusers_cannot_delete_what_the_system_wrote(everything, django_user_model):
    request = _request(_user(django_user_model, "root", superuser=True))
    system_written = [Chip, ChipCapacity, OutboundMessage, DeliveryEvent, TrustBreakdown, OrchestratorOperation,
                      PoolSnapshot, ChipRelease, ActivationJob, Notification, RoutingPolicy,
                      apps.get_model("chips", "ChipAlert"), apps.get_model("chips", "ChipTransition"),
                      apps.get_model("instances", "Instance"), apps.get_model("instances", "ContactBinding"),
                      apps.get_model("instances", "SendingSwitch"), apps.get_model("warmer", "WarmingAction"),
                      apps.get_model("warmer", "WarmingChip"), apps.get_model("outbox", "Event"),
                      apps.get_model("outbox", "Delivery")]
    for model in system_written:
        model_admin = admin.site._registry[model]
        assert not model_admin.has_delete_permission(request), model
        assert "delete_selected" not in model_admin.get_actions(request), model
    # ...where deleting harms no record, superusers keep it (an empty gateway server, an API key, a schedule row).
    assert admin.site._registry[apps.get_model("chipfarm", "ApiKey")].has_delete_permission(request)
    assert admin.site._registry[PeriodicTask].has_delete_permission(request)


def test_a_viewers_post_of_every_admin_action_changes_nothing(everything, django_user_model, client, monkeypatch):
    sent = []
    monkeypatch.setattr("celery.app.task.Task.apply_async", lambda self, *a, **kw: sent.append(self.name))
    viewer = _user(django_user_model, "vera", "Viewers")
    client.force_login(viewer)
    before = fingerprint()
    posted = 0
    for model_admin in admin.site._registry.values():
        url = _urls(model_admin, "changelist")
        pks = [str(pk) for pk in model_admin.model._default_manager.values_list("pk", flat=True)]
        for _func, name, _description in model_admin._get_base_actions():
            response = client.post(url, {"action": name, "_selected_action": pks, "select_across": "1", "index": "0",
                                         "apply": "1", "post": "yes", "reason": "a viewer tried",
                                         "since": "2020-01-01 00:00"})
            assert response.status_code in (200, 302, 403), (url, name, response.status_code)
            posted += 1
    # The other buttons: the dashboard's, a chip's transitions and links.
    chip = everything[S.ACTIVE]
    dashboard = reverse("admin:chipfarm_dashboard")
    for action in ["run_cycle", "pause", "resume", "buy_lines"]:
        assert client.post(dashboard, {"action": action, "reason": "x", "count": "1"}).status_code == 403
    for name in ["retire", "ban", "cool_down", "degrade"]:
        assert client.post(reverse("admin:chips_chip_transition", args=[chip.pk, name]),
                           {"reason": "x"}).status_code == 403
    assert client.post(reverse("admin:chips_chip_link", args=[chip.pk])).status_code == 403
    assert client.post(reverse("admin:chips_chip_add_own"), {"phone": "+5561987654321"}).status_code == 403
    assert posted > 30
    assert fingerprint() == before
    assert sent == []  # "Run selected tasks" queued nothing


@pytest.mark.parametrize("action", ["enable_tasks", "disable_tasks", "toggle_tasks", "run_tasks"])
def test_periodic_task_actions_need_the_change_permission(everything, django_user_model, client, monkeypatch,
                                                          action):
    sent = []
    monkeypatch.setattr("celery.app.task.Task.apply_async", lambda self, *a, **kw: sent.append(self.name))
    url = reverse("admin:django_celery_beat_periodictask_changelist")
    pks = list(PeriodicTask.objects.filter(name__startswith="t-").values_list("pk", flat=True))
    states = lambda: dict(PeriodicTask.objects.filter(pk__in=pks).values_list("name", "enabled"))  # noqa: E731
    before = states()

    client.force_login(_user(django_user_model, "vera", "Viewers"))
    page = client.get(url).content.decode()
    assert f'value="{action}"' not in page
    client.post(url, {"action": action, "_selected_action": pks, "index": "0"})
    assert states() == before and sent == []

    client.force_login(_user(django_user_model, "otto", "Operators"))
    assert f'value="{action}"' in client.get(url).content.decode()
    client.post(url, {"action": action, "_selected_action": pks, "index": "0"})
    if action == "run_tasks":
        assert sent == ["chipfarm.run_cycle", "chipfarm.run_cycle"]
    else:
        assert states() != before or action == "enable_tasks" and before == {"t-on": True, "t-off": True}


def test_nobody_adds_a_periodic_task_from_the_admin(admin_client):
    assert admin_client.get(reverse("admin:django_celery_beat_periodictask_add")).status_code == 403


READ_ONLY = [("chips", "chip"), ("chips", "chipalert"), ("chips", "chiptransition"), ("chips", "notification"),
             ("instances", "instance"), ("instances", "outboundmessage"), ("instances", "deliveryevent"),
             ("instances", "sendingswitch"), ("activation", "activationjob"), ("warmer", "warmingchip"),
             ("warmer", "trustbreakdown"), ("chipfarm", "orchestratoroperation"), ("chipfarm", "poolsnapshot"),
             ("chipfarm", "chiprelease"), ("axes", "accessattempt")]


@pytest.mark.parametrize("who", ["root", "Operators", "Viewers"])
def test_read_only_pages_offer_no_save_button(everything, django_user_model, client, who):
    user = _user(django_user_model, "someone", None if who == "root" else who, superuser=who == "root")
    client.force_login(user)
    for app_label, model_name in READ_ONLY:
        model = apps.get_model(app_label, model_name)
        model_admin = admin.site._registry[model]
        obj = model_admin.get_queryset(_request(user)).first()
        assert obj is not None, model
        response = client.get(reverse(f"admin:{app_label}_{model_name}_change", args=[obj.pk]))
        if response.status_code == 403:
            continue  # a group that may not see it at all
        page = response.content.decode()
        assert response.status_code == 200, model
        assert 'name="_save"' not in page and 'name="_continue"' not in page, model


@pytest.mark.parametrize("group", ["Operators", "Viewers"])
def test_both_groups_see_the_warming_page(everything, django_user_model, client, group):
    client.force_login(_user(django_user_model, "w", group))
    url = reverse("admin:warmer_warmingchip_changelist")
    page = client.get(url)
    assert page.status_code == 200 and everything[S.WARMING].phone in page.content.decode()
    chip = everything[S.WARMING]
    assert client.get(reverse("admin:warmer_warmingchip_change", args=[chip.pk])).status_code == 200
    assert "warmer" in [a["app_label"] for a in client.get(reverse("admin:index")).context["app_list"]]


def test_the_kill_switch_history_is_shown_to_viewers(everything, viewer_client):
    page = viewer_client.get(reverse("admin:instances_sendingswitch_changelist")).content.decode()
    assert "first" in page and "ana" in page
    policy = viewer_client.get(reverse("admin:instances_routingpolicy_change", args=[1])).content.decode()
    assert 'id="sending-switches"' in policy and "first" in policy


def test_no_changelist_grows_in_queries_with_its_rows(everything, admin_client):
    """STYLE: a query-count test for every changelist that can grow; here all of them at once."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def counts() -> dict[str, int]:
        result = {}
        for model_admin in admin.site._registry.values():
            url = _urls(model_admin, "changelist")
            with CaptureQueriesContext(connection) as ctx:
                response = admin_client.get(url, follow=True)
            assert response.status_code == 200, url
            result[url] = len(ctx.captured_queries)
        return result

    counts()  # the first look saves the pool configuration's row
    few = counts()
    for tag in "23":
        populate(tag)
    assert counts() == few
