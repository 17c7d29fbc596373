"""The proxy end to end: real processes, real loopback sockets, bytes compared exactly.

Both launch forms run every test here: ``python -m simpleproxy`` and a copy of the one-file
build in an empty folder.
"""
import hashlib
import os
import signal
import socket
import struct
import threading

import pytest

from support import (BOTH_FORMS, BOTH_POLLERS, CLAIMED_V1, CLAIMED_V2, DEFAULT_TIMEOUT,
                     EVERY_FORM, PAYLOAD, REPLY, RESET, V2_LOCAL, V2_SIGNATURE, Firehose,
                     JammedListener, Launcher, RecordingServer, config, connect, exchange,
                     exchange_or_reset, finish, free_port, one_frontend, read_to_eof, v1_line,
                     v2_header, wait_until)

SEND_OPTION = {"none": "", "v1": "send-proxy", "v2": "send-proxy-v2"}


# -- every bind x server header combination ------------------------------------------------------

@pytest.fixture(scope="module")
def matrix_backend():
    server = RecordingServer(mode="record", reply=REPLY)
    yield server
    server.close()


@pytest.fixture(scope="module", params=["module", "bundle"])
def matrix_proxy(request, tmp_path_factory, proxy_python, matrix_backend):
    """One proxy with a frontend for each (incoming, outgoing) header combination."""
    ports = {}
    frontends, backends = [], []
    for out in ("none", "v1", "v2"):
        backends.append(("be_%s" % out, ["server s1 = %s %s" % (
            matrix_backend.config_address, SEND_OPTION[out])], ""))
        for inc in ("none", "v1", "v2"):
            port = ports[inc, out] = free_port()
            bind = "127.0.0.1:%d%s" % (port, "" if inc == "none" else " accept-proxy")
            frontends.append(("fe_%s_%s" % (inc, out), [bind], "be_%s" % out, ""))
    with Launcher(request.param, tmp_path_factory.mktemp("matrix")) as launch:
        yield launch(config(frontends, backends)), ports


@pytest.mark.parametrize("inc", ["none", "v1", "v2"])
@pytest.mark.parametrize("out", ["none", "v1", "v2"])
def test_header_matrix_exact_bytes(matrix_proxy, matrix_backend, inc, out):
    proxy, ports = matrix_proxy
    port = ports[inc, out]
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    claimed = {"none": b"", "v1": CLAIMED_V1, "v2": CLAIMED_V2}[inc]
    assert finish(sock, claimed + PAYLOAD) == REPLY
    got = matrix_backend.next_connection()
    if inc == "none":
        src, dst, sport, dport = "127.0.0.1", "127.0.0.1", client_port, port
    else:
        src, dst, sport, dport = "203.0.113.7", "198.51.100.1", 5555, 80
    expected_header = {
        "none": b"",
        "v1": v1_line(src, dst, sport, dport),
        "v2": v2_header(src, dst, sport, dport),
    }[out]
    assert bytes(got.received) == expected_header + PAYLOAD
    line = proxy.wait_for("fe=fe_%s_%s " % (inc, out))
    assert line.split(" ")[3:4] == ["%s:%d" % (src, sport)]   # the client as the header gave it
    assert "peer=127.0.0.1:%d" % client_port in line
    assert "end=normal" in line


# -- address families ---------------------------------------------------------------------------

