"""Smoke test of bench/pool_simulation.py: a tiny pool for two simulated days, brain off and on, through the real
router, cycle, webhooks and drain (the bench's own `simulate`); the figures are there and no cap is exceeded."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "bench"))

from _pool_run import Sizes, simulate  # noqa: E402
from _pool_world import World  # noqa: E402
from pool_simulation import table  # noqa: E402

TINY = Sizes(production_min=2, ready=1, warming=1, prospecting=4, follow_ups=8)


def test_the_same_seed_gives_the_nth_chip_the_same_fate():
    at = datetime(2026, 3, 2, tzinfo=UTC)
    one, two = World(7), World(7)
    a = [one.meet(pk, f"chip-{pk}", at) for pk in (1, 2, 3)]
    b = [two.meet(pk, f"other-{pk}", at) for pk in (10, 20, 30)]  # other ids, same order: same fates
    assert [(f.growth, f.ban_at, f.threshold, f.random_ban_at) for f in a] == \
        [(f.growth, f.ban_at, f.threshold, f.random_ban_at) for f in b]
    assert World(8).meet(1, "chip-1", at).threshold != a[0].threshold


@pytest.mark.django_db
@pytest.mark.parametrize("brain", [False, True], ids=["brain-off", "brain-on"])
def test_two_days_of_a_tiny_pool_without_a_cap_violation(brain):
    result = simulate(days=2, seed=3, brain=brain, sizes=TINY, flush=False)

    assert result.brain is brain
    assert result.violations == 0, result.violation_notes
    assert result.cycles == 2 * 17  # 13 business hours (08:00-20:00) + 00:00, 03:00, 06:00, 22:00
    assert result.demanded >= 2 * (TINY.prospecting + TINY.follow_ups)
    # Every message the company asked for was refused, failed at the gateway, or accepted.
    assert result.demanded == result.sent + result.failed_gateway + result.refused_total
    assert result.sent > 0 and result.delivered > 0
    assert 0 <= result.days_short <= 2
    assert (result.ready_min, result.warmup_buffer) >= (TINY.ready, TINY.warming)


def test_the_table_puts_both_runs_side_by_side():
    from _pool_run import RunResult

    off, on = RunResult(brain=False, days=2, banned=3), RunResult(brain=True, days=2, banned=1)
    lines = table(off, on, TINY, 3, 1.0)
    assert "brain off" in lines[2] and "brain on" in lines[2]
    for metric in ("days with production below production_min", "chips banned", "chips rested before a ban",
                   "messages refused", "cap violations"):
        assert any(line.startswith(metric) for line in lines), metric
    banned = next(line for line in lines if line.startswith("chips banned"))
    assert banned.split("|")[1].strip() == "3 (0)" and banned.split("|")[2].strip() == "1 (0)"
