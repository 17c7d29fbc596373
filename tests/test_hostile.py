"""Hostile input against the running proxy: fuzzed headers, slowloris, spoofing, limits, memory
and descriptor exhaustion.

Clients choose their loopback source address (all of 127.0.0.0/8 is local), so the trust rules
see different real peers without leaving the machine.
"""
import collections
import os
import random
import re
import resource
import selectors
import signal
import socket
import struct
import time

import pytest

from proxyproto_cases import CASES, mutate, outcome, random_header
from simpleproxy.proxyproto import HEADER_ERROR_KINDS
from simpleproxy.proxyproto import ProxyHeader
from support import (CLAIMED_V1, CLAIMED_V2, DEFAULT_TIMEOUT, PAYLOAD, REPLY, RESET, TIMING_MARGIN,
                     V2_SIGNATURE, Launcher, RecordingServer, dial, finish, free_port,
                     one_frontend, skip_or_fail, v1_line, wait_until)

TRUSTED, UNTRUSTED, OPTIONAL, BOTH = "127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"
FORGED = b"PROXY TCP4 127.0.0.2 127.0.0.1 1 2\r\n"    # claims a trusted address
DEFAULT_FUZZ_CASES = 2000


def closed_by_proxy(sock):
    """True when the proxy has closed sock (EOF or reset); False while it stays open."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


def raise_descriptor_limit(needed):
    """Lift this process's soft descriptor limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard != resource.RLIM_INFINITY and hard < needed:
        skip_or_fail("needs %d descriptors, the hard limit is %d" % (needed, hard))


# -- fuzz: seeded mutations of valid headers, through the running proxy ------------------------

def invalid_mutations(rng, count):
    """``count`` (wire, expected error kind) pairs: mutated valid headers, each followed by
    payload or not, that the parser refuses. The parser is the oracle for which mutations
    are invalid; what is tested is that the running proxy refuses each of them the same way
    and that none of them reaches the backend."""
    seeds = [case.wire[:case.expect.header_len] for case in CASES
             if isinstance(case.expect, ProxyHeader)]
    seeds += [random_header(rng)[0] for _ in range(200)]
    cases = []
    for _ in range(count * 20):
        wire = mutate(rng, rng.choice(seeds), seeds) + (PAYLOAD if rng.random() < 0.7 else b"")
        kind = outcome(wire, eof=True)
        if kind in HEADER_ERROR_KINDS:
            cases.append((wire, kind))
            if len(cases) == count:
                return cases
    raise AssertionError("only %d invalid mutations in %d tries" % (len(cases), count * 20))


def test_fuzzed_headers_never_reach_the_backend(request, launch, backend):
    count = request.config.getoption("--fuzz-cases") or DEFAULT_FUZZ_CASES
    cases = invalid_mutations(random.Random(5), count)
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port],
                                     backend.config_address + " send-proxy"))
    descriptors = proxy.open_fds()
    for index, (wire, kind) in enumerate(cases):
        answer = finish(dial(port), wire)
        assert answer in (b"", RESET), "case %d %s: %r" % (index, kind, wire)
    lines = wait_until(lambda: len(proxy.log_lines("end=bad-header:")) == count and
                       proxy.log_lines("end=bad-header:"), what="a log line per case")
    logged = collections.Counter(line.split("end=bad-header:")[1].split()[0] for line in lines)
    assert logged == collections.Counter(kind for _, kind in cases)
    assert all(" be=- " in line for line in lines)
    assert backend.accepted == []
    assert proxy.proc.poll() is None
    assert finish(dial(port), CLAIMED_V1 + PAYLOAD) == REPLY        # still serving
    assert bytes(backend.next_connection().received) == (
        v1_line("203.0.113.7", "198.51.100.1", 5555, 80) + PAYLOAD)
    wait_until(lambda: proxy.open_fds() == descriptors, what="no descriptor left behind")


