"""Which Host headers ``trouter serve`` accepts, and its refusal of an open, keyless bind."""

from __future__ import annotations

import ipaddress

from trouter.cli.errors import fail

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, keys_enabled: bool, no_auth: bool, allowed: list[str]) -> list[str]:
    """The Host allow-list for this bind address; exit 2 for an open, unauthenticated bind."""
    from trouter.serving.limits import LOOPBACK_HOSTS

    if is_loopback(host):
        return allowed or list(LOOPBACK_HOSTS)
    if not keys_enabled and not no_auth:
        raise fail(
            f"--host {host} accepts connections from other machines, and no client keys are "
            "configured: anyone who reaches the port would spend the pool's API keys. Give "
            "--api-keys FILE (see 'trouter keys add') or TROUTER_API_KEYS, or --no-auth if "
            "another layer authenticates clients."
        )
    if allowed:
        return allowed
    try:
        if ipaddress.ip_address(host).is_unspecified:
            raise fail(
                f"--host {host} listens on every interface; name the host names clients use "
                "with --allowed-host (repeatable; '*' allows any)"
            )
    except ValueError:
        pass
    return [host, *LOOPBACK_HOSTS]
