"""The event loop: one ``selectors`` loop owns every socket.

A connection (a ``Session``) moves through these states; every transition is in this table and
``Session._enter`` refuses any other::

    HEADER      reading the PROXY header (binds with header handling, from peers trust.py lets
                in); nothing is chosen or connected
    QUEUED      every server that could take it is at its maxconn: it waits in the backend's
                queue, served oldest first as slots free, until ``timeout queue``
    CONNECTING  a server was chosen; non-blocking connect in progress, the header and any client
                bytes already read wait in the client-to-server buffer
    RELAY       bytes flow both ways; each direction ends on its own (half-close)
    CLOSED      both sockets closed, the log line written

Relaying, and why it looks the way it does:

* Reads go into one loop-wide buffer (``recv_into``) and are sent on at once, so the common case
  allocates nothing. Only what the peer's socket would not take is copied into that direction's
  ``pending`` bytes; while a direction has pending bytes its source is not read (backpressure), so
  a connection holds at most one read's worth per direction, and nothing while idle.
* EOF from one side becomes ``shutdown(SHUT_WR)`` on the other once its pending bytes are out;
  the other direction keeps flowing. A reset on one side is passed on as a reset (SO_LINGER 0).
* Timers live in one heap. Each session keeps one live entry; reads and writes only stamp
  ``session.last_activity`` with the loop's clock, and the entry, when it comes due, works out
  whether the session really timed out or re-arms itself. No timer operation per read.
* Selector interest is changed only when a direction blocks or unblocks, not per read.
"""
import errno
import logging
import heapq
import os
import selectors
import signal
import socket
import stat
import sys
import threading
import time
import traceback
from collections import deque

from .balancer import BackendPool
from .errors import ProxyHeaderError, SimpleProxyError, TRUNCATED
from .health import HealthChecker
from .logs import LOG, log_escape, log_writer
from .proxyproto import aws_vpce_id, build_v1, build_v2, packed_ip, parse_header
from .timeouts import LONGEST_WAIT
from .trust import (END_UNTRUSTED_HEADER, END_UNTRUSTED_PEER, START_BARE, START_PARSE,
                    START_UNTRUSTED, TrustPolicy, judge_start)

HEADER = "HEADER"
QUEUED = "QUEUED"
CONNECTING = "CONNECTING"
RELAY = "RELAY"
CLOSED = "CLOSED"

SESSION_TRANSITIONS = {
    None: (HEADER, QUEUED, CONNECTING, CLOSED),
    HEADER: (QUEUED, CONNECTING, CLOSED),
    QUEUED: (CONNECTING, CLOSED),
    CONNECTING: (CONNECTING, RELAY, CLOSED),   # CONNECTING again = a retry
    RELAY: (CLOSED,),
    CLOSED: (),
}

EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE

# Errors that mean "this peer is gone", as opposed to a bug of ours.
PEER_GONE_ERRNOS = frozenset((errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT,
                              errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED))
