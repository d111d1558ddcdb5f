"""Schemathesis against /api/openapi.json, in process (WSGI), on a seeded pool.

Every operation in the schema gets schemathesis' coverage cases (boundaries, missing and wrong-typed fields,
huge numbers, odd strings, requests without the key, unsupported methods) plus Hypothesis-generated positive
and negative cases. Every response must:

- not be a server error: a 5xx only where the operation documents it (the routing refusals, 503, and a send
  Evolution refused, 502), and never the catch-all 500;
- use a documented status code and the documented content type, and match the documented body schema.

The routing operations then run once more, on valid requests only, with the pool paused, so their 503 answers
are checked too.

Failures are collected rather than shrunk: one run reports every distinct problem with a curl line that
reproduces it. The run is repeatable: fixed seed, derandomized Hypothesis, no example database. (Hypothesis
also draws constants from the project modules already imported, so `pytest tests/fuzz` alone and the whole
suite generate somewhat different cases; each of them is the same from run to run.)
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import hypothesis
import pytest
import schemathesis
import time_machine
from django.core.handlers.wsgi import WSGIHandler
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.generation import GenerationMode
from schemathesis.generation.hypothesis.builder import HypothesisTestConfig, HypothesisTestMode, create_test
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from chipfarm.models import ApiKey
from chips.models import Chip
from chips.services import OPERATOR_TRANSITIONS
from instances.models import ChipCapacity
from instances.optouts import suppression_add
from instances.services import instance_register, sending_pause
from outbox.services import endpoint_create
from tests.factories import chip_in_state

pytestmark = [pytest.mark.fuzz, pytest.mark.django_db]

SEED = 20261124
# Hypothesis examples per operation; schemathesis' coverage cases come on top.
MAX_EXAMPLES = 150
PAUSED_MAX_EXAMPLES = 60
MIN_TOTAL_CASES = 500
# A Tuesday, 12:00 in São Paulo: inside business hours, so routing and sending really happen.
BUSINESS_TIME = datetime(2026, 11, 24, 15, 0, tzinfo=UTC)
S = Chip.Status
SEEDED_STATES = [S.PROVISIONING, S.PENDING, S.ACTIVATING, S.WARMING, S.READY, S.ACTIVE, S.ACTIVE, S.ACTIVE,
                 S.COOLING, S.DEGRADED, S.BANNED, S.RETIRED]
ROUTING_OPERATIONS = {"POST /api/v1/route", "POST /api/v1/messages"}

TRANSITION_NAMES = st.sampled_from(sorted(OPERATOR_TRANSITIONS))
# Brazilian mobile numbers in the shapes people type them; few enough that contacts repeat and bindings stick.
CONSUMER_URLS = st.builds("http://127.0.0.1:{}/{}".format, st.integers(1, 65535), st.text("abc/-_", max_size=20))
PHONE_FORMATS = st.sampled_from(["+55{ddd}9{a}{b:04d}", "({ddd}) 9{a}-{b:04d}", "{ddd}9{a}{b:04d}"])


def _phones(area_codes: list[str], numbers: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.builds(lambda ddd, n, fmt: fmt.format(ddd=ddd, a=n // 10000, b=n % 10000),
                     st.sampled_from(area_codes), numbers, PHONE_FORMATS)


PHONES = _phones(["11", "21", "31"], st.integers(88887700, 88887740))
# Numbers the company adds as its own (POST /api/v1/chips): none of them is a seeded chip's or a contact's.
OWN_PHONES = _phones(["51"], st.integers(88887700, 88887999))
# Contacts opted out before the run, for DELETE /api/v1/suppressions/{contact} to lift (not routed to).
SUPPRESSED = [f"+55419{n // 10000}{n % 10000:04d}" for n in range(88887700, 88887730)]
SUPPRESSED_PATHS = _phones(["41"], st.integers(88887700, 88887729))


def documented_server_error(ctx, response, case):
    """`not_a_server_error`, except for a 5xx the operation documents (never the catch-all 500)."""
    documented = case.operation.definition.raw.get("responses", {})
    if str(response.status_code) in documented and response.status_code != 500:
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    documented_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture
def restore_global_random():
    state = random.getstate()
    yield
    random.setstate(state)


@pytest.fixture
def keep_test_connection():
    """As in Django's test client: the test's transaction must outlive each request's start and finish."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _seed_pool(fake_evolution) -> list[int]:
    """A chip in every state; the active ones can send, but Evolution does not know the first one (502)."""
    chips = [chip_in_state(status=status) for status in SEEDED_STATES]
    active = [chip for chip in chips if chip.status == S.ACTIVE]
    for chip in active:
        instance_register(chip=chip)
        ChipCapacity.objects.create(chip=chip, max_per_hour=1000, max_per_day=1000, max_new_contacts_per_day=1000)
    fake_evolution.add_instances([chip.instance_name for chip in active[1:]], state="open")
    return [chip.pk for chip in chips]


