"""Where the server may send a request: the one outbound policy (DESIGN "One guarded way out").

A provider's ``base_url`` and ``api_key_env`` are written by staff, but what they point at is the
server's own network and environment: a provider at ``http://169.254.169.254/`` reads the cloud's
instance credentials, one at ``http://127.0.0.1:6379/`` talks to Redis, and one whose
``api_key_env`` is ``SECRET_KEY`` or ``DATABASE_URL`` sends that secret as a bearer token to any
host. So every outbound request goes through these checks, when a provider is saved and again
before each call (a row written before the rules, or straight to the database, is not trusted):

1. ``url_refusal``: the scheme is ``https``, or ``http`` to a host in ``PROVIDER_ALLOWED_HOSTS`` or
   to loopback when ``PROVIDER_ALLOW_LOOPBACK``; no credentials in the URL; and every address the
   host stands for is public, unless the host is allowed (private, link-local, shared, reserved,
   multicast and unspecified ranges) or it is loopback and loopback is allowed. At save time
   only what the URL itself says is checked (literal addresses, in every spelling ``inet_aton``
   accepts, and ``localhost``); at call time the name is resolved too.
2. ``api_key_env_refusal``: the name matches ``PROVIDER_API_KEY_ENV_PATTERN`` and is none of the
   service's own settings or environment variables.
3. Redirects are not followed (``runs.providers`` builds its client with ``follow_redirects``
   off): a redirect would take the key to a host nobody checked. A 3xx is a failed call.

What remains: a name resolved here may resolve elsewhere a moment later (DNS rebinding). Over
https the certificate must still match the name, and plain http goes only to allowed hosts.

Reused clients (``runs.providers.ProviderClients``, one per provider per process) change none of
this: the check runs before every call, the client is used only once it passed, and a pooled
connection, which goes to the address it was opened to whatever the name resolves to now, is only
reused under the settings that approved that address (they are part of the client's key: a change
to ``PROVIDER_ALLOWED_HOSTS`` or ``PROVIDER_ALLOW_LOOPBACK`` builds a new client, so new connections).
Under unchanged settings the verdict on an address never changes, so an address approved when the
connection opened is approved now.

Settings are read at each call, so ``override_settings`` works and a change needs no restart.

Webhooks (``webhooks.sender``) go through the same checks under their own settings
(``WEBHOOKS``: ``WEBHOOK_ALLOWED_HOSTS``, ``WEBHOOK_ALLOW_LOOPBACK``): an ``OutboundPolicy`` names
the settings that open the policy for one kind of request; ``PROVIDERS`` is the default.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from django.conf import settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

# Names the service itself reads, besides its settings: never a provider's key.
_OWN_VARIABLES = frozenset(
    {"DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "SECRET_KEY", "CELERY_BROKER_URL"}
)


class EgressRefused(Exception):
    """A request the policy refuses; the message says why, for a person to fix it."""


@dataclass(frozen=True, slots=True)
class OutboundPolicy:
    """The settings that open the policy for one kind of request (read at each check, by name,
    so ``override_settings`` works), and what a refusal tells a person to do instead."""

    allowed_hosts_setting: str  # hosts allowed over plain http and on private addresses
    allow_loopback_setting: str  # loopback allowed (development and tests only)
    example_url: str  # an https URL of the kind the policy is about
    credentials_hint: str  # where a secret goes instead of the URL

    def allowed_hosts(self) -> list[str]:
        return getattr(settings, self.allowed_hosts_setting)

    def allow_loopback(self) -> bool:
        return getattr(settings, self.allow_loopback_setting)


PROVIDERS = OutboundPolicy(
    allowed_hosts_setting="PROVIDER_ALLOWED_HOSTS",
    allow_loopback_setting="PROVIDER_ALLOW_LOOPBACK",
    example_url="https://api.openai.com/v1",
    credentials_hint="the key lives in the variable api_key_env names",
)
WEBHOOKS = OutboundPolicy(
    allowed_hosts_setting="WEBHOOK_ALLOWED_HOSTS",
    allow_loopback_setting="WEBHOOK_ALLOW_LOOPBACK",
    example_url="https://hooks.example.com/prompt-registry",
    credentials_hint="a receiver checks the webhook's signature instead",
)


# --- the key's variable -------------------------------------------------------------------------


@functools.cache
def _settings_variables() -> frozenset[str]:
    """Every upper-case name quoted in config/settings.py: the environment variables it reads
    (``env.str("REDIS_URL")``), found in its text so a setting added later is covered at once."""
    import config.settings as module

    text = Path(module.__file__).read_text(encoding="utf-8")
    return frozenset(re.findall(r"[\"']([A-Z][A-Z0-9_]{2,})[\"']", text))


def own_names() -> frozenset[str]:
    """The service's own settings and environment variables."""
    names = {name for name in dir(settings) if name.isupper()}
    return frozenset(names) | _settings_variables() | _OWN_VARIABLES


