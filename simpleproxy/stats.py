"""Run-time counters: the model behind the stats socket, the stats page and /metrics.

The proxy keeps one ``ProxyStats``. It holds a ``FrontendStats`` per frontend, a
``BackendStats`` per backend (the balancer's ``BackendPool`` beside it) and a ``ServerStats``
per server (the balancer's ``ServerState`` beside it). What the balancer already knows (a
server's state, weight, connection count, the queue) is read from it when a view is drawn,
never copied. Everything else is a plain attribute that the paths which already run bump in
place, without a call, and nothing is counted per read:

    accept              stats.cum_conns += 1
                        fe.stot += 1; fe.scur += 1; if fe.scur > fe.smax: fe.smax = fe.scur
    PROXY header in     stats.pp_received[header.version, header.command] += 1
    trust decided       stats.trust_decisions[rule] += 1
    header refused      stats.pp_rejected[kind] += 1
                        stats.header_errors.record(wall, fe.name, peer, kind, reason, data)
    LOCAL absorbed      stats.local_checks_absorbed += 1
    server chosen       be.stot += 1; be.scur += 1; (smax as for fe)
                        srv.stot += 1; srv.last_session = now
                        if state.active > srv.smax: srv.smax = state.active
    queued              if len(pool.waiting) > be.qmax: be.qmax = len(pool.waiting)
    connect failed      srv.econ += 1; be.econ += 1
    retry / redispatch  srv.wretr += 1; be.wretr += 1 / srv.wredis += 1; be.wredis += 1
    close               fe.scur -= 1; fe.ends[end] += 1; fe.bin += in; fe.bout += out
                        and, once a server was chosen, the same for be (scur, ends, bin,
                        bout) and srv (ends, bin, bout)

``ends`` counts connections by their end cause (the log's ``end=`` word), so errors by kind
come out of one counter: ``bad-header:*`` are refused PROXY headers (HAProxy's ``ereq``),
``rejected:*`` are denied connections (``dcon``), client and server aborts and timeouts are
``cli_abrt`` and ``srv_abrt``.

Rates and sparklines cost nothing on those paths either: ``ProxyStats.tick(now)``, run by a
loop timer once a second, turns the totals into the sessions of the last second (and their
maximum), and every ``SPARK_EVERY`` seconds appends a sample of current sessions and bytes
moved to each object's bounded rings (``SPARK_SAMPLES`` of them).

Health checks and state changes, which are rare, go through methods:
``ServerStats.record_check`` after each check result the loop counts,
``ServerStats.state_changed`` after each change of a server's state (by checks, passive
health or the runtime API), ``BackendStats.settle`` after a weight change.

With workers (master.py) each worker keeps its own ``ProxyStats``; ``stats_snapshot`` turns
it into plain data by name, the master adds the workers' snapshots up
(master.aggregate_counters) and ``ProxyStats.apply_totals`` loads the sum into the master's
own ``ProxyStats`` (over BackendPools of its own that stand for the workers' servers), whose
``tick`` then makes rates and sparklines of the whole proxy. So the views (statsviews.py,
metrics.py, statspage.py) draw one proxy from either.
"""
from collections import deque, namedtuple

from .balancer import DOWN, UP
from .endings import END_CLIENT_ABORT, END_CLIENT_TIMEOUT, END_SERVER_ABORT, END_SERVER_TIMEOUT
from .proxyproto import HEADER_ERROR_KINDS

SPARK_EVERY = 5               # seconds between two sparkline samples
SPARK_SAMPLES = 120           # samples kept: the last ten minutes
HEADER_ERRORS_KEPT = 32       # refused PROXY headers kept for "show errors"
HEADER_ERROR_BYTES = 64       # first bytes kept of each

