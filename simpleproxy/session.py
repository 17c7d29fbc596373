"""A session: one client connection and, once chosen, its server connection.

Its life is a state machine, and the table at the end of this module is all of it (h11's
``_state.py`` is the model): what an event on either socket does in each state, when the
state's deadline falls and what happens then, and which states it may go to.
``Session._enter`` refuses any other transition; nothing about the life of a session lives
in flags::

    NEW         being set up: counted in, judged by the trust rules of its bind and the
                frontend's tcp-request connection rules (on the real peer, nothing read yet)
    HEADER      reading the PROXY header (binds with header handling, from peers trust.py
                lets in); nothing is chosen or connected
    LOCAL_WAIT  a LOCAL header came with nothing behind it: most often a peer's health
                check, which connects, sends LOCAL and closes. A server is chosen only once a
                byte of payload arrives, so checks never reach a backend as client traffic;
                until then it still counts as waiting for its header (limit and deadline)
    QUEUED      every server that could take it is at its maxconn: it waits in the backend's
                queue, served oldest first as slots free, until ``timeout queue``
    CONNECTING  a server was chosen; non-blocking connect in progress, the header and any
                client bytes already read wait in the client-to-server buffer (a server
                on a loopback address has mostly accepted within connect(): the send that
                follows finds it so, and the session goes on to RELAY in the same round)
    RETRY_WAIT  a connect failed and the same server is tried again after a turn-around
                time, keeping its slot meanwhile (so the server's maxconn holds)
    RELAY       bytes flow both ways (relay.py); each direction ends on its own (half-close)
    CLOSED      both sockets closed, the log line written

Every socket event goes to ``state.on_event(session, upstream, mask)`` (``upstream``: the
event is on the client socket) and every due timer to ``state.deadline(session)``, which says
when the state times out and as what; once that time has passed, ``state.on_timeout(session,
cause)`` runs. A session is its own timer (loop.Deadline: no timer object, no bound method
held, no cycle to break at its end) and re-arms it from its last-activity stamp, so reads and
writes never touch the timer heap.
"""
import errno
import os
import socket
import sys
import time
import traceback

from .endings import (
    END_BAD_HEADER, END_CLIENT_ABORT, END_CLIENT_TIMEOUT, END_CONNECT_ERROR,
    END_CONNECT_REFUSED, END_CONNECT_TIMEOUT, END_HEADER_TIMEOUT, END_HEALTH_CHECK,
    END_BAD_OUTGOING_HEADER, END_INTERNAL_ERROR, END_NO_DESCRIPTORS, END_NO_SERVER,
    END_QUEUE_FULL, END_QUEUE_TIMEOUT, END_REJECTED_CONNECTION, END_REJECTED_CONTENT,
    END_SERVER_TIMEOUT, END_UNTRUSTED_HEADER, END_UNTRUSTED_PEER)
from .logs import LOG
from .loop import EVENT_ERROR, EVENT_READ, EVENT_WRITE, Deadline
from .proxyproto import ProxyHeaderError, build_v1, parse_header
from .relay import Relay
from .rules import REJECT, facts_after_header, facts_at_accept, first_match
from .sessionlog import endpoint_text
from .tlvfmt import OutgoingHeaderError, build_server_header
from .trust import START_BARE, START_PARSE, START_UNTRUSTED, judge_start

RETRY_TURNAROUND = 1.0       # at most this long before retrying the server that just failed
LINGER_RESET = b"\x01\x00\x00\x00\x00\x00\x00\x00"  # struct linger {on, 0s}: close() sends RST
# socket() and accept() failing for these: the process or the system is out of descriptors.
DESCRIPTOR_EXHAUSTION_ERRNOS = frozenset((errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM))
# Linux answers a send on a TCP socket that is still connecting with EAGAIN, and sends once it
# is connected (a zero-length send then returns 0): the send is how a connect is finished early.
SEND_TELLS_CONNECTED = sys.platform.startswith("linux")
LOOPBACK_V4_PREFIX = "127."
LOOPBACK_V6 = "::1"
# A session's two sockets are of the C type under socket.socket (_socket.socket, public as
# socket.SocketType on every Python 3): socket.socket adds a Python __init__ and a Python
# close() (three calls a socket) for makefile(), dup() and ``with``, none of which a session
# uses. Created SOCK_NONBLOCK, it is non-blocking without an ioctl.
SessionSocket = socket.SocketType


