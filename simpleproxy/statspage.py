"""The stats page: one self-contained HTML document drawn from a ``ProxyStats``.

No external assets and no script: inline CSS, inline SVG sparklines, and a meta refresh every
``stats refresh`` seconds. A table per proxy: the frontend, each server, the backend, with
the state colour-coded (UP, DOWN, DRAIN, MAINT, backup), sessions (current/max/total), the
session rate, bytes in and out, errors by kind, the queue and the last check. Every name and
every text a client or a server can influence goes through ``html.escape``.
"""
from html import escape

from .balancer import DOWN, DRAIN, MAINT, UP
from .endings import END_INTERNAL_ERROR
from .stats import BAD_HEADER_PREFIX, DENIED_PREFIX, SPARK_EVERY, SPARK_SAMPLES
from .statsviews import proxies, server_status

_PG_STYLE = """
body{font:13px sans-serif;margin:1em;color:#222;background:#fafafa}
h1{font-size:18px}h2{font-size:15px;margin:1.2em 0 .3em}
table{border-collapse:collapse;background:#fff;table-layout:fixed;width:100%}
th,td{border:1px solid #ccc;padding:2px 6px;text-align:right;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}
th{background:#eee}td.name{text-align:left;font-weight:bold}
td.text{text-align:left;white-space:normal}
.UP{background:#c6efc6}.DOWN{background:#f4b5b5}.DRAIN{background:#bcd4f6}
.MAINT{background:#c9c9c9}.backup{background:#f6e9a6}.OPEN{background:#c6efc6}
.STOP{background:#f4b5b5}svg{vertical-align:middle}
"""
SPARK_WIDTH = 120
SPARK_HEIGHT = 20


def sparkline(samples):
    """An inline SVG polyline of the samples, scaled to its own maximum and stretched to
    the width of its cell."""
    values = list(samples)
    if len(values) < 2:
        return '<svg width="100%%" height="%d"></svg>' % SPARK_HEIGHT
    top = max(values) or 1
    step = SPARK_WIDTH / float(SPARK_SAMPLES - 1)
    start = SPARK_WIDTH - step * (len(values) - 1)
    points = " ".join("%.1f,%.1f" % (start + step * n, SPARK_HEIGHT - 1 -
                                     (SPARK_HEIGHT - 2) * value / float(top))
                      for n, value in enumerate(values))
    return ('<svg width="100%%" height="%d" viewBox="0 0 %d %d" preserveAspectRatio="none" '
            'role="img"><title>max %d</title><polyline fill="none" stroke="#36c" '
            'stroke-width="1.5" vector-effect="non-scaling-stroke" points="%s"/></svg>'
            % (SPARK_HEIGHT, SPARK_WIDTH, SPARK_HEIGHT, top, points))


def _pg_state_class(srv):
    state = srv.state.status
    if state == UP and srv.state.config.backup:
        return "backup"
    return state if state in (UP, DOWN, DRAIN, MAINT) else DOWN


def _pg_errors(counted):
    """Errors by kind as "kind n" pairs, the ends that are not a normal close."""
    parts = ["%s %d" % (cause, count) for cause, count in sorted(counted.ends.items())
             if count and (cause.startswith(BAD_HEADER_PREFIX) or cause.startswith(DENIED_PREFIX)
                           or cause.startswith("connect-") or cause == END_INTERNAL_ERROR)]
    return escape(", ".join(parts)) or "-"


_PG_COLUMNS = (("", 8), ("state", 7), ("cur", 4), ("max", 4), ("total", 6), ("rate", 4),
               ("bytes in", 8), ("bytes out", 8), ("errors", 18), ("queue", 6), ("check", 15),
               ("sessions", 6), ("bytes", 6))      # (heading, width in % of the page)
_PG_HEAD = ("<colgroup>" + "".join('<col style="width:%d%%">' % width
                                   for _, width in _PG_COLUMNS) + "</colgroup><tr>" +
            "".join("<th>%s</th>" % heading for heading, _ in _PG_COLUMNS) + "</tr>")


def _pg_row(name, state_class, state_text, counted, scur, queue, check):
    numbers = "".join("<td>%s</td>" % value for value in (
        scur, counted.smax, counted.stot, counted.rate, counted.bin, counted.bout))
    return ('<tr><td class="name">%s</td><td class="%s">%s</td>%s<td class="text">%s</td>'
            '<td>%s</td><td class="text">%s</td><td>%s</td><td>%s</td></tr>' % (
                escape(name), state_class, escape(state_text), numbers, _pg_errors(counted),
                queue, check, sparkline(counted.spark_sessions),
                sparkline(counted.spark_bytes)))


def stats_page(stats, now, wall, refresh):
    """The whole page, refreshing itself every ``refresh`` seconds (None: never): a table
    per proxy, its frontend first, then its servers and its backend, as HAProxy's page."""
    identity = stats.identity
    out = ["<!DOCTYPE html><html><head><meta charset=\"utf-8\">"]
    if refresh:
        out.append('<meta http-equiv="refresh" content="%d">' % refresh)
    out.append("<title>%s statistics</title><style>%s</style></head><body>"
               % (escape(identity.name), _PG_STYLE))
    out.append("<h1>%s %s on %s</h1><p>pid %d, up %ds, %d connections now, %d in all%s. "
               "Sparklines: the last %d minutes.</p>" % (
                   escape(identity.name), escape(identity.version), escape(identity.node),
                   identity.pid, now - stats.started, stats.current_connections,
                   stats.cum_conns, ", <b>stopping</b>" if stats.stopping else "",
                   SPARK_SAMPLES * SPARK_EVERY // 60))
    for _, fe, be in proxies(stats):
        kind = "listen" if fe and be else "frontend" if fe else "backend"
        out.append("<h2>%s %s</h2><table>%s" % (kind, escape((fe or be).name), _PG_HEAD))
        if fe is not None:
            status = "STOP" if stats.stopping else "OPEN"
            out.append(_pg_row("FRONTEND", status, status, fe, fe.scur, "", ""))
        if be is not None:
            out.append(_pg_backend_rows(be))
        out.append("</table>")
    out.append("</body></html>\n")
    return "".join(out)


def _pg_backend_rows(be):
    out = []
    for srv in be.servers:
        check = "-"
        if srv.check_status is not None:
            check = "%s %s" % (escape(srv.check_status), escape(srv.last_check))
            if srv.check_duration is not None:
                check += " in %dms" % srv.check_duration
        out.append(_pg_row(srv.name, _pg_state_class(srv), server_status(srv), srv, srv.scur,
                           "", check))
    state = "UP" if be.up else "DOWN"
    out.append(_pg_row("BACKEND", state, state, be, be.scur,
                       "%d (max %d)" % (be.qcur, be.qmax), ""))
    return "".join(out)
