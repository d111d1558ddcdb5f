"""The trust score: a pure function of what happened to a chip over a 7-day window.

    score = age + progress + replies + delivery − disconnects − restrictions, clamped to 0–100

| component    | max | how                                                                        |
|--------------|-----|----------------------------------------------------------------------------|
| age          | 20  | 20 × min(days warming or older / 21, 1)                                    |
| progress     | 20  | 20 × phase progress (0 at the first phase, 1 at the final one)            |
| replies      | 25  | 25 × min(reply ratio / 0.5, 1); reply ratio = received / sent (7 days)     |
| delivery     | 35  | 35 × (1 − min(3 × failure rate, 1)); failure rate = failures / sent        |
| disconnects  | −20 | −5 per disconnection in the window, at most −20                            |
| restrictions | −30 | −15 per WhatsApp restriction (463 timelock) in the window, at most −30     |

A chip that has sent nothing yet earns no replies and loses nothing to failures. Properties (tested
with generated histories): more failures, disconnects or restrictions never raise the score; with a
clean history, more age, progress or replies never lower it. A clean 21-day ramp reaches 100; 20 %
delivery failures cost 21 points, which keeps a chip below the ready threshold of 85.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from django.utils.translation import gettext_lazy as _

MAX_AGE_DAYS = 21
TARGET_REPLY_RATIO = 0.5
FAILURE_WEIGHT = 3.0


@dataclass(frozen=True)
class TrustInputs:
    age_days: float
    phase_progress: float   # 0..1
    sent: int
    received: int
    failures: int
    disconnects: int
    restrictions: int


@dataclass(frozen=True)
class TrustResult:
    score: int
    components: dict[str, float]
    inputs: dict[str, float]


#: Each component's name for people and its best value (the most it adds; for penalties, 0 is best and the
#: value is how far down it can go), as the table above says.
COMPONENTS: dict[str, tuple[str, float]] = {
    "age": (_("age"), 20.0),
    "progress": (_("phase progress"), 20.0),
    "replies": (_("replies"), 25.0),
    "delivery": (_("delivery"), 35.0),
    "disconnects": (_("disconnections"), -20.0),
    "restrictions": (_("restrictions"), -30.0),
}


def trust_score(inputs: TrustInputs) -> TrustResult:
    age = 20.0 * min(max(inputs.age_days, 0.0) / MAX_AGE_DAYS, 1.0)
    progress = 20.0 * min(max(inputs.phase_progress, 0.0), 1.0)
    if inputs.sent > 0:
        reply_ratio = inputs.received / inputs.sent
        failure_rate = min(inputs.failures / inputs.sent, 1.0)
    else:
        reply_ratio, failure_rate = 0.0, 1.0 if inputs.failures else 0.0
    replies = 25.0 * min(reply_ratio / TARGET_REPLY_RATIO, 1.0)
    delivery = 35.0 * (1.0 - min(FAILURE_WEIGHT * failure_rate, 1.0))
    disconnects = -min(5.0 * max(inputs.disconnects, 0), 20.0)
    restrictions = -min(15.0 * max(inputs.restrictions, 0), 30.0)
    components = {"age": age, "progress": progress, "replies": replies, "delivery": delivery,
                  "disconnects": disconnects, "restrictions": restrictions}
    total = sum(components.values())
    score = int(round(min(max(total, 0.0), 100.0)))
    return TrustResult(score=score, components={k: round(v, 2) for k, v in components.items()},
                       inputs=asdict(inputs))
