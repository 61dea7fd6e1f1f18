"""Where a webhook may be sent: http(s) URLs whose host resolves to public addresses only.

A receiver URL is chosen by whoever holds an admin key, and the API process sends to it from inside
the network: without this check a subscription could make the service POST to its own database,
the cloud metadata endpoint (169.254.169.254) or anything else behind the firewall. An address that
is loopback, link-local, private, reserved, multicast or unspecified is refused (an IPv4 address
inside IPv6 is judged as the IPv4 address), unless ZERASE_WEBHOOK_ALLOWED_HOSTS names the host or a
network holding the address.

Checked when a subscription is made and again at each delivery, since DNS may have changed since;
the deliverer connects to the very address checked here (see `Target`), so a name that resolves to
something else a moment later cannot slip past.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit

from service.core.errors import Invalid
from service.core.settings import Settings
from service.webhooks.contract import MAX_URL

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
DEFAULT_PORTS = {"http": 80, "https": 443}
_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# IANA's special-purpose registries, listed rather than left to `ipaddress.is_global`, which lets some through
# (192.0.0.8, fec0::1). The two translation prefixes above are not here: their addresses are judged by their IPv4.
_SPECIAL: tuple[tuple[IPNetwork, str], ...] = tuple((ipaddress.ip_network(net), kind) for net, kind in (
    ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (carrier NAT)"),
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol"), ("192.0.2.0/24", "documentation"), ("192.31.196.0/24", "AS112"),
    ("192.52.193.0/24", "AMT"), ("192.88.99.0/24", "6to4 relay"), ("192.168.0.0/16", "private"),
    ("192.175.48.0/24", "AS112"), ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("64:ff9b:1::/48", "local translation"),
    ("100::/64", "discard-only"), ("2001::/23", "IETF protocol"), ("2001:db8::/32", "documentation"),
    ("2002::/16", "6to4"), ("2620:4f:8000::/48", "AS112"), ("3fff::/20", "documentation"),
    ("5f00::/16", "segment routing"), ("fc00::/7", "unique-local"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast"),
))


class TargetRefused(Invalid):
    """The URL is not one the service sends to (scheme, shape, or an address the allowlist lacks)."""

    code = "webhook_target_refused"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, "url")


class TargetUnresolved(Invalid):
    """The host has no address now: refused when subscribing, retried when delivering."""

    code = "webhook_target_unresolved"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, "url")


@dataclass(frozen=True)
class TargetPolicy:
    """Host names and networks allowed beyond the public internet (ZERASE_WEBHOOK_ALLOWED_HOSTS)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def of(cls, settings: Settings) -> TargetPolicy:
        return cls.parse(settings.webhook_allowed_hosts)

    @classmethod
    def parse(cls, entries: list[str]) -> TargetPolicy:
        hosts, networks = set(), []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "/" in entry or ":" in entry or not entry.strip("."):
                    raise ValueError(f"ZERASE_WEBHOOK_ALLOWED_HOSTS: {entry!r} is neither a host name nor a "
                                     "CIDR") from None
                hosts.add(_host_key(entry))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        return _host_key(host) in self.hosts or any(address in n for n in self.networks)


@dataclass(frozen=True)
class Target:
    """A checked URL: connect to `connect_url` (the URL with the checked address as its host), sending
    `host_header` as Host and, over TLS, `sni` as the server name, so the certificate is still verified
    against the host name subscribed."""

    connect_url: str
    host_header: str
    sni: str | None


def check_url(url: str) -> SplitResult:
    """The URL's parts, if its shape is one the service sends to (no DNS here)."""
    if len(url) > MAX_URL:
        raise TargetRefused(f"the URL is longer than {MAX_URL} characters")
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise TargetRefused("the URL must not contain spaces or control characters")
    try:
        parts = urlsplit(url)
        if parts.port == 0:
            raise ValueError("port 0")
    except ValueError as exc:
        raise TargetRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise TargetRefused(f"the URL must start with http:// or https://, got {parts.scheme or 'no'} scheme")
    if not parts.hostname:
        raise TargetRefused("the URL has no host")
    if "@" in parts.netloc:  # the message must not repeat them
        raise TargetRefused("the URL must not contain credentials (user:password@); receivers authenticate the "
                            "service by the webhook-signature header")
    return parts


def resolve(url: str, policy: TargetPolicy) -> Target:
    """Check `url` against the policy, resolving its host now: the Target to connect to."""
    parts = check_url(url)
    host = parts.hostname or ""
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    literal, addresses = _addresses(host, port)
    for address in addresses:
        why = forbidden(address)
        if why and not policy.allows(host, address):
            shown = f"{host} is" if literal else f"{host} resolves to {address}, which is"
            raise TargetRefused(f"{shown} {why}; webhooks go to public addresses only, unless "
                                "ZERASE_WEBHOOK_ALLOWED_HOSTS allows the host or its network")
    address = addresses[0]
    literal_host = f"[{address}]" if address.version == 6 else str(address)
    netloc = literal_host if parts.port is None else f"{literal_host}:{parts.port}"
    sni = host if parts.scheme == "https" and not literal else None
    return Target(parts._replace(netloc=netloc, fragment="").geturl(), parts.netloc, sni)


def forbidden(address: IPAddress) -> str | None:
    """Why the service must not send to `address` by default ("in 10.0.0.0/8 (private)", ...), or None."""
    if isinstance(address, ipaddress.IPv6Address) and (address in _MAPPED or address in _NAT64):
        address = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # where the packets go
    special = next((f"in {net} ({kind})" for net, kind in _SPECIAL if address in net), None)
    checks = ((special, special is not None), ("a reserved address", address.is_reserved),
              ("not a public address", not address.is_global))
    return next((why for why, hit in checks if hit), None)


def _addresses(host: str, port: int) -> tuple[bool, list[IPAddress]]:
    """(whether the host is an address itself, its addresses)."""
    try:
        return True, [ipaddress.ip_address(host)]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetUnresolved(f"the host {host} does not resolve ({exc})") from None
    # A scoped IPv6 address ("fe80::1%eth0") is judged without its zone.
    found = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
    if not found:
        raise TargetUnresolved(f"the host {host} has no address")
    return False, list(dict.fromkeys(found))


def _host_key(host: str) -> str:
    return host.strip().rstrip(".").lower()
