"""The master and its workers, as real processes: restarts, reloads under load, soft stop,
one health verdict, privileges; and the pure parts (limits split across workers, values)."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time

import pytest

from simpleproxy.config import parse_config
from simpleproxy.master import worker_config
from simpleproxy.config_values import parse_workers, usable_cpus
from simpleproxy.process import split_limit
from stats_support import ask, http_get, show_stat_rows

from support import (DEFAULT_TIMEOUT, RESET, TIMING_MARGIN, ProxyProcess, RecordingServer,
                     connect, exchange, exchange_or_reset, finish, free_port, hostport,
                     read_to_eof, skip_or_fail, wait_until)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


class TaggedEchoServer(RecordingServer):
    """An echo server that first sends its tag, so a client knows which server it reached."""

    def __init__(self, tag):
        self.tag = tag
        RecordingServer.__init__(self, mode="echo")

    def handle(self, conn, record):
        conn.sendall(self.tag)
        RecordingServer.handle(self, conn, record)


def proxy_config(port, servers, workers=1, extra_global="", server_options=""):
    return ("[global]\nworkers = %s\n%s\n[defaults]\ntimeout connect = 2s\n"
            "[listen app]\nbind = 127.0.0.1:%d\n%s\n" % (
                workers, extra_global, port,
                "\n".join("server s%d = %s %s" % (n, server.config_address, server_options)
                          for n, server in enumerate(servers))))


class Master(ProxyProcess):
    """simpleproxy started with workers: the master and what it says about its workers."""

    def __init__(self, config_text, workdir, **options):
        ProxyProcess.__init__(self, config_text, workdir, **options)
        self.generation = 1
        self.wait_for("generation 1 serves")

    def workers(self):
        with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
            return sorted(int(pid) for pid in f.read().split())

    def reload(self, config_text=None, signum=signal.SIGHUP):
        """Send SIGHUP or SIGUSR2 (after writing a new config) and wait until the new workers
        serve and every old one has stopped accepting."""
        if config_text is not None:
            with open(self.config_path, "w") as f:
                f.write(config_text)
        stopped = len(self.log_lines("stopped accepting"))
        old_workers = int(self.wait_for("generation %d serves" % self.generation).split()[-2])
        self.proc.send_signal(signum)
        self.generation += 1
        self.wait_for("generation %d serves" % self.generation)
        wait_until(lambda: len(self.log_lines("stopped accepting")) >= stopped + old_workers,
                   what="the old workers to stop accepting")


@pytest.fixture
def start_master(tmp_path, proxy_python):
    started = []

    def start(config_text, **options):
        master = Master(config_text, tmp_path, **options)
        started.append(master)
        return master
    yield start
    for master in started:
        try:
            assert master.stop() == 0
        finally:
            master.kill_group()


@pytest.fixture
def backends():
    servers = [TaggedEchoServer(b"A:"), TaggedEchoServer(b"B:")]
    yield servers
    for server in servers:
        server.close()


# -- the pure parts -------------------------------------------------------------------------------

@pytest.mark.parametrize("limit, workers, share", [
    (None, 2, None), (0, 2, 0), (100, 1, 100), (100, 2, 50), (101, 2, 51), (1, 4, 1),
    (7, 3, 3),
])
def test_limits_are_split_rounding_up(limit, workers, share):
    assert split_limit(limit, workers) == share


def test_worker_config_splits_global_frontend_and_server_maxconn():
    config = parse_config("[global]\nworkers = 3\nmaxconn = 100\n[listen a]\nbind = :8000\n"
                          "maxconn = 10\nserver s = 127.0.0.1:1 maxconn 5\n"
                          "server t = 127.0.0.1:2\n")
    worker = worker_config(config)
    assert worker.global_settings.maxconn == 34
    assert worker.frontends[0].maxconn == 4
    assert [s.maxconn for s in worker.backends["a"].servers] == [2, 0]


def test_workers_auto_is_the_usable_cpus():
    assert parse_workers("auto") == usable_cpus() == len(os.sched_getaffinity(0))
    assert parse_workers("3") == 3


# -- supervision ------------------------------------------------------------------------------------

def test_a_killed_worker_is_restarted_and_the_proxy_keeps_serving(start_master, backends):
    port = free_port()
    master = start_master(proxy_config(port, backends[:1], workers=2))
    before = master.workers()
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    master.wait_for("(pid %d) was killed by signal SIGKILL" % before[0])
    wait_until(lambda: len(master.workers()) == 2 and before[0] not in master.workers(),
               what="a new worker in place of the killed one")
    for n in range(20):
        assert exchange(("127.0.0.1", port), b"ping %d" % n) == b"A:ping %d" % n
    assert master.proc.poll() is None


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_sigint_stop_the_master_and_its_workers_at_once(tmp_path, backends, signum):
    port = free_port()
    master = Master(proxy_config(port, backends[:1], workers=2), tmp_path)
    try:
        workers = master.workers()
        held = connect(("127.0.0.1", port))        # no drain: closed at once
        try:
            assert held.recv(2) == b"A:"
            master.proc.send_signal(signum)
            assert master.proc.wait(TIMING_MARGIN) == 0
            assert finish(held) in (b"", RESET)
        finally:
            held.close()
        assert all(_exited(pid) for pid in workers)
        master.wait_for("received %s, stopping" % signal.Signals(signum).name)
    finally:
        master.kill_group()


def test_pidfile_holds_the_master_pid_until_it_stops(tmp_path, backends):
    """Any process key, not only workers, makes a master (here with its one worker)."""
    port = free_port()
    pidfile = str(tmp_path / "simpleproxy.pid")
    master = Master("[global]\npidfile = %s\n[listen app]\nbind = 127.0.0.1:%d\n"
                    "server s0 = %s\n" % (pidfile, port, backends[0].config_address), tmp_path)
    try:
        with open(pidfile) as f:
            assert f.read() == "%d\n" % master.proc.pid
        assert len(master.workers()) == 1
        assert exchange(("127.0.0.1", port), b"one") == b"A:one"
        assert master.stop() == 0
        assert not os.path.exists(pidfile)
    finally:
        master.kill_group()


# -- reloads ------------------------------------------------------------------------------------------

class SteadyLoad(object):
    """Client threads that open connection after connection, each checking its own echo, until
    stopped (or a count or time bound is reached). Every failure is kept with its reason."""

    def __init__(self, address, tags, threads=4, max_connections=40000, max_seconds=90):
        self.address = address
        self.tags = tags
        self.done = 0
        self.failures = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._deadline = time.monotonic() + max_seconds
        self._max = max_connections
        self.started = time.monotonic()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True)
                         for n in range(threads)]
        for thread in self._threads:
            thread.start()

    def _run(self, number):
        sequence = 0
        while not self._stop.is_set() and time.monotonic() < self._deadline \
                and self.done < self._max:
            sequence += 1
            payload = b"client %d connection %d " % (number, sequence) * 8
            try:
                reply = exchange(self.address, payload)
                ok = reply[:2] in self.tags and reply[2:] == payload
                reason = "wrong echo: %r" % reply[:80]
            except OSError as exc:
                ok, reason = False, repr(exc)
            with self._lock:
                self.done += 1
                if not ok:
                    self.failures.append(reason)

    def stop(self):
        self._stop.set()
        for thread in self._threads:
            thread.join(30)
        return self.done / (time.monotonic() - self.started)


@pytest.mark.parametrize("workers", [1, 2])
def test_ten_reloads_under_load_lose_nothing_and_switch_servers(start_master, backends, workers):
    port = free_port()
    address = ("127.0.0.1", port)
    master = start_master(proxy_config(port, backends[:1], workers=workers))
    load = SteadyLoad(address, (b"A:", b"B:"))
    try:
        wait_until(lambda: load.done >= 200, timeout=30, what="the load to get going")
        for n in range(10):
            server = backends[(n + 1) % 2]
            master.reload(proxy_config(port, [server], workers=workers),
                          (signal.SIGHUP, signal.SIGUSR2)[n % 2])    # HAProxy's both
            # The old workers accept nothing any more: a new connection sees the new server.
            assert exchange(address, b"after reload %d" % n) == server.tag + b"after reload %d" % n
            done = load.done       # traffic between reloads, not ten reloads in one burst
            wait_until(lambda: load.done >= done + 100, timeout=30, what="more connections")
    finally:
        rate = load.stop()
    assert load.failures == []
    assert rate >= 100, "only %.0f connections/s: not a load" % rate
    wait_until(lambda: len(master.workers()) == workers, what="the old workers to exit")
    assert not master.log_lines("WARNING worker"), "a worker died unexpectedly"


def test_a_connection_opened_before_a_reload_finishes_through_the_old_worker(start_master,
                                                                             backends):
    port = free_port()
    master = start_master(proxy_config(port, backends[:1]))
    old_worker = master.workers()
    sock = connect(("127.0.0.1", port))
    try:
        sock.sendall(b"before")
        received = b""
        while len(received) < len(b"A:before"):
            received += sock.recv(100)
        assert received == b"A:before"
        master.reload(proxy_config(port, backends[1:]))
        master.wait_for("1 connection(s) left to finish")
        assert exchange(("127.0.0.1", port), b"new") == b"B:new"
        assert old_worker[0] in master.workers()          # still draining
        assert finish(sock, b" and after") == b" and after"
    finally:
        sock.close()
    master.wait_for("worker 1.0 (pid %d) exited with status 0" % old_worker[0])


def test_a_reload_opens_new_addresses_and_closes_removed_ones(start_master, backends):
    first, second = free_port(), free_port()
    master = start_master(proxy_config(first, backends[:1], workers=2))
    master.reload(proxy_config(second, backends[:1], workers=2))
    assert exchange(("127.0.0.1", second), b"new") == b"A:new"
    with pytest.raises(ConnectionRefusedError):
        connect(("127.0.0.1", first))


@pytest.mark.parametrize("broken", [
    "[listen app]\nbind = 127.0.0.1:%(port)d\nserver s0 = nowhere\n",
    # valid, but its new address is taken: binding fails, so the reload must too
    "[global]\nworkers = 1\n[listen app]\nbind = 127.0.0.1:%(port)d\n"
    "bind = 127.0.0.1:%(taken)d\nserver s0 = 127.0.0.1:9\n",
])
def test_a_reload_with_a_broken_config_changes_nothing(start_master, backends, broken):
    port = free_port()
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    master = start_master(proxy_config(port, backends[:1]))
    workers = master.workers()
    with open(master.config_path, "w") as f:
        f.write(broken % {"port": port, "taken": taken.getsockname()[1]})
    master.proc.send_signal(signal.SIGHUP)
    master.wait_for("reload aborted: the workers keep serving the previous configuration")
    taken.close()
    assert master.workers() == workers
    assert exchange(("127.0.0.1", port), b"same") == b"A:same"
    assert not master.log_lines("generation 2")


def test_workers_whose_master_dies_finish_their_connections_and_exit(tmp_path, backends):
    port = free_port()
    master = Master(proxy_config(port, backends[:1]), tmp_path)
    try:
        worker = master.workers()[0]
        sock = connect(("127.0.0.1", port))
        try:
            assert sock.recv(2) == b"A:"
            os.kill(master.proc.pid, signal.SIGKILL)
            master.wait_for("the master is gone: finishing the connections")
            master.wait_for("stopped accepting; 1 connection(s) left to finish")
            assert finish(sock, b"still here") == b"still here"
        finally:
            sock.close()
        wait_until(lambda: _exited(worker), what="the orphaned worker to exit")
    finally:
        master.kill_group()


def _exited(pid):
    """True once ``pid`` is gone or a zombie (an orphan waits for init to reap it)."""
    try:
        return _state(pid) == "zombie"
    except FileNotFoundError:
        return True


def _state(pid):
    """The process's state as /proc tells it: running, sleeping, stopped, zombie..."""
    with open("/proc/%d/status" % pid) as f:
        return re.search(r"^State:\s+\S+ \((\w+)", f.read(), re.M).group(1)


