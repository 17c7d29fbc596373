"""/metrics: Prometheus text exposition 0.0.4 of a ``ProxyStats``, a pure function.

The names, help texts and labels are those of HAProxy 2.6's own exporter (``http-request
use-service prometheus-exporter``), so dashboards made for it work: ``haproxy_process_*``,
``haproxy_frontend_*{proxy=...}``, ``haproxy_backend_*{proxy=...}`` and
``haproxy_server_*{proxy=...,server=...}``. ``haproxy_server_status`` has one series per
state (DOWN, UP, MAINT, DRAIN, NOLB, HAProxy's order), the current one at 1.

simpleproxy's own PROXY protocol counters go under ``simpleproxy_``: headers received by
version and command, refused by kind, trust rule decisions, LOCAL checks absorbed.

Label values are escaped as the format says (backslash, double quote, line feed).
"""
from .balancer import DOWN, DRAIN, MAINT, UP
from .stats import BAD_HEADER_PREFIX, CLIENT_ABORT_ENDS, DENIED_PREFIX, SERVER_ABORT_ENDS

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"
METRICS_SERVER_STATES = (DOWN, UP, MAINT, DRAIN, "NOLB")

_MT_SESSIONS = "Number of current sessions on the frontend, backend or server"
_MT_MAX_SESSIONS = "Highest value of current sessions encountered since process started"
_MT_LIMIT = "Frontend/listener/server's maxconn, backend's fullconn"
_MT_TOTAL = "Total number of sessions since process started"
_MT_BYTES_IN = "Total number of request bytes since process started"
_MT_BYTES_OUT = "Total number of response bytes since process started"
_MT_RATE_MAX = "Highest value of sessions per second observed since the worker process started"
_MT_CONN_ERRORS = "Total number of failed connections to server since the worker process started"
_MT_RETRIES = "Total number of server connection retries since the worker process started"
_MT_REDISPATCH = ("Total number of server redispatches due to connection failures since the "
                  "worker process started")
_MT_STATUS = "Current status of the service, per state label value."
_MT_WEIGHT = ("Server's effective weight, or sum of active servers' effective weights for a "
              "backend")
_MT_LB = ("Total number of requests routed by load balancing since the worker process started "
          "(ignores queue pop and stickiness)")
_MT_CHANGE = "How long ago the last server state changed, in seconds"
_MT_DOWNTIME = "Total time spent in DOWN state, for server or backend"
_MT_UP_DOWN = ("Total number of failed checks causing UP to DOWN server transitions, per "
               "server/backend, since the worker process started")
_MT_CLI_ABORTS = ("Total number of requests or connections aborted by the client since the "
                  "worker process started")
_MT_SRV_ABORTS = ("Total number of requests or connections aborted by the server since the "
                  "worker process started")
_MT_QUEUE = "Number of current queued connections"
_MT_MAX_QUEUE = "Highest value of queued connections encountered since process started"


def escape_label(value):
    """A label value as the exposition format wants it inside double quotes."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _mt_labels(pairs):
    return "{%s}" % ",".join('%s="%s"' % (name, escape_label(value)) for name, value in pairs)


def _mt_number(value):
    if isinstance(value, float):
        return repr(value)
    return "%d" % value


class _MtWriter(object):
    """Collects the families: one # HELP and # TYPE per name, then its samples."""

    def __init__(self):
        self.lines = []

    def family(self, name, kind, help_text, samples):
        """``samples``: (label pairs, value) for each series."""
        self.family_text(name, kind, help_text,
                         [(_mt_labels(labels) if labels else "", value)
                          for labels, value in samples])

    def family_text(self, name, kind, help_text, samples):
        """``samples``: (labels already written, value) for each series."""
        self.lines.append("# HELP %s %s" % (name, help_text))
        self.lines.append("# TYPE %s %s" % (name, kind))
        self.lines += ["%s%s %s" % (name, labels, _mt_number(value))
                       for labels, value in samples]

    def text(self):
        return "\n".join(self.lines) + "\n"


