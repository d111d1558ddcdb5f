"""The gateway is a set of servers: where a new instance goes, and the client for the server an instance is on.

One Evolution server holds a few hundred sessions; a pool of thousands spans several. A new instance goes to the
enabled server with the most free capacity (the server rows are locked while it is placed, so two placements
never both take the last slot). Everything else asks for the client of the instance's own server.
"""

from __future__ import annotations

import os
import threading

from django.db import transaction
from django.db.models import Count
from django.utils.translation import gettext as _

from common.exceptions import DomainError
from instances.gateway import Gateway, gateway
from instances.models import GatewayServer, Instance


class NoGatewayCapacity(DomainError):
    status_code = 503
    code = "no_gateway_capacity"


def gateway_for(server: GatewayServer | None, **options) -> Gateway:
    """A client of `server` (the seed server when None). Close it after use."""
    server = server or GatewayServer.default()
    return gateway(base_url=server.url, api_key=server.key, **options)


_kept: dict[int | None, tuple[tuple[str, str], Gateway]] = {}  # server id → (its URL and key, its client)
_kept_lock = threading.Lock()


def _kept_forget_in_child() -> None:  # a forked worker builds its own clients: its parent's sockets are not its own
    global _kept_lock
    _kept.clear()
    _kept_lock = threading.Lock()


os.register_at_fork(after_in_child=_kept_forget_in_child)


def gateway_kept(server: GatewayServer | None) -> Gateway:
    """A client of `server` (the seed server when None) kept for the life of the process: a connection is reused
    by the next call while it is warm (httpx keeps an idle one 5 s: the batches of one dispatch run, not one run
    and the next a minute later), where a new client per batch paid new connections, and TLS handshakes, for
    every batch. Shared by threads; never closed by the caller. A forked child builds its own; a server whose URL
    or key changed gets a new client, the old one closed."""
    server = server or GatewayServer.default()
    address = (server.url, server.key)
    with _kept_lock:
        kept = _kept.get(server.pk)
        if kept is None or kept[0] != address:
            if kept is not None:
                kept[1].close()
            kept = _kept[server.pk] = (address, gateway_for(server))
        return kept[1]


def gateway_for_instance(name: str, **options) -> Gateway:
    """The client of the server that holds the instance called `name`."""
    server = GatewayServer.objects.filter(instances__name=name).first()
    return gateway_for(server, **options)


def server_loads(servers: list[GatewayServer]) -> dict[int, int]:
    """Sessions each server holds for chips that are not retired (one grouped query)."""
    return dict(Instance.objects.filter(server__in=servers).exclude(chip__status="retired")
                .values_list("server").annotate(n=Count("pk")).order_by())


def server_place() -> GatewayServer:
    """The enabled server with the most free capacity, row-locked until the caller's transaction ends.

    Raises NoGatewayCapacity when every enabled server is full (or none is enabled).
    """
    if not GatewayServer.objects.exists():
        GatewayServer.default()
    with transaction.atomic():
        servers = list(GatewayServer.objects.enabled().select_for_update().order_by("pk"))
        loads = server_loads(servers)
        free = [(server.capacity - loads.get(server.pk, 0), -server.pk, server) for server in servers]
        best = max(free, default=None, key=lambda row: row[:2])
    if best is None or best[0] <= 0:
        raise NoGatewayCapacity(_("Every gateway server is full: add a server or raise a capacity in the admin."))
    return best[2]