# -- soft stop ------------------------------------------------------------------------------------

def test_soft_stop_accepts_for_grace_then_drains_within_hard_stop_after(start_master, backends):
    port = free_port()
    address = ("127.0.0.1", port)
    master = start_master(proxy_config(port, backends[:1], workers=2,
                                       extra_global="grace = 1s\nhard-stop-after = 1s"))
    idle = connect(address)
    try:
        assert idle.recv(2) == b"A:"
        started = time.monotonic()
        master.proc.send_signal(signal.SIGUSR1)
        assert exchange(address, b"in grace") == b"A:in grace"
        _accepting_until_refused(address, 1.0 + TIMING_MARGIN + 1.0)
        refused_after = time.monotonic() - started
        # No slack below (a timer firing early is a bug): grace, then hard-stop-after
        # counted from when the listeners closed; above, the margin for each step.
        assert 1.0 <= refused_after <= 1.0 + TIMING_MARGIN, refused_after
        idle.settimeout(10)
        try:
            read_to_eof(idle)
        except ConnectionResetError:
            pass
        closed_after = time.monotonic() - started
        assert 2.0 <= closed_after <= refused_after + 1.0 + TIMING_MARGIN, closed_after
    finally:
        idle.close()
    assert master.proc.wait(10) == 0
    master.wait_for("hard-stop-after: closing the 1 connection(s) left")


