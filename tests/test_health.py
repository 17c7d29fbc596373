"""Health checks: rise and fall from tables, real checks against loopback servers, and the
loop's side (stale results, passive health) on a Proxy that is not running."""
import queue
import socket
import struct
import threading
import time

import pytest

from simpleproxy.balancer import DOWN, MAINT, UP
from simpleproxy.config import parse_config
from simpleproxy.proxy import Proxy
from simpleproxy.discovery import LookupResult, ip_address
from simpleproxy.health import CheckResult, CheckWorkers, HealthState, check_spec, run_check

from support import (TIMING_MARGIN, JammedListener, RecordingServer, free_port, hostport,
                     parsed_server)

V2_LOCAL = b"\r\n\r\n\x00\r\nQUIT\n" + b"\x20\x00" + struct.pack("!H", 0)


# -- rise and fall -------------------------------------------------------------------------------

# (rise, fall, results as "+" ok / "-" failed, the state after each: U up, D down)
RISE_FALL = [
    (2, 3, "-", "D"),                 # starts up, but the first failure takes it down
    (2, 3, "+---", "UUUD"),           # once fully up, it takes fall failures
    (2, 3, "++--+---", "UUUUUUUD"),   # a success in between climbs back to the top
    (2, 3, "-++", "DDU"),             # down: rise successes bring it up
    (2, 3, "-+-++", "DDDDU"),         # a failure on the way up starts the climb over
    (2, 3, "-----++", "DDDDDDU"),     # failures while down do not dig a hole
    (1, 1, "-+-+", "DUDU"),
    (3, 2, "+--+++", "UUDDDU"),
    (5, 1, "+-+++++", "UDDDDDU"),
]


@pytest.mark.parametrize("rise, fall, results, states", RISE_FALL)
def test_rise_and_fall(rise, fall, results, states):
    health = HealthState(rise, fall)
    seen = []
    changes = 0
    for result in results:
        was_up = health.up
        changed = health.record(result == "+")
        assert changed == (health.up != was_up)
        changes += changed
        seen.append("U" if health.up else "D")
    assert "".join(seen) == states
    assert changes == sum(1 for a, b in zip("U" + states, states) if a != b)


@pytest.mark.parametrize("results, interval", [
    ("", "fastinter"),        # on its way: it starts at rise, below the top
    ("+", "inter"),           # fully up
    ("+-", "fastinter"),      # going down
    ("-", "downinter"),       # fully down
    ("-+", "fastinter"),      # coming up
])
def test_check_interval_follows_the_count(results, interval):
    server, _ = parsed_server("127.0.0.1:1 check inter 2s fastinter 300ms downinter 10s")
    health = HealthState(server.rise, server.fall)
    for result in results:
        health.record(result == "+")
    assert health.interval(server) == getattr(server, interval)


# -- real checks on loopback ----------------------------------------------------------------------

def _check(options, extra=""):
    return run_check(check_spec(*parsed_server(options, extra)))


OUT_OF_DESCRIPTORS_SCRIPT = r"""
import os, resource, sys
sys.path[:0] = sys.argv[1:3]
from support import parsed_server
from simpleproxy.health import check_spec, run_check
spec = check_spec(*parsed_server("127.0.0.1:9 check"))
open_now = len(os.listdir("/proc/self/fd")) - 1   # less the one listdir used
resource.setrlimit(resource.RLIMIT_NOFILE, (open_now, open_now))
print(run_check(spec))
"""


