"""The proxy on top of the loop: frontends, pools, accounting, the queue, ``run_proxy``.

``Proxy`` owns what is proxy-wide: the listeners of every frontend, a ``BackendPool`` per
backend, the health checker, the set of open sessions, and the counts the limits are made of
(``maxconn`` in [global] and per frontend, ``maxconn-per-source``, ``maxconn-pending-header``).
A listener is watched only while its frontend may take a connection (``_update_accepting``),
so the kernel's backlog, not our memory, holds clients beyond the limits. Sessions report to
it when they open and close, and it serves a backend's queue whenever a slot may have freed.

It is also what the runtime API and the stats listener act on (the target admin.py
describes): it keeps the counters (stats.py's ``ProxyStats``, bumped in place by the
sessions and here), runs ``stats.tick`` from a timer once a second, and applies ``set
server`` commands to its pools and health checks. ``stats.stopping`` is what ``/health``
(503) and the views report: whatever begins a soft stop sets it.

The modules under it, from the loop up: loop.py (selector, timers, hand-off), listeners.py
(accept), session.py (a connection's life), relay.py (bytes both ways), statslistener.py
(the stats socket and listener).
"""
import os
import socket
import sys
import time

from .admin import AdminConversation, SessionView
from .balancer import MAINT, BackendPool
from .endings import (END_CAUSES, END_HEADER_EVICTED, END_HEALTH_CHECK, END_NO_SERVER,
                      END_NORMAL, END_NULL_QUIET, END_SHUTDOWN, END_SOURCE_LIMIT)
from .health import HealthChecker
from .listeners import AcceptBackoff, Listener, open_listener
from .logformat import proxy_text
from .logs import LOG
from .loop import EVENT_READ, EventLoop
from .proxyproto import packed_ip
from .resolve import resolve_addresses
from ._version import __version__
from .session import Session, endpoint_text
from .stats import ProcessIdentity, ProxyStats
from .statshttp import StatsHttpExchange
from .statslistener import ServiceListener, open_service_socket
from .statsconfig import StatsHttpSettings

STATS_TICK = 1.0             # seconds between two stats.tick(): rates are per second
LOG_LINE_BUILDERS = {"tcplog": Session.log_line, "json": Session.json_log_line}


