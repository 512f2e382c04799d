"""Who may call the server. Loopback by default; any other address is reachable by other
machines, so binding one requires an API key, and a key, once set, is checked on every
route (constant-time, so the comparison's duration says nothing about the key)."""

from __future__ import annotations

import hmac
import ipaddress
import os

from llmtune.errors import UserError

KEY_ENV = "LLMTUNE_API_KEY"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name other than localhost may resolve anywhere
        return False


def resolve_key(host: str, flag_key: str | None) -> str | None:
    """The API key to require (None: none), or a UserError when a non-loopback bind has none."""
    key = flag_key if flag_key is not None else os.environ.get(KEY_ENV)
    if key is not None and not key.strip():
        raise UserError(f"the API key is empty; pass a non-empty --api-key or {KEY_ENV}")
    if key is None and not is_loopback(host):
        raise UserError(f"--host {host}: other machines can reach this address, so the server needs an API key; "
                        f"pass --api-key KEY or set {KEY_ENV} (clients send `Authorization: Bearer KEY`), or "
                        f"bind 127.0.0.1")
    return key


def authorized(header: str | None, key: str | None) -> bool:
    """Whether an `Authorization` header carries `key` (always true when no key is set)."""
    if key is None:
        return True
    scheme, _, given = (header or "").partition(" ")
    if scheme.lower() != "bearer":
        given = ""
    return hmac.compare_digest(given.strip().encode(), key.encode())