def _one_shot(launch, bind, server):
    """Run one proxy with one frontend/backend and return (backend, proxy)."""
    backend = RecordingServer(mode="record", reply=REPLY)
    return backend, launch(one_frontend([bind], "%s %s" % (backend.config_address, server)))


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
@BOTH_FORMS
def test_ipv6_client_gets_tcp6_line(launch):
    port = free_port("::1")
    backend, proxy = _one_shot(launch, "[::1]:%d" % port, "send-proxy")
    sock = connect(("::1", port))
    client_port = sock.getsockname()[1]
    assert finish(sock, PAYLOAD) == REPLY
    got = backend.next_connection()
    assert bytes(got.received) == b"PROXY TCP6 ::1 ::1 %d %d\r\n" % (client_port, port) + PAYLOAD


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
@BOTH_FORMS
def test_wildcard_v6_bind_names_real_ipv4_destination(launch):
    """An IPv4 client on [::] arrives v4-mapped: it goes out as TCP4, and never as '::'."""
    port = free_port("::")
    backend, proxy = _one_shot(launch, "[::]:%d" % port, "send-proxy-v2")
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    assert finish(sock, PAYLOAD) == REPLY
    got = backend.next_connection()
    assert bytes(got.received) == v2_header("127.0.0.1", "127.0.0.1", client_port, port) + PAYLOAD


@BOTH_FORMS
def test_unix_socket_bind(tmp_path, launch):
    path = str(tmp_path / "front.sock")
    backend, proxy = _one_shot(launch, "unix@" + path, "send-proxy-v2")
    assert exchange(path, PAYLOAD) == REPLY
    got = backend.next_connection()
    unix_block = b"\0" * 108 + path.encode().ljust(108, b"\0")
    assert bytes(got.received) == (V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216)
                                   + unix_block + PAYLOAD)
    assert proxy.stop() == 0
    assert not os.path.exists(path)


@BOTH_FORMS
def test_unix_client_with_an_abstract_address(tmp_path, launch):
    path = str(tmp_path / "front.sock")
    backend, proxy = _one_shot(launch, "unix@" + path, "send-proxy")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(b"\0simpleproxy-test-%d" % os.getpid())
    sock.settimeout(10)
    sock.connect(path)
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(sock) == REPLY
    sock.close()
    assert bytes(backend.next_connection().received) == b"PROXY UNKNOWN\r\n" + PAYLOAD
    assert "unix@@simpleproxy-test-%d " % os.getpid() in proxy.wait_for("end=normal")


@BOTH_FORMS
def test_unix_socket_client_sends_v1_unknown(tmp_path, launch):
    path = str(tmp_path / "front.sock")
    backend, proxy = _one_shot(launch, "unix@" + path, "send-proxy")
    assert exchange(path, PAYLOAD) == REPLY
    assert bytes(backend.next_connection().received) == b"PROXY UNKNOWN\r\n" + PAYLOAD


# -- accept-proxy: split headers, LOCAL, malformed ----------------------------------------------

def start_accepting(launch):
    """A proxy with an accept-proxy bind that sends v1 on: (the proxy, its port, the backend)."""
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    proxy = launch(config(
        [("fe", ["127.0.0.1:%d accept-proxy" % port], "be", "timeout proxy-header = 3s\n")],
        [("be", ["server s1 = %s send-proxy" % backend.config_address], "")]))
    return proxy, port, backend


@pytest.fixture(scope="module")
def accepting(tmp_path_factory, proxy_python):
    """start_accepting(), shared by the module's tests."""
    with Launcher("module", tmp_path_factory.mktemp("accepting")) as launch:
        proxy, port, backend = start_accepting(launch)
        yield proxy, port, backend
    backend.close()


@pytest.mark.parametrize("header", [CLAIMED_V1, CLAIMED_V2], ids=["v1", "v2"])
def test_header_split_into_single_bytes(accepting, header):
    proxy, port, backend = accepting
    sock = connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    for i in range(len(header)):
        sock.send(header[i:i + 1])
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(sock) == REPLY
    got = backend.next_connection()
    assert bytes(got.received) == CLAIMED_V1 + PAYLOAD


def test_v2_local_uses_real_addresses(accepting):
    proxy, port, backend = accepting
    local = V2_LOCAL
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    assert finish(sock, local + PAYLOAD) == REPLY
    expected = v1_line("127.0.0.1", "127.0.0.1", client_port, port)
    assert bytes(backend.next_connection().received) == expected + PAYLOAD