class FrontendState(object):
    """Run-time counters of a frontend; ``counters`` and ``backend_counters`` are its and its
    backend's stats.py objects, which sessions bump in place."""

    __slots__ = ("frontend", "pool", "active", "listeners", "awaiting_header", "per_source",
                 "counters", "backend_counters", "log_line")

    def __init__(self, frontend, pool, counters, backend_counters):
        self.frontend = frontend
        self.pool = pool
        self.counters = counters
        self.backend_counters = backend_counters
        # log-format, chosen here once: Session.log_line (tcplog) or Session.json_log_line.
        self.log_line = LOG_LINE_BUILDERS[frontend.log_format]
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
                                     config.global_settings.check_threads, self._health_changed,
                                     self._check_done)
        self._serving_queues = set()
        self.stats = ProxyStats(process_identity(config.global_settings, self.maxconn),
                                [(frontend, frontend.maxconn or self.maxconn)
                                 for frontend in config.frontends],
                                list(self.pools.values()), self.loop.now, time.time())
        backend_counters = {be.pool: be for be in self.stats.backends}
        self.server_counters = {srv.state: srv for be in self.stats.backends
                                for srv in be.servers}
        self.frontends = {}
        for frontend, counters in zip(config.frontends, self.stats.frontends):
            pool = self.pools[frontend.default_backend]
            self.frontends[frontend.name] = FrontendState(frontend, pool, counters,
                                                          backend_counters[pool])
        self.stats_tick = self.loop.timer(self._tick)
        self.stats_listeners = []
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
        self._bind_stats()

    def _bind_stats(self):
        """The stats socket and the stats listener, when [global] asks for them."""
        settings = self.config.global_settings
        if settings.stats_socket is not None:
            level = settings.stats_socket.level
            sock = open_service_socket(settings.stats_socket.address, "stats socket",
                                       settings.stats_socket.mode)
            self.stats_listeners.append(ServiceListener(
                self.loop, sock, lambda: AdminConversation(self, level), "stats socket"))
        if settings.stats_http is not None:
            http = StatsHttpSettings(settings.stats_http, settings.stats_auth,
                                     settings.stats_refresh, settings.stats_name)
            sock = open_service_socket(settings.stats_http, "stats listener")
            self.stats_listeners.append(ServiceListener(
                self.loop, sock, lambda: StatsHttpExchange(self, http), "stats listener"))

    def run(self):
        """Serve until stop() (or SIGTERM/SIGINT through the loop's signal handlers)."""
        self.checker.start()
        self.stats_tick.arm(self.loop.now + STATS_TICK)
        self.loop.run()
        self._shutdown()

    def stop(self):
        """Ask the proxy to stop; callable from any thread."""
        self.loop.stop()

    def _shutdown(self):
        self.checker.stop()
        self.stats_tick.cancel()
        for listener in self.stats_listeners:
            listener.close()
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
        self.stats.cum_conns += 1
        counters = fe.counters
        counters.stot += 1
        counters.scur += 1
        if counters.scur > counters.smax:
            counters.smax = counters.scur
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
        counters = fe.counters
        counters.scur -= 1
        counters.ends[end] += 1
        counters.bin += session.bytes_in
        counters.bout += session.bytes_out
        if session.server is not None:
            counters = fe.backend_counters
            counters.scur -= 1
            counters.ends[end] += 1
            counters.bin += session.bytes_in
            counters.bout += session.bytes_out
            counters = self.server_counters[session.server]
            counters.ends[end] += 1
            counters.bin += session.bytes_in
            counters.bout += session.bytes_out
        if session.trust is not None:
            self.stats.trust_decisions[session.trust.rule_for(session.header)] += 1
        if end == END_HEALTH_CHECK:
            self.stats.local_checks_absorbed += 1
        level = END_CAUSES[end].level
        quiet = ((end == END_NORMAL and frontend.dontlog_normal) or
                 (frontend.dontlognull and session.bytes_in == 0 and end in END_NULL_QUIET))
        # The line is built only when it will be written: it is a tenth of a connection's
        # interpreter time, and a busy proxy may run at log-level warning.
        if not quiet and LOG.isEnabledFor(level):
            LOG.log(level, "%s", fe.log_line(session, detail))
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

    def _check_done(self, server, ok, reason, duration, health):
        """A health check's result, for the stats (the checker has counted it)."""
        self.server_counters[server].record_check(ok, reason, duration, health)

    def _health_changed(self, pool, server, before):
        """Health changed a server's state from ``before``."""
        self.server_counters[server].state_changed(self.loop.now, before, by_check=True)
        self._server_changed(pool, server)

    def _server_changed(self, pool, server):
        """A server's state changed: a server up may serve the queue; with none left,
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

    def _tick(self):
        self.stats.tick(self.loop.now)
        self.stats_tick.arm(self.stats_tick_due())

    def stats_tick_due(self):
        """The next whole STATS_TICK after now, so that ticks do not drift with load."""
        started = self.stats.started
        return started + (int((self.loop.now - started) / STATS_TICK) + 1) * STATS_TICK

    # -- the runtime API's target (admin.py) ----------------------------------------------------

    def stats_model(self):
        return self.stats

    def clock(self):
        return self.loop.now, time.time()

    def session_views(self):
        """One SessionView per live connection, for "show sess" (oldest first)."""
        views = []
        for session in sorted(self.sessions, key=lambda s: s.started):
            header = session.header
            server = session.server
            views.append(SessionView(
                id(session), endpoint_text(session.client), endpoint_text(session.peer),
                session.fe.frontend.name, session.fe.pool.backend.name if server else None,
                server.config.name if server else None, session.state.name, session.started,
                session.bytes_in, session.bytes_out,
                proxy_text(header) if header is not None else None,
                tuple(("tlv%#04x" % tlv_type, value) for tlv_type, value in
                      (header.tlvs if header is not None and header.tlvs else ()))))
        return views

    def _server_state(self, backend, server):
        pool = self.pools[backend]
        return pool, next(state for state in pool.servers if state.config.name == server)

    def set_server_admin(self, backend, server, admin):
        """ready, drain or maint: logged, reversible; the state a server has already is a
        silent success. Leaving maintenance restarts its checks (up, down at the first
        failure), as HAProxy does."""
        pool, state = self._server_state(backend, server)
        was = state.admin
        if admin == was:
            return None
        before = state.status
        changed = pool.set_admin(state, admin)
        LOG.warning("server %s administrative state changed from %s to %s by the runtime API",
                    state.label, was, admin)
        if changed:
            self.server_counters[state].state_changed(self.loop.now, before, by_check=False)
        if was == MAINT:
            self.checker.restart(state)
        if changed:
            self._server_changed(pool, state)
        return None

    def set_server_weight(self, backend, server, weight):
        pool, state = self._server_state(backend, server)
        LOG.info("server %s weight changed from %d to %d by the runtime API", state.label,
                 state.weight, weight)
        pool.set_weight(state, weight)
        self.server_counters[state].backend.settle(self.loop.now)
        self._server_changed(pool, state)
        return None

    def set_server_maxconn(self, backend, server, maxconn):
        pool, state = self._server_state(backend, server)
        LOG.info("server %s maxconn changed from %d to %d by the runtime API", state.label,
                 state.maxconn, maxconn)
        pool.set_maxconn(state, maxconn)
        self.serve_queue(pool)              # a higher limit may have freed slots
        return None

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


def process_identity(settings, maxconn):
    """What "show info" says about this process."""
    soft = os.sysconf("SC_OPEN_MAX")
    return ProcessIdentity(settings.stats_name, __version__, "", os.getpid(),
                           socket.gethostname(), "", maxconn, soft if soft > 0 else 0)


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