def _mt_process(out, stats, now):
    identity = stats.identity
    for name, kind, help_text, value in (
            ("nbthread", "gauge", "Number of started threads (global.nbthread)", 1),
            ("nbproc", "gauge", "Number of started worker processes (historical, always 1)", 1),
            ("relative_process_id", "gauge", "Relative worker process number (1)", 1),
            ("uptime_seconds", "gauge",
             "How long ago this worker process was started (seconds)", int(now - stats.started)),
            ("start_time_seconds", "gauge", "Start time in seconds", int(stats.started_wall)),
            ("max_connections", "gauge", "Hard limit on the number of per-process connections "
             "(configured or imposed by Ulimit-n)", identity.maxconn),
            ("max_fds", "gauge", "Hard limit on the number of per-process file descriptors",
             identity.ulimit_n),
            ("current_connections", "gauge",
             "Current number of connections on this worker process",
             stats.current_connections),
            ("connections_total", "counter",
             "Total number of connections on this worker process since started",
             stats.cum_conns),
            ("current_connection_rate", "gauge", "Number of front connections created on this "
             "worker process over the last second", stats.conn_rate),
            ("max_connection_rate", "gauge", "Highest ConnRate reached on this worker process "
             "since started (in connections per second)", stats.max_conn_rate),
            ("stopping", "gauge", "1 if the worker process is currently stopping, otherwise zero",
             int(stats.stopping)),
            ("bytes_out_total", "counter", "Total number of bytes emitted by current worker "
             "process since started", stats.bytes_out),
            ("dropped_logs_total", "counter", "Total number of dropped logs for current worker "
             "process since started", stats.dropped_logs)):
        out.family("haproxy_process_" + name, kind, help_text, [((), value)])
    out.family("haproxy_process_build_info", "gauge", "Build info",
               [((("version", identity.version),), 1)])


def _mt_scoped(out, scope, items, label, metrics):
    """One family per metric over ``items``; ``label(item)`` gives the series' labels,
    written once per item rather than once per sample."""
    labelled = [(_mt_labels(label(item)), item) for item in items]
    for name, kind, help_text, value in metrics:
        out.family_text("haproxy_%s_%s" % (scope, name), kind, help_text,
                        [(labels, value(item)) for labels, item in labelled])


def _mt_aborts(causes):
    return lambda counted: counted.ended(causes=causes)