@pytest.mark.parametrize("reset", [False, True], ids=["fin", "rst"])
def test_local_health_check_never_reaches_the_backend(launch, reset):
    """A LOCAL header and then EOF or a reset is a peer's health check: no server is chosen."""
    proxy, port, backend = start_accepting(launch)        # its own: idle descriptors counted
    descriptors = proxy.open_fds()
    sock = connect(("127.0.0.1", port))
    sock.sendall(V2_LOCAL)
    if reset:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    else:
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock) == b""
    sock.close()
    # A real client right after it is served, and it is the only one the backend sees.
    assert exchange(("127.0.0.1", port), CLAIMED_V1 + PAYLOAD) == REPLY
    assert bytes(backend.next_connection().received) == CLAIMED_V1 + PAYLOAD
    # Both connections are over (a reset may be taken after the client that came later).
    wait_until(lambda: proxy.open_fds() == descriptors, what="both connections closed")
    assert len(backend.accepted) == 1
    assert not proxy.log_lines("end=health-check")        # logged at debug level only
    backend.close()


def test_local_and_silent_counts_as_waiting_for_its_header(launch):
    """LOCAL and then nothing: bounded by maxconn-pending-header and timeout proxy-header,
    like a connection whose header never comes."""
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port], backend.config_address,
                                frontend="maxconn-pending-header = 2\n"
                                         "timeout proxy-header = 500ms\n"))
    probes = [connect(("127.0.0.1", port), timeout=3) for _ in range(3)]
    for probe in probes:
        probe.sendall(V2_LOCAL)
    proxy.wait_for("end=evicted:maxconn-pending-header")
    for probe in probes:
        # Evicted (a reset: its bytes were never read), or closed at the 500 ms header
        # deadline, not after timeout client (10 s), which would time this read out.
        try:
            assert read_to_eof(probe) == b""
        except ConnectionResetError:
            pass
        probe.close()
    assert backend.accepted == []


def test_local_then_payload_later_is_relayed(accepting):
    proxy, port, backend = accepting
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(V2_LOCAL)     # its own segment, most likely
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(sock) == REPLY
    expected = v1_line("127.0.0.1", "127.0.0.1", client_port, port)
    assert bytes(backend.next_connection().received) == expected + PAYLOAD


def test_unknown_with_any_bytes_uses_the_real_peer_and_logs_none_of_them(accepting):
    """PROXY UNKNOWN: whatever comes before the CRLF is ignored (an escape sequence, NUL,
    0xff here), the real endpoints go on, and none of those bytes reaches the log."""
    proxy, port, backend = accepting
    start = len(proxy.lines)
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    assert finish(sock, b"PROXY UNKNOWN \x1b[2J\x00\xff\r\n" + PAYLOAD) == REPLY
    expected = v1_line("127.0.0.1", "127.0.0.1", client_port, port)
    assert bytes(backend.next_connection().received) == expected + PAYLOAD
    assert "end=normal" in proxy.wait_for("peer=127.0.0.1:%d " % client_port, start=start)
    assert not [line for line in proxy.lines[start:] if "\x1b" in line or "\ufffd" in line]


def test_second_header_is_payload(accepting):
    proxy, port, backend = accepting
    forged = b"PROXY TCP4 6.6.6.6 6.6.6.6 1 2\r\n"
    assert exchange(("127.0.0.1", port), CLAIMED_V1 + forged + PAYLOAD) == REPLY
    assert bytes(backend.next_connection().received) == CLAIMED_V1 + forged + PAYLOAD


@pytest.mark.parametrize("src, dst, family", [("203.0.113.7", "198.51.100.1", "UDP4"),
                                               ("2001:db8::7", "2001:db8::1", "UDP6")])
