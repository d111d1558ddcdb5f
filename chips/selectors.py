"""Reads for chips."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Prefetch

from chips.models import Chip, ChipTransition
from common.exceptions import NotFound

HISTORY_LIMIT = 100


def chip_list(*, status: str | None = None):
    qs = Chip.objects.all().order_by("id")
    if status:
        qs = qs.filter(status=status)
    return qs


def chip_detail(*, chip_id: int) -> Chip:
    """The chip with its latest history (newest first) prefetched: two queries."""
    history = ChipTransition.objects.order_by("-created_at", "-id")
    chip = Chip.objects.prefetch_related(Prefetch("transitions", queryset=history)).filter(pk=chip_id).first()
    if chip is None:
        raise NotFound(f"Chip {chip_id} does not exist.")
    return chip


# Facts about a chip that higher apps own (its release, its session): they register a provider at start-up, so
# the chip API can show them without `chips` importing upward (DESIGN §11).
_DETAIL_SECTIONS: dict[str, Callable[[Chip], Any]] = {}


def register_detail_section(name: str, provider: Callable[[Chip], Any]) -> None:
    """Called by a higher app's AppConfig.ready(): `provider(chip)` fills the detail's `name` (None: nothing)."""
    _DETAIL_SECTIONS[name] = provider


def chip_detail_sections(chip: Chip) -> dict[str, Any]:
    return {name: provider(chip) for name, provider in _DETAIL_SECTIONS.items()}