def _is_str(value, max_length: int) -> bool:
    """A string the schema accepts: replacing it by another valid one keeps a negative case negative."""
    return isinstance(value, str) and 1 <= len(value) <= max_length


def _seed_endpoints() -> dict[str, list[int]]:
    """Consumer endpoints on loopback (the test settings allow it): some for DELETE to remove, the others for every
    other operation. Nothing is delivered (no commit, no sweep)."""
    ids = [endpoint_create(url=f"http://127.0.0.1:9/hooks/{n}").pk for n in range(6)]
    return {"delete": ids[:3], "other": ids[3:]}


def _seed_suppressions() -> None:
    for contact in SUPPRESSED:
        suppression_add(contact=contact, source="api", by="fuzz", reason="seeded")


def _steer_to_seeded_data(schema, chip_ids: list[int], endpoint_ids: dict[str, list[int]]) -> None:
    """Many chip and endpoint ids, transition names, contacts, numbers and URLs drawn are real ones, so the happy
    paths run too."""

    @schema.hook
    def flatmap_path_parameters(context, path_parameters):
        method = context.operation.method.lower() if context.operation else ""
        if isinstance((path_parameters or {}).get("contact"), str):
            # A contact in a path: an opted-out one for DELETE (each lifted once, then 404), any number for GET.
            contacts = SUPPRESSED_PATHS if method == "delete" else PHONES
            return st.one_of(st.just(path_parameters), contacts.map(lambda c: {**path_parameters, "contact": c}))
        seeded = {"chip_id": chip_ids, "endpoint_id": endpoint_ids["delete" if method == "delete" else "other"]}
        for name, ids in seeded.items():
            value = (path_parameters or {}).get(name)
            if isinstance(value, int) and not isinstance(value, bool):
                return st.one_of(st.just(path_parameters),
                                 st.sampled_from(ids).map(lambda pk, name=name: {**path_parameters, name: pk}))
        return st.just(path_parameters)

    @schema.hook
    def flatmap_body(context, body):
        if not isinstance(body, dict):
            return st.just(body)
        if _is_str(body.get("transition"), 40):
            return st.one_of(st.just(body), TRANSITION_NAMES.map(lambda t: {**body, "transition": t}))
        if _is_str(body.get("contact"), 40):
            # Most drawn contacts are real numbers: every other field of a send must be valid too to get through.
            return st.one_of(PHONES.map(lambda phone: {**body, "contact": phone}), st.just(body))
        if _is_str(body.get("url"), 2000):
            return st.one_of(st.just(body), CONSUMER_URLS.map(lambda url: {**body, "url": url}))
        if _is_str(body.get("phone"), 40):  # an own number: a valid one the pool does not have yet, mostly
            return st.one_of(OWN_PHONES.map(lambda phone: {**body, "phone": phone}), st.just(body))
        return st.just(body)