def exposition(stats, now):
    """The whole /metrics page."""
    out = _MtWriter()
    _mt_process(out, stats, now)
    frontends = stats.frontends
    _mt_scoped(out, "frontend", frontends, lambda fe: (("proxy", fe.name),), (
        ("current_sessions", "gauge", _MT_SESSIONS, lambda fe: fe.scur),
        ("max_sessions", "gauge", _MT_MAX_SESSIONS, lambda fe: fe.smax),
        ("limit_sessions", "gauge", _MT_LIMIT, lambda fe: fe.slim),
        ("sessions_total", "counter", _MT_TOTAL, lambda fe: fe.stot),
        ("connections_total", "counter", "Total number of new connections accepted on this "
         "frontend since the worker process started", lambda fe: fe.stot),
        ("max_session_rate", "gauge", _MT_RATE_MAX, lambda fe: fe.rate_max),
        ("bytes_in_total", "counter", _MT_BYTES_IN, lambda fe: fe.bin),
        ("bytes_out_total", "counter", _MT_BYTES_OUT, lambda fe: fe.bout),
        ("request_errors_total", "counter", "Total number of invalid requests since process "
         "started", lambda fe: fe.ended(prefix=BAD_HEADER_PREFIX)),
        ("denied_connections_total", "counter", "Total number of incoming connections blocked "
         "on a listener/frontend by a tcp-request connection rule since the worker process "
         "started", lambda fe: fe.ended(prefix=DENIED_PREFIX)),
    ))
    _mt_status(out, "frontend", [((("proxy", fe.name),), DOWN if stats.stopping else UP)
                                 for fe in frontends], ("DOWN", "UP"))
    backends = stats.backends
    _mt_scoped(out, "backend", backends, lambda be: (("proxy", be.name),), (
        ("current_queue", "gauge", _MT_QUEUE, lambda be: be.qcur),
        ("max_queue", "gauge", _MT_MAX_QUEUE, lambda be: be.qmax),
        ("current_sessions", "gauge", _MT_SESSIONS, lambda be: be.scur),
        ("max_sessions", "gauge", _MT_MAX_SESSIONS, lambda be: be.smax),
        ("sessions_total", "counter", _MT_TOTAL, lambda be: be.stot),
        ("max_session_rate", "gauge", _MT_RATE_MAX, lambda be: be.rate_max),
        ("bytes_in_total", "counter", _MT_BYTES_IN, lambda be: be.bin),
        ("bytes_out_total", "counter", _MT_BYTES_OUT, lambda be: be.bout),
        ("connection_errors_total", "counter", _MT_CONN_ERRORS, lambda be: be.econ),
        ("retry_warnings_total", "counter", _MT_RETRIES, lambda be: be.wretr),
        ("redispatch_warnings_total", "counter", _MT_REDISPATCH, lambda be: be.wredis),
        ("client_aborts_total", "counter", _MT_CLI_ABORTS, _mt_aborts(CLIENT_ABORT_ENDS)),
        ("server_aborts_total", "counter", _MT_SRV_ABORTS, _mt_aborts(SERVER_ABORT_ENDS)),
        ("weight", "gauge", _MT_WEIGHT,
         lambda be: sum(state.weight for state in be.pool.candidates)),
        ("active_servers", "gauge", "Total number of active UP servers with a non-zero weight",
         lambda be: be.pool.usable_counts()[0]),
        ("backup_servers", "gauge", "Total number of backup UP servers with a non-zero weight",
         lambda be: be.pool.usable_counts()[1]),
        ("check_up_down_total", "counter", _MT_UP_DOWN,
         lambda be: sum(srv.chkdown for srv in be.servers)),
        ("check_last_change_seconds", "gauge", _MT_CHANGE, lambda be: int(now - be.lastchg)),
        ("downtime_seconds_total", "counter", _MT_DOWNTIME,
         lambda be: int(be.total_downtime(now))),
        ("loadbalanced_total", "counter", _MT_LB, lambda be: be.stot),
    ))
    _mt_status(out, "backend", [((("proxy", be.name),), UP if be.up else DOWN)
                                for be in backends], (DOWN, UP))
    servers = [(be, srv) for be in backends for srv in be.servers]
    _mt_scoped(out, "server", servers,
               lambda pair: (("proxy", pair[0].name), ("server", pair[1].name)), (
        ("current_sessions", "gauge", _MT_SESSIONS, lambda pair: pair[1].scur),
        ("max_sessions", "gauge", _MT_MAX_SESSIONS, lambda pair: pair[1].smax),
        ("limit_sessions", "gauge", _MT_LIMIT, lambda pair: pair[1].state.maxconn),
        ("sessions_total", "counter", _MT_TOTAL, lambda pair: pair[1].stot),
        ("max_session_rate", "gauge", _MT_RATE_MAX, lambda pair: pair[1].rate_max),
        ("last_session_seconds", "gauge", "How long ago some traffic was seen on this object "
         "on this worker process, in seconds",
         lambda pair: -1 if pair[1].last_session is None else int(now - pair[1].last_session)),
        ("bytes_in_total", "counter", _MT_BYTES_IN, lambda pair: pair[1].bin),
        ("bytes_out_total", "counter", _MT_BYTES_OUT, lambda pair: pair[1].bout),
        ("connection_errors_total", "counter", _MT_CONN_ERRORS, lambda pair: pair[1].econ),
        ("retry_warnings_total", "counter", _MT_RETRIES, lambda pair: pair[1].wretr),
        ("redispatch_warnings_total", "counter", _MT_REDISPATCH, lambda pair: pair[1].wredis),
        ("client_aborts_total", "counter", _MT_CLI_ABORTS,
         lambda pair: pair[1].ended(causes=CLIENT_ABORT_ENDS)),
        ("server_aborts_total", "counter", _MT_SRV_ABORTS,
         lambda pair: pair[1].ended(causes=SERVER_ABORT_ENDS)),
        ("weight", "gauge", _MT_WEIGHT, lambda pair: pair[1].state.weight),
        ("check_failures_total", "counter", "Total number of failed individual health checks "
         "per server/backend, since the worker process started", lambda pair: pair[1].chkfail),
        ("check_up_down_total", "counter", _MT_UP_DOWN, lambda pair: pair[1].chkdown),
        ("check_last_change_seconds", "gauge", _MT_CHANGE,
         lambda pair: int(now - pair[1].lastchg)),
        ("check_duration_seconds", "gauge", "Total duration of the latest server health check, "
         "in seconds.", lambda pair: (pair[1].check_duration or 0) / 1000.0),
        ("downtime_seconds_total", "counter", _MT_DOWNTIME,
         lambda pair: int(pair[1].total_downtime(now))),
        ("loadbalanced_total", "counter", _MT_LB, lambda pair: pair[1].stot),
    ))
    _mt_status(out, "server", [((("proxy", be.name), ("server", srv.name)), srv.state.status)
                               for be, srv in servers], METRICS_SERVER_STATES)
    _mt_proxy_protocol(out, stats)
    return out.text()


def _mt_status(out, scope, items, states):
    """haproxy_<scope>_status: a series per state for each item, the current one at 1."""
    out.family("haproxy_%s_status" % scope, "gauge", _MT_STATUS,
               [(labels + (("state", state),), int(state == current))
                for labels, current in items for state in states])


def _mt_proxy_protocol(out, stats):
    out.family("simpleproxy_proxy_headers_received_total", "counter",
               "PROXY headers accepted, by protocol version and command",
               [((("version", "v%d" % version), ("command", command)), count)
                for (version, command), count in sorted(stats.pp_received.items())])
    out.family("simpleproxy_proxy_headers_rejected_total", "counter",
               "PROXY headers refused, by kind of error",
               [((("kind", kind),), count) for kind, count in sorted(stats.pp_rejected.items())])
    out.family("simpleproxy_trust_decisions_total", "counter",
               "Connections by the trust rule that applied to their peer",
               [((("rule", rule),), count)
                for rule, count in sorted(stats.trust_decisions.items())])
    out.family("simpleproxy_local_checks_absorbed_total", "counter",
               "LOCAL connections (a peer's health checks) ended before any payload, never "
               "sent to a server", [((), stats.local_checks_absorbed)])
