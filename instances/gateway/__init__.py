"""The WhatsApp gateway behind the pool: one interface (:mod:`.base`), one configured implementation.

Callers never name the implementation: they ask ``instances.servers.gateway_for(server)`` for the client of a
gateway server (or ``gateway_for_instance(name)``) and catch :class:`GatewayError`. ``GATEWAY_BACKEND`` names the
class (Evolution 2.3.7 today), so changing gateway is one setting and one module.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.utils.module_loading import import_string

from instances.gateway.base import (
    ERROR_KINDS,
    ConnectInfo,
    Gateway,
    GatewayError,
    InstanceRecord,
    SendResult,
    WebhookConfig,
)

__all__ = [
    "ERROR_KINDS", "ConnectInfo", "Gateway", "GatewayError", "InstanceRecord", "SendResult", "WebhookConfig",
    "gateway",
]


def gateway(*, base_url: str | None = None, api_key: str | None = None, timeout: float | None = None,
            **options: Any) -> Gateway:
    """A client of the configured gateway implementation (defaults: the settings' server). Close it after use."""
    backend = import_string(settings.GATEWAY_BACKEND)
    return backend(base_url=base_url, api_key=api_key, timeout=timeout, **options)