def _accepting_until_refused(address, timeout):
    """Connect, each connection served in full, until one is refused; fail after ``timeout``.

    A connection that reached the accept queue as the last listening socket closed is reset
    by the kernel (nothing accepts it any more): that is the listeners closing too."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            assert exchange(address, b"still accepting") == b"A:still accepting"
        except (ConnectionRefusedError, ConnectionResetError):
            return
        time.sleep(0.02)
    raise AssertionError("still accepting %.1fs later" % timeout)


def test_workers_know_of_a_soft_stop_while_grace_runs(start_master, backends, tmp_path,
                                                     proxy_python):
    """SIGUSR1 reaches the workers at once (soft-stop), so their /health can say 503 while
    they still accept for ``grace``."""
    port = free_port()
    path = str(tmp_path / "control.sock")
    master = start_master(proxy_config(port, backends[:1], workers=2, extra_global="grace = 30s"),
                          command=[proxy_python, DRIVER, path])

    def flags():
        return sorted(snapshot["stopping_softly"]
                      for snapshot in json.loads(control(path, "counters"))["snapshots"])
    assert flags() == [False, False]
    master.proc.send_signal(signal.SIGUSR1)
    wait_until(lambda: flags() == [True, True], what="both workers to know of the soft stop")
    assert exchange(("127.0.0.1", port), b"in grace") == b"A:in grace"


# -- the single process (no process key): SIGUSR1 (SIGHUP and SIGUSR2: tests/test_hardening.py) ---

SINGLE = "[listen app]\nbind = 127.0.0.1:%d\nserver s0 = %s\n"


def test_a_single_process_soft_stops_on_sigusr1(launch, backends):
    port = free_port()
    address = ("127.0.0.1", port)
    proxy = launch(SINGLE % (port, backends[0].config_address))
    held = connect(address)
    try:
        assert held.recv(2) == b"A:"
        proxy.proc.send_signal(signal.SIGUSR1)
        proxy.wait_for("stopped accepting; 1 connection(s) left to finish")
        with pytest.raises(ConnectionRefusedError):
            connect(address)
        assert finish(held, b"after") == b"after"      # the established one carries on
    finally:
        held.close()
    assert proxy.proc.wait(10) == 0
    proxy.wait_for("stopped")


# -- one health verdict ---------------------------------------------------------------------------

def test_two_workers_check_each_server_once_per_interval_and_share_the_verdict(start_master,
                                                                              backends):
    checked = RecordingServer(mode="record")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))            # bound, never listening: connections are refused
    port = free_port()
    try:
        text = ("[global]\nworkers = 2\n[listen app]\nbind = 127.0.0.1:%d\n"
                "server up = %s check inter 200ms\n"
                "server gone = %s check inter 200ms\n"
                "[listen watched]\nbind = 127.0.0.1:%d\n"
                "server s = %s send-proxy-v2 check inter 250ms\n" % (
                    port, backends[0].config_address, hostport(*dead.getsockname()),
                    free_port(), checked.config_address))
        master = start_master(text)
        master.wait_for("server app/gone is DOWN")
        first = len(checked.accepted)
        time.sleep(2.0)                    # a measuring window, not a wait for a condition
        checks = len(checked.accepted) - first
        # One checker: about 8 in 2 s; one per worker would be about 16.
        assert 3 <= checks <= 11, checks
        assert all(record.received.startswith(V2_SIGNATURE)
                   for record in list(checked.accepted)[:-1])
        # Both workers know app/gone is down: bursts until each has served some clients.
        served_by = set()
        deadline = time.monotonic() + 20
        while len(served_by) < 2 and time.monotonic() < deadline:
            results = []
            threads = [threading.Thread(target=lambda: results.append(
                exchange(("127.0.0.1", port), b"hello"))) for _ in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(30)
            assert results == [b"A:hello"] * 20
            served_by = {line.split("[")[1].split("]")[0]
                         for line in master.log_lines("be=app/up")}
        assert len(served_by) == 2, "one worker served every client"
        assert len(master.log_lines("server app/gone is DOWN")) == 1
    finally:
        checked.close()
        dead.close()


def test_failed_client_connections_on_another_worker_count_where_the_checks_are(start_master):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)                      # connects succeed: the first check passes
    port = free_port()
    master = start_master("[global]\nworkers = 2\n[listen app]\nbind = 127.0.0.1:%d\n"
                          "retries = 0\nserver s = %s check inter 30s rise 1 fall 1\n"
                          % (port, hostport(*server.getsockname())))
    checker = int(master.wait_for("worker 1.0 started").split("pid ")[1].rstrip(")"))
    server.settimeout(DEFAULT_TIMEOUT)
    server.accept()[0].close()             # the checker's first check: the next is 30 s away
    os.kill(checker, signal.SIGSTOP)       # so that every client goes to the other worker
    # kill() returns before a thread running on the other core has stopped.
    wait_until(lambda: _state(checker) == "stopped", what="the checker to be stopped")
    try:
        server.close()                     # from now on, connections are refused
        assert exchange_or_reset(("127.0.0.1", port), b"x") in (b"", RESET)
        master.wait_for("end=connect-refused")
        assert not master.log_lines("is DOWN")
    finally:
        os.kill(checker, signal.SIGCONT)
    # The checker's next check is 30 s away: only the forwarded failure can do this.
    line = master.wait_for("server app/s is DOWN, reason: connection refused (client traffic)")
    assert "simpleproxy[%d]" % checker in line


def test_health_carries_over_a_reload(start_master, backends):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = free_port()
    try:
        text = ("[global]\nworkers = 1\n[listen app]\nbind = 127.0.0.1:%d\n"
                "server up = %s check inter 5s\nserver gone = %s check inter 5s\n" % (
                    port, backends[0].config_address, hostport(*dead.getsockname())))
        master = start_master(text)
        master.wait_for("server app/gone is DOWN")
        master.reload()
        # The next check of the new worker is up to 5 s away: without carrying the verdict
        # over, every other client would go to the dead server.
        for n in range(10):
            assert exchange(("127.0.0.1", port), b"%d" % n) == b"A:%d" % n
    finally:
        dead.close()


# -- operator settings and counters through the master (channel.py) --------------------------------

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "master_driver.py")


def control(path, line):
    """One command to master_driver.py's control socket, and its one-line answer."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(line.encode() + b"\n")
        return read_to_eof(sock).decode().strip()


