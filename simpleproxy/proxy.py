"""The proxy on top of the loop: frontends, pools, accounting, the queue, ``run_proxy``.

``Proxy`` owns what is proxy-wide: the listeners of every frontend, a ``BackendPool`` per
backend, the health checker, the set of open sessions, and the counts the limits are made of
(``maxconn`` in [global] and per frontend, ``maxconn-per-source``, ``maxconn-pending-header``).
A listener is watched only while its frontend may take a connection (``_update_accepting``),
so the kernel's backlog, not our memory, holds clients beyond the limits. Sessions report to
it when they open and close, and it serves a backend's queue whenever a slot may have freed.

The modules under it, from the loop up: loop.py (selector, timers, hand-off), listeners.py
(accept), session.py (a connection's life), relay.py (bytes both ways).
"""
import os
import sys
import time

from .balancer import BackendPool
from .endings import (END_CAUSES, END_HEADER_EVICTED, END_NO_SERVER, END_NORMAL,
                      END_NULL_QUIET, END_SHUTDOWN, END_SOURCE_LIMIT)
from .health import HealthChecker
from .listeners import AcceptBackoff, Listener, open_listener
from .logs import LOG
from .loop import EVENT_READ, EventLoop
from .proxyproto import packed_ip
from .resolve import resolve_addresses


class FrontendState(object):
    """Run-time counters of a frontend."""

    __slots__ = ("frontend", "default_pool", "active", "listeners", "awaiting_header",
                 "per_source")

    def __init__(self, frontend, default_pool):
        self.frontend = frontend
        self.default_pool = default_pool    # a use_backend rule may send a session elsewhere
        self.active = 0
        self.listeners = []
        self.awaiting_header = {}   # sessions in HEADER or LOCAL_WAIT, oldest first
        self.per_source = {}        # packed peer IP -> open sessions (maxconn-per-source only)


class Proxy(object):
    """Every frontend, backend and session of one configuration, on one EventLoop."""

    def __init__(self, config):
        self.config = config = resolve_addresses(config)
        self.loop = EventLoop()
        self.buffer = bytearray(config.global_settings.bufsize)   # every read goes here first
        self.view = memoryview(self.buffer)
        self.maxconn = config.global_settings.maxconn or default_maxconn()
        self.active = 0
        self.sessions = set()
        self.listeners = []
        self.pools = {name: BackendPool(backend) for name, backend in config.backends.items()}
        self.checker = HealthChecker(self.loop, self.pools.values(),
                                     config.global_settings.check_threads, self._server_changed)
        self._serving_queues = set()
        self.frontends = {}
        for frontend in config.frontends:
            self.frontends[frontend.name] = FrontendState(
                frontend, self.pools[frontend.default_backend])
        self.accept_backoff = AcceptBackoff(self.loop, self._update_accepting)
        self.paused_listeners = 0
        self._unique_ids = 0

    # -- starting and stopping ------------------------------------------------------------------

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
            self.loop.selector.register(listener.sock, EVENT_READ, listener.on_event)

    def run(self):
        """Serve until stop() (or SIGTERM/SIGINT through the loop's signal handlers)."""
        self.checker.start()
        self.loop.run()
        self._shutdown()

    def stop(self):
        """Ask the proxy to stop; callable from any thread."""
        self.loop.stop()

    def _shutdown(self):
        self.checker.stop()
        for listener in self.listeners:
            if not listener.paused:
                self.loop.selector.unregister(listener.sock)
            listener.close()
        for session in list(self.sessions):
            session.close(END_SHUTDOWN)
        self.loop.close()
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
        """Count a closed session out, and write its log line at its end cause's level unless
        the frontend leaves it out (dontlog-normal, dontlognull)."""
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
        end = session.end
        level = END_CAUSES[end].level
        quiet = ((end == END_NORMAL and frontend.dontlog_normal) or
                 (frontend.dontlognull and session.bytes_in == 0 and end in END_NULL_QUIET))
        # The line is built only when it will be written: it is a tenth of a connection's
        # interpreter time, and a busy proxy may run at log-level warning.
        if not quiet and LOG.isEnabledFor(level):
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
        """The session no longer waits (its header is in, or it closed): its buffer goes now."""
        session.fe.awaiting_header.pop(session, None)
        session.inbuf = None

    def server_connect_failed(self, server, cause, detail, duration):
        """A real connection to a server failed: passive health counts it (observe layer4)."""
        LOG.debug("connection to %s failed: %s %s", server.label, cause, detail or "")
        self.checker.connection_failed(server, cause, duration)

    def _server_changed(self, pool, server):
        """Health changed a server's state: a server up may serve the queue; with none left,
        queued clients are closed at once, not at timeout queue."""
        if server.usable:
            self.serve_queue(pool)
        elif not pool.candidates:
            for session in list(pool.waiting):
                session.close(END_NO_SERVER)

    def serve_queue(self, pool):
        """Connect the sessions waiting for ``pool``, oldest first, while a server has room.

        A session started here that fails at once frees its slot and calls back in; the call
        already running carries on instead, so the stack does not grow with the queue.
        """
        if not pool.waiting or pool in self._serving_queues or self.loop.stopping:
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
        """A UNIQUE_ID for send-proxy-v2's unique-id option: pid, start time, counter."""
        self._unique_ids += 1
        return ("%x-%x-%x" % (os.getpid(), int(time.time()), self._unique_ids)).encode()

    def _update_accepting(self):
        """Listen on exactly the listeners whose frontend may take a connection now."""
        if self.loop.stopping:
            return
        globally_open = self.active < self.maxconn and self.accept_backoff.paused_until is None
        paused = 0
        selector = self.loop.selector
        for fe in self.frontends.values():
            limit = fe.frontend.maxconn
            accepting = globally_open and not (limit and fe.active >= limit)
            for listener in fe.listeners:
                if accepting and listener.paused:
                    selector.register(listener.sock, EVENT_READ, listener.on_event)
                    listener.paused = False
                elif not accepting and not listener.paused:
                    selector.unregister(listener.sock)
                    listener.paused = True
                paused += listener.paused
        self.paused_listeners = paused


def _limited_source(session):
    """The real peer IP that maxconn-per-source counts the session under, or None when the limit
    is off or the peer is a Unix socket. A dual-stack bind's v4-mapped peer counts as IPv4."""
    if not session.fe.frontend.maxconn_per_source or session.listener.is_unix:
        return None
    return packed_ip(session.peer[0])


def default_maxconn():
    """Half the descriptor limit (each connection needs two), less a reserve for the rest."""
    soft = os.sysconf("SC_OPEN_MAX")     # the soft RLIMIT_NOFILE, without the resource module
    if soft <= 0:                        # -1: unlimited
        soft = 65536
    return max(1, (soft - 64) // 2)


def run_proxy(config):
    """Bind, serve until SIGTERM/SIGINT, and return the exit status."""
    proxy = Proxy(config)
    proxy.bind_all()
    proxy.loop.install_signal_handlers()
    LOG.info("simpleproxy ready: %s", ", ".join(
        "%s %s" % (listener.frontend.name, listener.bind.address.text)
        for listener in proxy.listeners))
    sys.stderr.flush()
    proxy.run()
    return 0