def test_out_of_descriptors_is_no_verdict():
    """A check that cannot even get a socket says nothing about the server (ok is None), so a
    proxy short of descriptors does not mark its servers down. Run where the limit is real."""
    import os
    import subprocess
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    result = subprocess.run([sys.executable, "-c", OUT_OF_DESCRIPTORS_SCRIPT, here,
                             os.path.dirname(here)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip() == ("CheckResult(ok=None, reason='no check made: Too many open "
                                     "files', duration=0.0)")


def test_open_port_passes_and_closed_port_is_refused():
    listener = RecordingServer()
    ok = _check("%s check" % listener.config_address)
    assert (ok.ok, ok.reason) == (True, "layer4 check passed")
    closed = _check("127.0.0.1:%d check" % free_port())
    assert (closed.ok, closed.reason) == (False, "connection refused")
    listener.close()


def test_connect_timeout():
    jammed = JammedListener()
    result = _check("%s check inter 200ms" % jammed.config_address)
    assert (result.ok, result.reason) == (False, "connection timeout")
    assert 0.15 < result.duration < 2
    jammed.close()


V1_LINE = b"PROXY TCP4 127.0.0.1 127.0.0.1 %(check_port)d %(server_port)d\r\n"


@pytest.mark.parametrize("options, expected", [
    ("send-proxy", V1_LINE),
    ("send-proxy-v2", V2_LOCAL),
    ("check-send-proxy", V1_LINE),
    ("send-proxy-v2 check-send-proxy", V2_LOCAL),
    ("send-proxy no-check-send-proxy", b""),
    ("", b""),
    ("send-proxy-v2 check-send PING", V2_LOCAL + b"PING"),
], ids=["v1", "v2-local", "v1-forced", "v2-forced", "turned-off", "none", "v2-then-payload"])
def test_check_sends_exactly(options, expected):
    """v2: LOCAL; v1: a line from the check connection's own address to the server's."""
    server = RecordingServer()
    assert _check("%s check %s" % (server.config_address, options)).ok
    got = server.next_connection()
    if expected.startswith(b"PROXY"):
        expected = expected % {b"check_port": got.peer[1], b"server_port": server.port}
    assert bytes(got.received) == expected
    server.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_v1_check_line_over_ipv6():
    server = RecordingServer(host="::1")
    assert _check("%s check send-proxy" % server.config_address).ok
    got = server.next_connection()
    assert bytes(got.received) == b"PROXY TCP6 ::1 ::1 %d %d\r\n" % (got.peer[1], server.port)
    server.close()


def test_unix_server_check_gets_v1_unknown_or_v2_local(tmp_path):
    for option, expected in (("send-proxy", b"PROXY UNKNOWN\r\n"), ("send-proxy-v2", V2_LOCAL)):
        path = str(tmp_path / option)
        server = RecordingServer(path=path)
        assert _check("unix@%s check %s" % (path, option)).ok
        assert bytes(server.next_connection().received) == expected
        server.close()


def test_check_port_goes_elsewhere_without_a_header():
    traffic, checked = RecordingServer(), RecordingServer()
    assert _check("%s check send-proxy port %d" % (traffic.config_address, checked.port)).ok
    assert bytes(checked.next_connection().received) == b""
    assert traffic.accepted == []
    traffic.close()
    checked.close()


class Responder(object):
    """Answers each connection with ``reply`` once it has read ``wait_for`` (or at once)."""

    def __init__(self, reply, wait_for=b"", delay_event=None):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = hostport(*self.sock.getsockname())
        self.reply, self.wait_for, self.hold = reply, wait_for, delay_event
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                received = b""
                try:
                    while self.wait_for not in received:
                        data = conn.recv(4096)
                        if not data:
                            break
                        received += data
                    if self.hold is not None:
                        self.hold.wait(5)
                    conn.sendall(self.reply)
                    conn.recv(1)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


HTTP_2XX = 'rstring "^HTTP/1[.][01] 2[0-9][0-9] "'


@pytest.mark.parametrize("reply, expect, ok, reason", [
    (b"+PONG\r\n", 'string "+PONG"', True, "layer7 check passed"),
    (b"-ERR\r\n", 'string "+PONG"', False, "response did not match"),
    (b"HTTP/1.0 200 OK\r\n", HTTP_2XX, True, "layer7 check passed"),
    (b"HTTP/1.0 503 Busy\r\n", HTTP_2XX, False, "response did not match"),
])
def test_send_and_expect(reply, expect, ok, reason):
    responder = Responder(reply, wait_for=b"PING\r\n")
    result = _check('%s check inter 300ms check-send "PING\\r\\n" check-expect %s'
                    % (responder.address, expect))
    assert (result.ok, result.reason) == (ok, reason)
    responder.close()


@pytest.mark.parametrize("extra, limit", [("", 0.3), ("timeout check = 200ms", 0.2)])
def test_silent_server_times_out(extra, limit):
    hold = threading.Event()
    responder = Responder(b"+PONG", delay_event=hold)
    start = time.monotonic()
    result = _check('%s check inter 300ms check-expect string "+PONG"' % responder.address, extra)
    hold.set()
    assert (result.ok, result.reason) == (False, "response timeout")
    assert limit * 0.9 < time.monotonic() - start < limit + TIMING_MARGIN
    responder.close()


def test_workers_run_checks_and_stop():
    listener = RecordingServer()
    spec = check_spec(*parsed_server("%s check" % listener.config_address))
    workers = CheckWorkers(3)
    workers.start()
    results = queue.Queue()
    for n in range(9):
        workers.submit(run_check, spec, lambda result, n=n: results.put((n, result)))
    got = sorted(results.get(timeout=10) for _ in range(9))
    assert [n for n, _ in got] == list(range(9)) and all(result.ok for _, result in got)
    workers.stop()
    for thread in workers._threads:
        thread.join(10)
        assert not thread.is_alive()
    listener.close()


# -- the loop's side, on a Proxy that is not running --------------------------------------------

def _proxy(servers, extra="", global_=""):
    text = ("[global]\n%s\n[frontend f]\nbind = 127.0.0.1:%d\ndefault_backend = b\n"
            "[backend b]\n%s\n" % (global_, free_port(), extra))
    text += "".join("server s%d = %s\n" % (n, options) for n, options in enumerate(servers, 1))
    proxy = Proxy(parse_config(text))
    pool = proxy.pools["b"]
    return proxy.loop, pool, proxy.checker


FAILED = CheckResult(False, "connection refused", 0.001)
PASSED = CheckResult(True, "layer4 check passed", 0.001)


def test_results_apply_rise_and_fall_and_stale_ones_are_ignored():
    loop, pool, checker = _proxy(["127.0.0.1:1 check rise 2 fall 2", "127.0.0.1:2 check"])
    s1 = pool.servers[0]
    check = checker.checks[s1]
    checker.check_done(check, check.generation, FAILED)
    assert s1.status == DOWN and pool.usable_counts() == (1, 0)
    stale = check.generation
    checker.restart(s1)                                   # e.g. it left maintenance
    assert s1.status == UP
    checker.check_done(check, stale, FAILED)              # a check from before the restart
    assert s1.status == UP
    checker.check_done(check, check.generation, FAILED)
    assert s1.status == DOWN
    checker.stop()
    checker.check_done(check, check.generation, PASSED)   # after stop: nothing changes
    checker.check_done(check, check.generation, PASSED)
    assert s1.status == DOWN


def test_a_restart_while_a_check_runs_waits_for_that_check():
    """Checks of one server never overlap, across a restart too: the restarted count's first
    check goes when the running check's result (ignored) is in, not beside it."""
    loop, pool, checker = _proxy(["127.0.0.1:1 check rise 2 fall 1"])
    s1 = pool.servers[0]
    check = checker.checks[s1]
    checker.launch(check)                                 # queued for a worker (none started)
    stale = check.generation
    checker.restart(s1)
    assert check.running and check.timer.when is None       # nothing launched beside it
    checker.check_done(check, stale, FAILED)
    assert s1.status == UP and not check.running           # the old result did not count
    assert check.timer.when == loop.now                   # the new count's first check: now
    checker.stop()


def test_result_for_a_server_no_longer_checked_is_ignored():
    loop, pool, checker = _proxy(["127.0.0.1:1 check"])
    s1 = pool.servers[0]
    check = checker.checks.pop(s1)                        # as after a reload without it
    checker.check_done(check, check.generation, FAILED)
    assert s1.status == UP
    checker.restart(s1)                                   # not checked: nothing to restart
    assert check.generation == 0


def test_real_connection_failures_count_as_failed_checks():
    loop, pool, checker = _proxy(["127.0.0.1:1 check rise 1 fall 2 inter 1h fastinter 1s",
                                     "127.0.0.1:2"])
    s1, s2 = pool.servers
    checker.check_done(checker.checks[s1], 0, PASSED)     # fully up: two failures to go down
    check = checker.checks[s1]
    assert check.timer.when == pytest.approx(loop.now + 3600)
    checker.connection_failed(s1, "connect-error", 0.0)       # e.g. out of local ports
    assert check.health.health == 2
    checker.connection_failed(s1, "connect-refused", 0.0)
    assert s1.status == UP
    assert check.timer.when == pytest.approx(loop.now + 1)    # look again soon (fastinter)
    checker.connection_failed(s1, "connect-refused", 0.0)
    assert s1.status == DOWN
    checker.connection_failed(s2, "connect-refused", 0.0)  # unchecked: never marked down
    assert s2.status == UP


def test_maintenance_is_not_checked():
    loop, pool, checker = _proxy(["127.0.0.1:1 check disabled inter 5s"])
    check = checker.checks[pool.servers[0]]
    assert pool.servers[0].status == MAINT
    checker.launch(check)
    assert not check.running and check.timer.when == pytest.approx(loop.now + 5)


# -- following host names: lookups in the same workers, results applied on the loop ---------------

def resolved(*ips):
    return LookupResult(tuple(ip_address(ip) for ip in ips), None, "")


def test_lookups_leave_a_thread_to_checks_and_go_one_at_a_time_per_name():
    """Names that resolve through init-addr's IP, so no name server is asked at start."""
    loop, pool, checker = _proxy(["web%d.test:80 init-addr 127.0.0.%d resolve" % (n, n)
                                  for n in (1, 2, 3)], global_="check-threads = 3")
    names = checker.names
    assert [name.resolution.host for name in names] == ["web1.test", "web2.test", "web3.test"]
    for name in names:
        checker.lookup_due(name)
    assert checker.workers._jobs.qsize() == 2             # three threads: two lookups at once
    assert all(name.timer.when is None for name in names)  # none is due again while it runs
    checker.lookup_done(names[0], resolved("127.0.0.9"))
    assert pool.servers[0].address.sockaddr == ("127.0.0.9", 80)
    assert names[0].timer.when == pytest.approx(loop.now + 10)   # `resolve`: every 10s
    assert checker.workers._jobs.qsize() == 3             # the third name's turn came
    checker.stop()


def test_a_server_whose_name_fails_past_its_hold_goes_to_maintenance_and_back():
    loop, pool, checker = _proxy(["web.test:80 init-addr 127.0.0.1 check", "127.0.0.1:2"],
                                 global_="resolve-interval = 1s\nresolve-hold-nx = 2s")
    s1 = pool.servers[0]
    check, name = checker.checks[s1], checker.names[0]
    assert check.spec.address.sockaddr == ("127.0.0.1", 80)
    checker.lookup_due(name)
    checker.lookup_done(name, LookupResult((), "nx", "Name or service not known"))
    assert s1.status == UP                                # within hold nx
    loop.now += 3
    checker.lookup_due(name)
    checker.lookup_done(name, LookupResult((), "nx", "Name or service not known"))
    assert s1.status == MAINT and s1.dns_maint and pool.candidates == [pool.servers[1]]
    assert s1.address.sockaddr == ("127.0.0.1", 80)       # kept, for when the name returns
    assert s1.dns_status == "nx" and name.resolution.detail == "Name or service not known"
    checker.launch(check)
    assert not check.running                              # no check while in maintenance
    checker.lookup_due(name)
    checker.lookup_done(name, resolved("127.0.0.7"))
    assert s1.status == UP and s1.address.sockaddr == ("127.0.0.7", 80)
    assert check.spec.address.sockaddr == ("127.0.0.7", 80)      # checks follow the address
    assert check.timer.when == loop.now                   # and start over at once
    assert s1.dns_status == "valid"
    checker.stop()


def test_a_verdict_from_elsewhere_is_adopted_and_counted_from():
    """A worker that does not check takes the checking worker's verdicts (master.py); one
    that checks too counts on from the verdict: fully down needs ``rise`` passes to rise."""
    loop, pool, checker = _proxy(["127.0.0.1:1 check rise 2 fall 3", "127.0.0.1:2"])
    s1, s2 = pool.servers
    checker.adopt(pool, s1, False)
    assert s1.status == DOWN and checker.checks[s1].health.health == 0
    checker.check_done(checker.checks[s1], 0, PASSED)
    assert s1.status == DOWN                              # one pass of the two it needs
    checker.adopt(pool, s1, True)
    assert s1.status == UP and checker.checks[s1].health.health == 4     # fully up
    checker.adopt(pool, s2, False)                        # unchecked here: taken as it is
    assert s2.status == DOWN


def test_leaving_maintenance_restarts_the_checks():
    """Proxy.set_server_admin, as the runtime API or a master's server-admin calls it."""
    proxy = Proxy(parse_config("[frontend f]\nbind = 127.0.0.1:%d\ndefault_backend = b\n"
                               "[backend b]\nserver s1 = 127.0.0.1:1 check disabled\n"
                               % free_port()))
    loop, pool = proxy.loop, proxy.pools["b"]
    s1 = pool.servers[0]
    check = proxy.checker.checks[s1]
    with pytest.raises(ValueError):
        proxy.set_server_admin(pool, s1, admin="NOPE")
    proxy.set_server_admin(pool, s1, admin=MAINT)        # no change: nothing restarted
    assert check.generation == 0
    proxy.set_server_admin(pool, s1, admin="READY", weight=5)
    assert s1.status == UP and s1.weight == 5 and check.generation == 1
    assert check.timer.when == loop.now                  # checked again at once


def test_an_emptied_slot_keeps_its_last_address_and_what_a_lookup_changed_is_told():
    loop, pool, checker = _proxy([], extra="server-template web = 2 web.test:80 "
                                 "init-addr 127.0.0.1", global_="resolve-interval = 1s")
    told = []
    checker.on_resolved = told.append
    web1, web2 = pool.servers
    name = checker.names[0]
    checker.lookup_due(name)
    checker.lookup_done(name, resolved("127.0.0.1", "127.0.0.5"))
    assert told == [name] and web2.address.sockaddr == ("127.0.0.5", 80)
    checker.lookup_due(name)
    checker.lookup_done(name, resolved("127.0.0.1", "127.0.0.5"))
    assert told == [name]                                 # nothing changed: nothing told
    checker.lookup_due(name)
    checker.lookup_done(name, resolved("127.0.0.1"))
    assert web2.status == MAINT and web2.dns_maint and web2.dns_status == "valid"
    assert web2.address.sockaddr == ("127.0.0.5", 80)     # where it was, not its start address
    assert told == [name, name]
    checker.stop()


def test_a_sibling_adopts_what_the_resolving_process_found():
    loop, pool, checker = _proxy(["web.test:80 init-addr 127.0.0.1", "127.0.0.1:2"])
    s1 = pool.servers[0]
    checker.adopt_resolution(pool, s1, ip_address("127.0.0.9"), False, "valid")
    assert s1.address.sockaddr == ("127.0.0.9", 80) and s1.status == UP
    checker.adopt_resolution(pool, s1, None, True, "nx")
    assert s1.status == MAINT and s1.dns_status == "nx"
    assert s1.address.sockaddr == ("127.0.0.9", 80) and pool.candidates == [pool.servers[1]]
    checker.stop()
