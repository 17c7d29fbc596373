"""The proxy on top of the loop: frontends, pools, accounting, the queue, ``run_proxy``.

``Proxy`` owns what is proxy-wide: the listeners of every frontend, a ``BackendPool`` per
backend, the health checker, the set of open sessions, and the counts the limits are made of
(``maxconn`` in [global] and per frontend, ``maxconn-per-source``, ``maxconn-pending-header``).
A listener is watched only while its frontend may take a connection (``_update_accepting``),
so the kernel's backlog, not our memory, holds clients beyond the limits. Sessions report to
it when they open and close, and it serves a backend's queue whenever a slot may have freed.

Stopping has two speeds: ``stop()`` (SIGTERM, SIGINT) closes everything at once;
``soft_stop()`` (SIGUSR1, or a master's ``stop`` on reload) closes the listeners, lets the
sessions finish and stops when none is left, or when ``hard-stop-after`` has passed since.
``stopping_softly`` is True from the moment a soft stop is asked for (before ``grace`` runs
out, under a master): ``/health`` answers 503 from then on (it is ``stats.stopping``).

It is also what the runtime API and the stats listener act on in a single process (the
target admin.py describes): it keeps the counters (stats.py's ``ProxyStats``, bumped in place
by the sessions and here), runs ``stats.tick`` from a timer once a second, and applies ``set
server`` commands to its pools and health checks (``set_server_admin``, the one way a
server's admin state, weight or maxconn changes, whoever asks).

The modules under it, from the loop up: loop.py (poller, timers, hand-off), listeners.py
(accept), session.py (a connection's life), relay.py (bytes both ways), statslistener.py
(the stats socket and listener).
"""
import heapq
import os
import signal
import socket
import sys
import time

from .admin import SessionView, log_server_setting
from .balancer import MAINT, BackendPool
from .endings import (END_CAUSES, END_HEADER_EVICTED, END_HEALTH_CHECK, END_NO_DESCRIPTORS,
                      END_NO_SERVER, END_NORMAL, END_NULL_QUIET, END_SHUTDOWN, END_SOURCE_LIMIT)
from .health import HealthChecker
from .listeners import AcceptBackoff, Listener, accept_events, listen_key, open_listener
from .logformat import proxy_text
from .logs import LOG, dropped_log_lines, log_connection
from .loop import EventLoop
from .proxyproto import PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_NETNS, packed_ip
from .resolve import start_addresses
from ._version import __version__
from .session import Session
from .sessionlog import endpoint_text, json_line, line_facts, tcplog_line
from .stats import ProcessIdentity, ProxyStats
from .statslistener import open_stats_listeners

DESCRIPTOR_RESERVE = 64      # descriptors kept for the rest (listeners, selector, checks)
STATS_TICK = 1.0             # seconds between two stats.tick(): rates are per second
LOG_LINE_BUILDERS = {"tcplog": tcplog_line, "json": json_line}


class FrontendState(object):
    """Run-time counters of a frontend; ``counters`` is its stats.py FrontendStats, which
    sessions bump in place."""

    __slots__ = ("frontend", "default_pool", "active", "listeners", "awaiting_header",
                 "per_source", "counters", "log_line")

    def __init__(self, frontend, default_pool, counters):
        self.frontend = frontend
        self.default_pool = default_pool    # a use_backend rule may send a session elsewhere
        self.counters = counters
        # log-format, chosen here once: sessionlog.tcplog_line or sessionlog.json_line.
        self.log_line = LOG_LINE_BUILDERS[frontend.log_format]
        self.active = 0
        self.listeners = []
        self.awaiting_header = {}   # sessions in HEADER or LOCAL_WAIT, oldest first
        self.per_source = {}        # packed peer IP -> open sessions (maxconn-per-source only)


