"""GET /metrics: Prometheus text exposition (format 0.0.4) of the pool and the cluster-wide counters.

Gauges come from PostgreSQL (a few grouped queries, constant in the pool's size); counters from Redis
(`config.counters`), so any API replica answers the same totals. Open unless METRICS_TOKEN is set, then
it needs `Authorization: Bearer <token>`.
"""

from __future__ import annotations

import hmac
from datetime import timedelta

from django.conf import settings
from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F, Value
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET

from chips.models import Chip, ChipTransition, WarmingPhase
from config import counters
from instances.models import RoutingPolicy

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# metric in Redis → (exposed name, help, label names of its "|"-joined field)
COUNTERS = {
    "route_decisions": ("chipfarm_route_decisions_total",
                        "Route decisions by outcome (routed, or the refusal code).", ("outcome",)),
    "webhook_events": ("chipfarm_webhook_events_total",
                       "Evolution webhook deliveries by event and outcome: at the door accepted (stored), "
                       "processed (a state event, applied), duplicate, unknown_instance, ignored; a stored message "
                       "event counts again as processed or error when the drain applies it.", ("event", "outcome")),
    "task_failures": ("chipfarm_task_failures_total", "Celery task failures by task.", ("task",)),
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _sample(name: str, value: float | int, **labels: str) -> str:
    text = ",".join(f'{key}="{_escape(str(val))}"' for key, val in labels.items())
    number = f"{value:.6g}" if isinstance(value, float) else str(value)
    return f"{name}{{{text}}} {number}" if text else f"{name} {number}"


def _family(lines: list[str], name: str, kind: str, help_text: str) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]


def _pool_gauges(lines: list[str]) -> None:
    now = timezone.now()
    by_state = dict(Chip.objects.order_by().values_list("status").annotate(n=Count("id")))
    _family(lines, "chipfarm_chips", "gauge", "Chips per lifecycle state.")
    lines += [_sample("chipfarm_chips", by_state.get(state, 0), state=state) for state in Chip.Status.values]

    banned = ChipTransition.objects.filter(target=Chip.Status.BANNED, created_at__gte=now - timedelta(days=7)).count()
    _family(lines, "chipfarm_chips_banned_7d", "gauge", "Chips banned in the last 7 days.")
    lines.append(_sample("chipfarm_chips_banned_7d", banned))

    warming = Chip.objects.order_by().filter(status=Chip.Status.WARMING)
    by_phase = dict(warming.values_list("warming_phase").annotate(n=Count("id")))
    _family(lines, "chipfarm_warming_chips", "gauge", "Warming chips per warming phase.")
    lines += [_sample("chipfarm_warming_chips", by_phase.get(phase, 0), phase=phase)
              for phase in WarmingPhase.values]
    elapsed = ExpressionWrapper(Value(now) - F("warming_started_at"), output_field=DurationField())
    average = warming.filter(warming_started_at__isnull=False).aggregate(avg=Avg(elapsed))["avg"]
    _family(lines, "chipfarm_warming_days_avg", "gauge", "Average days warming chips have been warming.")
    lines.append(_sample("chipfarm_warming_days_avg", round(average.total_seconds() / 86400, 3) if average else 0.0))

    from instances.inbox import backlog

    waiting, age = backlog()
    _family(lines, "chipfarm_gateway_events_pending", "gauge", "Message events stored and not applied yet.")
    lines.append(_sample("chipfarm_gateway_events_pending", waiting))
    _family(lines, "chipfarm_gateway_events_oldest_seconds", "gauge", "Age of the oldest event not applied yet.")
    lines.append(_sample("chipfarm_gateway_events_oldest_seconds", round(age, 1)))

    paused = RoutingPolicy.objects.filter(pk=1).values_list("is_paused", flat=True).first()
    _family(lines, "chipfarm_sending_paused", "gauge", "1 while the kill switch stops all sending.")
    lines.append(_sample("chipfarm_sending_paused", int(bool(paused))))


