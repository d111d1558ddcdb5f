"""The default warming ramp (about 21 days); operators tune it in the admin (PhasePlan rows)."""

# phase, order, starts on warming day, min trust to enter, messages/day, new peers/day, reply ratio
DEFAULT_PLANS = [
    ("rest", 0, 0, 0, 6, 1, 1.0),
    ("first_contacts", 1, 2, 0, 20, 2, 0.6),
    ("growth", 2, 6, 30, 40, 3, 0.5),
    ("pre_operation", 3, 12, 55, 70, 4, 0.4),
    ("operation", 4, 18, 70, 100, 5, 0.3),
]


def ensure_default_plans(PhasePlan) -> None:  # noqa: N803 - a model class, real or historical
    """Create the missing phase rows with the defaults; existing (tuned) rows are left alone."""
    for phase, order, starts, min_trust, messages, peers, ratio in DEFAULT_PLANS:
        PhasePlan.objects.get_or_create(phase=phase, defaults=dict(
            order=order, starts_on_day=starts, min_trust=min_trust, messages_per_day=messages,
            new_peers_per_day=peers, reply_ratio=ratio))
