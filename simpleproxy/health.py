"""Health checks: worker threads probe the servers, the event loop decides what it means.

The split (STYLE.md: the loop owns all state):

* A check is described once per server by a ``CheckSpec``, a frozen record: where to connect,
  which PROXY header to send, what to send and expect, the time limits. ``run_check(spec)``
  probes with a blocking socket and returns a ``CheckResult``. It is all a worker thread ever
  runs, and it touches nothing of the proxy.
* ``CheckWorkers`` are the threads (``check-threads`` in [global]). Each result goes back to
  the loop through ``EventLoop.call_soon_threadsafe``: a deque and a wake-up byte. That is
  the only door: nothing a worker runs touches the loop otherwise (tests/test_layout.py).
* ``HealthChecker`` lives on the loop. It keeps a loop timer per checked server, counts
  rise and fall (``HealthState``, HAProxy's counting), tells the server's ``BackendPool``,
  logs status changes and tells the proxy (``on_change``); ``adopt`` takes a verdict another
  process reached (master.py: one worker checks for all). A result is applied only while it
  is current: not after stop(), not for a server this checker does not check, not from
  before a restart() of the server's checks (its generation).
* Passive health, as HAProxy's ``observe layer4``: the proxy reports real connections to a
  server that failed, and those that tell about the server (endings.py: refused, timed
  out) count as failed checks.
* Following host names (discovery.py): the same workers run ``discovery.lookup`` for each
  followed name every period, one lookup in flight per name and fewer at once than there
  are threads (when there are two or more), so that checks keep a thread. The loop feeds
  each result to the name's NameResolution and applies its actions: a new address for new
  connections and for the checks, maintenance while a server has no address to use
  (``dns_maint``, apart from the operator's MAINT), and the lines it words.
  ``adopt_resolution`` takes what another process's lookups found (master.py: the worker that
  checks also resolves, for all).

Time limits, as in HAProxy: without ``timeout check`` the whole check, connect and response,
gets ``inter``; with it, the connect gets min(timeout connect, inter), the response ``timeout
check`` more. The checks of one server never overlap: the next one is scheduled when the
result is in, ``inter`` later while the server is fully up, ``downinter`` while fully down,
``fastinter`` in between (on its way up or down).

PROXY headers on checks (``check-send-proxy``, on by default with send-proxy, see config.py):
v2 sends LOCAL, the spec's word for a connection the proxy makes on its own behalf; v1, which
has no LOCAL, sends a line that describes the check connection itself (its own address, then
the server's), as the spec advises.
"""
import collections
import logging
import queue
import re
import socket
import threading
import time
from collections import namedtuple

from .balancer import MAINT, UP
from .discovery import (OTHER, AddressChange, EnterMaintenance, LeaveMaintenance, LookupResult,
                        lookup)
from .endings import END_CAUSES, END_CONNECT_ERROR, END_CONNECT_REFUSED, END_CONNECT_TIMEOUT
from .logs import LOG
from .proxyproto import build_v1, build_v2
from .resolve import resolved_address
from .timeouts import LONGEST_WAIT

CHECK_READ_LIMIT = 16384      # bytes of a response searched for check-expect string
# Bytes of a response searched for check-expect rstring. ``re`` holds the interpreter lock
# while it searches, so a slow search freezes the event loop too; a short window bounds the
# patterns that are slow in a polynomial way (``a*a*b``: about 25 ms over 256 bytes, 1.2 s over
# 1 KiB). Nested quantifiers (``(a+)+``) double their time with every byte, which no window
# bounds: config_values.py refuses them.
CHECK_REGEX_WINDOW = 256

CheckSpec = namedtuple("CheckSpec", "address proxy_version send expect expect_window "
                                    "connect_timeout read_timeout")
CheckSpec.__doc__ = """What a worker needs to check one server, and nothing of the proxy.

address: the config Address to connect to; proxy_version: 0 (no header), 1 or 2; send: bytes
or None; expect: a compiled bytes pattern the response must contain, or None; expect_window:
how many bytes of the response it is searched in; connect_timeout: seconds; read_timeout:
seconds after the connect, or None: the check ends connect_timeout after it started, response
included. Both times are at most LONGEST_WAIT, which a socket timeout can take."""

