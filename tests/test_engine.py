"""The proxy in this process, on real loopback sockets: what cannot be provoked from outside.

A bug in the handling of one connection must cost that connection only: it is logged with its
traceback, closed, and every other connection carries on.
"""
import gc
import hashlib
import io
import select
import socket
import struct
import threading

import pytest

from simpleproxy.config import parse_config
from simpleproxy.loop import EVENT_READ, EVENT_WRITE, POLLER_VARIABLE
from simpleproxy.proxy import Proxy
from simpleproxy import session as session_module
from simpleproxy.session import Session, SessionSocket
from simpleproxy.logs import setup_logging
from support import (DEFAULT_TIMEOUT, Firehose, JammedListener, RecordingServer, connect,
                     exchange, free_port, proxy_in_thread, read_to_eof, v2_header, wait_until)

PAYLOAD = b"hello\x00world\r\n"
REPLY = b"reply"


@pytest.fixture
def running_proxy():
    """Start a Proxy on a thread with one frontend; yields (proxy, port, backend, log)."""
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    config = parse_config("[listen app]\nbind = 127.0.0.1:%d\nserver s1 = %s send-proxy\n"
                          % (port, backend.config_address))
    try:
        with proxy_in_thread(config) as (proxy, _, log):
            yield proxy, port, backend, log
    finally:
        backend.close()


def test_a_failing_connection_is_contained(running_proxy, monkeypatch):
    proxy, port, backend, log = running_proxy
    real_header = Session._outgoing_header
    calls = []

    def broken_once(session):
        calls.append(session)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return real_header(session)

    monkeypatch.setattr(Session, "_outgoing_header", broken_once)
    try:
        victim = connect(("127.0.0.1", port))
    except ConnectionResetError:                # on a busy host the reset can beat connect()
        victim = None
    wait_until(lambda: len(calls) == 1, what="the first connection to reach its header")
    healthy = connect(("127.0.0.1", port))      # opened while the failure is being handled
    if victim is not None:
        with victim:
            try:
                assert read_to_eof(victim) == b""        # closed (a reset is fine too)
            except ConnectionResetError:
                pass
    wait_until(lambda: "RuntimeError: injected failure" in log.getvalue()
               and "end=internal-error" in log.getvalue(),
               what="the traceback and the connection's end in the log")
    assert exchange(("127.0.0.1", port), PAYLOAD) == REPLY
    healthy.sendall(PAYLOAD)
    healthy.shutdown(socket.SHUT_WR)
    assert read_to_eof(healthy) == REPLY


def test_an_error_outside_any_session_does_not_stop_the_loop(running_proxy):
    proxy, port, backend, log = running_proxy

    def explode():
        raise ValueError("a broken callback")

    proxy.loop.call_soon_threadsafe(explode)      # the entry point the health-check threads use
    wait_until(lambda: "ValueError: a broken callback" in log.getvalue(), what="the error logged")
    assert exchange(("127.0.0.1", port), PAYLOAD) == REPLY



class PausingHasher(RecordingServer):
    """Hashes all it receives, but after its first read waits for ``go`` before reading on."""

    def __init__(self):
        self.go = threading.Event()
        super().__init__(mode="hash")
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # inherited on accept

    def handle(self, conn, record):
        digest = hashlib.sha256()
        first = True
        while True:
            data = conn.recv(65536)
            if not data:
                break
            record.count += len(data)
            digest.update(data)
            if first:
                first = False
                self.go.wait(10)
        record.digest = digest.hexdigest()
        conn.sendall(record.digest.encode())


