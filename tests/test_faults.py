"""Faults on the path and at the server: packet loss, a narrow link, latency, and servers that
reset, stall or stop reading.

Every relayed byte is accounted for by checksums at both ends, or the connection is closed and
logged; nothing outlives its timeouts; the proxy holds as many descriptors afterwards as before.

Packet loss (nftables ``numgen random mod 100 < N drop``) and bandwidth (the ``tbf`` qdisc)
need a path other than loopback: two network namespaces this test creates, joined by a veth
pair, the proxy and its clients in one and the servers in the other; the host's own network
is not touched. The kernel has no netem, so latency comes from a relay in the test instead.
"""
import hashlib
import itertools
import os
import queue
import re
import shutil
import socket
import subprocess
import threading
import time

import pytest

from support import (BOTH_POLLERS, DEFAULT_TIMEOUT, TIMING_MARGIN, RecordingServer, dial, free_port,
                     in_netns, one_frontend, skip_or_fail, wait_until)

PROXY_HOST, SERVER_HOST = "10.55.0.1", "10.55.0.2"
FAULT_BACKEND = "timeout connect = 1s\nretries = 0\n"
_netns_ids = itertools.count()


def pattern(size, seed):
    """``size`` reproducible, varied bytes."""
    block = b"".join(hashlib.sha256(b"%d:%d" % (seed, i)).digest() for i in range(2048))
    return (block * (size // len(block) + 1))[:size]


def digest(data):
    return hashlib.sha256(data).hexdigest()


class BothWays(RecordingServer):
    """Sends ``download`` and half-closes, while reading to EOF; what it received is hashed."""

    def __init__(self, download, **kwargs):
        self.download = download
        super().__init__(mode="hash", **kwargs)

    def handle(self, conn, record):
        sender = threading.Thread(target=self._send, args=(conn, record))
        sender.start()
        hashed = hashlib.sha256()
        try:
            while True:
                data = conn.recv(262144)
                if not data:
                    break
                record.count += len(data)
                hashed.update(data)
            record.digest = hashed.hexdigest()
        finally:
            sender.join(60)

    def _send(self, conn, record):
        try:
            conn.sendall(self.download)
            conn.shutdown(socket.SHUT_WR)
        except OSError as exc:
            record.error = exc


def transfer(sock, upload, timeout=60):
    """Send ``upload`` then EOF while reading to EOF: the bytes received, and the errors met."""
    sock.settimeout(timeout)
    errors = []

    def send():
        try:
            sock.sendall(upload)
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:
            errors.append(exc)

    sender = threading.Thread(target=send)
    sender.start()
    received = bytearray()
    try:
        while True:
            data = sock.recv(262144)
            if not data:
                break
            received += data
    except ConnectionResetError as exc:
        errors.append(exc)
    sender.join(timeout)
    sock.close()
    return bytes(received), errors


def assert_both_ends_agree(proxy, server, upload, download, received, errors):
    assert errors == []
    assert digest(received) == digest(download)
    record = server.next_connection(timeout=60)
    assert record.error is None
    assert (record.count, record.digest) == (len(upload), digest(upload))
    line = proxy.wait_for("end=")
    assert "in=%d out=%d end=normal" % (len(upload), len(download)) in line


# -- servers that misbehave, on loopback ----------------------------------------------------------

class ResetsAfter(RecordingServer):
    """Reads ``read`` bytes, sends ``data``, then resets the connection."""

    def __init__(self, read, data):
        self.read, self.data = read, data
        super().__init__()

    def handle(self, conn, record):
        try:
            while len(record.received) < self.read:
                chunk = conn.recv(self.read - len(record.received))
                if not chunk:
                    break
                record.received += chunk
            conn.sendall(self.data)
        finally:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")


class NeverAnswers(RecordingServer):
    """Accepts, then neither reads nor writes until the test ends."""

    def __init__(self):
        self.released = threading.Event()
        super().__init__()

    def handle(self, conn, record):
        self.released.wait(60)

    def close(self):
        self.released.set()
        super().close()


class StopsReading(RecordingServer):
    """Reads one chunk, shuts its read side, answers, and closes."""

    def handle(self, conn, record):
        record.received += conn.recv(65536)
        conn.shutdown(socket.SHUT_RD)
        conn.sendall(self.reply)


@pytest.fixture
def closing():
    """Make servers and relays with a factory; they are closed at the end, pass or fail."""
    made = []

    def make(factory):
        made.append(factory())
        return made[-1]
    yield make
    for thing in made:
        thing.close()


UPLOAD = pattern(4 << 20, 1)
DOWNLOAD = pattern(4 << 20, 2)

# (name, server factory, timeout server, the ends the log may give)
SERVER_FAULTS = [
    ("reset-while-reading", lambda: ResetsAfter(64 * 1024, b""), "5s", ("server-abort",)),
    ("reset-after-reply", lambda: ResetsAfter(64 * 1024, DOWNLOAD[:256 * 1024]), "5s",
     ("server-abort",)),
    ("never-answers", NeverAnswers, "500ms", ("server-timeout",)),
    ("read-side-closed", lambda: StopsReading(reply=DOWNLOAD[:1024]), "5s",
     ("server-abort", "normal")),
]


@BOTH_POLLERS
@pytest.mark.parametrize("make_server,server_timeout,ends",
                         [case[1:] for case in SERVER_FAULTS], ids=[c[0] for c in SERVER_FAULTS])
def test_misbehaving_server(launch, closing, make_server, server_timeout, ends):
    """Whatever the server does, each side gets a prefix of what the other sent, the connection
    ends within its timeout, its end is logged, and no descriptor is left behind."""
    server = closing(make_server)
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], server.config_address,
                                     backend=FAULT_BACKEND + "timeout server = %s\n"
                                     % server_timeout))
    descriptors = proxy.open_fds()
    started = time.monotonic()
    received, _ = transfer(dial(port), UPLOAD, timeout=10)
    elapsed = time.monotonic() - started
    assert DOWNLOAD[:len(received)] == received
    assert all(UPLOAD.startswith(bytes(seen.received)) for seen in server.accepted)
    line = proxy.wait_for("end=")
    assert line.split("end=")[1].split()[0] in ends, line
    assert elapsed < 1.5 + TIMING_MARGIN       # 4 MiB each way, or the 500 ms timeout
    wait_until(lambda: proxy.open_fds() == descriptors, what="no descriptor left behind")


