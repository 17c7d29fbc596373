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
  logs status changes and tells the proxy (``on_change``). A result is applied only while it
  is current: not after stop(), not for a server this checker does not check, not from
  before a restart() of the server's checks (its generation).
* Passive health, as HAProxy's ``observe layer4``: the proxy reports real connections to a
  server that failed, and those that tell about the server (endings.py: refused, timed
  out) count as failed checks.

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
import logging
import queue
import re
import socket
import threading
import time
from collections import namedtuple

from .balancer import MAINT, UP
from .endings import END_CAUSES, END_CONNECT_ERROR, END_CONNECT_REFUSED, END_CONNECT_TIMEOUT
from .logs import LOG
from .proxyproto import build_v1, build_v2

CHECK_READ_LIMIT = 16384      # bytes of a response searched for check-expect

CheckSpec = namedtuple("CheckSpec", "address proxy_version send expect connect_timeout "
                                    "read_timeout")
CheckSpec.__doc__ = """What a worker needs to check one server, and nothing of the proxy.

address: the config Address to connect to; proxy_version: 0 (no header), 1 or 2; send: bytes
or None; expect: a compiled bytes pattern the response must contain, or None; connect_timeout:
seconds; read_timeout: seconds after the connect, or None: the check ends connect_timeout
after it started, response included."""

CheckResult = namedtuple("CheckResult", "ok reason duration")
CheckResult.__doc__ = """How one check went: ok (None: no check could be made, so no verdict),
the reason as the state-change line says it, and how long it took in seconds."""


def _hc_failure_reason(cause, detail=None):
    """How a status-change line words a failed connect with the end cause ``cause``."""
    return END_CAUSES[cause].server_fault or "connection error: %s" % detail


def check_spec(server, backend):
    """The CheckSpec of a server that has ``check``."""
    address = server.check_addr or server.address
    if server.check_addr is None and server.check_port is not None:
        address = address._replace(sockaddr=(address.sockaddr[0], server.check_port))
    version = (2 if server.send_proxy == 2 else 1) if server.check_send_proxy else 0
    expect = None
    if server.check_expect is not None:
        kind, pattern = server.check_expect
        expect = re.compile(re.escape(pattern) if kind == "string" else pattern)
    if backend.timeout_check is None:
        connect_timeout, read_timeout = server.inter, None
    else:
        connect_timeout = min(backend.timeout_connect, server.inter)
        read_timeout = backend.timeout_check
    return CheckSpec(address, version, server.check_send, expect, connect_timeout, read_timeout)


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
        return _hc_expect(sock, spec.expect, deadline)
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


def _hc_expect(sock, expect, deadline):
    """Read until the response matches, ends, fills the limit or runs out of time."""
    response = b""
    try:
        while len(response) < CHECK_READ_LIMIT:
            _hc_time_left(sock, deadline)
            data = sock.recv(CHECK_READ_LIMIT - len(response))
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
    """The threads that run checks. A job is a CheckSpec and the function to hand its result
    to; the threads see nothing else."""

    def __init__(self, count):
        self._jobs = queue.Queue()
        self._threads = [threading.Thread(target=self._work, name="simpleproxy-check-%d" % n,
                                          daemon=True) for n in range(count)]

    def start(self):
        for thread in self._threads:
            thread.start()

    def submit(self, spec, deliver):
        self._jobs.put((spec, deliver))

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
            spec, deliver = job
            try:
                result = run_check(spec)
            except Exception:
                LOG.exception("internal error in a health check")
                result = CheckResult(False, "internal error", 0.0)
            deliver(result)


class ServerCheck(object):
    """One checked server on the loop's side: its rise/fall count and its timer."""

    __slots__ = ("checker", "pool", "server", "spec", "health", "generation", "running",
                 "timer")

    def __init__(self, checker, pool, server):
        self.checker = checker
        self.pool = pool
        self.server = server          # its ServerState
        self.spec = check_spec(server.config, server.backend)
        self.health = HealthState(server.config.rise, server.config.fall)
        self.generation = 0           # a result from an older generation is ignored
        self.running = False          # a worker has the check now
        self.timer = checker.loop.timer(self._due)

    def _due(self):
        self.checker.launch(self)


class HealthChecker(object):
    """The loop's side of health: schedules checks, applies results, logs status changes.

    ``on_change(pool, server, before)`` is called on the loop when a server's status changed
    from ``before``; ``on_check(server, ok, reason, duration, health)`` after each check result
    that is current, with the rise/fall count after it (the stats keep them)."""

    def __init__(self, loop, pools, threads, on_change, on_check):
        self.loop = loop
        self.on_change = on_change
        self.on_check = on_check
        self.checks = {}              # ServerState -> ServerCheck, for servers with "check"
        for pool in pools:
            for server in pool.servers:
                if server.config.check:
                    self.checks[server] = ServerCheck(self, pool, server)
        self.workers = CheckWorkers(min(threads, len(self.checks)))
        self.stopped = False

    def start(self):
        """Start the threads, and spread the first checks over the first ``inter`` so that
        they do not all go at once."""
        self.workers.start()
        count = len(self.checks)
        for position, check in enumerate(self.checks.values()):
            self._schedule(check, check.server.config.inter * position / count)

    def stop(self):
        self.stopped = True
        self.workers.stop()
        for check in self.checks.values():
            check.timer.cancel()

    def _schedule(self, check, delay):
        """Have the check go ``delay`` from now, unless it is due sooner already."""
        check.timer.arm_by(self.loop.now + delay)

    def launch(self, check):
        """Hand a due check to a worker; a server in maintenance is not checked."""
        if check.server.admin == MAINT:
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
        self.workers.submit(check.spec, deliver)

    def check_done(self, check, generation, result):
        """A worker's result, on the loop: counted unless stale (see the module docstring)."""
        if self.stopped or self.checks.get(check.server) is not check:
            return
        check.running = False
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
        checks never overlap. Nothing to do for a server without checks. The runtime API
        calls it when a server leaves maintenance (Proxy.set_server_admin)."""
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


def log_status_change(pool, server, reason, duration):
    """HAProxy's line for a server changing status, and its alert when a backend has none left."""
    normal, backup = pool.usable_counts()
    online = server.status == UP
    LOG.log(logging.INFO if online else logging.WARNING,
            "server %s is %s, reason: %s, check duration: %dms, %d active and %d backup "
            "servers %s", server.label, server.status, reason, duration * 1000, normal, backup,
            "online" if online else "left")
    if not pool.candidates:
        LOG.error("backend %s has no server available!", pool.backend.name)