def test_udp_announced_by_the_client_goes_on_as_udp(launch, src, dst, family):
    """A v2 header for a UDP flow (transport 2, DGRAM) is rebuilt for send-proxy-v2 with the
    same transport, not relabelled TCP."""
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port],
                                backend.config_address + " send-proxy-v2"))
    udp = v2_header(src, dst, 5555, 53, transport=0x2)
    assert exchange(("127.0.0.1", port), udp + PAYLOAD) == REPLY
    assert bytes(backend.next_connection().received) == udp + PAYLOAD
    assert "pp=v2/%s" % family in proxy.wait_for("end=normal").split()
    backend.close()


MALFORMED = [
    ("not-proxy", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("not-proxy", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),      # a TLS ClientHello
    ("malformed", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 08080\r\n"),
    ("malformed", b"PROXY TCP4 1.2.3.4  5.6.7.8 80 443\r\n"),
    ("malformed", b"PROXY TCP6 1.2.3.4 5.6.7.8 80 443\r\n"),
    ("too-long", b"PROXY UNKNOWN " + b"x" * 120 + b"\r\n"),
    ("truncated", b"PROXY TCP4 1.2.3.4 5.6.7.8 80"),
    ("truncated", CLAIMED_V2[:20]),
    ("malformed", V2_SIGNATURE + b"\x21\x11\x00\x05" + b"\x00" * 5),     # length < address block
    ("unsupported", V2_SIGNATURE + b"\x23\x11\x00\x0c" + b"\x00" * 12),  # command 3
]


@pytest.mark.parametrize("kind,data", MALFORMED, ids=[m[0] + "-%d" % i for i, m in
                                                      enumerate(MALFORMED)])
def test_bad_header_closes_without_touching_backend(accepting, kind, data):
    proxy, port, backend = accepting
    before = len(backend.accepted)
    start = len(proxy.lines)
    assert exchange_or_reset(("127.0.0.1", port), data) in (b"", RESET)   # not a byte back
    line = proxy.wait_for("end=bad-header:%s" % kind, start=start)
    assert "be=-" in line
    assert len(backend.accepted) == before


# -- relaying: volume, half-close, backpressure ------------------------------------------------

@EVERY_FORM
def test_64_mib_each_way_byte_exact(launch):
    backend = RecordingServer(mode="echo")
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], backend.config_address))
    size = 64 << 20
    block = hashlib.sha256(b"seed").digest() * 4096        # 128 KiB of varied bytes
    sock = connect(("127.0.0.1", port), timeout=60)
    sent_hash = hashlib.sha256()

    def send_all():
        for _ in range(size // len(block)):
            sock.sendall(block)
            sent_hash.update(block)
        sock.shutdown(socket.SHUT_WR)

    sender = threading.Thread(target=send_all)
    sender.start()
    received_hash = hashlib.sha256()
    received = 0
    while True:
        data = sock.recv(1 << 20)
        if not data:
            break
        received += len(data)
        received_hash.update(data)
    sender.join(60)
    sock.close()
    assert received == size
    assert received_hash.hexdigest() == sent_hash.hexdigest()
    line = proxy.wait_for("end=normal")
    assert "in=%d out=%d" % (size, size) in line


class GreetThenRead(RecordingServer):
    """A server that speaks first, half-closes, then reads what the client still sends."""

    def handle(self, conn, record):
        conn.sendall(b"220 hello\r\n")
        conn.shutdown(socket.SHUT_WR)
        while True:
            data = conn.recv(65536)
            if not data:
                break
            record.received += data


@EVERY_FORM
def test_half_close_both_ways(launch):
    record_backend = RecordingServer(mode="record", reply=REPLY)
    greeter = GreetThenRead()
    port_a, port_b = free_port(), free_port()
    proxy = launch(config(
        [("client_closes", ["127.0.0.1:%d" % port_a], "rec", ""),
         ("server_closes", ["127.0.0.1:%d" % port_b], "greet", "")],
        [("rec", ["server s1 = %s" % record_backend.config_address], ""),
         ("greet", ["server s1 = %s" % greeter.config_address], "")]))
    # The client half-closes first; the server answers after seeing EOF.
    assert exchange(("127.0.0.1", port_a), PAYLOAD) == REPLY
    assert bytes(record_backend.next_connection().received) == PAYLOAD
    # The server half-closes first; the client keeps sending afterwards.
    sock = connect(("127.0.0.1", port_b))
    assert read_to_eof(sock) == b"220 hello\r\n"
    sock.sendall(PAYLOAD)
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    assert bytes(greeter.next_connection().received) == PAYLOAD * 2
    assert "end=normal" in proxy.wait_for("fe=client_closes ")
    assert "end=normal" in proxy.wait_for("fe=server_closes ")


class LastWordServer(RecordingServer):
    """A server that sends its reply and its FIN in one segment, then waits for the FIN."""

    def handle(self, conn, record):
        conn.send(REPLY, socket.MSG_MORE)
        conn.shutdown(socket.SHUT_WR)
        read_to_eof(conn)


def _segments_received(address):
    """Read the connection's bytes to EOF, then count the TCP segments that brought them
    (tcpi_segs_in of TCP_INFO, Linux 4.2 and later: the handshake's SYN-ACK included)."""
    sock = connect(address)
    try:
        assert read_to_eof(sock) == REPLY
        return struct.unpack_from("I", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                                       256), 140)[0]
    finally:
        sock.close()


