"""Backends end to end: health checks, backups, algorithms, retries and the queue, with the
proxy as a real process and servers on loopback that can be killed and brought back.

Checks run every 100 ms here, so that each state change takes well under a second; every
wait is on a condition (a log line, a byte) with a deadline.
"""
import re
import socket
import threading
import time

import pytest

from support import (BOTH_FORMS, BOTH_POLLERS, RESET, TIMING_MARGIN, V2_LOCAL, RecordingServer,
                     connect, finish, free_port, one_frontend, read_to_eof, v1_line,
                     wait_until)


class NamedServer(object):
    """A loopback server that greets every connection with its name, records what the client
    sends until EOF, then closes; it can be killed and started again on the same port."""

    def __init__(self, name):
        self.name = name
        self.port = 0
        self.received = []       # what each connection sent, in the order they were accepted
        self.sock = None
        self.start()

    @property
    def address(self):
        return "127.0.0.1:%d" % self.port

    def start(self):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self.sock = sock
        threading.Thread(target=self._accept_loop, args=(sock,), daemon=True).start()

    def kill(self):
        """Stop listening: new connections are refused (established ones carry on)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def _accept_loop(self, sock):
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            record = bytearray()
            self.received.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn, record):
        with conn:
            try:
                conn.settimeout(30)
                conn.sendall(self.name.encode() + b"\n")
                while True:
                    data = conn.recv(65536)
                    if not data:
                        return
                    record += data
            except OSError:
                pass        # a health check that went away first


def config(servers, backend="", bind_options=""):
    """one_frontend() on a fresh port for these (name, address and options) servers; returns
    (text, port)."""
    port = free_port()
    return one_frontend(["127.0.0.1:%d %s" % (port, bind_options)], servers, backend=backend), port


def open_session(port, header=b""):
    """Connect (sending a PROXY header first, if given) and return (socket, server name)."""
    sock = connect(("127.0.0.1", port))
    if header:
        sock.sendall(header)
    greeting = b""
    while not greeting.endswith(b"\n"):
        data = sock.recv(64)
        if not data:
            break
        greeting += data
    return sock, greeting.decode().strip()


def served_by(port, header=b""):
    """Which server one short connection went to ('' if the proxy closed it)."""
    sock, name = open_session(port, header)
    finish(sock)
    return name


def wait_line(proxy, text, start, started_at, within):
    """The log line with ``text`` (from line ``start`` on), required within ``within`` s of
    ``started_at`` plus the margin."""
    line = proxy.wait_for(text, timeout=within + TIMING_MARGIN + 5, start=start)
    elapsed = time.monotonic() - started_at
    assert elapsed < within + TIMING_MARGIN, (text, elapsed)
    return line


# -- health checks -----------------------------------------------------------------------------

@BOTH_FORMS
def test_dead_server_goes_down_gets_nothing_and_comes_back(launch):
    s1, s2 = NamedServer("s1"), NamedServer("s2")
    checks = "check inter 100ms rise 2 fall 3"
    text, port = config([("s1", "%s %s" % (s1.address, checks)),
                         ("s2", "%s %s" % (s2.address, checks))])
    proxy = launch(text)
    assert {served_by(port) for _ in range(4)} == {"s1", "s2"}

    start, killed_at = len(proxy.lines), time.monotonic()
    s1.kill()
    line = wait_line(proxy, "server be/s1 is DOWN", start, killed_at, within=0.1 * 3)
    assert re.search(r" server be/s1 is DOWN, reason: connection refused, check duration: "
                     r"\d+ms, 1 active and 0 backup servers left$", line), line
    start = len(proxy.lines)
    assert [served_by(port) for _ in range(6)] == ["s2"] * 6
    # Not even tried: none of those went to s1 first and was retried.
    logged = wait_for_count(proxy, "fe=fe ", start, 6)
    assert not [line for line in logged if "retries=" in line], logged

    start, revived_at = len(proxy.lines), time.monotonic()
    s1.start()
    line = wait_line(proxy, "server be/s1 is UP", start, revived_at, within=0.1 * 2)
    assert "reason: layer4 check passed" in line
    assert line.endswith("2 active and 0 backup servers online")
    assert {served_by(port) for _ in range(4)} == {"s1", "s2"}


def wait_for_count(proxy, text, start, count):
    """The log lines with ``text`` from line ``start`` on, once there are ``count`` of them."""
    def enough():
        lines = [line for line in proxy.lines[start:] if text in line]
        return lines if len(lines) >= count else None
    return wait_until(enough, what="%d lines with %r" % (count, text))


@pytest.mark.parametrize("allbackups", [False, True])
def test_backups_take_over_and_hand_back(launch, allbackups):
    servers = {name: NamedServer(name) for name in ("n1", "n2", "b1", "b2")}
    checks = "check inter 100ms rise 1 fall 1"
    text, port = config(
        [(name, "%s %s%s" % (server.address, checks, " backup" if name[0] == "b" else ""))
         for name, server in sorted(servers.items(), reverse=True)],
        backend="option allbackups" if allbackups else "")
    proxy = launch(text)
    assert {served_by(port) for _ in range(6)} == {"n1", "n2"}

    start = len(proxy.lines)
    servers["n1"].kill()
    servers["n2"].kill()
    for name in ("n1", "n2"):
        proxy.wait_for("server be/%s is DOWN" % name, start=start)
    assert proxy.log_lines("0 active and 2 backup servers left")
    assert {served_by(port) for _ in range(6)} == ({"b1", "b2"} if allbackups else {"b2"})

    start = len(proxy.lines)
    servers["n1"].start()
    proxy.wait_for("server be/n1 is UP", start=start)
    assert {served_by(port) for _ in range(6)} == {"n1"}      # handed back at once


def test_check_send_proxy_exact_bytes(launch):
    v1, v2, other_port = RecordingServer(), RecordingServer(), RecordingServer()
    text, port = config([
        ("v1", "%s check inter 100ms send-proxy" % v1.config_address),
        ("v2", "%s check inter 100ms send-proxy-v2" % v2.config_address),
        # Checked on another port: no header there unless check-send-proxy says so.
        ("elsewhere", "127.0.0.1:1 check inter 100ms send-proxy port %d" % other_port.port)])
    launch(text)
    got = v1.next_connection()
    assert bytes(got.received) == b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (
        got.peer[1], v1.port)
    assert bytes(v2.next_connection().received) == V2_LOCAL
    assert bytes(other_port.next_connection().received) == b""


def test_no_usable_server_closes_clients_and_keeps_listening(launch):
    dead = NamedServer("s1")
    dead.kill()
    text, port = config([("s1", "%s check inter 100ms fall 1 rise 1" % dead.address)])
    proxy = launch(text)
    proxy.wait_for("server be/s1 is DOWN")
    proxy.wait_for("backend be has no server available!")
    for _ in range(3):
        started = time.monotonic()
        assert served_by(port) == ""
        assert time.monotonic() - started < TIMING_MARGIN
    proxy.wait_for("end=no-server")
    dead.start()
    proxy.wait_for("server be/s1 is UP")
    assert served_by(port) == "s1"


# -- algorithms ---------------------------------------------------------------------------------

def test_leastconn_follows_long_connections(launch):
    s1, s2 = NamedServer("s1"), NamedServer("s2")
    text, port = config([("s1", s1.address), ("s2", s2.address)], backend="balance = leastconn")
    proxy = launch(text)
    first, busy = open_session(port)                   # a long connection
    idle = "s2" if busy == "s1" else "s1"
    assert [served_by(port) for _ in range(4)] == [idle] * 4
    second, name = open_session(port)
    assert name == idle                                 # now one long connection each
    finish(first)
    proxy.wait_for("be=be/%s " % busy)                  # its end is logged: the slot is free
    assert [served_by(port) for _ in range(4)] == [busy] * 4
    finish(second)


def v1_header(client_ip):
    return b"PROXY TCP4 %s 192.0.2.1 40000 80\r\n" % client_ip.encode()


def test_source_hashing_is_stable_and_moves_only_the_dead_servers_clients(launch):
    servers = {name: NamedServer(name) for name in ("s1", "s2", "s3")}
    text, port = config(
        [(name, "%s check inter 100ms rise 1 fall 1" % server.address)
         for name, server in sorted(servers.items())],
        backend="balance = source", bind_options="accept-proxy")
    proxy = launch(text)
    clients = ["198.51.100.%d" % n for n in range(1, 31)]

    def owners():
        return {client: served_by(port, v1_header(client)) for client in clients}

    before = owners()
    assert set(before.values()) == {"s1", "s2", "s3"}
    assert owners() == before                            # stable for each client

    start = len(proxy.lines)
    servers["s2"].kill()
    proxy.wait_for("server be/s2 is DOWN", start=start)
    during = owners()
    moved = {client for client in clients if during[client] != before[client]}
    assert moved == {client for client in clients if before[client] == "s2"}
    assert "s2" not in during.values()

    start = len(proxy.lines)
    servers["s2"].start()
    proxy.wait_for("server be/s2 is UP", start=start)
    assert owners() == before                            # and they come back


# -- retries -------------------------------------------------------------------------------------

PAYLOAD = b"hello\r\n" + bytes(range(256))


@BOTH_POLLERS
@pytest.mark.parametrize("redispatch, retries, end, tried", [
    (True, 3, "end=normal", "retries=1"),        # the first pick refuses, the next one serves
    (False, 2, "end=connect-refused", "retries=2"),
])
def test_retries_and_redispatch(launch, redispatch, retries, end, tried):
    """Another server is tried at once; the same one after min(timeout connect, 1s)."""
    good = RecordingServer(reply=b"served")
    text, port = config(
        [("refuses", "127.0.0.1:%d" % free_port()),
         ("good", "%s send-proxy" % good.config_address)],
        backend="balance = first\nretries = %d\ntimeout connect = 200ms\n%s" % (
            retries, "option redispatch" if redispatch else ""))
    proxy = launch(text)
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    started = time.monotonic()
    reply = finish(sock, PAYLOAD)
    elapsed = time.monotonic() - started
    line = proxy.wait_for("fe=fe ")
    assert end in line and tried in line
    assert elapsed < TIMING_MARGIN if redispatch else 2 * 0.2 <= elapsed < 2 * 0.2 + TIMING_MARGIN
    if redispatch:
        assert reply == b"served"
        # The PROXY header and the client's bytes arrive exactly once, in one piece.
        assert bytes(good.next_connection().received) == v1_line(
            "127.0.0.1", "127.0.0.1", client_port, port) + PAYLOAD
        assert "be=be/good " in line
    else:
        assert reply in (b"", RESET) and good.accepted == []


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_a_refused_connect_ends_as_connect_refused_for_tcp_and_unix_servers(launch, tmp_path,
                                                                           kind):
    """Nobody listens: a TCP port (the refusal comes from the send right after connect()) and
    a Unix socket file left behind by a server that has gone (connect() itself refuses)."""
    if kind == "tcp":
        server = "127.0.0.1:%d" % free_port()
    else:
        path = str(tmp_path / "gone.sock")
        with socket.socket(socket.AF_UNIX) as gone:
            gone.bind(path)           # the file stays after close: connecting to it is refused
        server = "unix@" + path
    text, port = config([("gone", server)], backend="retries = 0\n")
    proxy = launch(text)
    assert finish(connect(("127.0.0.1", port)), PAYLOAD) in (b"", RESET)
    line = proxy.wait_for("fe=fe ")
    assert "end=connect-refused" in line and 'reason="Connection refused"' in line


def test_refused_traffic_marks_a_server_down(launch):
    """Passive health: the check port answers, the traffic port refuses. Each refused client
    connection counts as a failed check, so the server goes down after ``fall`` of them (one
    more if the first check, which passes, lands in between), and the next client goes
    straight to the other server."""
    good, check_only = NamedServer("good"), NamedServer("check")
    text, port = config(
        [("refuses", "127.0.0.1:%d check port %d inter 10s rise 1 fall 2"
          % (free_port(), check_only.port)),
         ("good", good.address)],
        backend="balance = first\noption redispatch")
    proxy = launch(text)
    for clients in range(1, 5):
        assert served_by(port) == "good"
        logged = wait_for_count(proxy, "fe=fe ", 0, clients)
        if "retries=" not in logged[-1]:
            break
    assert ["retries=1" in line for line in logged] in (
        [True, True, False], [True, True, True, False])
    line = proxy.log_lines("server be/refuses is DOWN")[-1]
    assert "reason: connection refused (client traffic)" in line


# -- the queue ------------------------------------------------------------------------------------

def one_slot_proxy(launch, backend):
    """A proxy in front of one server with maxconn 1: (the server, the proxy, its port)."""
    server = NamedServer("s1")
    text, port = config([("s1", "%s maxconn 1" % server.address)], backend=backend)
    return server, launch(text), port


def timings(line):
    """The log line's Tw, Tc and Tt in ms (None for "-")."""
    fields = dict(re.findall(r" (Tw|Tc|Tt)=(-|\d+)(?= )", line))
    return tuple(None if fields[name] == "-" else int(fields[name]) for name in ("Tw", "Tc", "Tt"))