CheckResult = namedtuple("CheckResult", "ok reason duration")
CheckResult.__doc__ = """How one check went: ok (None: no check could be made, so no verdict),
the reason as the state-change line says it, and how long it took in seconds."""


def _hc_failure_reason(cause, detail=None):
    """How a status-change line words a failed connect with the end cause ``cause``."""
    return END_CAUSES[cause].server_fault or "connection error: %s" % detail


def check_spec(server, backend, address=None):
    """The CheckSpec of a server that has ``check``, at ``address`` (where the server is now,
    if service discovery moved it; its configured address by default) unless ``addr`` says."""
    address = server.check_addr or address or server.address
    if server.check_addr is None and server.check_port is not None:
        address = address._replace(sockaddr=(address.sockaddr[0], server.check_port))
    version = (2 if server.send_proxy == 2 else 1) if server.check_send_proxy else 0
    expect, window = None, CHECK_READ_LIMIT
    if server.check_expect is not None:
        kind, pattern = server.check_expect
        if kind == "string":
            expect = re.compile(re.escape(pattern))
        else:
            expect, window = re.compile(pattern), CHECK_REGEX_WINDOW
    if backend.timeout_check is None:
        connect_timeout, read_timeout = min(server.inter, LONGEST_WAIT), None
    else:
        connect_timeout = min(backend.timeout_connect, server.inter, LONGEST_WAIT)
        read_timeout = min(backend.timeout_check, LONGEST_WAIT)
    return CheckSpec(address, version, server.check_send, expect, window, connect_timeout,
                     read_timeout)


def run_check(spec):
    """Check one server, blocking (a worker thread's job), and say how it went.

    Out of descriptors or buffers here, the check says nothing about the server: its result
    has ``ok`` None, and it is not counted (a proxy short of descriptors must not take all
    its servers down)."""
    start = time.monotonic()
    try:
        sock = socket.socket(spec.address.family, socket.SOCK_STREAM)
    except OSError as exc:
        return CheckResult(None, "no check made: %s" % exc.strerror, 0.0)
    try:
        ok, reason = _hc_probe(sock, spec, start)
    finally:
        sock.close()
    return CheckResult(ok, reason, time.monotonic() - start)


def _hc_probe(sock, spec, start):
    sock.settimeout(spec.connect_timeout)
    try:
        sock.connect(spec.address.sockaddr)
    except socket.timeout:
        return False, _hc_failure_reason(END_CONNECT_TIMEOUT)
    except ConnectionRefusedError:
        return False, _hc_failure_reason(END_CONNECT_REFUSED)
    except OSError as exc:
        return False, _hc_failure_reason(END_CONNECT_ERROR, exc.strerror or exc)
    if spec.read_timeout is None:
        deadline = start + spec.connect_timeout
    else:
        deadline = time.monotonic() + spec.read_timeout
    try:
        # The header and the check's own bytes in one write, as with real traffic.
        request = _hc_proxy_header(sock, spec.proxy_version) + (spec.send or b"")
        if request:
            _hc_time_left(sock, deadline)
            sock.sendall(request)
        if spec.expect is None:
            return True, "layer4 check passed"
        return _hc_expect(sock, spec.expect, spec.expect_window, deadline)
    except socket.timeout:
        return False, "response timeout"
    except OSError as exc:
        return False, _hc_failure_reason(END_CONNECT_ERROR, exc.strerror or exc)


def _hc_proxy_header(sock, version):
    if version == 2:
        return build_v2(None, None, local=True)
    if version == 1:
        return build_v1(sock.getsockname(), sock.getpeername())
    return b""