class Proxy(object):
    """Every frontend, backend and session of one configuration, on one EventLoop."""

    def __init__(self, config, listening=None, last_addresses=None):
        config, followed = start_addresses(config, last_addresses)
        self.config = config
        self.loop = EventLoop()
        # Listening sockets a master opened, by listen_key; None: this process binds its own.
        self.listening = listening
        self.accept_events = accept_events(self.loop, shared=listening is not None)
        self.draining = False         # the listeners are closed: stop when no session is left
        self._hard_stop_timer = self.loop.timer(self._hard_stop)
        # Called as on_server_change(pool, server) once a health verdict has been acted on: a
        # worker that checks for its siblings tells its master (worker.WorkerLink).
        self.on_server_change = None
        # Every read goes into one buffer first (relay.py). A relay read asks for read_size
        # bytes: tune.bufsize.large while the bytes held for slow peers stay under their bound,
        # else tune.bufsize, as every read before the relay does (``buffer``).
        settings = config.global_settings
        self.bufsize = settings.bufsize
        self.large_bufsize = max(settings.bufsize, settings.bufsize_large)
        self.view = memoryview(bytearray(self.large_bufsize))
        self.buffer = self.view[:self.bufsize]
        self.read_size = self.large_bufsize
        self.held = 0               # bytes all sessions hold for destinations that were full
        self.holding = {}           # session -> the bytes it holds (only sessions holding any)
        # A relay read may fill a large buffer only while the held bytes leave room for it.
        self.large_reads_until = (settings.buffers_limit * self.large_bufsize - self.large_bufsize
                                  if settings.buffers_limit else float("inf"))
        affordable = default_maxconn()
        self.maxconn = config.global_settings.maxconn or affordable
        if self.maxconn > affordable:
            LOG.warning("maxconn %d is more than the descriptor limit allows (%d: %d descriptors, "
                        "two per connection, %d kept back); connections beyond it end with "
                        "end=%s", self.maxconn, affordable, os.sysconf("SC_OPEN_MAX"),
                        DESCRIPTOR_RESERVE, END_NO_DESCRIPTORS)
        self.active = 0
        self.sessions = set()
        self.listeners = []
        self.pools = {name: BackendPool(backend) for name, backend in config.backends.items()}
        self.checker = HealthChecker(self.loop, self.pools.values(),
                                     config.global_settings.check_threads, self._health_changed,
                                     self._check_done, followed)
        # Where a failed connection to a server is counted: here, or (hand_checks_over)
        # in the process that checks.
        self.report_connect_failure = self.checker.connection_failed
        self._serving_queues = set()
        self.stats = ProxyStats(process_identity(config.global_settings, self.maxconn),
                                [(frontend, frontend.maxconn or self.maxconn)
                                 for frontend in config.frontends],
                                list(self.pools.values()), self.loop.now, time.time())
        self.backend_counters = {be.pool: be for be in self.stats.backends}
        self.server_counters = {srv.state: srv for be in self.stats.backends
                                for srv in be.servers}
        self.frontends = {}
        for frontend, counters in zip(config.frontends, self.stats.frontends):
            self.frontends[frontend.name] = FrontendState(
                frontend, self.pools[frontend.default_backend], counters)
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
                if self.listening is None:
                    sock = open_listener(bind)
                else:
                    sock = self.listening[listen_key(bind.address.family, bind.address.sockaddr)]
                listener = Listener(self, fe, bind, sock)
                fe.listeners.append(listener)
                self.listeners.append(listener)
        for listener in self.listeners:
            self.loop.register(listener.sock, self.accept_events, listener.on_event)

    def serve_stats(self):
        """The stats socket and the stats listener, when [global] asks for them (a single
        process; under a master, the master serves them)."""
        self.stats_listeners = open_stats_listeners(self.loop, self.config.global_settings, self)

    def run(self):
        """Serve until stop() (or SIGTERM/SIGINT through the loop's signal handlers)."""
        self.checker.start()
        self.stats_tick.arm(self.loop.now + STATS_TICK)
        self.loop.run()
        self._shutdown()

    def stop(self):
        """Ask the proxy to stop; callable from any thread."""
        self.loop.stop()

    @property
    def stopping_softly(self):
        """A soft stop was asked for: /health says 503 (stats.stopping)."""
        return self.stats.stopping

    @stopping_softly.setter
    def stopping_softly(self, value):
        self.stats.stopping = value

    def soft_stop(self, hard_stop_after=None):
        """Stop accepting at once and stop once the last session has ended, or when
        ``hard_stop_after`` seconds have passed (None: no bound). Sessions carry on meanwhile;
        checks stop, since a process that takes no new connections needs no verdicts."""
        self.stopping_softly = True
        if self.draining:
            return
        self.draining = True
        self._close_listeners()
        self.checker.stop()
        LOG.info("stopped accepting; %d connection(s) left to finish", self.active)
        if not self.active:
            self.loop.stopping = True
        elif hard_stop_after is not None:
            self._hard_stop_timer.arm(self.loop.now + hard_stop_after)

    def _hard_stop(self):
        LOG.warning("hard-stop-after: closing the %d connection(s) left", self.active)
        self.loop.stopping = True

    def _close_listeners(self):
        for listener in self.listeners:
            if not listener.paused:
                self.loop.unregister(listener.sock)
            listener.close()
        for fe in self.frontends.values():
            fe.listeners = []
        self.listeners = []

    def _shutdown(self):
        self.checker.stop()
        self.stats_tick.cancel()
        for listener in self.stats_listeners:
            listener.close()
        self._close_listeners()
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
        if fe.frontend.maxconn_per_source:
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
        if self.held:
            self.held_changed(session)      # what it held for a slow peer is free now
        frontend = fe.frontend
        if frontend.maxconn_per_source:
            source = _limited_source(session)
            if source is not None:
                count = fe.per_source.pop(source) - 1
                if count:
                    fe.per_source[source] = count
        end = session.end
        # Frontend, server and backend counters, written out rather than through a method:
        # this runs once per connection, and three calls would cost more than the lines.
        counters = fe.counters
        counters.scur -= 1
        counters.ends[end] += 1
        counters.bin += session.bytes_in
        counters.bout += session.bytes_out
        if session.server is not None:
            counters = self.server_counters[session.server]
            counters.ends[end] += 1
            counters.bin += session.bytes_in
            counters.bout += session.bytes_out
            counters = counters.backend
            counters.scur -= 1
            counters.ends[end] += 1
            counters.bin += session.bytes_in
            counters.bout += session.bytes_out
        trust_rule = None
        if session.trust is not None:          # a bind with header handling
            self.header_wait_ended(session)      # (it may have closed still waiting for one)
            trust_rule = session.trust.rule_for(session.header)
            self.stats.trust_decisions[trust_rule] += 1
        if end == END_HEALTH_CHECK:
            self.stats.local_checks_absorbed += 1
        level = END_CAUSES[end].level
        quiet = ((end == END_NORMAL and frontend.dontlog_normal) or
                 (frontend.dontlognull and session.bytes_in == 0 and end in END_NULL_QUIET))
        # The line's facts are taken only when it will be written: a busy proxy may run at
        # log-level warning.
        if not quiet and LOG.isEnabledFor(level):
            log_connection(level, fe.log_line, line_facts(session, trust_rule, detail))
        if self.paused_listeners:
            self._update_accepting()
        if self.draining and not self.active:
            self.loop.stopping = True

    def held_changed(self, session):
        """Count what ``session`` holds now (its pending bytes both ways) into the proxy's
        total, and choose the relay read size from it: one more large read must fit under
        tune.buffers.limit large buffers, else reads are tune.bufsize (relay.py)."""
        now = len(session.c2s) + len(session.s2c)
        self.held += now - self.holding.pop(session, 0)
        if now:
            self.holding[session] = now
        self.read_size = (self.large_bufsize if self.held <= self.large_reads_until
                          else self.bufsize)

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
        self.report_connect_failure(server, cause, duration)

    def hand_checks_over(self, report_connect_failure):
        """Another process checks the servers (master.py): none are checked here, verdicts
        arrive through ``checker.adopt``, and each failed connection to a server goes to
        ``report_connect_failure(server, cause, duration)`` to be counted where the checks
        are. Called before run()."""
        self.checker = HealthChecker(self.loop, (), 0, self._health_changed, self._check_done)
        self.report_connect_failure = report_connect_failure

    def set_server_admin(self, pool, server, admin=None, weight=None, maxconn=None):
        """What an operator sets on a server (the runtime API, or a master passing it on):
        its administrative state (READY, DRAIN, MAINT), weight, maxconn; None leaves one as
        it is. Raises ValueError for a transition the state does not allow. Leaving MAINT
        starts the server's checks over, as HAProxy does."""
        leaving_maint = admin is not None and server.admin == MAINT and admin != MAINT
        before = server.status
        counters = self.server_counters[server]
        changed = False
        if admin is not None and admin != server.admin:
            if pool.set_admin(server, admin):
                counters.state_changed(self.loop.now, before, by_check=False)
                changed = True
        if weight is not None and pool.set_weight(server, weight):
            counters.backend.settle(self.loop.now)
            changed = True
        if maxconn is not None:
            changed = pool.set_maxconn(server, maxconn) or changed
        if leaving_maint:
            self.checker.restart(server)
        if changed:
            self._server_status_changed(pool, server)

    def _check_done(self, server, ok, reason, duration, health):
        """A health check's result, for the stats (the checker has counted it)."""
        self.server_counters[server].record_check(ok, reason, duration, health)

    def _health_changed(self, pool, server, before):
        """The checker's on_change: a health verdict changed a server's status."""
        self.server_counters[server].state_changed(self.loop.now, before, by_check=True)
        self._server_status_changed(pool, server)
        if self.on_server_change is not None:
            self.on_server_change(pool, server)

    def _server_status_changed(self, pool, server):
        """A server up may serve the queue; with none left, queued clients are closed at
        once, not at timeout queue."""
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
        self.stats.dropped_logs = dropped_log_lines()
        self.stats.tick(self.loop.now)
        self.stats_tick.arm(self.stats_tick_due())

    def stats_tick_due(self):
        """The next whole STATS_TICK after now, so that ticks do not drift with load."""
        started = self.stats.started
        return started + (int((self.loop.now - started) / STATS_TICK) + 1) * STATS_TICK

    # -- the runtime API's target in a single process (admin.py) --------------------------------

    def stats_model(self):
        return self.stats

    def clock(self):
        return self.loop.now, time.time()

    def session_views(self, most=None):
        """One SessionView per live connection, for "show sess" (oldest first); only the
        ``most`` oldest when given."""
        views = []
        oldest = (sorted(self.sessions, key=_started) if most is None
                  else heapq.nsmallest(most, self.sessions, key=_started))
        for session in oldest:
            header = session.header
            server = session.server
            views.append(SessionView(
                id(session), endpoint_text(session.client), endpoint_text(session.peer),
                session.fe.frontend.name, session.pool.backend.name if server else None,
                server.config.name if server else None, session.state.name, session.started,
                session.bytes_in, session.bytes_out,
                proxy_text(header) if header is not None else None,
                tuple((_SESS_TLV_NAMES.get(tlv_type) or "tlv%#04x" % tlv_type, value)
                      for tlv_type, value in
                      (header.tlvs if header is not None and header.tlvs else ()))))
        return views

    def set_server(self, backend, server, state=None, weight=None, maxconn=None):
        """The runtime API's ``set server`` and kin, by name (admin.py checked the names):
        logged, then set_server_admin; None, or the error line to answer."""
        pool = self.pools[backend]
        target = next(s for s in pool.servers if s.config.name == server)
        was = target.admin, target.weight, target.maxconn
        try:
            self.set_server_admin(pool, target, state, weight, maxconn)
        except ValueError as exc:
            return str(exc)
        log_server_setting(target.label, was, (state, weight, maxconn))
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
        loop = self.loop
        for fe in self.frontends.values():
            limit = fe.frontend.maxconn
            accepting = globally_open and not (limit and fe.active >= limit)
            for listener in fe.listeners:
                if accepting and listener.paused:
                    loop.register(listener.sock, self.accept_events, listener.on_event)
                    listener.paused = False
                elif not accepting and not listener.paused:
                    loop.unregister(listener.sock)
                    listener.paused = True
                paused += listener.paused
        self.paused_listeners = paused


