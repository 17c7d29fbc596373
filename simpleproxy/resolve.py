"""Start-up: the configuration's addresses made ready for sockets, host names resolved.

The configuration is read without a socket (config.py), so that ``-c`` asks no name
server; the proxy calls ``resolve_addresses`` once as it starts, as HAProxy resolves
its server names when it starts, and ``-c --resolve`` does the same to check them.
"""

import socket

from .errors import ConfigError

_RESOLVE_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6, "unix": socket.AF_UNIX}


def resolve_addresses(config):
    """``config`` with socket families in its addresses and every host name resolved.

    A server's host name becomes its first address. Raises ConfigError with one line per
    name that does not resolve, each naming the file, line and server.
    """
    problems = []
    frontends = tuple(frontend._replace(binds=tuple(
        bind._replace(address=_resolve_ip(bind.address)) for bind in frontend.binds))
        for frontend in config.frontends)
    # A listen section is a frontend and a backend of one name, from one line.
    listens = {(frontend.name, frontend.line) for frontend in config.frontends}
    backends = {}
    for name, backend in config.backends.items():
        kind = "listen" if (name, backend.line) in listens else "backend"
        servers = []
        for server in backend.servers:
            try:
                address = _resolve_server(server.address)
            except OSError as exc:
                problems.append("%s:%d: [%s %s] server %s: cannot resolve '%s': %s (expected a "
                                "host name that resolves, or an IP address)"
                                % (config.path, server.line, kind, name, server.name,
                                   server.address.sockaddr[0], exc.strerror or exc))
                continue
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
    return config._replace(global_settings=settings, frontends=frontends, backends=backends)


def _resolve_ip(address):
    return address._replace(family=_RESOLVE_FAMILIES[address.family])


def _resolve_server(address):
    if address.family is not None:
        return _resolve_ip(address)
    host, port = address.sockaddr
    family, _, _, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    return address._replace(family=family, sockaddr=sockaddr[:2])