def _hc_time_left(sock, deadline):
    """Let the socket wait until ``deadline`` at most; socket.timeout if it has passed."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise socket.timeout("timed out")
    sock.settimeout(left)


def _hc_expect(sock, expect, window, deadline):
    """Read until the response matches, ends, fills the window or runs out of time."""
    response = b""
    try:
        while len(response) < window:
            _hc_time_left(sock, deadline)
            data = sock.recv(window - len(response))
            if not data:
                break
            response += data
            if expect.search(response):
                return True, "layer7 check passed"
    except socket.timeout:
        if not response:
            raise
    return False, "response did not match"


class HealthState(object):
    """Rise and fall as HAProxy counts them: pure, fed one result at a time.

    ``health`` runs from 0 to rise + fall - 1, and the server is up from ``rise`` on. A
    success counts up, and reaching ``rise`` jumps to the top; a failure counts down, and
    dropping below ``rise`` falls to 0. So a server fully up goes down after ``fall`` failures
    in a row, one fully down comes up after ``rise`` successes in a row. It starts at ``rise``:
    up, but down at the first failure, so that a server dead at startup is found by its first
    check rather than by the ``fall``-th.
    """

    __slots__ = ("rise", "fall", "health")

    def __init__(self, rise, fall):
        self.rise = rise
        self.fall = fall
        self.health = rise

    @property
    def up(self):
        return self.health >= self.rise

    def record(self, ok):
        """Count one result; True if it turned the server up or down."""
        was_up = self.up
        if ok:
            self.health = self.rise + self.fall - 1 if self.health + 1 >= self.rise else \
                self.health + 1
        elif self.health:
            self.health = 0 if self.health - 1 < self.rise else self.health - 1
        return self.up != was_up

    def interval(self, server):
        """The wait before the next check: inter fully up, downinter fully down, else fastinter
        (config.py fills the last two with inter when they are not set)."""
        if self.health == self.rise + self.fall - 1:
            return server.inter
        if self.health == 0:
            return server.downinter
        return server.fastinter


class CheckWorkers(object):
    """The threads that run checks and lookups. A job is a function, its argument and the
    function to hand its result to (None if it raised); the threads see nothing else.

    Why threads: getaddrinfo has no non-blocking form in the standard library, and a check
    written with one blocking socket and its timeouts stays short and obviously right; on the
    loop either would stall every connection for as long as a server takes to answer."""

    def __init__(self, count):
        self._jobs = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name="simpleproxy-check-%d" % n,
                                          daemon=True) for n in range(count)]

    def start(self):
        for thread in self._threads:
            thread.start()

    def submit(self, function, argument, deliver):
        self._jobs.put((function, argument, deliver))

    def stop(self):
        """Let each thread end once it is free. They are daemons, so a check still running
        never holds up the exit."""
        for _ in self._threads:
            self._jobs.put(None)

    def _work(self):
        while True:
            job = self._jobs.get()
            if job is None:
                return
            function, argument, deliver = job
            try:
                result = function(argument)
            except Exception:
                LOG.exception("internal error in a health-check worker")
                result = None
            deliver(result)


class ServerCheck(object):
    """One checked server on the loop's side: its rise/fall count and its timer."""

    __slots__ = ("checker", "pool", "server", "spec", "health", "generation", "running",
                 "timer")

    def __init__(self, checker, pool, server):
        self.checker = checker
        self.pool = pool
        self.server = server          # its ServerState
        self.spec = check_spec(server.config, server.backend, server.address)
        self.health = HealthState(server.config.rise, server.config.fall)
        self.generation = 0           # a result from an older generation is ignored
        self.running = False          # a worker has the check now
        self.timer = checker.loop.timer(self._due)

    def _due(self):
        self.checker.launch(self)


class FollowedNameState(object):
    """One followed host name on the loop's side: its NameResolution, servers and timer."""

    __slots__ = ("resolution", "period", "servers", "timer")

    def __init__(self, checker, resolution, period, servers):
        self.resolution = resolution
        self.period = period
        self.servers = servers        # server name -> (BackendPool, ServerState)
        self.timer = checker.loop.timer(lambda: checker.lookup_due(self))