def servers_by_worker(path, backend="app"):
    """{worker pid: {server: its snapshot}} from a ``counters`` round."""
    snapshots = json.loads(control(path, "counters"))["snapshots"]
    return {snapshot["pid"]: snapshot["backends"][backend]["servers"] for snapshot in snapshots}


def statuses(path, server):
    return sorted(servers[server]["status"] for servers in servers_by_worker(path).values())


def test_server_admin_reaches_every_worker_and_survives_restarts_and_reloads(
        start_master, backends, tmp_path, proxy_python):
    port = free_port()
    address = ("127.0.0.1", port)
    path = str(tmp_path / "control.sock")
    config = proxy_config(port, backends, workers=2)
    master = start_master(config, command=[proxy_python, DRIVER, path])
    assert statuses(path, "s0") == ["UP", "UP"]
    assert control(path, "admin app nosuch state=MAINT") == "no server app/nosuch"
    assert control(path, "admin app s0 weight=300") == "weight must be from 0 to 256"
    assert control(path, "admin app s0 state=GONE") == "state must be one of DRAIN, MAINT, READY"
    assert control(path, "admin app s0 state=MAINT") == "ok"
    wait_until(lambda: statuses(path, "s0") == ["MAINT", "MAINT"],
               what="s0 in maintenance in both workers")
    for n in range(10):
        assert exchange(address, b"m%d" % n) == b"B:m%d" % n
    # A worker started again, and a whole new generation, get what the operator set.
    killed = master.workers()[0]
    os.kill(killed, signal.SIGKILL)
    wait_until(lambda: len(master.workers()) == 2 and killed not in master.workers(),
               what="a new worker in place of the killed one")
    wait_until(lambda: len(servers_by_worker(path)) == 2, what="both workers to answer")
    assert statuses(path, "s0") == ["MAINT", "MAINT"]
    master.reload(config)
    assert statuses(path, "s0") == ["MAINT", "MAINT"]
    for n in range(10):
        assert exchange(address, b"r%d" % n) == b"B:r%d" % n
    # Weight and maxconn too; maxconn is per proxy, so each of the two workers gets half.
    assert control(path, "admin app s0 state=READY weight=7 maxconn=5") == "ok"
    wait_until(lambda: all((servers["s0"]["status"], servers["s0"]["weight"],
                            servers["s0"]["maxconn"]) == ("UP", 7, 3)
                           for servers in servers_by_worker(path).values()),
               what="s0 back, weight 7, maxconn 3 in both workers")
    wait_until(lambda: exchange(address, b"back") == b"A:back", what="a connection to s0 again")


