"""Start-up: the configuration's addresses made ready for sockets, host names resolved.

The configuration is read without a socket (config.py), so that ``-c`` asks no name
server; the proxy calls ``start_addresses`` once as it starts, as HAProxy resolves
its server names when it starts, and ``-c --resolve`` does the same to check them.

A server named by a host name gets its first address by its ``init-addr`` (discovery.py);
the servers of a ``server-template`` share one name and fill its slots. Each such name
becomes a NameResolution that the proxy keeps following when asked to (``resolve-interval``,
``resolve``, or a template: discovery.resolve_period).
"""

import socket
import time
from collections import namedtuple

from .discovery import NameResolution, initial_addresses, lookup, resolve_period
from .errors import ConfigError

_RESOLVE_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6, "unix": socket.AF_UNIX}

FollowedName = namedtuple("FollowedName", "resolution period notices")
FollowedName.__doc__ = """A host name and the servers it feeds, as start-up left it.

resolution: its discovery.NameResolution, started; period: seconds between lookups, or None
(resolved once); notices: the discovery.Notice lines start-up has to log."""


def resolve_addresses(config, last=None):
    """``config`` with socket families in its addresses and every host name resolved (what
    ``-c --resolve`` checks); see start_addresses."""
    return start_addresses(config, last)[0]


def start_addresses(config, last=None):
    """(``config`` ready for sockets, a tuple of FollowedName for its host names).

    ``last``: init-addr's ``last``, the addresses servers had before a reload (a master
    keeps them), as {(backend, server, host): discovery.IpAddress}; a server whose host name
    the reload changed, or that had none, is not in it. None or {}: a cold start.

    A server whose name gave it no address (``init-addr none``) keeps its unresolved Address
    (family None): it starts in maintenance. Raises ConfigError with one line per name that
    no init-addr method could give an address, each naming the file, line and server. A
    config resolved already (a master's, handed to its workers) is resolved again: each
    worker starts from addresses of its own (``last`` when the master has them), then takes
    the checking worker's (master.py).
    """
    problems, followed = [], []
    settings = config.global_settings
    holds = {"nx": settings.resolve_hold_nx, "timeout": settings.resolve_hold_timeout,
             "other": settings.resolve_hold_other}
    now = time.monotonic()          # the loop's clock: the holds count from here
    frontends = tuple(frontend._replace(binds=tuple(
        bind._replace(address=_resolve_ip(bind.address)) for bind in frontend.binds))
        for frontend in config.frontends)
    # A listen section is a frontend and a backend of one name, from one line.
    listens = {(frontend.name, frontend.line) for frontend in config.frontends}
    backends = {}
    for name, backend in config.backends.items():
        kind = "listen" if (name, backend.line) in listens else "backend"
        addresses = {}
        for servers in _name_groups(backend.servers):
            first = servers[0]
            resolution = NameResolution(name, first.host, [server.name for server in servers],
                                        first.resolve_prefer, holds)
            before = tuple((last or {}).get((name, server.name, server.host))
                           for server in servers)
            start = initial_addresses(first.init_addr, before, lambda: lookup(first.host))
            if start.method is None:
                what = ("server-template " + first.template if first.template
                        else "server " + first.name)
                problems.append("%s:%d: [%s %s] %s: cannot resolve '%s': %s (expected a host "
                                "name that resolves, an IP address, or init-addr ending in none)"
                                % (config.path, first.line, kind, name, what, first.host,
                                   start.failure.detail))
                continue
            notices = resolution.start(start, now)
            for server in servers:
                addresses[server.name] = resolved_address(server.address,
                                                        resolution.address_of(server.name))
            period = resolve_period(settings.resolve_interval, first.resolve,
                                    first.template is not None, True)
            followed.append(FollowedName(resolution, period, tuple(notices)))
        servers = []
        for server in backend.servers:
            address = addresses.get(server.name) or (
                server.address if server.host else _resolve_ip(server.address))
            check_addr = server.check_addr and _resolve_ip(server.check_addr)
            servers.append(server._replace(address=address, check_addr=check_addr))
        backends[name] = backend._replace(servers=tuple(servers))
    if problems:
        raise ConfigError(problems)
    settings = config.global_settings
    if settings.stats_socket is not None:
        settings = settings._replace(stats_socket=settings.stats_socket._replace(
            address=_resolve_ip(settings.stats_socket.address)))
    if settings.stats_http is not None:
        settings = settings._replace(stats_http=_resolve_ip(settings.stats_http))
    return (config._replace(global_settings=settings, frontends=frontends, backends=backends),
            tuple(followed))


def resolved_address(configured, ip):
    """A server's Address at ``ip`` (a discovery.IpAddress) on its configured port, or its
    unresolved configured Address for none."""
    if ip is None:
        return configured
    return configured._replace(family=ip.family, sockaddr=(ip.ip, configured.sockaddr[1]))


def _name_groups(servers):
    """The host-named servers in groups that share one name: a template's, or one server."""
    groups = {}
    for server in servers:
        if server.host is not None:
            key = (("server-template", server.template) if server.template
                   else ("server", server.name))
            groups.setdefault(key, []).append(server)
    return list(groups.values())


def _resolve_ip(address):
    if not isinstance(address.family, str):
        return address                    # resolved already
    return address._replace(family=_RESOLVE_FAMILIES[address.family])