DESCRIPTOR_EXHAUSTION_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
ACCEPT_BATCH = 64            # accepts per readiness event, so one busy listener cannot starve the rest
ACCEPT_BACKOFF = 0.1         # seconds to stop accepting after EMFILE/ENFILE
RETRY_TURNAROUND = 1.0       # at most this long before retrying the server that just failed
END_SOURCE_LIMIT = "rejected:maxconn-per-source"
END_HEALTH_CHECK = "health-check"   # LOCAL header, then EOF or reset: a peer's check, logged at debug
END_HEADER_EVICTED = "evicted:maxconn-pending-header"
END_NO_DESCRIPTORS = "rejected:no-descriptors"   # no socket for the server: maxconn too high
DESCRIPTOR_RESERVE = 64      # descriptors kept for the rest (listeners, selector, checks)
# Signals whose default action would kill the proxy, for features that do not exist yet.
UNSUPPORTED_SIGNALS = (signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


def _inet_endpoint(sockaddr):
    """(host, port) of an AF_INET/AF_INET6 socket address, without an IPv6 zone id; an IPv4
    peer of a dual-stack bind (``::ffff:a.b.c.d``) as the IPv4 address it is."""
    host = sockaddr[0]
    if "%" in host:
        host = host.split("%", 1)[0]
    elif host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, sockaddr[1]


def _endpoint_text(endpoint):
    """How an endpoint reads in the log: 1.2.3.4:5, [::1]:5, unix@/path, or - when unknown."""
    if endpoint is None:
        return "-"
    if isinstance(endpoint, str):
        # A Unix path is the client's choice (its own socket's, or a v2 header's): escaped.
        if endpoint.startswith("\0"):
            return "unix@@" + log_escape(endpoint[1:])     # abstract namespace, as ss(8) shows it
        return "unix@" + (log_escape(endpoint) if endpoint else "(unnamed)")
    host, port = endpoint
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


class LoopTimer(object):
    """A one-shot callback in the loop's timer heap (for the loop's own chores)."""

    __slots__ = ("callback", "timer_at")

    def __init__(self, callback):
        self.callback = callback
        self.timer_at = None

    def on_timer(self, when, now):
        if when == self.timer_at:
            self.timer_at = None
            self.callback()


class Listener(object):
    """A listening socket of a frontend, and its accept loop."""

    def __init__(self, engine, fe, bind, sock):
        self.engine = engine
        self.fe = fe
        self.frontend = fe.frontend
        self.bind = bind
        self.sock = sock
        self.is_unix = sock.family == socket.AF_UNIX
        self.paused = False
        self.trust = TrustPolicy(bind) if bind.accept_proxy else None
        # The socket file this listener created; at exit only that file is removed.
        self.unix_file = _file_identity(bind.address.sockaddr) if self.is_unix else None

    def on_event(self, mask):
        engine = self.engine
        for _ in range(ACCEPT_BATCH):
            if self.paused:
                return           # a connection limit was reached by the previous accept
            try:
                csock, peer = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in DESCRIPTOR_EXHAUSTION_ERRNOS:
                    engine.back_off_accepting(exc)
                elif exc.errno not in PEER_GONE_ERRNOS:
                    LOG.warning("accept on %s failed: %s", self.bind.address.text, exc)
                return
            csock.setblocking(False)
            if engine.accepts_failing_since is not None:
                engine.accepts_recovered()
            Session(engine, self, csock, peer)

    def close(self):
        self.sock.close()
        path = self.bind.address.sockaddr
        if self.is_unix and self.unix_file is not None and _file_identity(path) == self.unix_file:
            try:
                os.unlink(path)
            except OSError:
                pass


class FrontendState(object):
    """Run-time counters of a frontend."""

    __slots__ = ("frontend", "pool", "active", "listeners", "awaiting_header", "per_source")

    def __init__(self, frontend, pool):
        self.frontend = frontend
        self.pool = pool
        self.active = 0
        self.listeners = []
        self.awaiting_header = {}   # sessions in HEADER, oldest first (dicts keep insertion order)
        self.per_source = {}        # packed peer IP -> open sessions (maxconn-per-source only)


class Session(object):
    """One client connection and, once chosen, its server connection."""

    __slots__ = (
        "engine", "listener", "fe", "csock", "ssock", "peer", "state", "server",
        "client", "local", "header", "inbuf", "c2s", "s2c", "c2s_eof", "s2c_eof",
        "c2s_done", "s2c_done", "cmask", "smask", "bytes_in", "bytes_out",
        "started", "queued_at", "queue_wait", "connect_started", "connected_at",
        "last_activity", "timer_at", "retries_left", "tried", "end", "trust", "slot",
    )

    def __init__(self, engine, listener, csock, peer):
        self.engine = engine
        self.listener = listener
        self.fe = listener.fe
        self.csock = csock
        self.ssock = None
        if listener.is_unix:
            # An unnamed peer is '', a path is str, an abstract address comes as bytes.
            self.peer = os.fsdecode(peer) if isinstance(peer, bytes) else peer
        else:
            self.peer = _inet_endpoint(peer)
        self.state = None
        self.server = None
        self.client = self.peer      # the client as the frontend sees it (header or TCP peer)
        self.local = None            # the address the client reached, looked up when needed
        self.header = None
        self.inbuf = None
        self.c2s = b""               # bytes read from the client that the server has not taken
        self.s2c = b""
        self.c2s_eof = self.s2c_eof = False      # EOF read from that direction's source
        self.c2s_done = self.s2c_done = False    # EOF passed on (shutdown sent)
        self.cmask = self.smask = 0
        self.bytes_in = self.bytes_out = 0
        self.started = self.last_activity = engine.now
        self.queued_at = None
        self.queue_wait = 0.0        # seconds spent in the backend's queue (the log's Tw)
        self.connect_started = self.connected_at = None
        self.timer_at = None
        self.retries_left = 0
        self.tried = []
        self.slot = None             # the server whose connection count includes this session
        self.end = None
        self.trust = None            # the peer's PeerTrust, on binds with header handling
        refusal = engine.session_opened(self)
        try:
            if refusal is not None:
                self.close(refusal)
            elif listener.trust is None:
                self._choose_server()
            else:
                self.trust = listener.trust.decide(self.peer)
                if self.trust.refused:
                    self.close(END_UNTRUSTED_PEER)
                    return
                self._enter(HEADER)
                self.inbuf = bytearray()
                engine.header_wait_started(self)
                self._want(True, EVENT_READ)
                self._arm(self.started + self.fe.frontend.timeout_proxy_header)
        except Exception:
            self._crash()

    # -- state, interest and timers -------------------------------------------------------------

    def _enter(self, state):
        if state not in SESSION_TRANSITIONS[self.state]:
            raise AssertionError("session cannot go from %s to %s" % (self.state, state))
        self.state = state

    def _want(self, client_side, mask):
        """Set the selector interest of one side, touching the selector only on a change."""
        if client_side:
            old = self.cmask
            if old == mask:
                return
            self.cmask = mask
            sock, callback = self.csock, self.on_client_event
        else:
            old = self.smask
            if old == mask:
                return
            self.smask = mask
            sock, callback = self.ssock, self.on_server_event
        selector = self.engine.selector
        if not old:
            selector.register(sock, mask, callback)
        elif not mask:
            selector.unregister(sock)
        else:
            selector.modify(sock, mask, callback)

    def _arm(self, due):
        if self.timer_at is None or due < self.timer_at:
            self.timer_at = due
            self.engine.add_timer(due, self)

    def _deadline(self):
        """When this session times out if nothing happens, and what to call it then."""
        state = self.state
        if state == HEADER:
            return self.started + self.fe.frontend.timeout_proxy_header, "header-timeout"
        if state == QUEUED:
            return self.queued_at + self.fe.pool.backend.timeout_queue, "queue-timeout"
        if state == CONNECTING:
            if self.ssock is None:         # waiting to retry: connect_started is in the future
                return self.connect_started, "retry"
            return self.connect_started + self.server.backend.timeout_connect, "connect-timeout"
        frontend, backend = self.fe.frontend, self.server.backend
        half_closed = self.c2s_done or self.s2c_done
        client_timeout = frontend.timeout_client_fin if half_closed else frontend.timeout_client
        server_timeout = backend.timeout_server_fin if half_closed else backend.timeout_server
        # Whose silence are we waiting on? Pending bytes name the side that does not read.
        if self.c2s:
            return self.last_activity + server_timeout, "server-timeout"
        if self.s2c:
            return self.last_activity + client_timeout, "client-timeout"
        if client_timeout <= server_timeout:
            return self.last_activity + client_timeout, "client-timeout"
        return self.last_activity + server_timeout, "server-timeout"

    def on_timer(self, when, now):
        if when != self.timer_at:
            return            # a stale heap entry: re-armed since, or closed
        self.timer_at = None
        try:
            due, cause = self._deadline()
            if due > now:
                self._arm(due)
            elif self.state == CONNECTING:
                if self.ssock is None:
                    self._connect()
                else:
                    self._connect_failed("connect-timeout")
            elif self.state == HEADER:
                self._header_timed_out()
            else:
                self.close(cause)
        except Exception:
            self._crash()

    # -- the PROXY header -----------------------------------------------------------------------

    def on_client_event(self, mask):
        try:
            state = self.state
            if state == HEADER:
                self._read_header()
            elif state == CONNECTING or state == QUEUED:
                self._read_before_relay()
            elif state == RELAY:
                self._relay_event(True, mask)
            # CLOSED: select() returned this event with others; an earlier one closed us.
        except Exception:
            self._crash()

    def _read_header(self):
        engine = self.engine
        try:
            n = self.csock.recv_into(engine.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(END_HEALTH_CHECK if self.header else "client-abort", abort=True)
            return
        if self.header is not None:
            self._after_local(n)
            return
        inbuf = self.inbuf
        inbuf += engine.view[:n]
        try:
            if self.trust.screens_start and not self._starts_header(not n):
                return
            header = parse_header(inbuf, eof=not n, max_size=self.listener.bind.proxy_max_header)
        except ProxyHeaderError as exc:
            self.close("bad-header:%s" % exc.kind, detail=exc.reason)
            return
        if header is not None:
            self._header_done(header)

    def _starts_header(self, ended):
        """Judge the first bytes (header optional, or one version only); True: parse them.

        Otherwise this has already acted: relayed them as they are, refused them, or left
        them to wait for more.
        """
        start = judge_start(self.trust, self.inbuf, ended)
        if start is START_PARSE:
            return True
        if start is START_BARE:
            self._header_done(None)
        elif start is START_UNTRUSTED:
            self.close(END_UNTRUSTED_HEADER, detail="a PROXY header from a peer allowed only "
                       "to connect without one")
        return False

    def _after_local(self, n):
        """The first read after a LOCAL header with nothing behind it."""
        if not n:
            self.close(END_HEALTH_CHECK)
            return
        self.engine.header_wait_ended(self)
        self.c2s = bytes(self.engine.view[:n])
        self.bytes_in += n
        self.last_activity = self.engine.now
        self._choose_server()

    def _header_timed_out(self):
        if self.header is not None:         # LOCAL, and no payload in time: a silent probe
            self.close(END_HEALTH_CHECK)
        elif self.trust.bare_rule is not None and judge_start(self.trust, self.inbuf,
                                                            True) is START_BARE:
            self._header_done(None)      # a peer that may go without a header has sent none
        else:
            self.close("header-timeout")

    def _header_done(self, header):
        """Leave HEADER with the parsed header, or None: the bytes so far are the client's."""
        inbuf = self.inbuf
        if header is None:
            self.c2s = bytes(inbuf)
        else:
            self.header = header
            self.c2s = bytes(inbuf[header.header_len:])
            if header.command == "LOCAL" and not self.c2s:
                # A proxy's own connection, most often its health check: it connects, sends
                # LOCAL and closes. Choose a server only once a byte of payload arrives, so
                # checks never reach a backend as client traffic. Until then it still counts
                # as waiting for its header (limit and deadline), so a flood of LOCAL-and-
                # silent connections is bounded like any other.
                self.inbuf = bytearray()
                return
            if header.has_addresses:
                if header.family == "UNIX":
                    self.client, self.local = header.src_addr, header.dst_addr
                else:
                    self.client = (header.src_addr, header.src_port)
                    self.local = (header.dst_addr, header.dst_port)
        self.engine.header_wait_ended(self)
        self.bytes_in += len(self.c2s)          # the client's bytes that came with the header
        self.last_activity = self.engine.now
        self._choose_server()

    # -- choosing and connecting ----------------------------------------------------------------

    def _choose_server(self):
        pool = self.fe.pool
        server = pool.pick(self.client)
        if server is not None:
            self._dispatch(server)
        elif not pool.candidates:
            self.close("no-server")
        elif pool.queue_full:
            self.close("queue-full")
        else:
            self._enter(QUEUED)
            pool.enqueue(self)
            self.queued_at = self.engine.now
            self._arm(self.queued_at + pool.backend.timeout_queue)

    def leave_queue(self, server):
        """Its turn in the queue has come (Engine.serve_queue): connect to ``server``."""
        self.queue_wait = self.engine.now - self.queued_at
        try:
            self._dispatch(server)
        except Exception:
            self._crash()

    def _dispatch(self, server):
        self.retries_left = self.fe.pool.backend.retries
        self.server = server
        self._connect()

    def _connect(self):
        server = self.server
        address = server.server.address
        self._enter(CONNECTING)
        self.tried.append(server)
        if self.slot is not server:          # a retry on the same server keeps its slot
            self.fe.pool.connection_started(server)
            self.slot = server
        self.connect_started = self.engine.now
        try:
            sock = socket.socket(address.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            cause = END_NO_DESCRIPTORS if exc.errno in DESCRIPTOR_EXHAUSTION_ERRNOS else \
                "internal-error"
            self.close(cause, detail="cannot create a socket: %s" % (exc.strerror or exc))
            return
        self.ssock = sock
        if address.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address.sockaddr)
        # EAGAIN is not "in progress": a Unix server whose backlog is full refused us.
        if err not in (0, errno.EINPROGRESS):
            self._connect_failed("connect-error", os.strerror(err))
            return
        self._want(False, EVENT_WRITE)
        self._arm(self.connect_started + server.backend.timeout_connect)

    def _connect_failed(self, cause, detail=None):
        """Close the failed server socket and retry, on another server if redispatch is on."""
        server = self.server
        self._want(False, 0)
        self.ssock.close()
        self.ssock = None
        pool = self.fe.pool
        engine = self.engine
        engine.server_connect_failed(server, cause, detail, engine.now - self.connect_started)
        if self.retries_left <= 0 or engine.stopping:
            server = None
        else:
            self.retries_left -= 1
            if pool.backend.redispatch:
                server = pool.pick(self.client, exclude=self.tried) or pool.pick(self.client)
        if server is None or not server.usable:      # passive health may have just marked it down
            self.close(cause, detail=detail)
            return
        if server is self.server:
            # The same server again: after a turn-around time, as HAProxy does, so that a
            # server that is restarting is not hammered with the retries all at once. The
            # session keeps its slot meanwhile, so the server's maxconn holds.
            self.connect_started = engine.now + min(server.backend.timeout_connect,
                                                    RETRY_TURNAROUND)
            self._arm(self.connect_started)
            return
        pool.connection_ended(self.slot)
        self.slot = None
        self.server = server
        self._connect()
        engine.serve_queue(pool)        # the slot given up on the failed server may be a waiter's

    def on_server_event(self, mask):
        try:
            state = self.state
            if state == CONNECTING:
                self._connected()
            elif state == RELAY:
                self._relay_event(False, mask)
        except Exception:
            self._crash()

    def _read_before_relay(self):
        """Client bytes or EOF while no server is connected yet: keep them and stop reading.

        The client stays registered from its header through QUEUED and CONNECTING, so the
        usual case (nothing more until the server answers) costs no selector change at all.
        """
        try:
            n = self.csock.recv_into(self.engine.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close("client-abort", abort=True)
            return
        self._want(True, 0)
        if n:
            self.c2s += self.engine.view[:n]
            self.bytes_in += n
        else:
            self.c2s_eof = True

    def _connected(self):
        err = self.ssock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            cause = "connect-refused" if err == errno.ECONNREFUSED else "connect-error"
            self._connect_failed(cause, os.strerror(err))
            return
        self._enter(RELAY)
        self.connected_at = self.engine.now
        self.last_activity = self.engine.now
        header = self._outgoing_header()
        if header:
            self.c2s = header + self.c2s
        self._want(False, EVENT_READ)
        if self.c2s:
            self._flush(True)
        elif self.c2s_eof:
            self._pass_eof(True)
        else:
            self._want(True, EVENT_READ)

    def _outgoing_header(self):
        version = self.server.server.send_proxy
        if not version:
            return b""
        client, local = self.client, self.local
        if self.header is None or not self.header.has_addresses:
            client = self.peer
            local = self._real_local()
        if version == 1:
            return build_v1(client, local)
        options = self.server.server.proxy_v2_options
        tlvs = []
        if "unique-id" in options:
            tlvs.append((0x05, self.engine.unique_id()))
        return build_v2(client, local, tlvs=tlvs, crc32c="crc32c" in options)

    def _real_local(self):
        """The address the client actually reached (never the wildcard of the bind)."""
        if self.listener.is_unix:
            return self.listener.bind.address.sockaddr
        return _inet_endpoint(self.csock.getsockname())

    # -- relaying --------------------------------------------------------------------------------

    def _relay_event(self, client_side, mask):
        if mask & EVENT_WRITE:
            # The side that is writable is the destination of the other side's direction.
            self._flush(not client_side)
            if self.state == CLOSED:
                return
        if mask & EVENT_READ:
            self._pump(client_side)

    def _pump(self, from_client):
        """Read once from one side and pass it straight to the other."""
        engine = self.engine
        src, dst = (self.csock, self.ssock) if from_client else (self.ssock, self.csock)
        try:
            n = src.recv_into(engine.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._peer_gone(from_client, exc)
            return
        self.last_activity = engine.now
        if not n:
            self._source_ended(from_client)
            return
        if from_client:
            self.bytes_in += n
        else:
            self.bytes_out += n
        data = engine.view[:n]
        try:
            sent = dst.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._peer_gone(not from_client, exc)
            return
        if sent < n:
            self._hold(from_client, bytes(data[sent:]))   # the loop's buffer is reused next read

    def _hold(self, to_server, pending):
        """The destination is full: keep ``pending`` for it, watch it for room, and do not read
        the source until the bytes are out (the client may still be registered from its header
        when the first flush is short)."""
        if to_server:
            self.c2s = pending
            self._want(True, self.cmask & ~EVENT_READ)
            self._want(False, self.smask | EVENT_WRITE)
        else:
            self.s2c = pending
            self._want(False, self.smask & ~EVENT_READ)
            self._want(True, self.cmask | EVENT_WRITE)

    def _flush(self, to_server):
        """Send a direction's pending bytes; once empty, read its source again."""
        pending = self.c2s if to_server else self.s2c
        dst = self.ssock if to_server else self.csock
        try:
            sent = dst.send(pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._peer_gone(not to_server, exc)
            return
        if sent:
            self.last_activity = self.engine.now
            pending = memoryview(pending)[sent:]      # a view: a slow reader costs no copies
        if pending:
            self._hold(to_server, pending)
            return
        # Drained: stop watching the destination for room, resume the source.
        if to_server:
            self.c2s = b""
            self._want(False, self.smask & ~EVENT_WRITE)
            eof, done = self.c2s_eof, self.c2s_done
            if not eof:
                self._want(True, self.cmask | EVENT_READ)
        else:
            self.s2c = b""
            self._want(True, self.cmask & ~EVENT_WRITE)
            eof, done = self.s2c_eof, self.s2c_done
            if not eof:
                self._want(False, self.smask | EVENT_READ)
        if eof and not done:
            self._pass_eof(to_server)

    def _source_ended(self, from_client):
        """EOF read from one side: stop reading it, pass the EOF on once its bytes are out."""
        if from_client:
            self.c2s_eof = True
            self._want(True, self.cmask & ~EVENT_READ)
            if not self.c2s:
                self._pass_eof(True)
        else:
            self.s2c_eof = True
            self._want(False, self.smask & ~EVENT_READ)
            if not self.s2c:
                self._pass_eof(False)

    def _pass_eof(self, to_server):
        if to_server:
            self.c2s_done = True
        else:
            self.s2c_done = True
        if self.c2s_done and self.s2c_done:
            # Both EOFs were read, so nothing is left unread and close() sends the last FIN.
            self.close("normal")
            return
        dst = self.ssock if to_server else self.csock
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass            # the destination is gone; its own read will say how

    def _peer_gone(self, client_side, exc):
        if isinstance(exc, OSError) and exc.errno not in PEER_GONE_ERRNOS:
            raise exc
        self.close("client-abort" if client_side else "server-abort", abort=True)

    # -- the end ---------------------------------------------------------------------------------

    def close(self, cause, abort=False, detail=None):
        """Close both sides, once, and write the log line."""
        if self.state == CLOSED:
            return
        if self.state == QUEUED:
            self.fe.pool.dequeue(self)
            self.queue_wait = self.engine.now - self.queued_at
        slot = self.slot
        self.slot = None
        self._enter(CLOSED)
        self.end = cause
        self.timer_at = None
        engine = self.engine
        selector = engine.selector
        for sock, mask in ((self.csock, self.cmask), (self.ssock, self.smask)):
            if sock is None:
                continue
            if mask:
                selector.unregister(sock)
            if abort:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
                except OSError:
                    pass
            sock.close()
        self.cmask = self.smask = 0
        self.c2s = self.s2c = b""
        if slot is not None:
            self.fe.pool.connection_ended(slot)
        self.ssock = None
        engine.session_closed(self, detail)
        if slot is not None:
            engine.serve_queue(self.fe.pool)        # the slot it held may be a waiter's turn

    def _crash(self):
        """An unexpected error in this session: log it with its traceback, close only this one.

        Nothing here may raise in turn, or the session would be left open."""
        LOG.error("internal error on a connection from %s:\n%s",
                  _endpoint_text(self.peer), traceback.format_exc().rstrip())
        try:
            self.close("internal-error", abort=True)
        except Exception:
            LOG.error("and closing it failed too:\n%s", traceback.format_exc().rstrip())

    def log_line(self, detail=None):
        """The connection's log line, in the spirit of HAProxy's tcplog."""
        now = self.engine.now
        server = self.server.label if self.server is not None else "-"
        connect_ms = ("%d" % ((self.connected_at - self.connect_started) * 1000)
                      if self.connected_at is not None else "-")
        parts = [
            _endpoint_text(self.client),
            "peer=" + _endpoint_text(self.peer),
            "fe=" + self.fe.frontend.name,
            "be=" + server,
            "Tw=%d" % (self.queue_wait * 1000),
            "Tc=" + connect_ms,
            "Tt=%d" % ((now - self.started) * 1000),
            "in=%d" % self.bytes_in,
            "out=%d" % self.bytes_out,
            "end=" + self.end,
        ]
        if self.trust is not None:
            parts.append("trust=" + self.trust.rule_for(self.header))
        header = self.header
        if header is not None:
            parts.append("pp=v%d/%s" % (header.version, header.command if header.command == "LOCAL"
                                       else header.family))
            vpce = aws_vpce_id(header)
            if vpce:
                parts.append("vpce=" + log_escape(vpce))
        if len(self.tried) > 1:
            parts.append("retries=%d" % (len(self.tried) - 1))
        if detail:
            parts.append('reason="%s"' % detail.replace('"', "'"))
        return " ".join(parts)


LINGER_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {on, 0s}: close() sends RST


class Engine(object):
    """Owns the selector, the listeners, the timer heap and every session."""

    def __init__(self, config):
        self.config = config
        self.selector = selectors.DefaultSelector()
        self.now = time.monotonic()
        self.timers = []
        self._timer_seq = 0
        self.buffer = bytearray(config.global_settings.bufsize)
        self.view = memoryview(self.buffer)
        affordable = default_maxconn()
        self.maxconn = config.global_settings.maxconn or affordable
        if self.maxconn > affordable:
            LOG.warning("maxconn %d is more than the descriptor limit allows (%d: %d descriptors, "
                        "two per connection, %d kept back); connections beyond it end with "
                        "end=%s", self.maxconn, affordable, os.sysconf("SC_OPEN_MAX"),
                        DESCRIPTOR_RESERVE, END_NO_DESCRIPTORS)
        self.active = 0
        self.sessions = set()
        self.stopping = False
        self.listeners = []
        self.pools = {name: BackendPool(backend) for name, backend in config.backends.items()}
        self.checker = HealthChecker(self, self.pools.values(),
                                     config.global_settings.check_threads)
        self._serving_queues = set()
        self.frontends = {}
        for frontend in config.frontends:
            self.frontends[frontend.name] = FrontendState(
                frontend, self.pools[frontend.default_backend])
        self._accept_paused_until = None
        self.accepts_failing_since = None      # when accept() began to fail for want of descriptors
        self.paused_listeners = 0
        self._resume_timer = LoopTimer(self._resume_accepting)
        self._unique_ids = 0
        self._calls = deque()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.selector.register(self._wake_r, EVENT_READ, self._on_wakeup)
        self._log_writer = log_writer()
        if self._log_writer is not None:
            self._log_writer.on_held = self._log_held

    # -- setting up -----------------------------------------------------------------------------

    def bind_all(self):
        """Open every listening socket, or raise SimpleProxyError naming the one that failed."""
        for frontend in self.config.frontends:
            fe = self.frontends[frontend.name]
            for bind in frontend.binds:
                sock = open_listener(bind)
                listener = Listener(self, fe, bind, sock)
                fe.listeners.append(listener)
                self.listeners.append(listener)
        for listener in self.listeners:
            self.selector.register(listener.sock, EVENT_READ, listener.on_event)

    # -- the loop -------------------------------------------------------------------------------

    def run(self):
        """Serve until stop() (or SIGTERM/SIGINT through install_signal_handlers)."""
        selector = self.selector
        timers = self.timers
        monotonic = time.monotonic
        self.checker.start()
        while not self.stopping:
            timeout = None
            if timers:
                timeout = min(max(0.0, timers[0][0] - monotonic()), LONGEST_WAIT)
            events = selector.select(timeout)
            self.now = now = monotonic()
            for key, mask in events:
                try:
                    key.data(mask)
                except Exception:
                    _log_loop_error("an event handler")
            while timers and timers[0][0] <= now:
                when, _, target = heapq.heappop(timers)
                try:
                    target.on_timer(when, now)
                except Exception:
                    _log_loop_error("a timer")
        self._shutdown()

    def add_timer(self, due, target):
        """Schedule ``target.on_timer(due, now)``; ``target.timer_at`` must equal ``due``.

        Entries are never removed when they go stale (a closed session, a re-armed timer); they
        are skipped when they come due. So that a high connection rate with long timeouts cannot
        pile them up, the heap is rebuilt from its live entries whenever it grows past a few
        times the number of sessions.
        """
        self._timer_seq += 1
        timers = self.timers
        heapq.heappush(timers, (due, self._timer_seq, target))
        if len(timers) > 4 * self.active + 1024:
            timers[:] = [entry for entry in timers if entry[2].timer_at == entry[0]]
            heapq.heapify(timers)

    def call_soon_threadsafe(self, callback):
        """Run ``callback()`` on the loop's thread soon; safe to call from any thread."""
        self._calls.append(callback)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass         # the pipe is full, so the loop is awake anyway

    def _on_wakeup(self, mask):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        calls = self._calls
        while calls:
            callback = calls.popleft()
            try:
                callback()
            except Exception:
                _log_loop_error("a loop callback")

    def install_signal_handlers(self):
        """SIGTERM and SIGINT stop the loop; the wake-up fd makes select() return at once.

        SIGHUP, SIGUSR1 and SIGUSR2 (HAProxy's reload and soft-stop signals) would kill the
        proxy by their default action, every connection with it: until those features exist
        they are logged and ignored. SIGPIPE stays ignored, as Python leaves it.
        """
        signal.set_wakeup_fd(self._wake_w.fileno())
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for signum in UNSUPPORTED_SIGNALS:
            signal.signal(signum, self._on_unsupported_signal)

    def _on_signal(self, signum, frame):
        LOG.info("received %s, stopping", signal.Signals(signum).name)
        self.stopping = True

    def _on_unsupported_signal(self, signum, frame):
        # Logged from the loop, not from inside whatever the signal interrupted (a log write).
        name = signal.Signals(signum).name
        self._calls.append(lambda: LOG.warning("received %s, which is not supported yet: "
                                               "ignored", name))

    def _log_held(self):
        """The log writer holds lines (called from any thread that logs)."""
        try:
            self.call_soon_threadsafe(self._watch_log)
        except OSError:
            pass             # the loop has closed its wake-up socket: the exit flush writes them

    def _watch_log(self):
        """Write the held log lines when stderr has room (on the loop)."""
        writer = self._log_writer
        try:
            self.selector.register(writer.fd, EVENT_WRITE, self._on_log_writable)
        except KeyError:
            pass                 # already watched

    def _on_log_writable(self, mask):
        if self._log_writer.drain():
            self.selector.unregister(self._log_writer.fd)

    def stop(self):
        """Ask the loop to stop; callable from any thread."""
        def _stop():
            self.stopping = True
        self.call_soon_threadsafe(_stop)

    def _shutdown(self):
        self.checker.stop()
        for listener in self.listeners:
            if not listener.paused:
                self.selector.unregister(listener.sock)
            listener.close()
        for session in list(self.sessions):
            session.close("shutdown")
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
        if self._log_writer is not None:        # what it still holds is written at exit
            self._log_writer.on_held = None
            try:
                self.selector.unregister(self._log_writer.fd)
            except KeyError:
                pass
        self.selector.close()
        self._wake_r.close()
        self._wake_w.close()
        LOG.info("stopped")

    # -- connection accounting ------------------------------------------------------------------

    def session_opened(self, session):
        """Count a new session in; returns the end cause to refuse it with, or None."""
        self.active += 1
        fe = session.fe
        fe.active += 1
        self.sessions.add(session)
        if self.active >= self.maxconn or (fe.frontend.maxconn and fe.active >= fe.frontend.maxconn):
            self._update_accepting()
        source = _limited_source(session)
        if source is not None:
            count = fe.per_source[source] = fe.per_source.get(source, 0) + 1
            if count > fe.frontend.maxconn_per_source:
                return END_SOURCE_LIMIT
        return None

    def session_closed(self, session, detail):
        self.active -= 1
        fe = session.fe
        fe.active -= 1
        self.sessions.discard(session)
        self.header_wait_ended(session)
        source = _limited_source(session)
        if source is not None:
            count = fe.per_source.pop(source) - 1
            if count:
                fe.per_source[source] = count
        frontend = fe.frontend
        quiet = ((session.end == "normal" and frontend.dontlog_normal) or
                 (frontend.dontlognull and session.bytes_in == 0 and session.end in
                  ("normal", "client-abort", "bad-header:%s" % TRUNCATED)))
        level = logging.DEBUG if session.end == END_HEALTH_CHECK else logging.INFO
        # The line is built only when it will be written: it is a tenth of a connection's
        # interpreter time, and a busy proxy may run at log-level warning.
        if (level == logging.DEBUG or not quiet) and LOG.isEnabledFor(level):
            LOG.log(level, "%s", session.log_line(detail))
        if self.paused_listeners:
            self._update_accepting()

    def header_wait_started(self, session):
        """A session now waits for its header. At maxconn-pending-header, the oldest waiting
        one is closed to make room, so that a flood of silent connections cannot keep real
        clients out: they send their header at once, a flood's connections never do."""
        waiting = session.fe.awaiting_header
        if len(waiting) >= session.fe.frontend.maxconn_pending_header:
            next(iter(waiting)).close(END_HEADER_EVICTED)
        waiting[session] = None

    def header_wait_ended(self, session):
        """The session no longer waits (its header is in, or it closed): its buffer goes now, not
        when a stale timer entry that still holds the session comes due."""
        session.fe.awaiting_header.pop(session, None)
        session.inbuf = None

    def server_connect_failed(self, server, cause, detail, duration):
        """A real connection to a server failed: passive health counts it (observe layer4)."""
        LOG.debug("connection to %s failed: %s %s", server.label, cause, detail or "")
        self.checker.connection_failed(server, cause, duration)

    def serve_queue(self, pool):
        """Connect the sessions waiting for ``pool``, oldest first, while a server has room.

        A session started here that fails at once frees its slot and calls back in; the call
        already running carries on instead, so the stack does not grow with the queue.
        """
        if not pool.waiting or pool in self._serving_queues or self.stopping:
            return
        self._serving_queues.add(pool)
        try:
            while pool.waiting:
                session = pool.first_waiting()
                server = pool.pick(session.client)
                if server is None:
                    break
                pool.dequeue(session)
                session.leave_queue(server)
        finally:
            self._serving_queues.discard(pool)

    def unique_id(self):
        self._unique_ids += 1
        return ("%x-%x-%x" % (os.getpid(), int(time.time()), self._unique_ids)).encode()

    def back_off_accepting(self, exc):
        """Out of descriptors: stop accepting for a moment instead of spinning on EMFILE.

        Logged once when it starts and once when accepts succeed again, however long it lasts.
        """
        if self.accepts_failing_since is None:
            self.accepts_failing_since = self.now
            LOG.warning("accept failed (%s): pausing accepts for %dms at a time until descriptors "
                        "free up", exc, ACCEPT_BACKOFF * 1000)
        self._accept_paused_until = self.now + ACCEPT_BACKOFF
        self._update_accepting()
        self._resume_timer.timer_at = self._accept_paused_until
        self.add_timer(self._accept_paused_until, self._resume_timer)

    def accepts_recovered(self):
        LOG.info("accepting again after %dms short of descriptors",
                 (self.now - self.accepts_failing_since) * 1000)
        self.accepts_failing_since = None

    def _resume_accepting(self):
        self._accept_paused_until = None
        self._update_accepting()

    def _update_accepting(self):
        """Listen on exactly the listeners whose frontend may take a connection now."""
        if self.stopping:
            return
        globally_open = self.active < self.maxconn and self._accept_paused_until is None
        paused = 0
        for fe in self.frontends.values():
            limit = fe.frontend.maxconn
            accepting = globally_open and not (limit and fe.active >= limit)
            for listener in fe.listeners:
                if accepting and listener.paused:
                    self.selector.register(listener.sock, EVENT_READ, listener.on_event)
                    listener.paused = False
                elif not accepting and not listener.paused:
                    self.selector.unregister(listener.sock)
                    listener.paused = True
                paused += listener.paused
        self.paused_listeners = paused


def _limited_source(session):
    """The real peer IP that maxconn-per-source counts the session under, or None when the limit
    is off or the peer is a Unix socket. A dual-stack bind's v4-mapped peer counts as IPv4."""
    if not session.fe.frontend.maxconn_per_source or session.listener.is_unix:
        return None
    return packed_ip(session.peer[0])


def _log_loop_error(where):
    """Sessions contain their own errors; this is the loop's last line of defence, so that
    nothing unexpected ever stops it."""
    LOG.error("internal error in %s:\n%s", where, traceback.format_exc().rstrip())


def default_maxconn():
    """The descriptor limit less a reserve for the rest, halved (each connection needs two)."""
    soft = os.sysconf("SC_OPEN_MAX")     # the soft RLIMIT_NOFILE, without the resource module
    if soft <= 0:                        # -1: unlimited
        soft = 65536
    return max(1, (soft - DESCRIPTOR_RESERVE) // 2)


def open_listener(bind):
    """A non-blocking listening socket for a bind line; SimpleProxyError names what went wrong."""
    address = bind.address
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_UNIX:
            _remove_stale_unix_socket(address.sockaddr)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted sockets inherit TCP_NODELAY from the listener: small replies are not
            # held back by Nagle, at no cost per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if bind.v6only else 0)
        sock.bind(address.sockaddr)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise SimpleProxyError("cannot listen on %s (line %d): %s"
                               % (address.text, bind.line, exc.strerror or exc))
    return sock


def _file_identity(path):
    """(device, inode) of the socket file at ``path``, or None if there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISSOCK(info.st_mode) else None


def _file_kind(mode):
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a file that is not a socket"


def _remove_stale_unix_socket(path):
    """Remove a socket file nobody listens on any more; never one that is in use, and never
    anything that is not a socket (a regular file, a directory, a symbolic link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "%s is in the way (only a stale socket is replaced)"
                      % _file_kind(mode))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    else:
        raise OSError(errno.EADDRINUSE, "address already in use")
    finally:
        probe.close()


def run_proxy(config):
    """Bind, serve until SIGTERM/SIGINT, and return the exit status."""
    engine = Engine(config)
    engine.bind_all()
    engine.install_signal_handlers()
    LOG.info("simpleproxy ready: %s", ", ".join(
        "%s %s" % (listener.frontend.name, listener.bind.address.text)
        for listener in engine.listeners))
    sys.stderr.flush()
    engine.run()
    return 0
