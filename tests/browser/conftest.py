"""A real headless Chromium (Debian's /usr/bin/chromium, never Playwright's download) for the browser tests.

`browser_page()` is called from the test body, so a machine without Chromium makes the test FAIL (not
skip, not error) with the way to fix it.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = ROOT / "test-artifacts" / "browser"
# On this closed network Chromium refuses connections unless every background service is off.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]
TIMEOUT_MS = 10_000


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def browser_page(request, monkeypatch, artifacts) -> Iterator[Callable]:
    """A factory for a page in a fresh headless Chromium (own temporary profile; English and 1280x900 unless
    `locale` (e.g. "pt-BR": the browser's language and its Accept-Language header) or `viewport` say otherwise).

    Playwright's sync API keeps an asyncio loop marked as running in this thread while it is alive, so
    Django's ORM would refuse the test's own queries (SynchronousOnlyOperation); they are allowed for this
    test only.
    """
    state: dict = {}

    def open_page(locale: str = "en-US", viewport: tuple[int, int] = (1280, 900)):
        if not CHROMIUM.exists():
            pytest.fail(f"{CHROMIUM} is missing: the browser tests need Debian's chromium. "
                        f"Run `bash scripts/install_browser.sh` (as root, or with sudo) and try again.",
                        pytrace=False)
        from playwright.sync_api import sync_playwright

        monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        state["profile"] = tempfile.mkdtemp(prefix="chipfarm-chromium-")
        state["playwright"] = sync_playwright().start()
        # Playwright refuses --user-data-dir in args: a persistent context is how a profile dir is given.
        context = state["playwright"].chromium.launch_persistent_context(
            state["profile"], executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            locale=locale, viewport={"width": viewport[0], "height": viewport[1]},
            extra_http_headers={"Accept-Language": f"{locale},{locale.split('-')[0]};q=0.9"},
        )
        state["context"] = context
        context.set_default_timeout(TIMEOUT_MS)
        page = context.pages[0] if context.pages else context.new_page()
        state["page"] = page
        return page

    yield open_page

    call = getattr(request.node, "rep_call", None)
    try:
        if "page" in state and call is not None and call.failed:
            with contextlib.suppress(Exception):  # best effort: never hide the test's own failure
                state["page"].screenshot(path=str(artifacts / f"failure-{request.node.name}.png"), full_page=True)
    finally:
        if "context" in state:
            state["context"].close()
        if "playwright" in state:
            # While Playwright runs, Django's per-context connection storage hands the test body a
            # connection of its own; close it here or it outlives the test and blocks the test database's
            # teardown ("database is being accessed by other users").
            from django.db import connections

            connections.close_all()
            state["playwright"].stop()
        if "profile" in state:
            shutil.rmtree(state["profile"], ignore_errors=True)