# HAProxy's health check statuses (its "check_status" column) and their descriptions, with
# the reasons health.py gives that lead to each.
CHECK_STATUSES = {
    "INI": "Initializing",
    "SOCKERR": "Socket error",
    "L4OK": "Layer4 check passed",
    "L4TOUT": "Layer4 timeout",
    "L4CON": "Layer4 connection problem",
    "L7TOUT": "Layer7 timeout",
    "L7RSP": "Layer7 invalid response",
    "L7OK": "Layer7 check passed",
}
_ST_REASON_STATUS = (
    ("layer4 check passed", "L4OK"),
    ("layer7 check passed", "L7OK"),
    ("connection timeout", "L4TOUT"),
    ("connection refused", "L4CON"),
    ("connection error", "L4CON"),
    ("response timeout", "L7TOUT"),
    ("response did not match", "L7RSP"),
    ("no check made", "SOCKERR"),
)

# End causes (the log's end= words) counted as aborts by each side.
CLIENT_ABORT_ENDS = (END_CLIENT_ABORT, END_CLIENT_TIMEOUT)
SERVER_ABORT_ENDS = (END_SERVER_ABORT, END_SERVER_TIMEOUT)
BAD_HEADER_PREFIX = "bad-header:"
DENIED_PREFIX = "rejected:"

ProcessIdentity = namedtuple("ProcessIdentity", "name version release_date pid node description "
                                                "maxconn ulimit_n")
ProcessIdentity.__doc__ = """What "show info" says about the process itself, fixed at start.

name: "simpleproxy", or "HAProxy" for tools that refuse anything else (``stats name``);
release_date: YYYY/MM/DD or "" (shown as "-"); node: the host name; description: text or
""; maxconn: the proxy-wide limit; ulimit_n: the descriptor limit."""

HeaderErrorEvent = namedtuple("HeaderErrorEvent", "number wall frontend peer kind reason data "
                                                  "received")
HeaderErrorEvent.__doc__ = """One refused PROXY header: its number since start, the wall
clock time, the frontend's name, the peer as the log writes it, the error kind and reason,
the first bytes received (at most HEADER_ERROR_BYTES) and how many were received in all."""


class Tally(dict):
    """Counts by key: ``tally[key] += 1`` works for a key not seen yet. collections.Counter
    does the same at twice the cost of an increment (measured: 116 against 57 ns), and
    ``ends`` is bumped on every close."""

    __slots__ = ()

    def __missing__(self, key):
        return 0


def check_status(reason):
    """HAProxy's check status code for a reason health.py gives."""
    for prefix, status in _ST_REASON_STATUS:
        if reason.startswith(prefix):
            return status
    return "SOCKERR"


class HeaderErrorRing(object):
    """The last refused PROXY headers, a fixed number of them: "show errors" reads it."""

    def __init__(self, size=HEADER_ERRORS_KEPT):
        self.events = deque(maxlen=size)
        self.total = 0

    def record(self, wall, frontend, peer, kind, reason, data):
        """Keep one refusal; ``data`` is what the peer sent (only its start is copied)."""
        self.total += 1
        self.events.append(HeaderErrorEvent(self.total, wall, frontend, peer, kind, reason,
                                            bytes(data[:HEADER_ERROR_BYTES]), len(data)))


class _StCounted(object):
    """What frontends, backends and servers all count, and their rate and sparklines."""

    __slots__ = ("name", "smax", "stot", "bin", "bout", "ends", "rate", "rate_max",
                 "spark_sessions", "spark_bytes", "_stot_seen", "_bytes_seen")

    def __init__(self, name):
        self.name = name
        self.smax = self.stot = self.bin = self.bout = 0
        self.ends = Tally()
        self.rate = self.rate_max = 0
        self.spark_sessions = deque(maxlen=SPARK_SAMPLES)
        self.spark_bytes = deque(maxlen=SPARK_SAMPLES)
        self._stot_seen = self._bytes_seen = 0

    def _count_second(self):
        # Never below 0: a master's totals drop when a worker is replaced.
        self.rate = max(0, self.stot - self._stot_seen)
        self._stot_seen = self.stot
        if self.rate > self.rate_max:
            self.rate_max = self.rate

    def _sample(self, current):
        moved = self.bin + self.bout
        self.spark_sessions.append(current)
        self.spark_bytes.append(max(0, moved - self._bytes_seen))
        self._bytes_seen = moved

    def ended(self, prefix=None, causes=()):
        """Connections that ended with one of ``causes`` or a cause starting with ``prefix``."""
        return sum(count for cause, count in self.ends.items()
                   if cause in causes or (prefix is not None and cause.startswith(prefix)))


