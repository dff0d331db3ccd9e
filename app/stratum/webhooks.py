"""Webhook URLs a job may call: http(s) to public addresses, or to hosts an operator allows.

Checked when the job is submitted and again right before the call, against every address the
name resolves to, so that a name cannot be pointed at an internal service in between.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlparse


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
