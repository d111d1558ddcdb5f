"""Tests' shared helper: apply the gateway events the webhook stored, as the drain task does in production."""

from __future__ import annotations


def drain_all() -> int:
    """Run every shard's drain (instances.inbox) until nothing is pending; how many events it applied."""
    from instances.inbox import receipts_drain, shards

    applied = 0
    for shard in range(shards()):
        report = receipts_drain(shard)
        assert not report.busy, f"shard {shard}: another drain holds its lock"
        applied += report.applied
    return applied