# -- latency, from a relay between the proxy and the server ---------------------------------------

class DelayRelay(object):
    """A TCP relay on loopback that delivers every chunk, and EOF, ``delay`` seconds after it
    was read, in order, in both directions."""

    def __init__(self, target, delay):
        self.target, self.delay = target, delay
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.address = self.sock.getsockname()
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while True:
            try:
                near, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(near,), daemon=True).start()

    def _connection(self, near):
        with near, socket.create_connection(self.target, timeout=60) as far:
            near.settimeout(60)
            pumps = [threading.Thread(target=self._direction, args=pair)
                     for pair in ((near, far), (far, near))]
            for pump in pumps:
                pump.start()
            for pump in pumps:
                pump.join(120)

    def _direction(self, src, dst):
        late = queue.Queue()
        deliverer = threading.Thread(target=self._deliver, args=(late, dst))
        deliverer.start()
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = b""
            late.put((time.monotonic() + self.delay, data))
            if not data:
                break
        deliverer.join(120)

    def _deliver(self, late, dst):
        while True:
            try:
                due, data = late.get(timeout=60)
            except queue.Empty:
                return
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)          # the fault itself: this chunk is late
            try:
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.sock.close()


def test_latency_keeps_every_byte(launch, closing):
    server = closing(lambda: BothWays(pattern(1 << 20, 4)))
    relay = closing(lambda: DelayRelay(server.address, 0.03))
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], "127.0.0.1:%d" % relay.address[1],
                                     backend=FAULT_BACKEND))
    descriptors = proxy.open_fds()
    upload = pattern(1 << 20, 3)
    received, errors = transfer(dial(port), upload)
    assert_both_ends_agree(proxy, server, upload, server.download, received, errors)
    wait_until(lambda: proxy.open_fds() == descriptors, what="no descriptor left behind")


def test_latency_past_the_server_timeout_is_closed_and_logged(launch, closing):
    server = closing(lambda: RecordingServer(mode="record", reply=b"late reply"))
    relay = closing(lambda: DelayRelay(server.address, 0.6))
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], "127.0.0.1:%d" % relay.address[1],
                                     backend=FAULT_BACKEND + "timeout server = 300ms\n"))
    started = time.monotonic()
    received, _ = transfer(dial(port), b"request")
    assert received == b""
    assert 0.25 < time.monotonic() - started < 0.3 + TIMING_MARGIN
    assert "end=server-timeout" in proxy.wait_for("end=")


# -- packet loss and a narrow link, between two network namespaces --------------------------------

