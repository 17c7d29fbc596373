"""A stats model over real balancer objects, and the reference target the admin socket and the
stats listener act on (the proxy implements the same interface; see simpleproxy/admin.py);
and the clients of a running proxy's stats socket and listener."""
import os
import socket

from simpleproxy.balancer import BackendPool
from simpleproxy.config import parse_config
from simpleproxy.stats import ProcessIdentity, ProxyStats
from support import DEFAULT_TIMEOUT, config, connect, free_port, read_to_eof

START = 1000.0                 # loop time at start
WALL = 1796610032.0            # wall time at start

CONFIG = """
[frontend web]
bind = 127.0.0.1:8000
default_backend = app

[backend app]
server s1 = 127.0.0.1:9001 check rise 2 fall 3
server s2 = 127.0.0.1:9002 weight 3 maxconn 10
server s3 = 127.0.0.1:9003 backup

[listen db]
bind = 127.0.0.1:8001
server d1 = [::1]:9101
"""


def ask(address, text, timeout=DEFAULT_TIMEOUT):
    """Send ``text`` to the stats socket (a path or (host, port)), half-close, read the answer."""
    sock = connect(address, timeout)
    try:
        sock.sendall(text.encode() if isinstance(text, str) else text)
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock).decode()
    finally:
        sock.close()


def http_get(port, path, headers=""):
    """(status, body) of one GET on 127.0.0.1:``port``. HTTP/1.0: the server closes after its
    answer and sends no chunked body (an exporter written in Go would)."""
    sock = connect(("127.0.0.1", port))
    try:
        sock.sendall(("GET %s HTTP/1.0\r\nHost: x\r\n%s\r\n" % (path, headers)).encode())
        response = read_to_eof(sock)
    finally:
        sock.close()
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def metrics(port):
    """``/metrics`` on 127.0.0.1:``port`` (ours, or an exporter's), parsed by prometheus_client:
    {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families
    status, body = http_get(port, "/metrics")
    assert status == 200
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(body.decode())
            for sample in family.samples}


def stats_config(tmp_path, servers, global_extra="", backend="", frontend="", bind_extra=""):
    """A config with the stats socket (a path in ``tmp_path``) and listener, and frontend
    ``web`` in front of backend ``app`` with ``servers`` ((name, ADDRESS OPTIONS) pairs):
    (text, socket path, stats http port, frontend port)."""
    sock = os.path.join(str(tmp_path), "admin.sock")
    http = free_port()
    port = free_port()
    text = config(
        global_="stats socket = %s\nstats http = 127.0.0.1:%d\n%s" % (sock, http, global_extra),
        frontends=[("web", ["127.0.0.1:%d%s" % (port, bind_extra)], "app", frontend)],
        backends=[("app", ["server %s = %s" % (name, address) for name, address in servers],
                   backend)])
    return text, sock, http, port


def show_stat_rows(text):
    """``show stat`` CSV as {(pxname, svname): {column: value}}."""
    lines = text.strip("\n").split("\n")
    header = lines[0].lstrip("# ").split(",")
    return {(row[0], row[1]): dict(zip(header, row))
            for row in (line.split(",") for line in lines[1:])}


def identity(name="simpleproxy", description=""):
    return ProcessIdentity(name, "0.1.0", "", 4242, "vm", description, 1000, 2048)


class ReferenceTarget(object):
    """What the runtime API needs from the proxy, over real BackendPools."""

    def __init__(self, config_text=CONFIG, name="simpleproxy", description=""):
        config = parse_config(config_text)
        self.pools = [BackendPool(backend) for backend in config.backends.values()]
        self.now, self.wall = START, WALL
        self.stats = ProxyStats(identity(name, description),
                                [(frontend, frontend.maxconn or 1000)
                                 for frontend in config.frontends], self.pools, START, WALL)
        self.sessions = []

    def stats_model(self):
        return self.stats

    def clock(self):
        return self.now, self.wall

    def session_views(self):
        return self.sessions

    def _state(self, backend, server):
        be = self.stats.backend(backend)
        srv = next(srv for srv in be.servers if srv.name == server)
        return be.pool, srv

    def set_server(self, backend, server, state=None, weight=None, maxconn=None):
        pool, srv = self._state(backend, server)
        before = srv.state.status
        if state is not None and state != srv.state.admin:
            try:
                pool.set_admin(srv.state, state)
            except ValueError as exc:
                return str(exc)
            srv.state_changed(self.now, before, by_check=False)
        if weight is not None:
            pool.set_weight(srv.state, weight)
            srv.backend.settle(self.now)
        if maxconn is not None:
            pool.set_maxconn(srv.state, maxconn)
        return None