def _reset_on_close(sock):
    """Make close() send a reset rather than a FIN (SO_LINGER on, 0 s)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
    except OSError:
        pass


def _on_loopback(sockaddr):
    host = sockaddr[0]
    return host.startswith(LOOPBACK_V4_PREFIX) or host == LOOPBACK_V6


class SessionState(object):
    """One row of the table (see the module docstring); the functions take the session.
    ``closed``: the final state, the one that may become no other."""

    __slots__ = ("name", "on_event", "deadline", "on_timeout", "next_states", "closed")

    def __init__(self, name, on_event, deadline, on_timeout, next_states):
        self.name = name
        self.on_event = on_event
        self.deadline = deadline
        self.on_timeout = on_timeout
        self.next_states = next_states
        self.closed = not next_states


def inet_endpoint(sockaddr):
    """(host, port) of an AF_INET/AF_INET6 socket address, without an IPv6 zone id; an IPv4
    peer of a dual-stack bind (``::ffff:a.b.c.d``) as the IPv4 address it is."""
    host = sockaddr[0]
    if "%" in host:
        host = host.split("%", 1)[0]
    elif host.startswith("::ffff:") and "." in host:
        host = host[7:]
    return host, sockaddr[1]


class Session(Relay, Deadline):
    """One client connection and, once chosen, its server connection; also its own timer
    (``arm``, ``arm_by``, ``cancel``: its one deadline, see ``fire``)."""

    __slots__ = (
        "listener", "fe", "peer", "server", "client", "local", "header", "inbuf",
        "started", "queued_at", "queue_wait", "connect_started", "connected_at", "when",
        "_entry", "retries_left", "tried", "end", "trust", "slot", "pool", "rule",
        "server_header",
    )

    def __init__(self, proxy, listener, csock, peer):
        loop = self.loop = proxy.loop
        self.proxy = proxy
        self.listener = listener
        fe = self.fe = listener.fe
        self.pool = fe.default_pool  # the backend's BackendPool, until a use_backend rule routes
        self.rule = None             # the name of the rule that routed or rejected, for the log
        self.csock = csock
        self.ssock = None
        if listener.is_unix:
            # An unnamed peer is '', a path is str, an abstract address comes as bytes.
            self.peer = os.fsdecode(peer) if isinstance(peer, bytes) else peer
        elif listener.family == socket.AF_INET:
            self.peer = peer         # (host, port) already: no zone id, no v4-mapped form
        else:
            self.peer = inet_endpoint(peer)
        self.state = NEW
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
        self.started = self.last_activity = loop.now
        self.queued_at = None
        self.queue_wait = 0.0        # seconds spent in the backend's queue (the log's Tw)
        self.connect_started = self.connected_at = None
        self.when = self._entry = None              # the deadline, not armed yet (Deadline)
        self.retries_left = 0
        self.tried = []
        self.slot = None             # the server whose connection count includes this session
        self.server_header = b""     # the PROXY header for the server being connected to
        self.end = None
        self.trust = None            # the peer's PeerTrust, on binds with header handling
        refusal = proxy.session_opened(self)
        try:
            if refusal is not None:
                self.close(refusal)
            elif fe.frontend.rules.connection and self._rejected_at_accept():
                return
            elif listener.trust is None:
                self._route()
            else:
                self.trust = listener.trust.decide(self.peer)
                if self.trust.refused:
                    self.close(END_UNTRUSTED_PEER)
                    return
                self._enter(HEADER)
                self.inbuf = bytearray()
                loop.call_after_events(self._read_first_header)
        except Exception:
            self._crash()

    def _read_first_header(self):
        """Read before waiting, as HAProxy does, but at the end of the accepting round.

        A client sends its header as soon as it is connected: by the time the round's other
        events are served it is often in (for 64 % of the bench's PROXY connections, where a
        read at accept found 28 %), and the session routes and connects in this round,
        never counted as waiting. When it is not, the read costs an EAGAIN (about 2.5 us),
        and we wait."""
        if self.state is not HEADER:
            return                          # closed meanwhile
        try:
            self._read_header(True, EVENT_READ)
            if self.state is HEADER or self.state is LOCAL_WAIT:
                self.proxy.header_wait_started(self)
                self.cmask = EVENT_READ       # a new socket, a new timer: no _want, no arm_by
                self.loop.register(self.csock, EVENT_READ, self.on_client_event)
                self.arm(self.started + self.fe.frontend.timeout_proxy_header)
        except Exception:
            self._crash()

    # -- the machine ----------------------------------------------------------------------------

    def _enter(self, state):
        if state.name not in self.state.next_states:
            raise AssertionError("session cannot go from %s to %s"
                                 % (self.state.name, state.name))
        self.state = state

    def on_client_event(self, mask):
        try:
            self.state.on_event(self, True, mask)
        except Exception:
            self._crash()

    def on_server_event(self, mask):
        try:
            self.state.on_event(self, False, mask)
        except Exception:
            self._crash()

    def fire(self):
        """The deadline has come (the loop calls it): time out, or re-arm for later."""
        try:
            due, cause = self.state.deadline(self)
            if due > self.loop.now:
                self.arm_by(due)
            else:
                self.state.on_timeout(self, cause)
        except Exception:
            self._crash()

    def _ignore_event(self, upstream, mask):
        """CLOSED: select() returned this event with others, and an earlier one closed us."""

    def _close_on_timeout(self, cause):
        self.close(cause)

    def _header_deadline(self):
        return self.started + self.fe.frontend.timeout_proxy_header, END_HEADER_TIMEOUT

    def _queue_deadline(self):
        return self.queued_at + self.pool.backend.timeout_queue, END_QUEUE_TIMEOUT

    def _connect_deadline(self):
        return self.connect_started + self.server.backend.timeout_connect, END_CONNECT_TIMEOUT

    def _retry_deadline(self):
        return self.connect_started, END_CONNECT_TIMEOUT     # connect_started is the retry time

    def _idle_deadline(self):
        frontend, backend = self.fe.frontend, self.server.backend
        half_closed = self.c2s_done or self.s2c_done
        client_timeout = frontend.timeout_client_fin if half_closed else frontend.timeout_client
        server_timeout = backend.timeout_server_fin if half_closed else backend.timeout_server
        # Whose silence are we waiting on? Pending bytes name the side that does not read.
        if self.c2s:
            return self.last_activity + server_timeout, END_SERVER_TIMEOUT
        if self.s2c:
            return self.last_activity + client_timeout, END_CLIENT_TIMEOUT
        if client_timeout <= server_timeout:
            return self.last_activity + client_timeout, END_CLIENT_TIMEOUT
        return self.last_activity + server_timeout, END_SERVER_TIMEOUT

    # -- the PROXY header -----------------------------------------------------------------------

    def _read_header(self, upstream, mask):
        try:
            n = self.csock.recv_into(self.proxy.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(END_CLIENT_ABORT, abort=True)
            return
        inbuf = self.inbuf
        inbuf += self.proxy.view[:n]
        try:
            if self.trust.screens_start and not self._starts_header(not n):
                return
            header = parse_header(inbuf, eof=not n, max_size=self.listener.bind.proxy_max_header)
        except ProxyHeaderError as exc:
            stats = self.proxy.stats
            stats.pp_rejected[exc.kind] += 1
            stats.header_errors.record(time.time(), self.fe.frontend.name,
                                       endpoint_text(self.peer), exc.kind, exc.reason, inbuf)
            self.close(END_BAD_HEADER[exc.kind], detail=exc.reason)
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

    def _header_timed_out(self, cause):
        if self.trust.bare_rule is not None and judge_start(self.trust, self.inbuf,
                                                            True) is START_BARE:
            self._header_done(None)      # a peer that may go without a header has sent none
        else:
            self.close(cause)

    def _header_done(self, header):
        """Leave HEADER with the parsed header, or None: the bytes so far are the client's."""
        inbuf = self.inbuf
        if header is None:
            self.c2s = bytes(inbuf)
        else:
            self.header = header
            self.proxy.stats.pp_received[header.version, header.command] += 1
            self.c2s = bytes(inbuf[header.header_len:])
            if header.command == "LOCAL" and not self.c2s:
                self._enter(LOCAL_WAIT)
                self.inbuf = None
                return
            if header.has_addresses:
                if header.family == "UNIX":
                    self.client, self.local = header.src_addr, header.dst_addr
                else:
                    self.client = (header.src_addr, header.src_port)
                    self.local = (header.dst_addr, header.dst_port)
        self.proxy.header_wait_ended(self)
        self.bytes_in += len(self.c2s)          # the client's bytes that came with the header
        self.last_activity = self.loop.now
        self._route()

    def _read_after_local(self, upstream, mask):
        """LOCAL_WAIT: payload after all (choose a server for it), or EOF or a reset (a check)."""
        self._read_before_relay(END_HEALTH_CHECK)
        if self.c2s:
            self.proxy.header_wait_ended(self)
            self.last_activity = self.loop.now
            self._route()
        elif self.c2s_eof:
            self.close(END_HEALTH_CHECK)

    def _local_timed_out(self, cause):
        self.close(END_HEALTH_CHECK)          # LOCAL, and no payload in time: a silent probe

    # -- rules, choosing and connecting -----------------------------------------------------------

    def _rejected_at_accept(self):
        """tcp-request connection, on the real peer before any byte is read: True when a
        reject rule closed the session."""
        rule = first_match(self.fe.frontend.rules.connection,
                           facts_at_accept(self.peer, self._real_local()))
        if rule is None or rule.action != REJECT:
            return False
        self.rule = rule.name
        self.close(END_REJECTED_CONNECTION)
        return True

    def _route(self):
        """The header is settled (or none is coming): tcp-request content may reject, the
        first use_backend that matches picks the pool; then choose a server in it."""
        rules = self.fe.frontend.rules
        if rules.content or rules.use_backend:
            header = self.header
            named = header is not None and header.has_addresses
            facts = facts_after_header(self.peer, None if named else self._real_local(), header)
            rule = first_match(rules.content, facts)
            if rule is not None and rule.action == REJECT:
                self.rule = rule.name
                self.close(END_REJECTED_CONTENT)
                return
            rule = first_match(rules.use_backend, facts)
            if rule is not None:
                self.rule = rule.name
                self.pool = self.proxy.pools[rule.action]
        pool = self.pool
        server = pool.pick(self.client)
        if server is not None:
            self.server = server
            self._connect()
        elif not pool.candidates:
            self.close(END_NO_SERVER)
        elif pool.queue_full:
            self.close(END_QUEUE_FULL)
        else:
            self._enter(QUEUED)
            pool.enqueue(self)
            counters = self.proxy.backend_counters[pool]
            if len(pool.waiting) > counters.qmax:
                counters.qmax = len(pool.waiting)
            self.queued_at = self.loop.now
            self.arm_by(self.queued_at + pool.backend.timeout_queue)

    def leave_queue(self, server):
        """Its turn in the queue has come (Proxy.serve_queue): connect to ``server``."""
        self.queue_wait = self.loop.now - self.queued_at
        self.server = server
        try:
            self._connect()
        except Exception:
            self._crash()

    def _connect(self, cause=None):
        """Connect to ``self.server``: the server chosen for the session (by _route or its turn
        in the queue), another after a failure (redispatch), or the same again (RETRY_WAIT's
        timeout: ``cause`` is then unused)."""
        server = self.server
        address = server.address            # service discovery may have moved it
        if not self.tried:
            # The first server: the session is dispatched, and counts in its backend from now
            # on, whatever retries follow (session_closed counts it out).
            self.retries_left = self.pool.backend.retries
            counters = self.proxy.backend_counters[self.pool]
            counters.stot += 1
            counters.scur += 1
            if counters.scur > counters.smax:
                counters.smax = counters.scur
        self._enter(CONNECTING)
        try:
            self.server_header = self._outgoing_header() if server.config.send_proxy else b""
        except OutgoingHeaderError as exc:
            # Built before connecting, so that a server is never left with a connection
            # that brings no header.
            self.close(END_BAD_OUTGOING_HEADER, detail=str(exc))
            return
        self.tried.append(server)
        if self.slot is not server:          # a retry on the same server keeps its slot
            self.pool.connection_started(server)
            self.slot = server
            counters = self.proxy.server_counters[server]
            counters.stot += 1
            counters.last_session = self.loop.now
            if server.active > counters.smax:
                counters.smax = server.active
        self.connect_started = self.loop.now
        try:
            sock = SessionSocket(address.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError as exc:
            cause = (END_NO_DESCRIPTORS if exc.errno in DESCRIPTOR_EXHAUSTION_ERRNOS
                     else END_INTERNAL_ERROR)
            self.close(cause, detail="cannot create a socket: %s" % (exc.strerror or exc))
            return
        self.ssock = sock
        if address.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(address.sockaddr)
        self.arm_by(self.connect_started + server.backend.timeout_connect)
        if err == errno.EINPROGRESS and SEND_TELLS_CONNECTED and _on_loopback(address.sockaddr):
            err = self._send_early(sock)
        if err == errno.EINPROGRESS:
            self.smask = EVENT_WRITE          # a new socket: _want would only find it unwatched
            self.loop.register(sock, EVENT_WRITE, self.on_server_event)
        elif err == 0:
            # Connected already (a Unix socket, or a TCP one _send_early found connected): no
            # wait for writability, no SO_ERROR to ask, no interest to change.
            self.smask = EVENT_READ
            self.loop.register(sock, EVENT_READ, self.on_server_event)
            self._connected()
        else:
            # EAGAIN is not "in progress": a Unix server whose backlog is full refused us.
            self._connect_error(err)

    def _send_early(self, sock):
        """A TCP connect to a loopback address said EINPROGRESS: send the server's PROXY
        header (or nothing) at once.

        Linux runs the whole handshake with a listener on this host inside connect(), which
        still says EINPROGRESS. A send that goes through proves the connection up, and saves
        the wait for writability, the poller change after it and a loop round. (A remote
        server cannot have answered yet: there the send would only cost an EAGAIN, about
        2.5 us, so it is not tried.) Returns EINPROGRESS, 0 (connected) or the error."""
        try:
            sent = sock.send(self.server_header)
        except (BlockingIOError, InterruptedError):
            return errno.EINPROGRESS
        except OSError as exc:
            return exc.errno
        if sent:
            self.server_header = self.server_header[sent:]
        return 0

    def _connect_timed_out(self, cause):
        self._connect_failed(cause)

    def _connect_error(self, err):
        """The connect failed with errno ``err``: refused, or another error."""
        cause = END_CONNECT_REFUSED if err == errno.ECONNREFUSED else END_CONNECT_ERROR
        self._connect_failed(cause, os.strerror(err))

    def _connect_failed(self, cause, detail=None):
        """Close the failed server socket and retry, on another server if redispatch is on."""
        server = self.server
        if self.smask:
            self.loop.forget(self.ssock)
            self.smask = 0
        self.ssock.close()
        self.ssock = None
        pool = self.pool
        proxy = self.proxy
        now = self.loop.now
        proxy.server_connect_failed(server, cause, detail, now - self.connect_started)
        counters = proxy.server_counters[server]
        counters.econ += 1
        counters.backend.econ += 1
        if self.retries_left <= 0 or self.loop.stopping:
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
            # server that is restarting is not hammered with the retries all at once.
            counters.wretr += 1
            counters.backend.wretr += 1
            self._enter(RETRY_WAIT)
            self.connect_started = now + min(server.backend.timeout_connect, RETRY_TURNAROUND)
            self.arm_by(self.connect_started)
            return
        counters.wredis += 1
        counters.backend.wredis += 1
        pool.connection_ended(self.slot)
        self.slot = None
        self.server = server
        self._connect()
        proxy.serve_queue(pool)        # the slot given up on the failed server may be a waiter's

    def _waiting_event(self, upstream, mask):
        """QUEUED, RETRY_WAIT: only the client is registered."""
        self._read_before_relay(END_CLIENT_ABORT)

    def _connecting_event(self, upstream, mask):
        """CONNECTING: client bytes are kept; the server socket's event ends the connect.

        epoll marks a failed connect with EVENT_ERROR, so only then is the socket asked why;
        selectors cannot tell, and the socket is asked every time."""
        if upstream:
            self._read_before_relay(END_CLIENT_ABORT)
            return
        if mask & EVENT_ERROR or not self.loop.tells_errors:
            err = self.ssock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self._connect_error(err)
                return
        self.smask = EVENT_READ               # watched for room until now: for its bytes now
        self.loop.modify(self.ssock, EVENT_READ, self.on_server_event)
        self._connected()

    def _read_before_relay(self, gone_cause):
        """Client bytes or EOF while no server is connected yet: keep them and stop reading.

        The client stays registered from its header through QUEUED and CONNECTING, so the
        usual case (nothing more until the server answers) costs no selector change at all.
        A reset ends the session as ``gone_cause``.
        """
        try:
            n = self.csock.recv_into(self.proxy.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close(gone_cause, abort=True)
            return
        self._want(True, 0)
        if n:
            self.c2s += self.proxy.view[:n]
            self.bytes_in += n
        else:
            self.c2s_eof = True

    def _connected(self):
        """The server accepted, and is watched for its bytes: send it the header and what the
        client sent so far, or read the client (on a bind with header handling it is still
        watched from its header; otherwise it is watched from now on)."""
        self._enter(RELAY)
        self.connected_at = self.last_activity = self.loop.now
        if self.server_header:
            self.c2s = self.server_header + self.c2s
            self.server_header = b""
        if self.c2s:
            self._flush(True)
        elif self.c2s_eof:
            self._pass_eof(True)
        elif not self.cmask:
            self.cmask = EVENT_READ
            self.loop.register(self.csock, EVENT_READ, self.on_client_event)

    def _outgoing_header(self):
        """The PROXY header for a server with send-proxy or send-proxy-v2."""
        config = self.server.config
        version = config.send_proxy
        client, local, transport = self.client, self.local, "STREAM"
        if local is None:                    # no header, or one without addresses
            client = self.peer
            local = self._real_local()
        elif self.header.version == 2:
            transport = self.header.transport
        if version == 1:
            return build_v1(client, local)
        return build_server_header(config.proxy_v2_tlvs, client, local, self.header,
                                   self.proxy.unique_id, transport)

    def _real_local(self):
        """The address the client actually reached (never the wildcard of the bind)."""
        if self.listener.is_unix:
            return self.listener.bind.address.sockaddr
        return inet_endpoint(self.csock.getsockname())

    # -- the end ---------------------------------------------------------------------------------

    def close(self, cause, abort=False, detail=None):
        """Close both sides, once, and write the log line."""
        state = self.state
        if state.closed:
            return
        if state is QUEUED:
            self.pool.dequeue(self)
            self.queue_wait = self.loop.now - self.queued_at
        slot = self.slot
        self.slot = None
        self.state = CLOSED          # not _enter: the table lets every state close (test_session)
        self.end = cause
        self.cancel()
        csock, ssock = self.csock, self.ssock
        # A watched socket is closed next, and only we hold it: forgotten, no epoll DEL.
        if self.cmask:
            self.loop.forget(csock)
        if self.smask:
            self.loop.forget(ssock)
        if abort:
            _reset_on_close(csock)
            if ssock is not None:
                _reset_on_close(ssock)
        csock.close()
        if ssock is not None:
            ssock.close()
            self.ssock = None
        self.cmask = self.smask = 0
        self.c2s = self.s2c = b""
        pool = self.pool
        if slot is not None:
            pool.connection_ended(slot)
        self.proxy.session_closed(self, detail)
        if slot is not None and pool.waiting:
            self.proxy.serve_queue(pool)            # the slot it held may be a waiter's turn

    def _crash(self):
        """An unexpected error in this session: log it with its traceback, close only this one.

        Nothing here may raise in turn, or the session would be left open."""
        LOG.error("internal error on a connection from %s:\n%s",
                  endpoint_text(self.peer), traceback.format_exc().rstrip())
        try:
            self.close(END_INTERNAL_ERROR, abort=True)
        except Exception:
            LOG.error("and closing it failed too:\n%s", traceback.format_exc().rstrip())


# The table: per state, the handler of socket events, the deadline, what its passing does,
# and the states it may become.
NEW = SessionState("NEW", None, None, None, ("HEADER", "QUEUED", "CONNECTING", "CLOSED"))
HEADER = SessionState(
    "HEADER", Session._read_header, Session._header_deadline, Session._header_timed_out,
    ("LOCAL_WAIT", "QUEUED", "CONNECTING", "CLOSED"))
LOCAL_WAIT = SessionState(
    "LOCAL_WAIT", Session._read_after_local, Session._header_deadline, Session._local_timed_out,
    ("QUEUED", "CONNECTING", "CLOSED"))
QUEUED = SessionState(
    "QUEUED", Session._waiting_event, Session._queue_deadline, Session._close_on_timeout,
    ("CONNECTING", "CLOSED"))
CONNECTING = SessionState(
    "CONNECTING", Session._connecting_event, Session._connect_deadline,
    Session._connect_timed_out,
    ("RETRY_WAIT", "CONNECTING", "RELAY", "CLOSED"))     # CONNECTING again: another server
RETRY_WAIT = SessionState(
    "RETRY_WAIT", Session._waiting_event, Session._retry_deadline, Session._connect,
    ("CONNECTING", "CLOSED"))
RELAY = SessionState(
    "RELAY", Session._relay_event, Session._idle_deadline, Session._close_on_timeout,
    ("CLOSED",))
CLOSED = SessionState("CLOSED", Session._ignore_event, None, None, ())
