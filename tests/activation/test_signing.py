"""Svix / Standard Webhooks signatures: the reference test vector, and every way a delivery is refused."""

from __future__ import annotations

import time

import pytest

from activation.signing import SignatureError, decode_secret, sign, signed_headers, verify

SECRET = "whsec_ZGV2LXNhbHZ5LXdlYmhvb2stc2VjcmV0"
OTHER_SECRET = "whsec_b3RoZXItc2VjcmV0LW5vdC1zYWx2eXM="
BODY = '{"type":"sms.received","data":{"message":"Seu código é 123456"}}'.encode()


def test_sign_matches_the_svix_reference_vector():
    # The example from the svix / Standard Webhooks libraries' own tests.
    assert sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330,
                b'{"test": 2432232314}') == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_prefix_is_optional_and_only_a_label():
    assert decode_secret(SECRET) == b"dev-salvy-webhook-secret"
    assert sign(SECRET, "msg_1", 1, b"x") == sign(SECRET.removeprefix("whsec_"), "msg_1", 1, b"x")


def test_invalid_secret_is_a_configuration_error_not_a_signature_error():
    with pytest.raises(ValueError):
        decode_secret("whsec_not base64!!")


def test_verify_accepts_a_fresh_signature_with_any_header_case():
    headers = signed_headers(SECRET, "msg_1", BODY)
    verify(SECRET, headers, BODY)
    verify(SECRET, {k.title(): v for k, v in headers.items()}, BODY)


def test_verify_accepts_standard_webhooks_header_names():
    headers = signed_headers(SECRET, "msg_1", BODY)
    verify(SECRET, {k.replace("svix-", "webhook-"): v for k, v in headers.items()}, BODY)


def test_verify_accepts_any_of_several_signatures():
    ts = int(time.time())
    good = sign(SECRET, "msg_1", ts, BODY)
    bad = sign(OTHER_SECRET, "msg_1", ts, BODY)
    headers = {"svix-id": "msg_1", "svix-timestamp": str(ts), "svix-signature": f"v1a,whatever {bad} {good}"}
    verify(SECRET, headers, BODY)


def test_verify_rejects_a_tampered_body():
    headers = signed_headers(SECRET, "msg_1", BODY)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY.replace(b"123456", b"654321"))


def test_verify_rejects_a_changed_msg_id():
    headers = {**signed_headers(SECRET, "msg_1", BODY), "svix-id": "msg_2"}
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY)


def test_verify_rejects_the_wrong_secret():
    headers = signed_headers(OTHER_SECRET, "msg_1", BODY)
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY)


def test_verify_rejects_a_timestamp_older_than_five_minutes():
    now = time.time()
    old = signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) - 301)
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, old, BODY, now=now)
    # Just inside the window is fine; a custom tolerance is honoured.
    verify(SECRET, signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) - 290), BODY, now=now)
    with pytest.raises(SignatureError, match="too old"):
        verify(SECRET, signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) - 20), BODY, now=now, tolerance=10)


def test_verify_rejects_a_timestamp_from_the_future():
    now = time.time()
    with pytest.raises(SignatureError, match="future"):
        verify(SECRET, signed_headers(SECRET, "msg_1", BODY, timestamp=int(now) + 400), BODY, now=now)


@pytest.mark.parametrize("missing", ["svix-id", "svix-timestamp", "svix-signature"])
def test_verify_rejects_missing_headers(missing):
    headers = signed_headers(SECRET, "msg_1", BODY)
    del headers[missing]
    with pytest.raises(SignatureError, match=f"missing {missing}") as exc:
        verify(SECRET, headers, BODY)
    assert exc.value.reason == f"missing {missing} header"


def test_verify_rejects_a_non_numeric_timestamp_and_unversioned_signatures():
    headers = {**signed_headers(SECRET, "msg_1", BODY), "svix-timestamp": "yesterday"}
    with pytest.raises(SignatureError, match="invalid timestamp"):
        verify(SECRET, headers, BODY)
    headers = signed_headers(SECRET, "msg_1", BODY)
    headers["svix-signature"] = headers["svix-signature"].removeprefix("v1,")
    with pytest.raises(SignatureError, match="no matching signature"):
        verify(SECRET, headers, BODY)
