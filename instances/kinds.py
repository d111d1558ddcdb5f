"""Message kinds (W2 5/7): what a message is decides which chips may carry it.

| kind        | what it is                             | trust >= (KIND_MIN_TRUST) | share of the hourly cap    |
|-------------|----------------------------------------|---------------------------|----------------------------|
| prospecting | a contact who never wrote to us (cold) | 80                        | 25 % (5 an hour of 20)     |
| follow_up   | the default: a contact we talk to      | 60                        | 50 % (10 an hour)          |
| reply       | the contact wrote within the last 24 h | 40                        | 100 % (20 an hour)         |

The shares are KIND_HOURLY_SHARE.
Each kind counts its own messages in the chip's current hour (`ChipCapacity.hour_<kind>`) and stops at its share;
the hard caps (`instances.caps`) hold for the sum of all kinds. Because the proactive kinds stop at 25 % and 50 %,
a quarter of every hour stays for replies however busy the chip is.

A reply on the contact's own chip (its current binding) while that chip is in production (active, or cooling: a
resting chip still answers the people who write to it) is always allowed: neither the trust minimum, nor the reply
share, nor a rest or a reach-out restriction refuse it. The hard caps and an open circuit do (DESIGN §4: caps are
never exceeded; a chip whose sends fail cannot answer anyway), and then the reply moves like any message.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings
from django.core.signals import setting_changed

PROSPECTING, FOLLOW_UP, REPLY = "prospecting", "follow_up", "reply"
MESSAGE_KINDS: tuple[str, ...] = (PROSPECTING, FOLLOW_UP, REPLY)
DEFAULT_KIND = FOLLOW_UP


@dataclass(frozen=True)
class KindPolicy:
    kind: str
    min_trust: int
    hourly_share: int  # percent of the chip's hourly cap

    def hour_cap(self, per_hour: int) -> int:
        """The kind's messages per hour on a chip whose hourly cap is `per_hour` (the SQL twin: `caps`)."""
        return per_hour * self.hourly_share // 100


def kind_policy(kind: str) -> KindPolicy:
    policy = _policies.get(kind)
    if policy is None:  # read from the settings once (every route decision asks), again when a setting changes
        policy = _policies[kind] = KindPolicy(kind=kind, min_trust=settings.KIND_MIN_TRUST[kind],
                                              hourly_share=settings.KIND_HOURLY_SHARE[kind])
    return policy


_policies: dict[str, KindPolicy] = {}
setting_changed.connect(lambda **_: _policies.clear(), weak=False, dispatch_uid="kinds.kind_policy")


def kind_policies() -> dict[str, KindPolicy]:
    return {kind: kind_policy(kind) for kind in MESSAGE_KINDS}