def _brain_gauges(lines: list[str]) -> None:
    """The pool brain: production chips per early-warning level, and the send circuits (from Redis: only the chips
    whose circuit is not plainly closed are read, whatever the pool's size)."""
    from chipfarm.models import ChipHealth
    from instances import circuit

    production = Chip.objects.order_by().filter(status__in=Chip.PRODUCTION_STATES).count()
    levels = dict(ChipHealth.objects.order_by().filter(chip__status__in=Chip.PRODUCTION_STATES)
                  .values_list("level").annotate(n=Count("pk")))
    levels[ChipHealth.Level.OK] = production - sum(n for level, n in levels.items() if level != ChipHealth.Level.OK)
    _family(lines, "chipfarm_chip_health", "gauge", "Production chips per early-warning level (ok, watch, rest, stop).")
    lines += [_sample("chipfarm_chip_health", levels.get(level, 0), level=level) for level in ChipHealth.Level.values]

    readable = 1
    try:
        states = circuit.circuit_states()
    except Exception:  # Redis down: routing fails open; chipfarm_circuits_up says the figures are unknown
        states, readable = {}, 0
    by_state = {name: sum(1 for s in states.values() if s.state == name) for name in (circuit.OPEN, circuit.HALF_OPEN)}
    _family(lines, "chipfarm_circuits", "gauge", "Chips whose send circuit is open or half-open (the rest: closed).")
    lines += [_sample("chipfarm_circuits", n, state=name) for name, n in by_state.items()]
    _family(lines, "chipfarm_circuit_state", "gauge",
            "1 per chip whose send circuit is not closed, labelled with its state (no traffic while open).")
    lines += [_sample("chipfarm_circuit_state", 1, chip_id=str(chip_id), state=s.state)
              for chip_id, s in sorted(states.items()) if s.state != circuit.CLOSED]
    _family(lines, "chipfarm_circuit_failures", "gauge", "Consecutive send failures per chip that has any.")
    lines += [_sample("chipfarm_circuit_failures", s.failures, chip_id=str(chip_id))
              for chip_id, s in sorted(states.items()) if s.failures]
    _family(lines, "chipfarm_circuits_up", "gauge", "1 when the send circuits could be read from Redis.")
    lines.append(_sample("chipfarm_circuits_up", readable))


def _counters(lines: list[str]) -> None:
    readable = 1
    for metric, (name, help_text, label_names) in COUNTERS.items():
        values: dict[str, int] = {}
        if readable:  # after one failure the others are not tried (each could wait a socket timeout)
            try:
                values = counters.read(metric)
            except Exception:  # Redis down: the pool gauges still answer; chipfarm_counters_up says so
                readable = 0
        _family(lines, name, "counter", help_text)
        for field, total in sorted(values.items()):
            parts = field.split(counters.SEPARATOR, len(label_names) - 1)
            parts += [""] * (len(label_names) - len(parts))
            lines.append(_sample(name, total, **dict(zip(label_names, parts, strict=True))))
    _family(lines, "chipfarm_counters_up", "gauge", "1 when the Redis counters above could be read.")
    lines.append(_sample("chipfarm_counters_up", readable))


def render() -> str:
    lines: list[str] = []
    _pool_gauges(lines)
    _brain_gauges(lines)
    _counters(lines)
    return "\n".join(lines) + "\n"


def _authorized(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return True
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text: chips per state, bans in 7 days, warming progress, early-warning levels, send circuits,
    route/webhook/task counters."""
    if not _authorized(request):
        return HttpResponse("A valid Authorization: Bearer <METRICS_TOKEN> header is required.\n", status=401,
                            content_type="text/plain; charset=utf-8", headers={"WWW-Authenticate": "Bearer"})
    response = HttpResponse(render(), content_type=CONTENT_TYPE)
    response["Cache-Control"] = "no-store"
    return response