# -- slowloris and silent floods ---------------------------------------------------------------

FLOOD = 3000
HALF_HEADERS = (CLAIMED_V1[:20], CLAIMED_V2[:20], CLAIMED_V1[:5], V2_SIGNATURE[:7])
HEADER_TIMEOUT = 2.0


@pytest.mark.parametrize("pending_limit,end", [(20000, "header-timeout"),
                                               (500, "evicted:maxconn-pending-header")],
                         ids=["deadline", "eviction"])
def test_slowloris_neither_starves_clients_nor_outlives_the_deadline(
        launch, backend, pending_limit, end):
    """Half headers and silent connections, FLOOD of them: a real client is still served within
    a second at any point, and every one of them is closed by its header deadline (or, past
    maxconn-pending-header, earlier: the oldest first)."""
    raise_descriptor_limit(2 * FLOOD + 200)
    port = free_port()
    proxy = launch(one_frontend(
        ["127.0.0.1:%d accept-proxy" % port], backend.config_address,
        frontend="timeout proxy-header = %gs\nmaxconn-pending-header = %d\n"
                 % (HEADER_TIMEOUT, pending_limit)))
    stalled, opened = [], []
    served_in = []
    try:
        for index in range(FLOOD):
            sock = dial(port)
            if index % 2:
                sock.sendall(HALF_HEADERS[index // 2 % len(HALF_HEADERS)])
            stalled.append(sock)
            opened.append(time.monotonic())
            if index % 1000 == 999:
                started = time.monotonic()
                assert finish(dial(port, timeout=1.0), CLAIMED_V2 + PAYLOAD) == REPLY
                served_in.append(time.monotonic() - started)
        closed_at = wait_all_closed(stalled, opened[-1] + HEADER_TIMEOUT + 2 * TIMING_MARGIN)
    finally:
        for sock in stalled:
            sock.close()
    assert max(served_in) < 1.0, served_in
    lifetimes = [closed - open_ for closed, open_ in zip(closed_at, opened)]
    assert max(lifetimes) < HEADER_TIMEOUT + TIMING_MARGIN
    if end == "header-timeout":
        assert min(lifetimes) > HEADER_TIMEOUT - 0.1
    # Every connection gets its line, or is counted in a "dropped" line when this test's
    # reader falls behind the burst of closes: the proxy never waits for its log.
    wait_until(lambda: len(proxy.log_lines(" end=")) + proxy.dropped_lines() ==
               FLOOD + len(served_in), what="a log line each, or counted as dropped")
    if end != "header-timeout":
        assert (len(proxy.log_lines("end=" + end)) + proxy.dropped_lines()
                >= FLOOD - pending_limit)
    assert len(backend.accepted) == len(served_in)


def wait_all_closed(socks, deadline):
    """When each socket was closed by its peer (monotonic seconds); fails past the deadline."""
    closed_at = [None] * len(socks)
    with selectors.DefaultSelector() as selector:
        for index, sock in enumerate(socks):
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, index)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            assert remaining > 0, "%d connections still open" % len(selector.get_map())
            for key, _ in selector.select(remaining):
                try:
                    data = key.fileobj.recv(4096)
                except ConnectionResetError:
                    data = b""
                assert data == b"", "the proxy answered a header-less connection"
                closed_at[key.data] = time.monotonic()
                selector.unregister(key.fileobj)
    return closed_at


def test_trickled_header_cannot_outlast_the_deadline(launch, backend):
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port],
                                     backend.config_address,
                                     frontend="timeout proxy-header = 1s\n"))
    sock = dial(port)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(0.1)          # one byte every 100 ms: the 45-byte line would take 4.5 s
    started = time.monotonic()
    closed = False
    for byte in CLAIMED_V1:
        try:
            sock.send(bytes((byte,)))
        except (BrokenPipeError, ConnectionResetError):
            closed = True
        closed = closed or closed_by_proxy(sock)
        if closed:
            break
    elapsed = time.monotonic() - started
    sock.close()
    assert closed and 0.9 < elapsed < 1.0 + TIMING_MARGIN, elapsed   # the line would take 4.5 s
    assert "end=header-timeout" in proxy.wait_for("peer=127.0.0.1")
    assert backend.accepted == []