class FrontendStats(_StCounted):
    """A frontend's counters; ``slim`` is its maxconn (or the proxy's)."""

    __slots__ = ("iid", "slim", "scur")

    def __init__(self, frontend, iid, slim):
        _StCounted.__init__(self, frontend.name)
        self.iid = iid
        self.slim = slim
        self.scur = 0


class BackendStats(_StCounted):
    """A backend's counters, beside its ``BackendPool`` (servers, queue, candidates)."""

    __slots__ = ("iid", "pool", "servers", "queued", "scur", "qmax", "econ", "wretr", "wredis",
                 "lastchg", "down_since", "downtime")

    def __init__(self, pool, iid, now):
        _StCounted.__init__(self, pool.backend.name)
        self.iid = iid
        self.pool = pool
        self.queued = None            # the workers' queues added up, in a master's view
        self.scur = self.qmax = self.econ = self.wretr = self.wredis = 0
        self.lastchg = now
        self.down_since = None if pool.candidates else now
        self.downtime = 0.0           # seconds without a usable server, periods ended
        self.servers = [ServerStats(state, self, sid, now)
                        for sid, state in enumerate(pool.servers, 1)]

    @property
    def up(self):
        return bool(self.pool.candidates)

    @property
    def qcur(self):
        """Connections waiting for a server now."""
        return len(self.pool.waiting) if self.queued is None else self.queued

    def total_downtime(self, now):
        return self.downtime + (now - self.down_since if self.down_since is not None else 0.0)

    def settle(self, now):
        """Note the backend going down (no usable server) or up again; called after any
        change to its pool's candidates (a server's state, by state_changed, or a weight)."""
        if self.up == (self.down_since is None):
            return
        self.lastchg = now
        if self.down_since is None:
            self.down_since = now
        else:
            self.downtime += now - self.down_since
            self.down_since = None


class ServerStats(_StCounted):
    """A server's counters, beside its ``ServerState`` (state, weight, connections)."""

    __slots__ = ("sid", "state", "backend", "econ", "wretr", "wredis", "last_session",
                 "chkfail", "chkdown", "check_status", "check_duration", "last_check",
                 "check_health", "lastchg", "down_since", "downtime")

    def __init__(self, state, backend, sid, now):
        _StCounted.__init__(self, state.config.name)
        self.sid = sid
        self.state = state
        self.backend = backend
        self.econ = self.wretr = self.wredis = 0
        self.last_session = None      # loop time of the last connection sent to it
        self.chkfail = self.chkdown = 0
        self.check_status = "INI" if state.config.check else None
        self.check_duration = None    # ms
        self.last_check = ""          # the last check's reason, as the state-change line says it
        self.check_health = state.config.rise if state.config.check else 0
        self.lastchg = now
        self.down_since = now if state.status == DOWN else None
        self.downtime = 0.0

    @property
    def scur(self):
        return self.state.active

    def record_check(self, ok, reason, duration, health):
        """A check's result as the loop counted it: ok (True, False, or None when no check
        could be made: SOCKERR, not a failure), health.py's reason, the duration in seconds
        and the rise/fall count after it."""
        self.check_status = check_status(reason)
        self.check_duration = int(duration * 1000)
        self.last_check = reason
        self.check_health = health
        if ok is False:
            self.chkfail += 1

    def state_changed(self, now, before, by_check):
        """The server's state went from ``before`` to ``self.state.status``: its last change,
        its time DOWN, HAProxy's chkdown (UP to DOWN by checks), and its backend's state."""
        after = self.state.status
        self.lastchg = now
        if after == DOWN and self.down_since is None:
            self.down_since = now
        elif after != DOWN and self.down_since is not None:
            self.downtime += now - self.down_since
            self.down_since = None
        if by_check and before == UP and after == DOWN:
            self.chkdown += 1
        self.backend.settle(now)

    def total_downtime(self, now):
        return self.downtime + (now - self.down_since if self.down_since is not None else 0.0)


