"""Reads for chips."""

from __future__ import annotations

from django.db.models import Prefetch

from chips.exceptions import NotFound
from chips.models import Chip, ChipTransition

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
