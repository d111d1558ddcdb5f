"""The trust score is a pure function with monotonic properties (generated histories)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from warmer.trust import TrustInputs, trust_score

histories = st.builds(
    TrustInputs,
    age_days=st.floats(min_value=0, max_value=60, allow_nan=False),
    phase_progress=st.floats(min_value=0, max_value=1, allow_nan=False),
    sent=st.integers(min_value=0, max_value=2000),
    received=st.integers(min_value=0, max_value=2000),
    failures=st.integers(min_value=0, max_value=2000),
    disconnects=st.integers(min_value=0, max_value=20),
    restrictions=st.integers(min_value=0, max_value=5),
)


def _with(inputs: TrustInputs, **changes) -> TrustInputs:
    return TrustInputs(**{**inputs.__dict__, **changes})


@given(histories, st.integers(min_value=1, max_value=500))
def test_more_failures_never_raise_it(inputs, extra):
    failures = min(inputs.failures + extra, max(inputs.sent, inputs.failures + extra))
    assert trust_score(_with(inputs, failures=failures)).score <= trust_score(inputs).score


@given(histories, st.integers(min_value=1, max_value=10))
def test_more_disconnects_or_restrictions_never_raise_it(inputs, extra):
    base = trust_score(inputs).score
    assert trust_score(_with(inputs, disconnects=inputs.disconnects + extra)).score <= base
    assert trust_score(_with(inputs, restrictions=inputs.restrictions + extra)).score <= base


@given(histories, st.floats(min_value=0, max_value=30, allow_nan=False), st.floats(min_value=0, max_value=1),
       st.integers(min_value=0, max_value=500))
def test_a_clean_history_only_raises_it(inputs, more_days, more_progress, more_replies):
    clean = _with(inputs, failures=0, disconnects=0, restrictions=0)
    later = _with(clean, age_days=clean.age_days + more_days,
                  phase_progress=min(1.0, clean.phase_progress + more_progress),
                  received=clean.received + more_replies)
    assert trust_score(later).score >= trust_score(clean).score


@given(histories)
def test_bounded_and_broken_down(inputs):
    result = trust_score(inputs)
    assert 0 <= result.score <= 100
    assert set(result.components) == {"age", "progress", "replies", "delivery", "disconnects", "restrictions"}


def test_a_clean_ramp_reaches_100_and_20_percent_failures_stay_below_85():
    clean = TrustInputs(age_days=21, phase_progress=1, sent=300, received=300, failures=0, disconnects=0,
                        restrictions=0)
    assert trust_score(clean).score == 100
    assert trust_score(_with(clean, failures=60)).score < 85
    assert trust_score(_with(clean, disconnects=1)).score == 95