def test_header_deadline_is_cleared_once_the_header_is_in(launch, echo):
    port = free_port()
    launch(one_frontend(["127.0.0.1:%d accept-proxy" % port], echo.config_address,
                             frontend="timeout proxy-header = 300ms\n"))
    sock = dial(port)
    sock.sendall(CLAIMED_V1)
    sock.settimeout(1.0)
    assert not closed_by_proxy(sock)          # idle three times the header timeout, still open
    sock.settimeout(DEFAULT_TIMEOUT)
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    sock.close()


# -- spoofing: trust is decided on the real peer ------------------------------------------------

TRUST_OPTIONS = ("accept-proxy-from %s,%s proxy-optional-from %s,%s"
                 % (TRUSTED, BOTH, OPTIONAL, BOTH))


@pytest.fixture(scope="module")
def spoof_target(tmp_path_factory, proxy_python):
    """A proxy whose binds trust TRUSTED and BOTH, let OPTIONAL and BOTH in without a header,
    on IPv4, dual-stack [::], and a v1-only bind; it sends v1 on, so the backend's first line
    says whom the proxy believed."""
    server = RecordingServer(mode="record", reply=REPLY)
    ports = {"ipv4": free_port(), "v1-only": free_port()}
    binds = ["127.0.0.1:%d %s" % (ports["ipv4"], TRUST_OPTIONS),
             "127.0.0.1:%d accept-proxy accept-proxy-version v1" % ports["v1-only"]]
    if socket.has_ipv6:
        ports["dual-stack"] = free_port("::")
        binds.append("[::]:%d %s" % (ports["dual-stack"], TRUST_OPTIONS))
    with Launcher("module", tmp_path_factory.mktemp("spoof")) as launch:
        yield launch(one_frontend(binds, server.config_address + " send-proxy")), ports, server
    server.close()


CLAIMED = "claimed"     # the backend is told the header's addresses
REAL = "real"           # the backend is told the real peer

