"""Reading many instances' live state at once (the periodic check): async httpx, bounded concurrency."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from urllib.parse import quote

import httpx

from common.http import CONNECT_TIMEOUT, setting_or, tls_context
from instances.gateway.base import GatewayError
from instances.gateway.evolution import errors

logger = logging.getLogger(__name__)


def _path(template: str, name: str) -> str:
    return template.format(quote(name, safe=""))


POOL_CONNECTIONS = 8


async def _read_state(http: httpx.AsyncClient, name: str, read: float) -> str | GatewayError:
    try:
        response = await http.get(_path("/instance/connectionState/{}", name))
    except httpx.HTTPError as exc:
        return errors.transport_error(exc, "connectionState", name, read)
    except Exception as exc:  # the contract is "never raise": one odd failure must not sink the sweep
        logger.exception("connectionState %r: unexpected error", name)
        return GatewayError("transport", operation="connectionState", instance=name,
                              messages=[f"{type(exc).__name__}: {exc}"])
    err = errors.error_from_response(response, "connectionState", name)
    if err is not None:
        return err
    try:
        return errors.state_from(errors.decode(response)[0], "connectionState", name, response.status_code)
    except GatewayError as exc:
        return exc


async def fetch_connection_states(
    names: Iterable[str],
    *,
    concurrency: int = 50,
    base_url: str | None = None,
    api_key: str | None = None,
    timeout: float | None = None,
) -> dict[str, str | GatewayError]:
    """Read every instance's live ``connectionState`` concurrently -> ``{name: state or GatewayError}``.

    At most ``concurrency`` requests are in flight (Evolution has no rate limiting of its own, so we must
    not flood it): that many workers pull names from one shared iterator. They are spread over several
    small ``httpx.AsyncClient`` pools of at most ``POOL_CONNECTIONS`` connections, because httpcore's pool
    scans all its connections on every request (quadratic; encode/httpcore#1035): one 50-connection pool
    made the sweep CPU-bound. Every failure (timeout, 5xx, 404, ...) becomes that name's value; nothing is
    raised. Failures are not retried within a sweep: the next poll is the retry.
    """
    if concurrency < 1:
        raise ValueError("concurrency must be >= 1")
    url = setting_or(base_url, "EVOLUTION_API_URL").rstrip("/")
    key = setting_or(api_key, "EVOLUTION_API_KEY")
    read = float(setting_or(timeout, "HTTP_TIMEOUT_SECONDS"))
    unique = list(dict.fromkeys(names))
    results: dict[str, str | GatewayError] = {}
    pool_size = min(concurrency, POOL_CONNECTIONS)
    clients = [
        httpx.AsyncClient(base_url=url, headers={"apikey": key, "Accept": "application/json"}, verify=tls_context(),
                          timeout=httpx.Timeout(read, connect=min(CONNECT_TIMEOUT, read)),
                          limits=httpx.Limits(max_connections=pool_size, max_keepalive_connections=pool_size))
        for _ in range(-(-concurrency // pool_size))
    ]
    pending = iter(unique)

    async def worker(http: httpx.AsyncClient) -> None:
        for name in pending:
            results[name] = await _read_state(http, name, read)

    try:
        await asyncio.gather(*(worker(clients[i % len(clients)]) for i in range(min(concurrency, len(unique)))))
    finally:
        for http in clients:
            await http.aclose()
    return {name: results[name] for name in unique}
