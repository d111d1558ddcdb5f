"""outbox.targets: which URLs webhooks may go to, and the request pinned to the address that was checked.

DNS is the one outside system here: a resolver function stands in for it (no network beyond loopback).
"""

from __future__ import annotations

import socket

import pytest

from outbox.targets import TargetRefused, is_public, target_for


@pytest.fixture(autouse=True)
def _production_rules(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = False
    settings.WEBHOOK_ALLOWED_HOSTS = []


def dns(*addresses: str):
    """A resolver answering these addresses for any name, as getaddrinfo does."""
    def resolve(host, port, type=0):
        family = socket.AF_INET6 if any(":" in a for a in addresses) else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (a, port)) for a in addresses]
    return resolve


def no_dns(host, port, type=0):
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


@pytest.mark.parametrize("address", ["10.0.0.5", "127.0.0.1", "169.254.169.254", "192.168.1.1", "172.16.0.1",
                                     "100.64.0.1", "0.0.0.0", "224.0.0.1", "240.0.0.1", "::1", "fe80::1",
                                     "fc00::1", "::ffff:10.0.0.5"])
def test_non_public_addresses(address):
    assert not is_public(address)


@pytest.mark.parametrize("address", ["93.184.216.34", "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses(address):
    assert is_public(address)


@pytest.mark.parametrize("url", ["http://10.0.0.5/x", "http://169.254.169.254/latest/meta-data/",
                                 "http://[::1]:8000/", "https://127.0.0.1/"])
def test_address_literals_outside_the_internet_are_refused(url):
    with pytest.raises(TargetRefused, match="private, loopback"):
        target_for(url, resolve=socket.getaddrinfo)


def test_a_name_resolving_to_a_private_address_is_refused():
    with pytest.raises(TargetRefused, match=r"consumer\.example resolves .*10\.1\.2\.3"):
        target_for("https://consumer.example/hooks", resolve=dns("10.1.2.3"))
    # one bad address among good ones is enough (the client could pick it)
    with pytest.raises(TargetRefused):
        target_for("https://consumer.example/hooks", resolve=dns("93.184.216.34", "127.0.0.1"))


def test_a_name_that_does_not_resolve_is_refused():
    with pytest.raises(TargetRefused, match="does not resolve"):
        target_for("https://nowhere.example/hooks", resolve=no_dns)


@pytest.mark.parametrize("url", ["ftp://consumer.example/x", "file:///etc/passwd", "consumer.example/hooks",
                                 "http://", "gopher://127.0.0.1:6379/_FLUSHALL", "http://exa mple.com/"])
def test_only_http_and_https_urls(url):
    with pytest.raises(TargetRefused, match="valid http or https URL"):
        target_for(url, resolve=dns("93.184.216.34"))


def test_https_is_pinned_to_the_checked_address_keeping_host_and_sni():
    target = target_for("https://Consumer.example:8443/hooks?x=1", resolve=dns("93.184.216.34"))
    assert target.url == "https://93.184.216.34:8443/hooks?x=1"
    assert target.headers == {"Host": "consumer.example:8443"}
    assert target.extensions == {"sni_hostname": "consumer.example"}


def test_http_and_ipv6_are_pinned_too():
    target = target_for("http://consumer.example/hooks", resolve=dns("2606:4700:4700::1111"))
    assert target.url == "http://[2606:4700:4700::1111]/hooks"
    assert target.headers == {"Host": "consumer.example"} and target.extensions == {}


def test_a_public_address_literal_goes_as_it_is():
    target = target_for("http://93.184.216.34/hooks", resolve=no_dns)
    assert (target.url, target.headers) == ("http://93.184.216.34/hooks", {})


def test_allowed_hosts_skip_the_check(settings):
    settings.WEBHOOK_ALLOWED_HOSTS = ["crm.internal", "10.0.0.5"]
    assert target_for("http://CRM.internal/hooks", resolve=no_dns).url == "http://crm.internal/hooks"
    assert target_for("http://10.0.0.5/x", resolve=no_dns).url == "http://10.0.0.5/x"
    with pytest.raises(TargetRefused):
        target_for("http://10.0.0.6/x")


def test_private_targets_allowed_in_development(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_TARGETS = True
    assert target_for("http://127.0.0.1:8085/hooks", resolve=no_dns).url == "http://127.0.0.1:8085/hooks"
    with pytest.raises(TargetRefused):  # still only http(s)
        target_for("ftp://127.0.0.1/")


def test_settings_per_environment():
    """Tests allow loopback; production never allows private targets, whatever the environment says."""
    from config.settings import test
    from tests.test_deploy import _production_env, _run

    assert test.WEBHOOK_ALLOW_PRIVATE_TARGETS is True
    code = ("import django; django.setup(); from django.conf import settings; "
            "print(settings.WEBHOOK_ALLOW_PRIVATE_TARGETS)")
    result = _run(code, _production_env(WEBHOOK_ALLOW_PRIVATE_TARGETS="true"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