def test_first_flight_stays_in_order_when_the_server_side_is_short(monkeypatch):
    """The header and a first flight come in one read and do not fit the server socket at
    once; then the client sends more. Every byte must arrive once and in order: while bytes
    are pending toward the server, the client is not read."""
    real_connect = Session._connect

    def small_send_buffer(session):
        real_connect(session)
        if session.ssock is not None:
            session.ssock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)

    monkeypatch.setattr(Session, "_connect", small_send_buffer)
    backend = PausingHasher()
    port = free_port()
    config = parse_config("[listen app]\nbind = 127.0.0.1:%d accept-proxy\nserver s1 = %s\n"
                          % (port, backend.config_address))
    setup_logging("info", io.StringIO())
    proxy = Proxy(config)
    proxy.bind_all()
    thread = threading.Thread(target=proxy.run, daemon=True)
    header = b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n"
    stream = hashlib.sha256(b"order").digest() * (128 << 10)        # 4 MiB
    sock = connect(("127.0.0.1", port), timeout=60)
    sock.sendall(header + stream[:60000])        # all there before the loop first reads
    thread.start()
    wait_until(lambda: backend.accepted and backend.accepted[0].count,
               what="the first flight to reach the server")
    sock.sendall(stream[60000:100000])           # more while the server side is still full
    wait_until(lambda: proxy.sessions and all(not s.cmask & EVENT_READ
                                             for s in list(proxy.sessions)),
               what="the proxy to stop reading the client")
    backend.go.set()
    sock.sendall(stream[100000:])
    sock.shutdown(socket.SHUT_WR)
    assert read_to_eof(sock).decode() == hashlib.sha256(stream).hexdigest()
    assert backend.next_connection().count == len(stream)
    proxy.stop()
    thread.join(10)
    backend.close()


# -- the connect path: what the poller is asked, per kind of server ------------------------------

POLLERS = ["epoll", "selectors"] if hasattr(select, "epoll") else ["selectors"]


@pytest.mark.parametrize("poller", POLLERS)
def test_a_server_that_accepts_at_once_is_never_watched_for_room(tmp_path, monkeypatch, poller):
    """A Unix server's connect completes inside connect(): the session relays at once, with
    no wait for writability and no SO_ERROR to ask; the bytes are the same."""
    monkeypatch.setenv(POLLER_VARIABLE, poller)
    backend = RecordingServer(mode="record", reply=REPLY, path=str(tmp_path / "server"))
    port = free_port()
    config = parse_config("[listen app]\nbind = 127.0.0.1:%d\nserver s1 = %s\n"
                          % (port, backend.config_address))
    asked = []
    try:
        with proxy_in_thread(config) as (proxy, _, log):
            loop = proxy.loop
            for name in ("register", "modify"):
                def record(sock, mask, callback, call=getattr(loop, name)):
                    if getattr(sock, "family", None) == socket.AF_UNIX:
                        asked.append(mask)
                    call(sock, mask, callback)
                setattr(loop, name, record)
            for _ in range(3):
                assert exchange(("127.0.0.1", port), PAYLOAD) == REPLY
            wait_until(lambda: log.getvalue().count("end=normal") == 3, what="three log lines")
    finally:
        backend.close()
    received = [bytes(seen.received) for seen in backend.accepted]
    assert received == [PAYLOAD] * 3
    assert asked and not any(mask & EVENT_WRITE for mask in asked)


@pytest.mark.parametrize("poller", POLLERS)
def test_a_completed_connect_is_asked_for_its_error_only_where_the_poller_cannot_tell(
        running_proxy, monkeypatch, poller):
    """epoll reports a failed connect as EVENT_ERROR, so a TCP connect that completed costs
    no getsockopt(SO_ERROR); selectors cannot tell, and the socket is asked every time."""
    proxy, port, backend, log = running_proxy
    asked = []

    class AskedSocket(SessionSocket):
        """A server socket that notes when it is asked for SO_ERROR (the C type cannot be
        patched: the session is given this subclass instead)."""

        def getsockopt(self, level, option, *args):
            if (level, option) == (socket.SOL_SOCKET, socket.SO_ERROR):
                asked.append(self)
            return SessionSocket.getsockopt(self, level, option, *args)
    monkeypatch.setattr(session_module, "SessionSocket", AskedSocket)
    monkeypatch.setattr(proxy.loop, "tells_errors", poller == "epoll" and proxy.loop.tells_errors)
    # A loopback connect is found done by the send after it (the next two tests): the wait
    # for writability, whose event is asked here, is a remote server's path, and elsewhere's.
    monkeypatch.setattr(session_module, "SEND_TELLS_CONNECTED", False)
    for _ in range(3):
        assert exchange(("127.0.0.1", port), PAYLOAD) == REPLY
    wait_until(lambda: log.getvalue().count("end=normal") == 3, what="three log lines")
    assert len(asked) == (0 if proxy.loop.tells_errors else 3)