def test_counters_add_up_over_the_workers(start_master, backends, tmp_path, proxy_python):
    port = free_port()
    path = str(tmp_path / "control.sock")
    start_master(proxy_config(port, backends[:1], workers=2), command=[proxy_python, DRIVER, path])
    held = [connect(("127.0.0.1", port)) for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(b"x")
            assert sock.recv(16).startswith(b"A:")        # connected through to the server
        answer = json.loads(control(path, "counters"))
        assert len(answer["snapshots"]) == 2
        assert answer["total"]["workers"] == 2
        assert answer["total"]["active"] == 3
        assert answer["total"]["frontends"]["app"]["scur"] == 3
        assert answer["total"]["backends"]["app"]["servers"]["s0"]["scur"] == 3
        assert sum(s["active"] for s in answer["snapshots"]) == 3
    finally:
        for sock in held:
            sock.close()


# -- privileges -----------------------------------------------------------------------------------

def _ids(pid, field):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return [int(value) for value in line.split()[1:]]
    raise AssertionError("no %s line" % field)


def test_workers_drop_to_nobody_and_still_serve(start_master, backends):
    if os.geteuid() != 0:
        skip_or_fail("needs root to drop privileges")
    port = free_port()
    master = start_master(proxy_config(port, backends[:1], workers=2,
                                       extra_global="user = nobody\ngroup = nogroup"))
    for worker in master.workers():
        assert _ids(worker, "Uid")[:3] == [65534] * 3          # real, effective, saved
        assert _ids(worker, "Gid")[:3] == [65534] * 3
        assert _ids(worker, "Groups") == [65534]
    assert _ids(master.proc.pid, "Uid")[0] == 0         # the master may bind on a reload
    for n in range(10):
        assert exchange(("127.0.0.1", port), b"%d" % n) == b"A:%d" % n



# -- the stats socket and listener under a master (masterview.py) ---------------------------------

def stats_config(port, servers, tmp_path, workers=2, extra_global=""):
    """proxy_config with the stats socket and listener; (config, socket path, http port)."""
    sock, http = str(tmp_path / "admin.sock"), free_port()
    return (proxy_config(port, servers, workers=workers, extra_global=(
        "stats socket = %s\nstats http = 127.0.0.1:%d\n%s" % (sock, http, extra_global))),
        sock, http)


def socat_show_stat(sock):
    """``show stat`` as an operator types it: echo "show stat" | socat stdio unix-connect:..."""
    socat = shutil.which("socat")
    if socat is None:
        skip_or_fail("socat is not installed")
    return subprocess.run([socat, "stdio", "unix-connect:" + sock], input=b"show stat\n",
                          stdout=subprocess.PIPE, timeout=10, check=True).stdout.decode()


def test_the_master_serves_show_stat_summed_over_two_workers(start_master, backends, tmp_path):
    port = free_port()
    text, sock, http = stats_config(port, backends, tmp_path)
    master = start_master(text)
    sent = received = 0
    for n in range(40):
        payload = b"hello %d" % n
        answer = exchange(("127.0.0.1", port), payload)
        assert answer[2:] == payload
        sent, received = sent + len(payload), received + len(answer)

    def frontend():
        return show_stat_rows(socat_show_stat(sock))["app", "FRONTEND"]
    wait_until(lambda: frontend()["stot"] == "40" and frontend()["bin"] == str(sent),
               what="40 sessions and their bytes in the master's show stat")
    rows = show_stat_rows(socat_show_stat(sock))
    assert rows["app", "FRONTEND"]["bout"] == str(received)
    assert rows["app", "BACKEND"]["stot"] == "40"
    assert int(rows["app", "s0"]["stot"]) + int(rows["app", "s1"]["stot"]) == 40
    assert rows["app", "s0"]["status"] == rows["app", "s1"]["status"] == "no check"
    info = ask(sock, "show info\n")
    assert "\nPid: %d\n" % master.proc.pid in info and "\nCumConns: 40\n" in info
    status, body = http_get(http, "/;csv")
    assert status == 200 and show_stat_rows(body.decode())["app", "FRONTEND"]["stot"] == "40"
    status, body = http_get(http, "/metrics")
    assert 'haproxy_frontend_sessions_total{proxy="app"} 40' in body.decode()


def test_a_drain_set_through_the_master_carries_over_a_reload(start_master, backends, tmp_path):
    port = free_port()
    address = ("127.0.0.1", port)
    text, sock, _ = stats_config(port, backends, tmp_path)
    master = start_master(text)
    assert ask(sock, "set server app/s0 state drain\n") == "\n"
    assert show_stat_rows(ask(sock, "show stat\n"))["app", "s0"]["status"] == "DRAIN"
    master.wait_for("server app/s0 administrative state changed from READY to DRAIN by the "
                    "runtime API")
    wait_until(lambda: all(exchange(address, b"d%d" % n) == b"B:d%d" % n for n in range(10)),
               what="new connections to avoid the drained s0 in both workers")
    master.reload(text)
    assert show_stat_rows(ask(sock, "show stat\n"))["app", "s0"]["status"] == "DRAIN"
    for n in range(20):
        assert exchange(address, b"r%d" % n) == b"B:r%d" % n
    # Once the new workers' counters are shown (a reload starts them over), so is their s0.
    rows = wait_until(lambda: (lambda rows: rows["app", "FRONTEND"]["stot"] == "20" and rows)(
        show_stat_rows(ask(sock, "show stat\n"))), what="the new workers' counters")
    assert rows["app", "s0"]["status"] == "DRAIN" and rows["app", "s0"]["stot"] == "0"
    assert ask(sock, "set server app/s0 state ready\n") == "\n"
    wait_until(lambda: exchange(address, b"back") == b"A:back", what="s0 to take connections")


def test_health_says_503_from_sigusr1_while_the_workers_drain(start_master, backends, tmp_path):
    port = free_port()
    text, _, http = stats_config(port, backends[:1], tmp_path)
    master = start_master(text)
    held = connect(("127.0.0.1", port))
    try:
        assert held.recv(2) == b"A:"
        assert http_get(http, "/health") == (200, b"ok\n")
        master.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: http_get(http, "/health")[0] == 503, what="/health to say 503")
        master.wait_for("stopped accepting; 1 connection(s) left to finish")
        assert http_get(http, "/health") == (503, b"stopping\n")
        assert finish(held, b"drained") == b"drained"       # the established one carries on
    finally:
        held.close()
    assert master.proc.wait(10) == 0