class Fuzzer:
    def __init__(self, raw_key: str, chip_ids: list[int], endpoint_ids: dict[str, list[int]]) -> None:
        config = schemathesis.Config(seed=SEED)
        self.schema = schemathesis.openapi.from_wsgi("/api/openapi.json", WSGIHandler(), config=config)
        self.project = self.schema.config
        self.project.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
                                       max_examples=MAX_EXAMPLES, deterministic=True, database="none")
        _steer_to_seeded_data(self.schema, chip_ids, endpoint_ids)
        self.operations = [result.ok() for result in self.schema.get_all_operations()]
        self.headers = {"X-API-Key": raw_key}
        self.cases: Counter[str] = Counter()
        self.statuses: dict[str, Counter[int]] = {}
        self.failures: dict[tuple, str] = {}

    def run_case(self, case) -> None:
        label = case.operation.label
        self.cases[label] += 1
        try:
            response = case.call_and_validate(headers=self.headers, checks=CHECKS)
        except FailureGroup as group:
            # One report per operation and kind of failure: the first case that showed it, with its curl line.
            key = (label, tuple(sorted(failure.title for failure in group.exceptions)))
            self.failures.setdefault(key, f"{label}: {group}")
            return
        self.statuses.setdefault(label, Counter())[response.status_code] += 1

    def fuzz(self, operation, *, max_examples: int = MAX_EXAMPLES) -> None:
        # Schemathesis also draws from the global `random` while it builds the coverage cases (outside Hypothesis'
        # seeding): seeded per operation, they do not depend on how much of it earlier tests used.
        random.seed(f"{SEED}:{operation.label}")
        settings = self.project.get_hypothesis_settings(operation=operation, phase="fuzzing", apply_ci_profile=False)
        test = create_test(
            operation=operation,
            test_func=self.run_case,
            config=HypothesisTestConfig(
                project=self.project,
                modes=[HypothesisTestMode.EXAMPLES, HypothesisTestMode.COVERAGE, HypothesisTestMode.FUZZING],
                # too_slow depends on the machine's load; every other health check is deterministic and stays on.
                settings=hypothesis.settings(settings, max_examples=max_examples,
                                             suppress_health_check=[hypothesis.HealthCheck.too_slow]),
                apply_ci_profile=False,
                seed=SEED,
            ),
        )
        test()

    def report(self) -> str:
        lines = [f"schemathesis: {sum(self.cases.values())} cases"]
        for operation in self.operations:
            label = operation.label
            statuses = dict(sorted(self.statuses.get(label, Counter()).items()))
            lines.append(f"  {label}: {self.cases[label]} cases, statuses {statuses}")
        return "\n".join(lines)


def test_openapi_fuzz(fake_evolution, settings, keep_test_connection, restore_global_random, capsys):
    settings.MAX_CHIPS_ACTIVE = 1000
    _key, raw_key = ApiKey.issue(name="fuzz")
    with time_machine.travel(BUSINESS_TIME, tick=True):
        _seed_suppressions()
        fuzzer = Fuzzer(raw_key, _seed_pool(fake_evolution), _seed_endpoints())
        for operation in fuzzer.operations:
            fuzzer.fuzz(operation)
        # Paused, a valid request is refused with a documented 503: valid requests only, so most get that far.
        sending_pause(reason="fuzz: refusals", by="fuzz")
        fuzzer.project.generation.update(modes=[GenerationMode.POSITIVE])
        for operation in fuzzer.operations:
            if operation.label in ROUTING_OPERATIONS:
                fuzzer.fuzz(operation, max_examples=PAUSED_MAX_EXAMPLES)

    report = fuzzer.report()
    with capsys.disabled():
        print(f"\n{report}")
    assert not fuzzer.failures, "\n\n".join(fuzzer.failures.values())
    missed = {operation.label for operation in fuzzer.operations} - set(fuzzer.cases)
    assert not missed, f"operations never exercised: {missed}"
    assert sum(fuzzer.cases.values()) >= MIN_TOTAL_CASES, report
    # The happy paths and the documented refusals were reached, not only the validation errors.
    assert {200, 503} <= set(fuzzer.statuses["POST /api/v1/route"]), report
    assert {201, 502, 503} <= set(fuzzer.statuses["POST /api/v1/messages"]), report
    assert 201 in fuzzer.statuses["POST /api/v1/endpoints"], report
    assert 200 in fuzzer.statuses["PATCH /api/v1/endpoints/{endpoint_id}"], report
    assert 202 in fuzzer.statuses["POST /api/v1/endpoints/{endpoint_id}/test"], report
    assert 201 in fuzzer.statuses["POST /api/v1/chips"], report
    assert 200 in fuzzer.statuses["GET /api/v1/contacts/{contact}"], report
    assert 204 in fuzzer.statuses["DELETE /api/v1/suppressions/{contact}"], report
