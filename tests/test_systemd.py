"""systemd without systemd: a datagram socket of the test's stands in for $NOTIFY_SOCKET, and
listening sockets the test opens are passed as fds 3+ with LISTEN_FDS/LISTEN_PID."""
import os
import signal
import socket
import sys
import time

import pytest

from simpleproxy.systemd import Notifier, activated_sockets

from support import ProxyProcess, RecordingServer, exchange, free_port, proxy_env


# What systemd does before it starts the service: the sockets on fds 3 and up, LISTEN_PID the
# service's own pid (exec keeps it). argv: the count, the fds, then the command to exec.
PUT_ON_FD_3 = """
import fcntl, os, sys
count = int(sys.argv[1])
moved = [fcntl.fcntl(int(fd), fcntl.F_DUPFD, 100) for fd in sys.argv[2:2 + count]]
for position, fd in enumerate(moved):
    os.dup2(fd, 3 + position)
    os.close(fd)
os.environ["LISTEN_PID"] = str(os.getpid())
os.execv(sys.argv[2 + count], sys.argv[2 + count:])
"""


class NotifySocket(object):
    """The receiving end of sd_notify: each datagram as its list of KEY=VALUE lines."""

    def __init__(self, address):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address.replace("@", "\0", 1) if address.startswith("@") else address)
        self.address = address

    def next(self, timeout=10.0):
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode().split("\n")

    def next_with(self, key, timeout=10.0):
        """The next message carrying ``key`` (WATCHDOG=1 may come in between)."""
        deadline = time.monotonic() + timeout
        while True:
            message = self.next(max(0.01, deadline - time.monotonic()))
            if key in message:
                return message

    def close(self):
        self.sock.close()


@pytest.fixture
def backend():
    server = RecordingServer(mode="echo")
    yield server
    server.close()


@pytest.fixture
def run_proxy_under_systemd(tmp_path, proxy_python):
    started = []

    def start(text, environ, **options):
        env = proxy_env()
        env.update(environ)
        proxy = ProxyProcess(text, tmp_path, env=env, **options)
        started.append(proxy)
        return proxy
    yield start
    for proxy in started:
        try:
            assert proxy.stop() == 0
        finally:
            proxy.kill_group()


def listen_config(port, backend):
    # No workers key: under systemd the master is used anyway.
    return "[listen app]\nbind = 127.0.0.1:%d\nserver s = %s\n" % (port, backend.config_address)


@pytest.mark.parametrize("abstract", [False, True])
def test_ready_reloading_and_stopping_are_notified(tmp_path, backend, run_proxy_under_systemd,
                                                   abstract):
    address = "@simpleproxy-test-%d" % os.getpid() if abstract else str(tmp_path / "notify")
    notify = NotifySocket(address)
    try:
        port = free_port()
        proxy = run_proxy_under_systemd(listen_config(port, backend), {"NOTIFY_SOCKET": address})
        ready = notify.next()
        assert ready[0] == "READY=1"
        assert ready[1] == "STATUS=generation 1 serves with 1 worker(s)"
        assert exchange(("127.0.0.1", port), b"up") == b"up"     # READY meant accepting
        proxy.proc.send_signal(signal.SIGHUP)
        reloading = notify.next()
        now_usec = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
        assert reloading[0] == "RELOADING=1"
        assert reloading[1].startswith("MONOTONIC_USEC=")
        assert 0 <= now_usec - int(reloading[1].split("=")[1]) < 10e6
        assert notify.next() == ["READY=1", "STATUS=generation 2 serves with 1 worker(s)"]
        proxy.proc.send_signal(signal.SIGTERM)
        assert notify.next() == ["STOPPING=1", "STATUS=stopping"]
    finally:
        notify.close()


def test_watchdog_every_half_interval(tmp_path, backend, run_proxy_under_systemd):
    address = str(tmp_path / "notify")
    notify = NotifySocket(address)
    try:
        run_proxy_under_systemd(listen_config(free_port(), backend),
                                {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
        notify.next_with("READY=1")
        stamps = [time.monotonic()]
        for _ in range(4):
            assert notify.next_with("WATCHDOG=1", timeout=5) == ["WATCHDOG=1"]
            stamps.append(time.monotonic())
        gaps = [b - a for a, b in zip(stamps[1:], stamps[2:])]
        assert all(0.1 <= gap <= 0.4 for gap in gaps), gaps      # every 0.2 s, well within 0.4
    finally:
        notify.close()


def test_watchdog_for_another_pid_is_not_ours():
    environ = {"NOTIFY_SOCKET": "/nonexistent", "WATCHDOG_USEC": "400000",
               "WATCHDOG_PID": str(os.getpid() + 1)}
    assert Notifier(environ).watchdog_interval is None
    environ["WATCHDOG_PID"] = str(os.getpid())
    assert Notifier(environ).watchdog_interval == 0.2


def test_without_systemd_nothing_is_sent_or_taken():
    notifier = Notifier({})
    assert notifier.address is None and notifier.watchdog_interval is None
    notifier.ready("no one listens")          # must not raise
    assert activated_sockets({}) == {}
    # Meant for another process: not ours to take, and the variables are gone afterwards.
    environ = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert activated_sockets(environ) == {}
    assert environ == {}


def test_socket_activation_uses_the_sockets_passed_as_fds_3_and_up(backend,
                                                                   run_proxy_under_systemd):
    # Bound and listening here, without SO_REUSEADDR: a proxy that tried to bind the same
    # addresses itself would fail with "Address already in use".
    activated = []
    for _ in range(2):
        sock = socket.socket()
        sock.bind(("127.0.0.1", free_port()))
        sock.listen(16)
        activated.append(sock)
    ports = [sock.getsockname()[1] for sock in activated]
    text = ("[listen app]\nbind = 127.0.0.1:%d\n       127.0.0.1:%d\nserver s = %s\n"
            % (ports[1], ports[0], backend.config_address))     # bind lines in another order
    try:
        fds = [sock.fileno() for sock in activated]
        prefix = [sys.executable, "-c", PUT_ON_FD_3, str(len(fds))] + [str(fd) for fd in fds]
        proxy = run_proxy_under_systemd(text, {"LISTEN_FDS": "2"}, pass_fds=fds,
                                        command_prefix=prefix)
        proxy.wait_for("generation 1 serves")
    finally:
        for sock in activated:
            sock.close()                     # the proxy holds its own copies
    for port in ports:
        assert exchange(("127.0.0.1", port), b"via %d" % port) == b"via %d" % port
    assert not proxy.log_lines("cannot listen")
