"""The master's view of one proxy: what the stats socket and the stats listener show and act
on when there are workers (master.py).

An operator must see one proxy however many workers serve it, so under a master the stats
socket and the stats listener are served by the master itself, on an EventLoop of its own
(``Master.loop``, run beside its supervision), and ``MasterView`` is their target (the
interface admin.py describes):

* Counters. Once a second the master asks every serving worker for its stats_snapshot
  (``Master.request_counters``), adds them up (``aggregate_counters``) and loads the sum into
  a ProxyStats of its own (``ProxyStats.apply_totals``), over BackendPools that stand for the
  workers' servers; its ``tick`` makes the whole proxy's rates and sparklines. A view is
  thus at most a second old. The workers of an older generation, still finishing their
  connections after a reload, are not counted any more: a reload starts the counters over,
  as it does in HAProxy.
* States. Every worker holds the one health view (the checking worker's verdicts, passed on
  by the master) and the operator's settings, so a server's state comes with the snapshots;
  its check results come from the checking worker's.
* ``set server`` and kin go through ``Master.set_server_admin``: applied in every worker,
  remembered and replayed to each new worker after a restart or a reload, by backend and
  server name; the view shows them at once.
* ``/health`` says 503 from the moment SIGUSR1 arrives (while ``grace`` runs) on.
* ``show sess`` lists the ``SESSIONS_IN_SNAPSHOT`` oldest connections of each worker, as
  its last snapshot had them (so that a snapshot stays small however busy the worker).

The stats listener is the master's rather than each worker's on a shared socket because a
worker's answer could only show its own share: the sum exists in the master alone.
"""
import time

from .admin import SessionView, log_server_setting
from .balancer import BackendPool
from .discovery import ip_address
from .proxy import STATS_TICK, default_maxconn, process_identity
from .resolve import resolved_address
from .stats import ProxyStats

SESSIONS_IN_SNAPSHOT = 100    # the oldest live connections of a worker that show sess lists


class MasterView(object):
    """The runtime API's target under a master (see the module docstring)."""

    def __init__(self, master):
        self.master = master
        self.loop = master.loop
        self.stats = self.pools = None
        self.sessions = []            # the workers' session_records, from the last snapshots
        self._poll_timer = self.loop.timer(self._poll)
        self.build(master.config)

    def build(self, config):
        """A fresh view of ``config`` (at start and after a reload), with what operators set
        and where DNS put the servers."""
        settings = config.global_settings
        maxconn = settings.maxconn or default_maxconn()
        self.pools = {name: BackendPool(backend) for name, backend in config.backends.items()}
        self.stats = ProxyStats(process_identity(settings, maxconn),
                                [(frontend, frontend.maxconn or maxconn)
                                 for frontend in config.frontends],
                                list(self.pools.values()), self.loop.now, time.time())
        for (backend, server), values in self.master.server_admin.items():
            found = self._server(backend, server)
            if found is not None:
                self._show(found[0], found[1], values.get("state"), values.get("weight"),
                           values.get("maxconn"))
        for (backend, server), fields in self.master.current_addresses():
            self.show_resolution(backend, server, *fields)

    def start(self):
        self._poll_timer.arm(self.loop.now + STATS_TICK)

    def _poll(self):
        self._poll_timer.arm(self.loop.now + STATS_TICK)
        self.master.request_counters(self._counted)

    def _counted(self, snapshots):
        if snapshots:
            total = aggregate_counters(snapshots)
            self.stats.apply_totals(total, self.loop.now)
            self.sessions = total.get("sessions", [])
        self.stats.tick(self.loop.now)

    def _server(self, backend, server):
        pool = self.pools.get(backend)
        for state in pool.servers if pool is not None else ():
            if state.config.name == server:
                return pool, state
        return None

    def show_resolution(self, backend, server, address, maint, status):
        """The checking worker's ``server-addr`` (channel.py) in the view, as soon as it comes."""
        found = self._server(backend, server)
        if found is None:
            return
        pool, state = found
        if address != "-":
            state.address = resolved_address(state.config.address, ip_address(address))
        state.dns_status = status
        pool.set_dns_maint(state, maint == "1")

    def _show(self, pool, state, admin, weight, maxconn):
        """An operator's setting in the view, before the workers' next snapshot confirms it."""
        if admin is not None and admin != state.admin:
            pool.set_admin(state, admin)
        if weight is not None:
            pool.set_weight(state, weight)
        if maxconn is not None:
            pool.set_maxconn(state, maxconn)

    # -- the target admin.py and statshttp.py act on ------------------------------------------

    def stats_model(self):
        master = self.master
        self.stats.stopping = master.soft_stop_at is not None or master.stopping
        return self.stats

    def clock(self):
        return self.loop.now, time.time()

    def session_views(self):
        now = self.loop.now
        return sorted((session_view(record, now) for record in self.sessions),
                      key=lambda view: view.started)

    def set_server(self, backend, server, state=None, weight=None, maxconn=None):
        pool, target = self._server(backend, server)
        was = target.admin, target.weight, target.maxconn
        error = self.master.set_server_admin(backend, server, state, weight, maxconn)
        if error is not None:
            return error
        log_server_setting(target.label, was, (state, weight, maxconn))
        self._show(pool, target, state, weight, maxconn)
        return None


def session_record(view, now):
    """A worker's SessionView as JSON data: its age instead of its start (each process has a
    clock of its own), TLV values as latin-1 text (one character per byte)."""
    return list(view[:7]) + [now - view.started, view.bytes_in, view.bytes_out, view.proxy,
                             [[name, value.decode("latin-1")] for name, value in view.tlvs]]


def session_view(record, now):
    """The SessionView a session_record was made from (its start on the master's clock)."""
    age, tlvs = record[7], record[11]
    return SessionView(*(record[:7] + [now - age] + record[8:11] + [tuple(
        (name, value.encode("latin-1")) for name, value in tlvs)]))


def aggregate_counters(snapshots):
    """The workers' snapshots (worker.counter_snapshot) as one proxy's: numbers added up
    (a server's maxconn is a worker's share: the sum is the proxy's), lists put together,
    the most recent ``last_session_age``; anything else (a server's status, admin state,
    weight) as the first worker has it: verdicts and operators' settings reach every worker
    through the master."""
    total = {"workers": len(snapshots)}
    for snapshot in snapshots:
        _add(total, {field: value for field, value in snapshot.items()
                     if field not in _MV_OWN_FIELDS})
    return total


_MV_OWN_FIELDS = ("pid", "stopping_softly")     # a worker's own, not the proxy's


def _add(into, counters):
    for field, value in counters.items():
        if isinstance(value, dict):
            _add(into.setdefault(field, {}), value)
        elif isinstance(value, list):
            into.setdefault(field, []).extend(value)
        elif field == "last_session_age":
            if into.get(field) is None or (value is not None and value < into[field]):
                into[field] = value
        elif isinstance(value, int) and not isinstance(value, bool) and field != "weight":
            into[field] = into.get(field, 0) + value
        else:
            into.setdefault(field, value)
