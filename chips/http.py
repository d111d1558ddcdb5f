"""Shared plumbing for the outside-system clients (every app's client.py uses it)."""

from __future__ import annotations

import ssl
from functools import lru_cache

import httpx


@lru_cache(maxsize=1)
def tls_context() -> ssl.SSLContext:
    """One TLS context for every httpx client in the process.

    Building it (loading the CA bundle) costs tens of milliseconds; httpx does it on every new client,
    which made short-lived clients (one per task run) spend most of their time there.
    """
    return httpx.create_ssl_context()