@BOTH_FORMS
def test_a_reply_and_its_fin_that_came_together_leave_together(launch):
    """epoll says the FIN is in (EPOLLRDHUP), so the reply goes out with MSG_MORE and the FIN
    right after it, in the one segment the server used; a proxy that learns the EOF from a
    second read sends them in two (selectors cannot tell, which is why epoll alone is here)."""
    server = LastWordServer()
    try:
        port = free_port()
        proxy = launch(one_frontend(["127.0.0.1:%d" % port], server.config_address))
        direct = _segments_received(server.address)
        assert _segments_received(("127.0.0.1", port)) == direct
        assert "end=normal" in proxy.wait_for("in=0 out=%d" % len(REPLY))
    finally:
        server.close()


@BOTH_FORMS
def test_slow_reader_keeps_memory_bounded(launch):
    backend = Firehose(256 << 20)
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], backend.config_address))
    baseline = proxy.rss_kib()
    sock = connect(("127.0.0.1", port), timeout=60)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    # Read a little, then stall long enough for the proxy to fill every buffer in its way.
    received = len(sock.recv(65536))
    stalled = wait_until(lambda: _proxy_blocked(proxy, backend.port), timeout=10, what="the proxy to block")
    peak = proxy.rss_kib()
    while True:
        data = sock.recv(1 << 20)
        if not data:
            break
        received += len(data)
        if received % (32 << 20) < len(data):
            peak = max(peak, proxy.rss_kib())
    sock.close()
    assert stalled
    assert received == backend.total
    # One read buffer (256 KiB) per direction at most, plus interpreter noise: far below 256 MiB.
    assert peak - baseline < 16 * 1024, (baseline, peak)