def run_ip(*args, **kwargs):
    return subprocess.run(list(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=DEFAULT_TIMEOUT, **kwargs)


class VethPath(object):
    """Two namespaces joined by veth: the proxy side (PROXY_HOST) and the server side
    (SERVER_HOST), each with its own loopback; faults are set on the veth ends."""

    def __init__(self):
        tag = "%d-%d" % (os.getpid(), next(_netns_ids))
        self.proxy_ns, self.server_ns = "sp5p-" + tag, "sp5s-" + tag
        self.created = []

    def build(self):
        steps = [("ip", "netns", "add", self.proxy_ns), ("ip", "netns", "add", self.server_ns),
                 ("ip", "-n", self.proxy_ns, "link", "add", "veth0", "type", "veth", "peer",
                  "name", "veth0", "netns", self.server_ns)]
        for ns, address in ((self.proxy_ns, PROXY_HOST), (self.server_ns, SERVER_HOST)):
            steps += [("ip", "-n", ns, "addr", "add", address + "/24", "dev", "veth0"),
                      ("ip", "-n", ns, "link", "set", "lo", "up"),
                      ("ip", "-n", ns, "link", "set", "veth0", "up")]
        for step in steps:
            result = run_ip(*step)
            if result.returncode != 0:
                return "%s failed: %s" % (" ".join(step), result.stdout.strip())
            if step[1:3] == ("netns", "add"):
                self.created.append(step[3])
        return None

    def drop(self, percent):
        """Drop ``percent`` % of the packets crossing the veth, each way, at random.

        Segmentation offload is turned off first: otherwise a packet here is a burst of up
        to 64 KB, a 2 MiB transfer is a few dozen of them, and 5 % of that is sometimes none.
        """
        for ns in (self.proxy_ns, self.server_ns):
            result = run_ip("ip", "-n", ns, "link", "set", "veth0", "gso_max_segs", "1")
            assert result.returncode == 0, result.stdout
        chance = "numgen random mod 100 < %d " % percent if percent < 100 else ""
        rules = ("table inet simpleproxy_faults {\n"
                 "  chain input { type filter hook input priority 0;\n"
                 "    iifname \"veth0\" %scounter drop\n  }\n"
                 "  chain output { type filter hook output priority 0;\n"
                 "    oifname \"veth0\" %scounter drop\n  }\n}\n" % (chance, chance))
        result = run_ip("ip", "netns", "exec", self.server_ns, "nft", "-f", "-", input=rules)
        assert result.returncode == 0, result.stdout

    def dropped(self):
        """How many packets the drop rules have dropped so far."""
        result = run_ip("ip", "netns", "exec", self.server_ns, "nft", "list", "table", "inet",
                        "simpleproxy_faults")
        assert result.returncode == 0, result.stdout
        return sum(int(n) for n in re.findall(r"counter packets (\d+)", result.stdout))

    def limit_rate(self, rate):
        """Shape both directions of the veth to ``rate`` (tc syntax, e.g. 8mbit)."""
        for ns in (self.proxy_ns, self.server_ns):
            result = run_ip("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "veth0",
                            "root", "tbf", "rate", rate, "burst", "32kb", "latency", "400ms")
            assert result.returncode == 0, result.stdout

    def remove(self):
        for ns in self.created:
            run_ip("ip", "netns", "del", ns)


@pytest.fixture
def path():
    if os.geteuid() != 0:
        skip_or_fail("network namespaces need root")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            skip_or_fail("%s is not installed" % tool)
    lab = VethPath()
    try:
        problem = lab.build()
        if problem:
            skip_or_fail(problem)
        yield lab
    finally:
        lab.remove()


@pytest.fixture
def path_proxy(path, launch):
    """Start a proxy inside the path's proxy namespace; clients dial it with path_dial."""
    def start(text):
        return in_netns(path.proxy_ns, lambda: launch(text))
    return start


@pytest.fixture
def path_server(path, closing):
    """Start a BothWays server on the path's server side."""
    def start(download):
        return closing(lambda: in_netns(path.server_ns,
                                        lambda: BothWays(download, host=SERVER_HOST)))
    return start


def path_dial(path, port):
    return in_netns(path.proxy_ns, lambda: dial(port))


PATH_PORT = 8443      # any port: the proxy's namespace is new and empty


@pytest.mark.parametrize("fault,setting", [("drop", 5), ("limit_rate", "16mbit")],
                         ids=["loss-5%", "tbf-16mbit"])
def test_faulty_path_keeps_every_byte(path, path_proxy, path_server, fault, setting):
    download, upload = pattern(1 << 20, 6), pattern(1 << 20, 5)
    server = path_server(download)
    proxy = path_proxy(one_frontend(["127.0.0.1:%d" % PATH_PORT],
                                    "%s:%d" % (SERVER_HOST, server.port),
                                    backend="timeout connect = 5s\n"))
    descriptors = proxy.open_fds()
    getattr(path, fault)(setting)
    started = time.monotonic()
    received, errors = transfer(path_dial(path, PATH_PORT), upload)
    elapsed = time.monotonic() - started
    assert_both_ends_agree(proxy, server, upload, download, received, errors)
    if fault == "drop":
        assert path.dropped() > 0
    else:
        assert elapsed > 0.4          # 1 MiB each way through 16 Mbit/s: the shaper is there
    wait_until(lambda: proxy.open_fds() == descriptors, what="no descriptor left behind")


def test_total_loss_ends_in_a_logged_connect_timeout(path, path_proxy, path_server):
    server = path_server(b"")
    proxy = path_proxy(one_frontend(["127.0.0.1:%d" % PATH_PORT],
                                    "%s:%d" % (SERVER_HOST, server.port),
                                    backend=FAULT_BACKEND))
    descriptors = proxy.open_fds()
    path.drop(100)
    started = time.monotonic()
    received, _ = transfer(path_dial(path, PATH_PORT), b"hello", timeout=10)
    assert received == b""
    assert 0.9 < time.monotonic() - started < 1.0 + TIMING_MARGIN
    assert "end=connect-timeout" in proxy.wait_for("end=")
    assert server.accepted == []
    wait_until(lambda: proxy.open_fds() == descriptors, what="no descriptor left behind")
