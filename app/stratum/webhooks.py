"""Webhooks: which URLs a job may call, and how an event is signed and sent.

A URL is http(s) to a public address, or to a host an operator allows. It is checked when the
job is submitted and again right before each call, against every address the name resolves to,
so that a name cannot be pointed at an internal service in between.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import socket
import time
from urllib.parse import urlparse

import httpx

from app.core.models import WebhookEvent


class WebhookRefused(ValueError):
    """The message is safe to show to the client."""


def check_webhook(url: str, allowed_hosts: set[str]) -> None:
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise WebhookRefused("webhook_url must be an http or https URL with a host")
    host = parsed.hostname
    if host in allowed_hosts:
        return
    try:
        infos = socket.getaddrinfo(host, parsed.port or 443, proto=socket.IPPROTO_TCP)
    except (socket.gaierror, UnicodeError):
        raise WebhookRefused(f"webhook host {host!r} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise WebhookRefused(
                f"webhook host {host!r} is a private, loopback or link-local address; "
                "allow it with COSMOS_WEBHOOK_ALLOWED_HOSTS"
            )


SIGNATURE_HEADER = "Cosmos-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """``t=<unix>,v1=<hex>``: HMAC-SHA256 over ``<t>.<body>``, so a receiver can refuse old
    or replayed deliveries by ``t`` as well as forged ones."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class WebhookFailed(Exception):
    """An attempt that may succeed later: the receiver is down, slow or answered non-2xx."""

    def __init__(self, message: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.status_code = status_code


async def post_event(
    url: str, secret: str, event: WebhookEvent, allowed_hosts: set[str], attempt: int = 1
) -> int:
    """POST one signed event; returns the 2xx status. Redirects are not followed (they could
    lead past the address check), and anything but a 2xx is a failed attempt."""
    await asyncio.to_thread(check_webhook, url, allowed_hosts)  # again: names move
    body = event.model_dump_json().encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "cosmos-webhooks/1",
        SIGNATURE_HEADER: signature(secret, int(time.time()), body),
        "Cosmos-Event-Id": event.id,
        "Cosmos-Attempt": str(attempt),
    }
    async with httpx.AsyncClient(timeout=10, follow_redirects=False) as client:
        try:
            response = await client.post(url, content=body, headers=headers)
        except httpx.HTTPError as err:
            raise WebhookFailed(f"webhook unreachable: {err.__class__.__name__}") from None
    if not 200 <= response.status_code < 300:
        raise WebhookFailed(f"webhook answered {response.status_code}", response.status_code)
    return response.status_code
