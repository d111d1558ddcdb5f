"""chips.client.post_message against FakeSlack on loopback: delivery, Slack's error strings, retry hints."""

from __future__ import annotations

import httpx
import pytest

from chips.client import SlackError, post_message
from sandbox.server import FakeServer, free_port
from sandbox.slack import FakeSlack


@pytest.fixture(scope="module")
def fake_server():
    fake = FakeSlack()
    with FakeServer(fake.app) as server:
        yield fake, server


@pytest.fixture
def fake(fake_server):
    fake_server[0].reset()
    return fake_server[0]


@pytest.fixture
def url(fake_server) -> str:
    return fake_server[1].url


def test_posts_text_and_blocks_to_several_webhooks(fake, url):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "*chip banned*"}}]
    post_message(text="chip +5511999990001 banned", blocks=blocks, webhook_url=f"{url}/alerts", timeout=2.0)
    post_message(text="pool refilled", webhook_url=f"{url}/operations", timeout=2.0)
    assert fake.messages == [
        ("/alerts", {"text": "chip +5511999990001 banned", "blocks": blocks}),
        ("/operations", {"text": "pool refilled"}),
    ]
    assert fake.messages[0].path == "/alerts"
    assert fake.messages_to("/operations") == [{"text": "pool refilled"}]


def test_uses_settings_by_default(settings, fake, url):
    settings.SLACK_WEBHOOK_URL = f"{url}/services/T000/B000/XXXX"
    post_message(text="hello")
    assert fake.messages_to("/services/T000/B000/XXXX") == [{"text": "hello"}]


def test_missing_webhook_url_is_a_configuration_error(settings):
    settings.SLACK_WEBHOOK_URL = ""
    with pytest.raises(SlackError) as exc:
        post_message(text="hello")
    assert exc.value.status_code is None and not exc.value.retryable


def test_rate_limited_carries_retry_after(fake, url):
    fake.rate_limit_next(1, retry_after=7)
    with pytest.raises(SlackError) as exc:
        post_message(text="x", webhook_url=f"{url}/alerts", timeout=2.0)
    err = exc.value
    assert (err.status_code, err.error, err.retryable, err.retry_after) == (429, "rate_limited", True, 7.0)
    post_message(text="x", webhook_url=f"{url}/alerts", timeout=2.0)  # the next one goes through
    assert len(fake.messages) == 1


def test_server_errors_are_retryable(fake, url):
    fake.fail_next(2, status=503)
    for _ in range(2):
        with pytest.raises(SlackError) as exc:
            post_message(text="x", webhook_url=f"{url}/alerts", timeout=2.0)
        assert exc.value.status_code == 503 and exc.value.retryable and exc.value.retry_after is None
    assert fake.messages == []


@pytest.mark.parametrize(("status", "error"), [(403, "action_prohibited"), (404, "no_service"),
                                               (410, "channel_is_archived")])
def test_client_errors_are_not_retryable(fake, url, status, error):
    fake.fail_next(1, status=status)
    with pytest.raises(SlackError) as exc:
        post_message(text="x", webhook_url=f"{url}/alerts", timeout=2.0)
    assert (exc.value.status_code, exc.value.error, exc.value.retryable) == (status, error, False)


def test_invalid_payload(fake, url):
    with pytest.raises(SlackError) as exc:
        post_message(text="", webhook_url=f"{url}/alerts", timeout=2.0)
    assert (exc.value.status_code, exc.value.error, exc.value.retryable) == (400, "invalid_payload", False)


def test_timeout_is_retryable(fake, url):
    fake.set_latency(0.6)
    with pytest.raises(SlackError) as exc:
        post_message(text="x", webhook_url=f"{url}/alerts", timeout=0.2)
    assert exc.value.retryable and exc.value.status_code is None


def test_unreachable_is_retryable():
    with pytest.raises(SlackError) as exc:
        post_message(text="x", webhook_url=f"http://127.0.0.1:{free_port()}/alerts", timeout=1.0)
    assert exc.value.retryable and exc.value.status_code is None


def test_http_controls(fake, url):
    with httpx.Client(base_url=url, timeout=5.0) as http:
        assert http.post("/__fake__/rate-limit-next", json={"n": 1, "retry_after": 2.5}).status_code == 200
        response = http.post("/alerts", json={"text": "x"})
        assert (response.status_code, response.text, response.headers["retry-after"]) == (429, "rate_limited", "2.5")
        assert http.post("/__fake__/fail-next", json={"n": 1, "status": 500}).status_code == 200
        assert http.post("/alerts", json={"text": "x"}).status_code == 500
        ok = http.post("/alerts", json={"text": "y"})
        assert (ok.status_code, ok.text) == (200, "ok")
        assert http.get("/__fake__/messages").json() == {"messages": [{"path": "/alerts", "json": {"text": "y"}}]}
        assert http.post("/__fake__/latency", json={"seconds": 0}).status_code == 200
        assert http.post("/__fake__/reset").status_code == 200
        assert fake.messages == []
        assert http.post("/__fake__/nope").status_code == 404