def test_a_single_process_health_says_503_from_sigusr1(launch, backends, tmp_path):
    port, http = free_port(), free_port()
    proxy = launch("[global]\nstats http = 127.0.0.1:%d\n" % http
                   + SINGLE % (port, backends[0].config_address))
    held = connect(("127.0.0.1", port))
    try:
        assert held.recv(2) == b"A:"
        assert http_get(http, "/health")[0] == 200
        proxy.proc.send_signal(signal.SIGUSR1)
        proxy.wait_for("stopped accepting; 1 connection(s) left to finish")
        assert http_get(http, "/health") == (503, b"stopping\n")
        assert finish(held, b"drained") == b"drained"
    finally:
        held.close()
    assert proxy.proc.wait(10) == 0


def test_the_master_shows_the_checking_workers_verdicts_and_results(start_master, backends,
                                                                     tmp_path):
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))                       # bound, not listening: refused
    port = free_port()
    try:
        sock = str(tmp_path / "admin.sock")
        master = start_master(
            "[global]\nworkers = 2\nstats socket = %s\n[listen app]\nbind = 127.0.0.1:%d\n"
            "server up = %s check inter 200ms\nserver gone = %s check inter 200ms\n"
            % (sock, port, backends[0].config_address, hostport(*dead.getsockname())))
        master.wait_for("server app/gone is DOWN")

        def servers():
            rows = show_stat_rows(ask(sock, "show stat\n"))
            return rows["app", "up"], rows["app", "gone"]
        up, gone = wait_until(lambda: (lambda pair: pair[1]["status"] == "DOWN" and pair)(
            servers()), what="gone DOWN in the master's show stat")
        assert up["status"].startswith("UP") and up["check_status"] == "L4OK"
        assert gone["check_status"] == "L4CON" and gone["chkdown"] == "1"     # once, not twice
        rows = [line.split() for line in ask(sock, "show servers state app\n").splitlines()
                if line.startswith("1 app ")]
        assert [(row[3], row[5]) for row in rows] == [("up", "2"), ("gone", "0")]  # op_state
    finally:
        dead.close()


def test_counters_too_large_for_the_channel_are_said_once_and_left_out(start_master, tmp_path):
    port = free_port()
    sock = str(tmp_path / "admin.sock")
    servers = "\n".join("server s%d = 127.0.0.1:%d" % (n, 1024 + n) for n in range(3000))
    master = start_master("[global]\nworkers = 1\nstats socket = %s\n[listen app]\n"
                          "bind = 127.0.0.1:%d\n%s\n" % (sock, port, servers))
    master.wait_for("this worker's counters (")
    assert "do not fit a channel message" in master.log_lines("this worker's counters")[0]
    rows = show_stat_rows(ask(sock, "show stat\n"))         # the master's view still answers
    assert rows["app", "s2999"]["status"] == "no check"
    time.sleep(2.5)                   # a measuring window: two more rounds of counters
    assert len(master.log_lines("this worker's counters")) == 1