class HealthChecker(object):
    """The loop's side of health: schedules checks and lookups, applies results, logs status
    changes.

    ``on_change(pool, server, before)`` is called on the loop when a server's status changed
    from ``before``; ``on_check(server, ok, reason, duration, health)`` after each check result
    that is current, with the rise/fall count after it (the stats keep them).
    ``followed``: the FollowedName records of start-up (resolve.py), whose notices are logged
    here and whose names are looked up every period (those with one).
    ``on_resolved(name)``, when set, is called on the loop once a lookup has changed anything
    of ``name`` (a FollowedNameState): a worker that resolves for its siblings tells its
    master (worker.WorkerLink)."""

    def __init__(self, loop, pools, threads, on_change, on_check, followed=()):
        self.loop = loop
        self.on_change = on_change
        self.on_check = on_check
        self.checks = {}              # ServerState -> ServerCheck, for servers with "check"
        states = {}
        for pool in pools:
            for server in pool.servers:
                states[pool.backend.name, server.config.name] = pool, server
                if server.config.check:
                    self.checks[server] = ServerCheck(self, pool, server)
        self.names = []               # every followed name; those with a period are looked up
        for name in followed:
            resolution = name.resolution
            servers = {server: states[resolution.backend, server]
                       for server in resolution.servers}
            for _, state in servers.values():
                state.dns_status = resolution.status
            for notice in name.notices:
                LOG.log(notice.level, "%s", notice.text)
            self.names.append(FollowedNameState(self, resolution, name.period, servers))
        self.on_resolved = None
        looked_up = [name for name in self.names if name.period is not None]
        self.workers = CheckWorkers(min(threads, len(self.checks) + len(looked_up)))
        # A lookup may wait seconds for a name server: lookups never take every thread.
        self.lookup_slots = max(1, threads - 1)
        self.lookups_running = 0
        self.lookups_due = collections.deque()
        self.stopped = False

    def start(self):
        """Start the threads, and spread the first checks over the first ``inter`` so that
        they do not all go at once; each followed name is looked up a period after start."""
        self.workers.start()
        count = len(self.checks)
        for position, check in enumerate(self.checks.values()):
            self._schedule(check, check.server.config.inter * position / count)
        for name in self.names:
            if name.period is not None:
                name.timer.arm_by(self.loop.now + name.period)

    def stop(self):
        self.stopped = True
        self.workers.stop()
        for check in self.checks.values():
            check.timer.cancel()
        for name in self.names:
            name.timer.cancel()

    # -- following host names -------------------------------------------------------------------

    def lookup_due(self, name):
        """A name's period is over: look it up now, or as soon as a lookup slot frees. Its
        timer is armed again only when the result is in: one lookup in flight per name."""
        if self.lookups_running >= self.lookup_slots:
            self.lookups_due.append(name)
            return
        self.lookups_running += 1
        call_soon_threadsafe = self.loop.call_soon_threadsafe

        def deliver(result):
            # On the worker's thread: hand the result over, touch nothing else.
            try:
                call_soon_threadsafe(lambda: self.lookup_done(name, result))
            except OSError:
                pass            # the loop has closed its wake-up socket: it is gone
        self.workers.submit(lookup, name.resolution.host, deliver)

    def lookup_done(self, name, result):
        """A lookup's result, on the loop: the name's NameResolution says what it means."""
        if self.stopped:
            return
        self.lookups_running -= 1
        if result is None:
            result = LookupResult((), OTHER, "internal error")
        actions = name.resolution.update(result, self.loop.now)
        for action in actions:
            self._apply_dns(name, action)
        for _, server in name.servers.values():
            server.dns_status = name.resolution.status
        if actions and self.on_resolved is not None:
            self.on_resolved(name)
        name.timer.arm_by(self.loop.now + name.period)
        if self.lookups_due:
            self.lookup_due(self.lookups_due.popleft())

    def _apply_dns(self, name, action):
        """Apply one of a NameResolution's actions (discovery.py) to the servers."""
        if isinstance(action, AddressChange):
            _, server = name.servers[action.server]
            if action.new is None:
                return            # in maintenance meanwhile; it keeps its last address
            server.address = resolved_address(server.config.address, action.new)
            check = self.checks.get(server)
            if check is not None:
                check.spec = check_spec(server.config, server.backend, server.address)
                check.generation += 1       # a check of the old address says nothing now
        elif isinstance(action, (EnterMaintenance, LeaveMaintenance)):
            pool, server = name.servers[action.server]
            leaving = isinstance(action, LeaveMaintenance)
            before = server.status
            if pool.set_dns_maint(server, not leaving):
                log_status_change(pool, server, action.reason)
                self.on_change(pool, server, before)
            if leaving:
                self.restart(server)
        else:
            LOG.log(action.level, "%s", action.text)

    def _schedule(self, check, delay):
        """Have the check go ``delay`` from now, unless it is due sooner already."""
        check.timer.arm_by(self.loop.now + delay)

    def launch(self, check):
        """Hand a due check to a worker; a server in maintenance (the operator's or DNS's) is
        not checked."""
        if check.server.status == MAINT:
            self._schedule(check, check.server.config.inter)
            return
        check.running = True
        generation = check.generation
        call_soon_threadsafe = self.loop.call_soon_threadsafe

        def deliver(result):
            # On the worker's thread: hand the result over, touch nothing else.
            try:
                call_soon_threadsafe(lambda: self.check_done(check, generation, result))
            except OSError:
                pass            # the loop has closed its wake-up socket: it is gone
        self.workers.submit(run_check, check.spec, deliver)

    def check_done(self, check, generation, result):
        """A worker's result, on the loop: counted unless stale (see the module docstring)."""
        if self.stopped or self.checks.get(check.server) is not check:
            return
        check.running = False
        if result is None:
            result = CheckResult(False, "internal error", 0.0)
        if generation != check.generation:
            self._schedule(check, 0.0)      # restarted meanwhile: the new count starts now
            return
        if result.ok is not None:
            self._count(check, result.ok, result.reason, result.duration)
        self.on_check(check.server, result.ok, result.reason, result.duration,
                      check.health.health)
        self._schedule(check, check.health.interval(check.server.config))

    def connection_failed(self, server, cause, duration):
        """Passive health: a real connection to ``server`` failed with the end ``cause``. When
        the cause tells about the server (endings.py), it counts as a failed check, and the
        next check comes at fastinter rather than at inter. An unchecked server is left
        alone: nothing would ever bring it back up."""
        check = self.checks.get(server)
        if check is None or END_CAUSES[cause].server_fault is None:
            return
        self._count(check, False, _hc_failure_reason(cause) + " (client traffic)", duration)
        if not check.running:
            self._schedule(check, check.health.interval(server.config))

    def restart(self, server):
        """Start a server's checks over: up, but down at the first failure. The next check
        goes now, or, when one is running, as soon as its result (ignored) is in, so that
        checks never overlap. Nothing to do for a server without checks. Proxy.set_server_admin
        calls it when a server leaves maintenance."""
        check = self.checks.get(server)
        if check is None:
            return
        check.generation += 1
        check.health = HealthState(server.config.rise, server.config.fall)
        self._apply(check, "checks restarted", 0.0)
        if not check.running:
            self._schedule(check, 0.0)

    def _count(self, check, ok, reason, duration):
        if check.health.record(ok):
            self._apply(check, reason, duration)

    def _apply(self, check, reason, duration):
        """Tell the pool what the count says; log a change and tell the proxy."""
        pool, server = check.pool, check.server
        before = server.status
        if not pool.set_health(server, check.health.up):
            return
        log_status_change(pool, server, reason, duration)
        self.on_change(pool, server, before)

    def adopt(self, pool, server, healthy):
        """Take a verdict reached elsewhere (another process's checks, master.py): the server
        is fully up or fully down from now on, here too, and its own checks, if it has any
        here, count from there. Tells the proxy as a verdict of its own would."""
        check = self.checks.get(server)
        if check is not None:
            check.health.health = check.health.rise + check.health.fall - 1 if healthy else 0
        before = server.status
        if pool.set_health(server, healthy):
            self.on_change(pool, server, before)

    def adopt_resolution(self, pool, server, address, dns_maint, status):
        """Take what another process's lookups found for ``server`` (master.py: the worker
        that checks resolves for all, so that every worker uses the same addresses): its
        address for new connections (a discovery.IpAddress; None: it keeps the one it has),
        whether DNS keeps it in maintenance, and the last lookup's outcome. Tells the proxy
        of a status change as adopt() does; the resolving process logged it."""
        if address is not None:
            server.address = resolved_address(server.config.address, address)
        server.dns_status = status
        before = server.status
        if pool.set_dns_maint(server, dns_maint):
            self.on_change(pool, server, before)


def log_status_change(pool, server, reason, duration=None):
    """HAProxy's line for a server changing status, and its alert when a backend has none left.
    ``duration``: the check's, when a check caused the change."""
    normal, backup = pool.usable_counts()
    online = server.status == UP
    checked = "" if duration is None else ", check duration: %dms" % (duration * 1000)
    LOG.log(logging.INFO if online else logging.WARNING,
            "server %s is %s, reason: %s%s, %d active and %d backup servers %s", server.label,
            server.status, reason, checked, normal, backup, "online" if online else "left")
    if not pool.candidates:
        LOG.error("backend %s has no server available!", pool.backend.name)