@BOTH_FORMS
def test_many_slow_readers_hold_at_most_the_bound(launch):
    """32 streams into clients that stopped reading: without tune.buffers.limit each may hold a
    large read (about 14 MiB held here, up to 32 MiB); with it, at most 4 large buffers in all
    plus tune.bufsize per stream: 6 MiB."""
    backend = Firehose(64 << 20)
    port = free_port()
    streams = 32
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], backend.config_address, global_=(
        "tune.bufsize = 64k\ntune.bufsize.large = 1m\ntune.buffers.limit = 4\n")))
    baseline = proxy.rss_kib()
    socks = []
    try:
        for _ in range(streams):
            sock = connect(("127.0.0.1", port), timeout=60)
            socks.append(sock)
            # Read fast at first, so that the kernel grows every socket buffer on the way and
            # the proxy's reads come back full; then stall.
            got = 0
            while got < 4 << 20:
                data = sock.recv((4 << 20) - got)
                assert data, "the stream ended early"
                got += len(data)
        last = []

        def every_stream_stalled():
            # Bytes wait unread from every stream, and no queue moved since the last look.
            queues = _unread_from(proxy, backend.port)
            stalled = len(queues) == streams and all(queues) and queues == last
            last[:] = queues
            return stalled

        wait_until(every_stream_stalled, timeout=30, interval=0.1,
                   what="the proxy to stop reading every stream")
        held_kib = proxy.rss_kib() - baseline
    finally:
        for sock in socks:
            sock.close()
    assert held_kib < 6 * 1024 + 512, held_kib


def _unread_from(proxy, backend_port):
    """The bytes waiting unread in each of the proxy's connections to the backend, by port.
    The kernel's table is the whole network namespace's: after thousands of tests it also
    holds other processes' connections and TIME_WAIT rows to an earlier server that had the
    same port, so rows are taken by the inodes of the proxy's own sockets."""
    with open("/proc/%d/net/tcp" % proxy.proc.pid) as f:
        rows = [line.split() for line in f.readlines()[1:]]
    own = _socket_inodes(proxy.proc.pid)
    # Field 1 is the local "ADDR:PORT", 2 the remote one, 4 "tx_queue:rx_queue" (all in hex)
    # and 9 the inode.
    return [int(row[4].split(":")[1], 16) for row in sorted(rows, key=lambda row: row[1])
            if row[9] in own and int(row[2].split(":")[1], 16) == backend_port]


def _socket_inodes(pid):
    """The inodes of a process's open sockets, as /proc/net/tcp writes them."""
    inodes = set()
    fd_dir = "/proc/%d/fd" % pid
    for fd in os.listdir(fd_dir):
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue                    # closed since the listing
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


def _proxy_blocked(proxy, backend_port):
    """True when bytes from the backend wait unread in the proxy's socket: it stopped reading."""
    return any(unread >= 32768 for unread in _unread_from(proxy, backend_port))


# -- timeouts ------------------------------------------------------------------------------------

@EVERY_FORM
def test_timeouts_fire(launch):
    echo = RecordingServer(mode="echo")
    jammed = JammedListener()
    ports = [free_port() for _ in range(3)]
    proxy = launch(config(
        [("idle", ["127.0.0.1:%d" % ports[0]], "echo", "timeout client = 300ms\n"),
         ("header", ["127.0.0.1:%d accept-proxy" % ports[1]], "echo",
          "timeout proxy-header = 300ms\n"),
         ("connect", ["127.0.0.1:%d" % ports[2]], "jammed", "")],
        [("echo", ["server s1 = %s" % echo.config_address], "timeout server = 300ms\n"),
         ("jammed", ["server s1 = %s" % jammed.config_address],
          "timeout connect = 300ms\nretries = 0\n")]))
    socks = [connect(("127.0.0.1", port)) for port in ports]
    socks[0].sendall(b"ping")
    assert socks[0].recv(10) == b"ping"
    for sock in socks:
        assert read_to_eof(sock) == b""            # each closed by the proxy within its timeout
    assert "end=client-timeout" in proxy.wait_for("fe=idle ")
    assert "end=header-timeout" in proxy.wait_for("fe=header ")
    assert "end=connect-timeout" in proxy.wait_for("fe=connect ")
    for sock in socks:
        sock.close()
    jammed.close()


# -- limits --------------------------------------------------------------------------------------