class ProxyStats(object):
    """Everything the views show: the process, its frontends, backends and servers, and the
    PROXY protocol counters."""

    def __init__(self, identity, frontends, pools, now, wall):
        """``frontends``: (config Frontend, slim) pairs in file order; ``pools``: the
        BackendPools in file order. Proxy ids (iid) follow the file, and a listen section's
        two halves share one, as in HAProxy."""
        self.identity = identity
        self.started = now
        self.started_wall = wall
        self.stopping = False
        self.cum_conns = 0
        self.conn_rate = self.max_conn_rate = 0
        self.dropped_logs = 0
        self.pp_received = Tally({(version, command): 0 for version in (1, 2)
                                    for command in ("PROXY", "LOCAL")})
        self.pp_rejected = Tally({kind: 0 for kind in HEADER_ERROR_KINDS})
        self.trust_decisions = Tally()
        self.local_checks_absorbed = 0
        self.header_errors = HeaderErrorRing()
        sections = sorted([(frontend.line, frontend.name) for frontend, _ in frontends] +
                          [(pool.backend.line, pool.backend.name) for pool in pools])
        iids = {}
        for _, name in sections:
            iids.setdefault(name, len(iids) + 1)
        self.frontends = [FrontendStats(frontend, iids[frontend.name], slim)
                          for frontend, slim in frontends]
        self.backends = [BackendStats(pool, iids[pool.backend.name], now) for pool in pools]
        self._seconds = 0
        self._cum_seen = 0

    def backend(self, name):
        return next((be for be in self.backends if be.name == name), None)

    @property
    def current_connections(self):
        return sum(fe.scur for fe in self.frontends)

    @property
    def bytes_out(self):
        return sum(fe.bout for fe in self.frontends)

    def apply_totals(self, total, now):
        """Show ``total``, the workers' stats_snapshots added up (master.aggregate_counters):
        counters as they are, each server's state, weight and connections through its pool,
        check results from the checking worker. Rates come from the next tick()."""
        process = total.get("process", {})
        self.cum_conns = process.get("cum_conns", 0)
        self.dropped_logs = process.get("dropped_logs", 0)
        self.local_checks_absorbed = process.get("local_checks_absorbed", 0)
        for key, n in process.get("pp_received", {}).items():
            version, command = key.split(" ")
            self.pp_received[int(version), command] = n
        self.pp_rejected.update(process.get("pp_rejected", {}))
        self.trust_decisions = Tally(process.get("trust_decisions", {}))
        ring = self.header_errors
        ring.events.clear()
        for number, (wall, frontend, peer, kind, reason, data, received) in enumerate(
                sorted(total.get("header_errors", []))[-ring.events.maxlen:], 1):
            ring.events.append(HeaderErrorEvent(number, wall, frontend, peer, kind, reason,
                                                bytes.fromhex(data), received))
        ring.total = process.get("header_errors_total", 0)
        for fe in self.frontends:
            _st_load(fe, total.get("frontends", {}).get(fe.name), ("scur",))
        for be in self.backends:
            data = total.get("backends", {}).get(be.name)
            if data is None:
                continue
            _st_load(be, data, ("scur", "qmax") + _SN_ERRORS)
            be.queued = data.get("qcur", 0)
            for srv in be.servers:
                _st_load_server(be.pool, srv, data["servers"].get(srv.name), now)
            be.settle(now)

    def tick(self, now):
        """Once a second, from a loop timer: rates, and every SPARK_EVERY seconds a sample."""
        self.conn_rate = max(0, self.cum_conns - self._cum_seen)
        self._cum_seen = self.cum_conns
        self.max_conn_rate = max(self.max_conn_rate, self.conn_rate)
        self._seconds += 1
        sample = self._seconds % SPARK_EVERY == 0
        for fe in self.frontends:
            fe._count_second()
            if sample:
                fe._sample(fe.scur)
        for be in self.backends:
            be._count_second()
            if sample:
                be._sample(be.scur)
            for srv in be.servers:
                srv._count_second()
                if sample:
                    srv._sample(srv.scur)