# (bind, real source, bytes sent, who the backend is told about or None, bytes after that
#  header, end, trust rule in the log)
SPOOF_CASES = [
    ("ipv4", TRUSTED, CLAIMED_V1 + PAYLOAD, CLAIMED, PAYLOAD, "normal",
     "accept-proxy-from:127.0.0.2/32"),
    ("ipv4", TRUSTED, CLAIMED_V2 + PAYLOAD, CLAIMED, PAYLOAD, "normal",
     "accept-proxy-from:127.0.0.2/32"),
    ("ipv4", TRUSTED, CLAIMED_V1 + FORGED + PAYLOAD, CLAIMED, FORGED + PAYLOAD, "normal",
     "accept-proxy-from:127.0.0.2/32"),
    ("ipv4", TRUSTED, PAYLOAD, None, None, "bad-header:not-proxy",
     "accept-proxy-from:127.0.0.2/32"),
    ("ipv4", UNTRUSTED, CLAIMED_V1 + PAYLOAD, None, None, "rejected:untrusted-peer", "none"),
    ("ipv4", UNTRUSTED, FORGED + PAYLOAD, None, None, "rejected:untrusted-peer", "none"),
    ("ipv4", UNTRUSTED, PAYLOAD, None, None, "rejected:untrusted-peer", "none"),
    ("ipv4", OPTIONAL, PAYLOAD, REAL, PAYLOAD, "normal", "optional:127.0.0.4/32"),
    ("ipv4", OPTIONAL, PAYLOAD + FORGED, REAL, PAYLOAD + FORGED, "normal",
     "optional:127.0.0.4/32"),
    ("ipv4", OPTIONAL, b"", REAL, b"", "normal", "optional:127.0.0.4/32"),
    ("ipv4", OPTIONAL, b"PROX", REAL, b"PROX", "normal", "optional:127.0.0.4/32"),
    ("ipv4", OPTIONAL, FORGED + PAYLOAD, None, None, "rejected:untrusted-header",
     "optional:127.0.0.4/32"),
    ("ipv4", OPTIONAL, CLAIMED_V2 + PAYLOAD, None, None, "rejected:untrusted-header",
     "optional:127.0.0.4/32"),
    ("ipv4", BOTH, CLAIMED_V1 + PAYLOAD, CLAIMED, PAYLOAD, "normal",
     "accept-proxy-from:127.0.0.5/32"),
    ("ipv4", BOTH, PAYLOAD, REAL, PAYLOAD, "normal", "optional:127.0.0.5/32"),
    ("dual-stack", TRUSTED, CLAIMED_V2 + PAYLOAD, CLAIMED, PAYLOAD, "normal",
     "accept-proxy-from:127.0.0.2/32"),
    ("dual-stack", UNTRUSTED, CLAIMED_V1 + PAYLOAD, None, None, "rejected:untrusted-peer", "none"),
    ("dual-stack", OPTIONAL, FORGED + PAYLOAD, None, None, "rejected:untrusted-header",
     "optional:127.0.0.4/32"),
    ("v1-only", UNTRUSTED, CLAIMED_V1 + PAYLOAD, CLAIMED, PAYLOAD, "normal", "accept-proxy"),
    ("v1-only", UNTRUSTED, CLAIMED_V2 + PAYLOAD, None, None, "bad-header:unsupported",
     "accept-proxy"),
]


@pytest.mark.parametrize("bind,source,sent,told,rest,end,rule", SPOOF_CASES,
                         ids=["%s-%s-%d" % (c[0], c[1], i) for i, c in enumerate(SPOOF_CASES)])
def test_trust_decided_on_the_real_peer(spoof_target, bind, source, sent, told, rest, end, rule):
    proxy, ports, server = spoof_target
    if bind not in ports:
        pytest.skip("no IPv6")
    before = len(server.accepted)
    # Only this case's line: the fixture's proxy serves every case, and the kernel may give
    # this source address a port an earlier case used (to another bind).
    lines_before = len(proxy.lines)
    sock = dial(ports[bind], source)         # IPv4, to the dual-stack bind too
    client_port = sock.getsockname()[1]
    answer = finish(sock, sent)
    line = proxy.wait_for("peer=%s:%d " % (source, client_port),   # IPv4 on dual-stack too
                          start=lines_before)
    assert " end=%s " % end in line + " "
    assert " trust=%s" % rule in line
    if told is None:
        assert answer in (b"", RESET)
        assert len(server.accepted) == before
        return
    assert answer == REPLY
    received = bytes(server.next_connection().received)
    if told == CLAIMED:
        assert received == v1_line("203.0.113.7", "198.51.100.1", 5555, 80) + rest
    else:
        assert received == v1_line(source, "127.0.0.1", client_port, ports[bind]) + rest


@pytest.mark.parametrize("trusted,end", [("127.0.0.1", "rejected:untrusted-peer"),
                                         ("unix", "normal")])
def test_unix_peers_are_trusted_only_when_listed(launch, backend, tmp_path, trusted, end):
    path = str(tmp_path / "front.sock")
    proxy = launch(one_frontend(["unix@%s accept-proxy-from %s" % (path, trusted)],
                                     backend.config_address + " send-proxy"))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(DEFAULT_TIMEOUT)
    sock.connect(path)
    answer = finish(sock, CLAIMED_V1 + PAYLOAD)
    assert "end=%s " % end in proxy.wait_for("fe=fe ")
    if end == "normal":
        assert answer == REPLY
        assert bytes(backend.next_connection().received) == CLAIMED_V1 + PAYLOAD
    else:
        assert answer in (b"", RESET)
        assert backend.accepted == []