@BOTH_FORMS
def test_maxconn_stops_accepting_then_resumes(launch):
    echo = RecordingServer(mode="echo")
    port = free_port()
    launch(one_frontend(["127.0.0.1:%d" % port], echo.config_address, global_="maxconn = 2\n"))
    first, second = connect(("127.0.0.1", port)), connect(("127.0.0.1", port))
    for sock in (first, second):
        sock.sendall(b"x")
        assert sock.recv(1) == b"x"
    third = connect(("127.0.0.1", port))        # completes in the kernel's backlog...
    third.sendall(b"y")
    third.settimeout(0.3)
    with pytest.raises(socket.timeout):
        third.recv(1)                            # ...but the proxy does not take it yet
    first.close()
    third.settimeout(10)
    assert third.recv(1) == b"y"                 # served as soon as a slot frees
    for sock in (second, third):
        sock.close()


# -- chaining ------------------------------------------------------------------------------------

@pytest.mark.parametrize("first_hop", ["send-proxy", "send-proxy-v2"])
@BOTH_FORMS
def test_chained_behind_another_simpleproxy(launch, first_hop):
    backend = RecordingServer(mode="record", reply=REPLY)
    inner_port, outer_port = free_port(), free_port()
    inner = launch(config(
        [("inner", ["127.0.0.1:%d accept-proxy" % inner_port], "be", "")],
        [("be", ["server s1 = %s send-proxy" % backend.config_address], "")]))
    launch(config(
        [("outer", ["127.0.0.1:%d" % outer_port], "be", "")],
        [("be", ["server inner = 127.0.0.1:%d %s" % (inner_port, first_hop)], "")]))
    sock = connect(("127.0.0.1", outer_port))
    client_port = sock.getsockname()[1]
    assert finish(sock, PAYLOAD) == REPLY
    got = backend.next_connection()
    # The innermost server is told about the original client, not about the outer proxy.
    expected = v1_line("127.0.0.1", "127.0.0.1", client_port, outer_port)
    assert bytes(got.received) == expected + PAYLOAD
    assert "127.0.0.1:%d " % client_port in inner.wait_for("fe=inner")


# -- listen sections and stopping ----------------------------------------------------------------

@BOTH_FORMS
def test_listen_section_and_sigint_stop(launch):
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    text = ("[listen app]\nbind = 127.0.0.1:%d\nserver s1 = %s send-proxy\n"
            % (port, backend.config_address))
    proxy = launch(text)
    idle = connect(("127.0.0.1", port))          # still open when the proxy is told to stop
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    assert finish(sock, PAYLOAD) == REPLY
    expected = v1_line("127.0.0.1", "127.0.0.1", client_port, port)
    assert bytes(backend.next_connection().received) == expected + PAYLOAD
    proxy.proc.send_signal(signal.SIGINT)
    assert proxy.proc.wait(DEFAULT_TIMEOUT) == 0      # by itself, before stop()'s SIGTERM
    assert read_to_eof(idle) == b""              # closed cleanly, not left hanging
    assert proxy.log_lines("end=shutdown")
    with pytest.raises(ConnectionRefusedError):
        connect(("127.0.0.1", port))              # and the listener is gone


@BOTH_POLLERS
def test_unix_server_with_a_full_backlog_is_a_connect_error(tmp_path, launch):
    """A non-blocking connect to a Unix listener whose backlog is full fails at once (EAGAIN);
    it is a failed connect, not a connection."""
    path = str(tmp_path / "full.sock")
    full = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    full.bind(path)
    full.listen(0)
    fillers = []
    while True:                                   # fill the backlog; never accept
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        filler.setblocking(False)
        fillers.append(filler)
        try:
            filler.connect(path)
        except BlockingIOError:
            break
        assert len(fillers) < 100
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], "unix@" + path, backend="retries = 0\n"))
    assert exchange_or_reset(("127.0.0.1", port), PAYLOAD) in (b"", RESET)
    line = proxy.wait_for("fe=fe ")
    assert "end=connect-error" in line and 'reason="Resource temporarily unavailable"' in line
    assert proxy.stop() == 0                      # and no internal error was logged
    for sock in fillers + [full]:
        sock.close()
