"""Where webhooks may go (SSRF): http(s) URLs whose host resolves only to public addresses.

A consumer URL is checked when an endpoint is created or changed and again before every attempt, because DNS
can change in between. Hosts named in WEBHOOK_ALLOWED_HOSTS skip the check (a consumer on the company's own
network); WEBHOOK_ALLOW_PRIVATE_TARGETS lets anything through (development and tests, where the consumer is on
loopback).

When the check resolved a name, the request goes to the address that was checked (the Host header and TLS SNI
keep the name): a second lookup by the HTTP client could answer differently (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import URLValidator
from django.utils.translation import gettext as _

SCHEMES = ("http", "https")
_url_syntax = URLValidator(schemes=list(SCHEMES))
Resolver = Callable[..., list]


class TargetRefused(Exception):
    """The URL may not be called; `message` says why (for the API's 422 and the attempt's error)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Target:
    """What to request: `url` (its host replaced by the checked address when a name was resolved), plus the
    Host header and SNI name that keep the original name."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, str] = field(default_factory=dict)


def is_public(address: str) -> bool:
    """False for private, loopback, link-local, reserved, multicast, unspecified and shared (CGNAT) addresses."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:10.0.0.5 is 10.0.0.5
    return ip.is_global and not ip.is_multicast and not ip.is_reserved


def check_syntax(url: str) -> httpx.URL:
    """An absolute http(s) URL with a host, or TargetRefused."""
    try:
        _url_syntax(url)
        parsed = httpx.URL(url)
    except (ValidationError, httpx.InvalidURL, ValueError, TypeError):
        raise TargetRefused(_("Enter a valid http or https URL.")) from None
    if parsed.scheme not in SCHEMES or not parsed.host:
        raise TargetRefused(_("Enter a valid http or https URL."))
    return parsed


def _is_allowed_host(host: str) -> bool:
    return host.lower().rstrip(".") in {h.lower().rstrip(".") for h in settings.WEBHOOK_ALLOWED_HOSTS}


def target_for(url: str, *, resolve: Resolver = socket.getaddrinfo) -> Target:
    """The request to make for `url`, or TargetRefused naming why it may not be called."""
    parsed = check_syntax(url)
    if settings.WEBHOOK_ALLOW_PRIVATE_TARGETS or _is_allowed_host(parsed.host):
        return Target(url=str(parsed))
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(parsed.host))]  # an address literal: nothing to look up
    except ValueError:
        try:
            infos = resolve(parsed.host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError, ValueError):
            raise TargetRefused(_("The host %(host)s does not resolve.") % {"host": parsed.host}) from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise TargetRefused(_("The host %(host)s does not resolve.") % {"host": parsed.host})
    refused = [a for a in addresses if not is_public(a)]
    if refused:
        raise TargetRefused(
            _("The host %(host)s resolves to a private, loopback, link-local or reserved address (%(address)s); "
              "add it to WEBHOOK_ALLOWED_HOSTS if it is meant to receive webhooks.")
            % {"host": parsed.host, "address": refused[0]})
    address = addresses[0]
    if address == parsed.host:  # an address literal: the URL already names it
        return Target(url=str(parsed))
    host_header = parsed.raw_host.decode("ascii") + (f":{parsed.port}" if parsed.port else "")
    extensions = {"sni_hostname": parsed.raw_host.decode("ascii")} if parsed.scheme == "https" else {}
    return Target(url=str(parsed.copy_with(host=address)), headers={"Host": host_header}, extensions=extensions)


def url_check(url: str) -> str:
    """The URL as it will be stored, or TargetRefused (creating or changing an endpoint)."""
    target_for(url)
    return url