# -- one proxy over several processes (see the module docstring) ---------------------------------

_SN_COUNTED = ("stot", "smax", "bin", "bout")
_SN_ERRORS = ("econ", "wretr", "wredis")
_SN_CHECK = ("check_status", "check_duration", "last_check", "check_health", "chkfail",
             "chkdown")


def stats_snapshot(stats, now, checking):
    """``stats`` as plain data (JSON), by name; gauges and totals only, so that snapshots of
    several processes add up. ``checking``: this process runs the health checks, so its
    check results are the ones to show."""
    def counted(obj, *fields):
        # Counters at 0 are left out (most are, on most servers): a snapshot must fit one
        # channel message (channel.MESSAGE_MAX).
        data = {field: getattr(obj, field) for field in _SN_COUNTED + fields
                if getattr(obj, field)}
        data["ends"] = {end: n for end, n in obj.ends.items() if n}
        return data

    def server(srv):
        state = srv.state
        data = counted(srv, *_SN_ERRORS)
        data.update(scur=state.active, status=state.status, admin=state.admin,
                    healthy=state.healthy, dns_maint=state.dns_maint, weight=state.weight,
                    maxconn=state.maxconn, last_session_age=None if srv.last_session is None
                    else now - srv.last_session)
        if checking and state.config.check:
            data["check"] = {field: getattr(srv, field) for field in _SN_CHECK}
        return data

    return {
        "process": {"cum_conns": stats.cum_conns, "dropped_logs": stats.dropped_logs,
                    "local_checks_absorbed": stats.local_checks_absorbed,
                    "header_errors_total": stats.header_errors.total,
                    "pp_received": {"%d %s" % key: n for key, n in stats.pp_received.items()},
                    "pp_rejected": dict(stats.pp_rejected),
                    "trust_decisions": dict(stats.trust_decisions)},
        "header_errors": [[event.wall, event.frontend, event.peer, event.kind, event.reason,
                           event.data.hex(), event.received]
                          for event in stats.header_errors.events],
        "frontends": {fe.name: counted(fe, "scur") for fe in stats.frontends},
        "backends": {be.name: dict(counted(be, "scur", "qmax", *_SN_ERRORS), qcur=be.qcur,
                                   servers={srv.name: server(srv) for srv in be.servers})
                     for be in stats.backends},
    }


def _st_load(obj, data, fields):
    if data is None:
        return
    for field in _SN_COUNTED + fields:
        setattr(obj, field, data.get(field, 0))
    obj.ends = Tally(data["ends"])


def _st_load_server(pool, srv, data, now):
    if data is None:
        return
    _st_load(srv, data, _SN_ERRORS)
    state = srv.state
    before, was_healthy = state.status, state.healthy
    pool.set_health(state, data["healthy"])
    pool.set_dns_maint(state, data["dns_maint"])
    if data["admin"] != state.admin:
        pool.set_admin(state, data["admin"])
    pool.set_weight(state, data["weight"])
    pool.set_maxconn(state, data["maxconn"])
    state.active = data.get("scur", 0)
    if state.status != before:
        srv.state_changed(now, before, by_check=state.healthy != was_healthy)
    for field, value in data.get("check", {}).items():
        setattr(srv, field, value)
    age = data["last_session_age"]
    srv.last_session = None if age is None else now - age
