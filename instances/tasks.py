"""Celery entry points for instances: take ids, call one service."""

from __future__ import annotations

from celery import shared_task

from instances.health import instances_check


@shared_task(name="instances.check_instances", acks_late=True, ignore_result=True,
             soft_time_limit=50, time_limit=55)
def check_instances() -> dict:
    """Every minute: reconcile every instance with the gateway (idempotent)."""
    result = instances_check()
    return {"checked": result.checked, "changed": result.changed, "unknown": result.unknown, "gone": result.gone,
            "finals": result.finals}


@shared_task(name="instances.reset_counters", ignore_result=True)
def reset_counters() -> int:
    """Zero usage counters of windows that are over (cosmetic: reservations already ignore old windows)."""
    from instances.bindings import counters_reset

    return counters_reset()


@shared_task(name="instances.restart_instance", acks_late=True, ignore_result=True, soft_time_limit=30,
             time_limit=40)
def restart_instance(instance_id: int) -> str:
    """A send found the session's socket dead: ask the gateway to restart it (idempotent)."""
    from instances.maintenance import instance_restart

    return instance_restart(instance_id=instance_id)


@shared_task(name="instances.heal_webhooks", acks_late=True, ignore_result=True, soft_time_limit=600,
             time_limit=660)
def heal_webhooks() -> dict:
    """Daily (and from the admin): set every instance's webhook again where it drifted from ours."""
    from instances.maintenance import webhooks_heal

    result = webhooks_heal()
    return {"checked": result.checked, "healed": len(result.healed), "failed": len(result.failed)}


@shared_task(name="instances.apply_gateway_events", acks_late=True, ignore_result=True, soft_time_limit=50,
             time_limit=55)
def apply_gateway_events(shard: int) -> dict:
    """Kicked by the webhook: apply one shard's stored message events, in order (idempotent)."""
    from instances.inbox import receipts_drain

    report = receipts_drain(int(shard))
    return {"applied": report.applied, "failed": report.failed, "busy": report.busy, "more": report.more}


@shared_task(name="instances.sweep_gateway_events", ignore_result=True)
def sweep_gateway_events() -> list[int]:
    """Every 15 s: kick the drain of any shard whose events waited too long (a lost kick, a dead worker)."""
    from instances.inbox import receipts_sweep

    return receipts_sweep()


@shared_task(name="instances.prune_receipts", ignore_result=True)
def prune_receipts() -> int:
    """Daily: drop webhook receipts past their retention."""
    from instances.maintenance import receipts_prune

    return receipts_prune()


@shared_task(name="instances.confirm_opt_out", acks_late=True, ignore_result=True, soft_time_limit=30, time_limit=40)
def confirm_opt_out(message_id: int) -> str:
    """The optional opt-out confirmation, once (its idempotency key is the triggering message)."""
    from instances.optouts import opt_out_confirm

    return opt_out_confirm(message_id=message_id)
