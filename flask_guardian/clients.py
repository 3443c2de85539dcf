"""Who the client is, as sessions record and compare it: the User-Agent cleaned for
storage, the address unwrapped from IPv6 transition forms, its network for monitoring,
and the key the per-address sign-in counter uses."""

from __future__ import annotations

import ipaddress

from flask import Request

from .models import USER_AGENT_MAX_LENGTH


def client_agent(request: Request) -> str | None:
    """The User-Agent as sessions record and compare it: printable characters only (a NUL
    would be refused by PostgreSQL), at most 512 of them."""
    agent: str | None = request.environ.get("HTTP_USER_AGENT")
    if not agent:
        return None
    if not agent.isprintable():
        agent = "".join(c for c in agent if c.isprintable())
    return agent[:USER_AGENT_MAX_LENGTH] or None


def client_address(ip: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address a client really has. An IPv4 client seen through a dual-stack socket
    (``gunicorn -b [::]:80``) arrives as ``::ffff:a.b.c.d``, a 6to4 or Teredo one inside an
    IPv6 address: each is unwrapped to its IPv4 address, so it is counted and monitored as
    itself rather than lumped into one ``::/64`` with every other IPv4 client."""
    if not ip:
        return None
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]  # (server, client): the client's public IPv4
    return address


def ip_network(ip: str | None) -> str | None:
    """The /24 (IPv4) or /64 (IPv6) network of ``ip``: a change of network, not of address,
    is what session monitoring reports (mobile clients hop addresses within one).
    Loopback is its own network."""
    address = client_address(ip)
    if address is None:
        return None
    prefix = 24 if address.version == 4 else 64
    if address.is_loopback:
        prefix = address.max_prefixlen
    return str(ipaddress.ip_network(f"{address}/{prefix}", strict=False))


def throttle_key(ip: str | None) -> str:
    """The per-address sign-in counter's key: an IPv4 address (unwrapped as in
    :func:`client_address`) or, for IPv6, its /64 (one host holds a whole /64, so
    counting single addresses would never bite)."""
    address = client_address(ip)
    if address is None:
        return "ip:" + (ip or "unknown")
    if address.version == 4 or address.is_loopback:
        return f"ip:{address}"
    return f"ip:{ip_network(str(address))}"
