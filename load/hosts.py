"""Which hosts a load run may target.

This workplace forbids generating load against anything but this machine, so every entry point
(the locustfile, ``load.capacity``) calls :func:`check_host` before sending a request.
"""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

DEFAULT_HOST = "http://127.0.0.1:8000"
ALLOW_REMOTE_ENV = "FUNASR_LOAD_ALLOW_REMOTE"
"""Set to ``1`` to allow a non-loopback host (only where you are allowed to load that host)."""


class RemoteHostRefused(ValueError):
    """The target is not a loopback address and remote load was not explicitly allowed."""


def is_loopback(url: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1.

    Names other than ``localhost`` are not resolved: a name that happens to resolve to a loopback
    address today may not tomorrow, so only literal addresses count.
    """
    host = urlsplit(url if "://" in url else f"http://{url}").hostname
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(url: str | None, environ: dict[str, str] | None = None) -> str:
    """Return ``url`` (or the default host) if load may be sent there, else raise."""
    env = os.environ if environ is None else environ
    target = url or DEFAULT_HOST
    if is_loopback(target) or env.get(ALLOW_REMOTE_ENV) == "1":
        return target
    raise RemoteHostRefused(
        f"refusing to load {target!r}: only loopback hosts (127.0.0.0/8, localhost, ::1) are allowed; "
        f"set {ALLOW_REMOTE_ENV}=1 only where you are allowed to load that host"
    )