def test_bytes_held_for_slow_readers_are_counted_and_freed_at_close():
    """Past tune.buffers.limit large buffers held, reads drop to tune.bufsize; once the slow
    readers are gone (reset: their sessions close holding bytes), nothing is counted as held
    and reads are large again."""
    backend = Firehose(64 << 20)
    port = free_port()
    config = parse_config("[global]\ntune.bufsize = 64k\ntune.bufsize.large = 1m\n"
                          "tune.buffers.limit = 2\n[listen app]\nbind = 127.0.0.1:%d\n"
                          "server s1 = %s\n" % (port, backend.config_address))
    try:
        with proxy_in_thread(config) as (proxy, _, log):
            assert proxy.read_size == 1 << 20
            readers = [connect(("127.0.0.1", port)) for _ in range(8)]
            wait_until(lambda: proxy.read_size == 64 << 10, what="reads to drop to tune.bufsize")
            for sock in readers:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.close()
            wait_until(lambda: not proxy.sessions, what="the sessions to close")
            assert (proxy.held, proxy.holding, proxy.read_size) == (0, {}, 1 << 20)
    finally:
        backend.close()


@pytest.mark.parametrize("poller", POLLERS)
def test_a_closed_session_is_freed_without_the_garbage_collector(monkeypatch, poller):
    """A session and its timer point at each other until the session closes: whatever way
    it ends (normally, by a timer, after a retry), it is then freed by its last reference
    going, and the cyclic garbage collector, off here, has nothing of it to find."""
    monkeypatch.setenv(POLLER_VARIABLE, poller)
    backend = RecordingServer(mode="record", reply=REPLY)
    ports = [free_port() for _ in range(3)]
    config = parse_config(
        "[listen pp]\nbind = 127.0.0.1:%d accept-proxy\ntimeout proxy-header = 100ms\n"
        "server s1 = %s send-proxy-v2\n"
        "[listen plain]\nbind = 127.0.0.1:%d\nserver s1 = %s\n"
        "[listen down]\nbind = 127.0.0.1:%d\nretries = 1\nserver s1 = 127.0.0.1:%d\n"
        % (ports[0], backend.config_address, ports[1], backend.config_address, ports[2],
           free_port()))
    gc.disable()
    try:
        with proxy_in_thread(config) as (proxy, _, log):
            header = v2_header("203.0.113.7", "198.51.100.1", 5555, 80)
            assert exchange(("127.0.0.1", ports[0]), header + PAYLOAD) == REPLY
            assert exchange(("127.0.0.1", ports[1]), PAYLOAD) == REPLY
            with connect(("127.0.0.1", ports[0])) as silent:
                assert read_to_eof(silent) == b""           # the header timeout closed it
            with connect(("127.0.0.1", ports[2])) as refused:
                assert read_to_eof(refused) == b""          # refused twice: a retry's timer
            wait_until(lambda: not proxy.sessions and log.getvalue().count("end=") == 4,
                       what="the four sessions to close")
            assert [end.split()[0] for end in log.getvalue().split("end=")[1:]] == [
                "normal", "normal", "header-timeout", "connect-refused"]
            left = [obj for obj in gc.get_objects()
                    if isinstance(obj, Session) and obj.proxy is proxy]
            assert left == []
    finally:
        gc.enable()
        backend.close()


# -- the PROXY header: read in the round that accepts when it is already there ------------------

def _proxy_recording_registrations(monkeypatch, poller, server_address):
    """A Proxy for ``[listen app]`` on a free port, accept-proxy and send-proxy to
    ``server_address``, not running yet: (proxy, port, thread to run it, registrations),
    the last a list of (callback name, mask) that grows as the loop registers sockets."""
    monkeypatch.setenv(POLLER_VARIABLE, poller)
    port = free_port()
    config = parse_config("[listen app]\nbind = 127.0.0.1:%d accept-proxy\nserver s1 = %s "
                          "send-proxy\n" % (port, server_address))
    setup_logging("info", io.StringIO())
    proxy = Proxy(config)
    proxy.bind_all()
    thread = threading.Thread(target=proxy.run, daemon=True)
    registered = []
    real_register = proxy.loop.register

    def register(sock, mask, callback):
        registered.append((callback.__name__, mask))
        real_register(sock, mask, callback)
    monkeypatch.setattr(proxy.loop, "register", register)
    return proxy, port, thread, registered


def _stop(proxy, thread):
    if thread.ident is None:
        thread.start()           # run() then stop(): the proxy closes what it holds
    proxy.stop()
    thread.join(DEFAULT_TIMEOUT)
    assert not thread.is_alive()