def test_chain_believes_only_the_hop_in_front(launch, backend):
    """A client's own header to a plain bind is payload; the next hop trusts the proxy in front
    of it, by its real address, and believes only the header that proxy wrote."""
    inner_port, outer_port = free_port(), free_port()
    inner = launch(one_frontend(["127.0.0.1:%d accept-proxy-from 127.0.0.1" % inner_port],
                                     backend.config_address + " send-proxy"))
    launch(one_frontend(["127.0.0.1:%d" % outer_port], "127.0.0.1:%d send-proxy-v2"
                             % inner_port))
    sock = dial(outer_port, UNTRUSTED)
    client_port = sock.getsockname()[1]
    assert finish(sock, FORGED + PAYLOAD) == REPLY
    assert bytes(backend.next_connection().received) == (
        v1_line(UNTRUSTED, "127.0.0.1", client_port, outer_port) + FORGED + PAYLOAD)
    line = inner.wait_for("fe=fe ")
    assert line.split(" ")[3] == "%s:%d" % (UNTRUSTED, client_port)
    assert "trust=accept-proxy-from:127.0.0.1/32" in line
    # The same header straight from an untrusted peer is refused.
    assert finish(dial(inner_port, UNTRUSTED), v1_line(UNTRUSTED, "127.0.0.1", 1, 2)) in (b"", RESET)
    assert "end=rejected:untrusted-peer" in inner.wait_for("peer=%s" % UNTRUSTED)


# -- limits -----------------------------------------------------------------------------------

def test_oversized_header_is_refused_before_it_arrives(launch, backend):
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy proxy-max-header 1k" % port],
                                     backend.config_address))
    sock = dial(port, timeout=2.0)        # well before the 5 s header deadline
    sock.sendall(V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 2000))
    assert closed_by_proxy(sock)
    sock.close()
    assert "end=bad-header:too-long" in proxy.wait_for("peer=")
    assert backend.accepted == []


def test_connections_per_source_are_limited(launch, echo):
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], echo.config_address,
                                     frontend="maxconn-per-source = 2\n"))

    def served(source):
        sock = dial(port, source)
        sock.sendall(b"ping")
        if sock.recv(4) == b"ping":
            return sock
        sock.close()
        return None

    held = [served(TRUSTED), served(TRUSTED)]
    assert all(held)
    third = dial(port, TRUSTED)
    third_port = third.getsockname()[1]
    assert closed_by_proxy(third)
    third.close()
    assert "end=rejected:maxconn-per-source" in proxy.wait_for("peer=%s:%d" % (TRUSTED, third_port))
    other = served(UNTRUSTED)                     # another source is not affected
    assert other
    freed_port = held[0].getsockname()[1]
    held[0].close()
    proxy.wait_for("peer=%s:%d" % (TRUSTED, freed_port))
    held[0] = served(TRUSTED)                     # a slot of that source is free again
    assert held[0]
    for sock in held + [other]:
        sock.close()


def test_pending_header_limit_evicts_the_oldest(launch, backend):
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port], backend.config_address,
                                     frontend="maxconn-pending-header = 3\n"))
    descriptors = proxy.open_fds()
    silent = []
    for count in range(1, 4):
        silent.append(dial(port, timeout=0.3))
        wait_until(lambda: proxy.open_fds() == descriptors + count, what="the proxy to accept")
    newest = dial(port, timeout=0.3)
    assert closed_by_proxy(silent[0])
    line = proxy.wait_for("end=evicted:maxconn-pending-header")
    assert "peer=127.0.0.1:%d " % silent[0].getsockname()[1] in line
    assert not any(closed_by_proxy(sock) for sock in silent[1:] + [newest])
    # A client whose header is in by the time it is accepted (here: sent while the proxy was
    # stopped) never waits for it, and takes no waiting connection's place.
    os.kill(proxy.proc.pid, signal.SIGSTOP)
    try:
        prompt = dial(port)
        prompt.sendall(CLAIMED_V2 + PAYLOAD)
    finally:
        os.kill(proxy.proc.pid, signal.SIGCONT)
    assert finish(prompt) == REPLY
    assert not closed_by_proxy(silent[1])
    # A real client accepted before its header comes waits like the others: it makes room.
    late = dial(port)
    wait_until(lambda: closed_by_proxy(silent[1]), what="the oldest one left to be evicted")
    assert finish(late, CLAIMED_V2 + PAYLOAD) == REPLY
    wait_until(lambda: len(proxy.log_lines("end=evicted:")) == 2, what="a second eviction")
    for sock in silent + [newest]:
        sock.close()