def test_queue_serves_in_order_as_slots_free(launch):
    server, proxy, port = one_slot_proxy(launch, "timeout queue = 10s")
    holder, name = open_session(port)
    assert name == "s1"
    holder.sendall(b"A")
    waiting = []
    for tag in b"BCD":
        # Each connect completes before the next starts, so the proxy accepts them in order.
        sock = connect(("127.0.0.1", port))
        sock.sendall(bytes([tag]))
        waiting.append(sock)
    current = holder
    for sock in waiting:
        finish(current)
        assert sock.recv(64) == b"s1\n"            # served as soon as the slot frees
        current = sock
    finish(current)
    lines = wait_for_count(proxy, "end=normal", 0, 4)
    assert [bytes(record) for record in server.received] == [b"A", b"B", b"C", b"D"]
    # Tw: time in the queue (none for the holder); Tt covers it and the connect (Tc).
    assert timings(lines[0])[0] == 0
    for tw, tc, tt in map(timings, lines):
        assert tc is not None and tw + tc <= tt


def test_timeout_queue_and_maxqueue(launch):
    server, proxy, port = one_slot_proxy(launch, "timeout queue = 300ms\nmaxqueue = 1")
    holder, _ = open_session(port)
    queued = connect(("127.0.0.1", port))
    queued_at = time.monotonic()
    refused = connect(("127.0.0.1", port))               # the queue is full
    assert read_to_eof(refused) == b""
    full = proxy.wait_for("end=queue")
    assert "end=queue-full" in full and timings(full)[:2] == (0, None)   # never queued
    assert read_to_eof(queued) == b""
    assert 0.25 < time.monotonic() - queued_at < 0.3 + TIMING_MARGIN
    tw, tc, tt = timings(proxy.wait_for("end=queue-timeout"))
    assert 300 <= tw < 300 + TIMING_MARGIN * 1000 and tc is None and tw <= tt
    finish(holder)
    assert served_by(port) == "s1"                        # the frontend serves on
    for sock in (queued, refused):
        sock.close()


def test_queued_clients_are_closed_when_the_last_server_goes_down(launch):
    server = NamedServer("s1")
    text, port = config([("s1", "%s maxconn 1 check inter 100ms fall 1" % server.address)],
                        backend="timeout queue = 30s")
    proxy = launch(text)
    holder, _ = open_session(port)
    queued = connect(("127.0.0.1", port))
    queued_at = time.monotonic()
    server.kill()
    proxy.wait_for("server be/s1 is DOWN")
    assert read_to_eof(queued) == b""              # at once, not at timeout queue (30 s)
    assert time.monotonic() - queued_at < 1 + TIMING_MARGIN
    line = proxy.wait_for("peer=127.0.0.1:%d " % queued.getsockname()[1])
    assert "end=no-server" in line.split()
    for sock in (holder, queued):
        sock.close()