@pytest.mark.parametrize("poller", POLLERS)
def test_a_header_in_before_the_accept_is_read_in_the_accepting_round(monkeypatch, poller):
    """A client that sends its header right after connecting has it in the socket by the time
    the proxy accepts: the round that accepts reads it and connects to the server at once,
    without registering the client and waiting for a poll to say it is readable. A server on
    this host has taken the connection inside connect(), and the send after it finds that
    out: the header and the client's bytes are with the server before any poll, and the
    server is watched for its reply, never for room."""
    backend = RecordingServer(mode="record", reply=REPLY)
    proxy, port, thread, registered = _proxy_recording_registrations(
        monkeypatch, poller, backend.config_address)
    sock = connect(("127.0.0.1", port))
    try:
        sock.sendall(b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n" + PAYLOAD)
        sock.shutdown(socket.SHUT_WR)      # loopback: all of it is in before the proxy accepts
        proxy.loop.run_once(DEFAULT_TIMEOUT)        # the round that accepts
        (session,) = proxy.sessions
        assert session.state.name == "RELAY"
        # The server for its reply, then the client once its bytes were passed on.
        assert registered == [("on_server_event", EVENT_READ), ("on_client_event", EVENT_READ)]
        expected = b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n" + PAYLOAD
        wait_until(lambda: [bytes(seen.received) for seen in backend.accepted] == [expected],
                   what="the server to have the bytes")
        thread.start()
        assert read_to_eof(sock) == REPLY
    finally:
        sock.close()
        _stop(proxy, thread)
        backend.close()


@pytest.mark.parametrize("poller", POLLERS)
def test_a_header_that_comes_later_in_the_accepting_round_is_read_in_that_round(monkeypatch,
                                                                                poller):
    """The header is read once the accepting round's events are served, not at accept: a
    client whose header arrives while a later event of the round is served (here that event
    sends it) is never registered to wait for it."""
    backend = RecordingServer(mode="record", reply=REPLY)
    proxy, port, thread, registered = _proxy_recording_registrations(
        monkeypatch, poller, backend.config_address)
    sock = connect(("127.0.0.1", port))
    header = b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n"
    trigger, pull = socket.socketpair()

    def send_header(mask):                  # an event served after the accept, in its round
        trigger.recv(1)
        sock.sendall(header + PAYLOAD)
    try:
        proxy.loop.register(trigger, EVENT_READ, send_header)
        listening = [listener.sock for fe in proxy.frontends.values() for listener in fe.listeners]
        assert select.select(listening, [], [], DEFAULT_TIMEOUT)[0]     # ready first: served first
        pull.send(b"!")
        assert select.select([trigger], [], [], DEFAULT_TIMEOUT)[0]
        del registered[:]
        proxy.loop.run_once(DEFAULT_TIMEOUT)        # the round that accepts
        (session,) = proxy.sessions
        assert session.state.name == "RELAY"
        assert registered == [("on_server_event", EVENT_READ), ("on_client_event", EVENT_READ)]
        wait_until(lambda: [bytes(seen.received) for seen in backend.accepted]
                   == [header + PAYLOAD], what="the server to have the bytes")
    finally:
        sock.close()
        trigger.close()
        pull.close()
        _stop(proxy, thread)
        backend.close()


@pytest.mark.parametrize("poller", POLLERS)
def test_a_server_that_has_not_answered_the_syn_is_watched_for_room(monkeypatch, poller):
    """The send after connect() says EAGAIN while the handshake is under way (a remote
    server's case; here a listener whose accept queue is full drops the SYN): the session
    waits for writability, as it did before the send, and the header waits with it."""
    jammed = JammedListener()
    proxy, port, thread, registered = _proxy_recording_registrations(
        monkeypatch, poller, jammed.config_address)
    sock = connect(("127.0.0.1", port))
    try:
        sock.sendall(b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n" + PAYLOAD)
        proxy.loop.run_once(DEFAULT_TIMEOUT)        # the round that accepts
        (session,) = proxy.sessions
        assert session.state.name == "CONNECTING"
        assert registered == [("on_server_event", EVENT_WRITE)]
        assert session.server_header == b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n"
    finally:
        sock.close()
        _stop(proxy, thread)
        jammed.close()