def api_key_env_refusal(name: str) -> str | None:
    """Why ``name`` may not hold a provider's key, or None (an empty name: no key is sent)."""
    if not name:
        return None
    if name in own_names():
        return (
            f"{name} is one of this service's own settings or variables; a provider's key must "
            "live in a variable of its own, since it is sent to the provider's URL."
        )
    pattern = settings.PROVIDER_API_KEY_ENV_PATTERN
    if re.fullmatch(pattern, name) is None:
        return (
            f"{name} does not match PROVIDER_API_KEY_ENV_PATTERN ({pattern}); name the "
            "variable like OPENAI_API_KEY."
        )
    return None


# --- the URL ------------------------------------------------------------------------------------


def _host_allowed(host: str, policy: OutboundPolicy) -> bool:
    for entry in policy.allowed_hosts():
        entry = entry.strip().lower().rstrip(".")
        if entry and (host == entry or (entry.startswith(".") and host.endswith(entry))):
            return True
    return False


def _literal_addresses(host: str) -> list[Address] | None:
    """The address a host *is* (IPv6, dotted IPv4, and the other IPv4 spellings C libraries
    accept: ``2130706433``, ``0x7f.1``, ``127.1``); ``localhost`` names are loopback; None for a
    name that needs the resolver."""
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fx.]+", host) and re.search(r"[0-9]", host):
        try:
            return [ipaddress.IPv4Address(socket.inet_aton(host))]
        except OSError:
            pass
    if host == "localhost" or host.endswith(".localhost"):
        return [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    return None


def _resolved(host: str, port: int) -> list[Address]:
    """What the resolver says now; nothing when it cannot say (the call then fails to connect
    like any unreachable host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]


# IPv6 forms that carry an IPv4 address the network may deliver to: NAT64 (64:ff9b::/96), the
# deprecated IPv4-compatible form (::/96) and SIIT's translated form (::ffff:0:0:0/96).
_EMBEDDING_IPV4 = tuple(
    ipaddress.ip_network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96")
)


def _unmapped(address: Address) -> Address:
    # ::ffff:127.0.0.1 is 127.0.0.1 to the kernel; 64:ff9b::a9fe:a9fe is 169.254.169.254 to NAT64.
    if not isinstance(address, ipaddress.IPv6Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if any(address in network for network in _EMBEDDING_IPV4) and int(address) > 1:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def _is_this_machine(address: Address) -> bool:
    address = _unmapped(address)
    return address.is_loopback or address.is_unspecified  # 0.0.0.0 connects to this machine


def _address_refusal(address: Address, host: str, policy: OutboundPolicy) -> str | None:
    address = _unmapped(address)
    if _is_this_machine(address):
        if policy.allow_loopback():
            return None
        return (
            f"{host} is this machine ({address}); loopback is refused unless "
            f"{policy.allow_loopback_setting} is on (development and tests only)."
        )
    if not address.is_global or address.is_multicast:
        return (
            f"{host} is a private, link-local or reserved address ({address}); list the host in "
            f"{policy.allowed_hosts_setting} if the server should reach it."
        )
    return None


def url_refusal(url: str, *, resolve: bool, policy: OutboundPolicy = PROVIDERS) -> str | None:
    """Why the server may not send a request to ``url``, or None (see the module docstring).
    ``resolve``: also check the addresses the host's name resolves to now (call time).
    ``policy``: whose settings open it (providers', or webhooks')."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        return "Not a URL."
    if parts.scheme not in ("http", "https") or not host:
        return f"Use an http(s) URL with a host, e.g. {policy.example_url}."
    if parts.username is not None or parts.password is not None:
        return f"Put no credentials in the URL: {policy.credentials_hint}."
    allowed = _host_allowed(host, policy)
    addresses = _literal_addresses(host)
    if addresses is None and resolve:
        addresses = _resolved(host, port)
        if not addresses and not allowed:
            # A name that does not resolve now may resolve elsewhere a moment later, when the
            # client looks it up again: never let a call leave unchecked.
            return f"{host} could not be resolved, so its addresses could not be checked."
    loopback = bool(addresses) and all(_is_this_machine(a) for a in addresses or ())
    if parts.scheme == "http" and not allowed and not (loopback and policy.allow_loopback()):
        return (
            f"Plain http to {host} is refused: use https, or list the host in "
            f"{policy.allowed_hosts_setting}."
        )
    if allowed:
        return None
    for address in addresses or ():
        why = _address_refusal(address, host, policy)
        if why:
            return why
    return None


def check_url(url: str, *, policy: OutboundPolicy = PROVIDERS) -> None:
    """Raises EgressRefused unless a request to ``url`` may leave now (resolving its host):
    the call-time check for any outbound request."""
    why = url_refusal(url, resolve=True, policy=policy)
    if why:
        raise EgressRefused(why)


def provider_refusals(*, base_url: str, api_key_env: str, resolve: bool) -> dict[str, str]:
    """Why a provider may not be used, by field (``base_url``, ``api_key_env``); empty when it
    may. Saving checks it without resolving (``resolve=False``), each call with."""
    refusals = {}
    if why := url_refusal(base_url, resolve=resolve):
        refusals["base_url"] = why
    if why := api_key_env_refusal(api_key_env):
        refusals["api_key_env"] = why
    return refusals