# show sess names the text TLVs as the JSON log does; the others (binary, or with subtypes)
# are tlv0xNN, their raw bytes escaped.
_SESS_TLV_NAMES = {PP2_TYPE_ALPN: "alpn", PP2_TYPE_AUTHORITY: "authority",
                   PP2_TYPE_NETNS: "netns"}


def _started(session):
    return session.started


def _limited_source(session):
    """The real peer IP that maxconn-per-source counts the session under (on a frontend with
    the limit), or None for a Unix socket peer. A dual-stack bind's v4-mapped peer counts as
    IPv4."""
    if session.listener.is_unix:
        return None
    return packed_ip(session.peer[0])


def process_identity(settings, maxconn):
    """What "show info" says about this process."""
    soft = os.sysconf("SC_OPEN_MAX")
    return ProcessIdentity(settings.stats_name, __version__, "", os.getpid(),
                           socket.gethostname(), "", maxconn, soft if soft > 0 else 0)


def default_maxconn():
    """The descriptor limit less a reserve for the rest, halved (each connection needs two)."""
    soft = os.sysconf("SC_OPEN_MAX")     # the soft RLIMIT_NOFILE, without the resource module
    if soft <= 0:                        # -1: unlimited
        soft = 65536
    return max(1, (soft - DESCRIPTOR_RESERVE) // 2)


def run_proxy(config, listening=None, attach=None, last_addresses=None):
    """Bind, serve until SIGTERM/SIGINT (or a soft stop ends), and return the exit status.

    A worker (master.py) passes the ``listening`` sockets its master opened, by listen_key,
    and ``attach(proxy)``, called once the listeners are registered, to hook its channel
    to the master into the loop; the master handles SIGUSR1, SIGHUP and SIGUSR2 then. A
    single process handles them itself (install_single_process_signals). ``last_addresses``:
    what a master hands a new worker for init-addr ``last`` (resolve.start_addresses)."""
    proxy = Proxy(config, listening, last_addresses)
    proxy.bind_all()
    proxy.loop.install_signal_handlers()
    if attach is None:
        proxy.serve_stats()
        install_single_process_signals(proxy)
    else:
        attach(proxy)
    LOG.info("simpleproxy ready: %s", ", ".join(
        "%s %s" % (listener.frontend.name, listener.bind.address.text)
        for listener in proxy.listeners))
    sys.stderr.flush()
    proxy.run()
    return 0


RELOAD_NEEDS_MASTER = ("received %s: not reloading: a reload needs the master process (set "
                       "[global] workers, workers = 1 is enough, and restart once)")


def install_single_process_signals(proxy):
    """SIGUSR1 soft-stops the single process (there is no grace: grace is a master key);
    SIGHUP and SIGUSR2, HAProxy's reload signals, only log why they do nothing here."""
    def soft_stop():
        LOG.info("received SIGUSR1: soft stop")
        proxy.soft_stop()

    def reload_refused(name):
        return lambda: LOG.warning(RELOAD_NEEDS_MASTER, name)
    proxy.loop.add_signal_handler(signal.SIGUSR1, soft_stop)
    for signum in (signal.SIGHUP, signal.SIGUSR2):
        proxy.loop.add_signal_handler(signum, reload_refused(signal.Signals(signum).name))
