"""Two writers racing on one chip from two database connections: exactly one wins."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from chips.models import Chip, ChipTransition
from chips.services import Actor, chip_transition
from common.exceptions import TransitionConflict
from tests.factories import chip_in_state

pytestmark = pytest.mark.django_db(transaction=True)


def _race(chip_id: int, transitions: tuple[str, str]) -> list:
    """Both threads read the chip, wait for each other, then both try their transition."""
    barrier = threading.Barrier(2)
    outcomes: list = [None, None]

    def worker(i: int) -> None:
        try:
            chip = Chip.objects.get(pk=chip_id)  # each thread has its own connection
            barrier.wait(timeout=10)
            chip_transition(chip=chip, transition=transitions[i], actor=Actor.task(f"t{i}"))
            outcomes[i] = "won"
        except Exception as exc:
            outcomes[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return outcomes


@pytest.mark.parametrize("transitions", [("ban", "ban"), ("ban", "retire"), ("cool_down", "ban")])
def test_two_concurrent_transitions_one_wins_one_conflicts(transitions):
    chip = chip_in_state(status=Chip.Status.ACTIVE)
    history_before = ChipTransition.objects.filter(chip=chip).count()

    outcomes = _race(chip.pk, transitions)

    assert outcomes.count("won") == 1, outcomes
    loser = next(o for o in outcomes if o != "won")
    assert isinstance(loser, TransitionConflict), loser
    assert loser.status_code == 409
    winner = transitions[outcomes.index("won")]
    chip.refresh_from_db()
    assert chip.transitions.count() == history_before + 1
    assert chip.transitions.first().transition == winner
    assert loser.extra["state"] == chip.status