def test_memory_stays_bounded_under_big_partial_headers(launch, backend):
    """Each connection sends most of a v2 header of the largest allowed size and stalls. The
    proxy holds at most maxconn-pending-header of them; unbounded, they would need ~24 MiB."""
    connections, pending_limit = 1500, 100
    raise_descriptor_limit(2 * connections + 200)
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port], backend.config_address,
                                     frontend="maxconn-pending-header = %d\n" % pending_limit))
    big = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 16384 - 16) + bytes(16000 - 16)
    baseline = peak = proxy.rss_kib()
    socks = []
    try:
        for index in range(connections):
            sock = dial(port)
            socks.append(sock)
            try:
                sock.sendall(big)
            except (ConnectionResetError, BrokenPipeError):
                pass          # evicted already
            if index % 100 == 99:
                peak = max(peak, proxy.rss_kib())
        wait_until(lambda: len(proxy.log_lines("end=evicted:")) == connections - pending_limit,
                   what="every eviction")
        peak = max(peak, proxy.rss_kib())
    finally:
        for sock in socks:
            sock.close()
    assert peak - baseline < 10 * 1024, (baseline, peak)


# -- descriptor exhaustion ----------------------------------------------------------------------

def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def test_descriptor_exhaustion_backs_off_and_recovers(launch, echo):
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], echo.config_address))
    held_count, waiting_count = 4, 4
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    # Room for exactly held_count sessions (two descriptors each) above what the proxy has now.
    resource.prlimit(proxy.proc.pid, resource.RLIMIT_NOFILE,
                     (proxy.open_fds() + 2 * held_count, hard))
    held = []
    for index in range(held_count):
        sock = dial(port)
        sock.sendall(b"held%d" % index)
        assert sock.recv(5) == b"held%d" % index
        held.append(sock)
    waiting = []
    for index in range(waiting_count):
        sock = dial(port)                       # completes in the kernel's backlog
        sock.sendall(b"wait%d" % index)
        waiting.append(sock)
    proxy.wait_for("pausing accepts")
    paused_seen = time.monotonic()
    before = cpu_seconds(proxy.proc.pid)
    time.sleep(1.0)                             # a window to measure the loop's CPU use in
    assert cpu_seconds(proxy.proc.pid) - before < 0.3    # backing off, not spinning
    assert len(proxy.log_lines("pausing accepts")) == 1    # once, not every 100 ms
    held[0].sendall(b"still")                   # what it holds, it still serves
    assert held[0].recv(5) == b"still"
    for sock in held:
        sock.close()
    for index, sock in enumerate(waiting):      # descriptors are free: the backlog is served
        assert sock.recv(5) == b"wait%d" % index
        sock.close()
    assert len(echo.accepted) == held_count + waiting_count
    # Short of descriptors from before the pause was seen until after the held ones closed.
    short_for = int(re.search(r"accepting again after (\d+)ms short of descriptors",
                              proxy.wait_for("accepting again after")).group(1)) / 1000.0
    assert 1.0 <= short_for < time.monotonic() - paused_seen + TIMING_MARGIN
