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
th,td{border:1px solid #ccc;padding:2px 4px;text-align:right;white-space:nowrap;
overflow:hidden;text-overflow:ellipsis}
th{background:#eee}td.name{text-align:left;font-weight:bold}
td.text{text-align:left;white-space:normal}td.errors{text-align:left}td.spark{padding:1px 4px}
.UP{background:#c6efc6}.DOWN{background:#f4b5b5}.DRAIN{background:#bcd4f6}
.MAINT{background:#c9c9c9}.backup{background:#f6e9a6}.OPEN{background:#c6efc6}
.STOP{background:#f4b5b5}svg{vertical-align:middle;display:block;margin:auto}
"""
SPARK_WIDTH = 120              # px, for SPARK_SAMPLES samples: about one a pixel
SPARK_HEIGHT = 24
_PG_BYTE_UNITS = ("KiB", "MiB", "GiB", "TiB")
_PG_SPARK_SPAN = "the last %d minutes" % (SPARK_SAMPLES * SPARK_EVERY // 60)


def human_bytes(count):
    """A byte count to read at a glance: exact below 1 KiB, else in KiB, MiB, ... (IEC)."""
    if count < 1024:
        return "%d B" % count
    value = float(count)
    for unit in _PG_BYTE_UNITS:
        value /= 1024
        if value < 1024 or unit == _PG_BYTE_UNITS[-1]:
            return "%.1f %s" % (value, unit)


def sparkline(samples, what, shown=str):
    """An inline SVG of the samples on a fixed time axis (the newest at the right edge, the
    whole width is SPARK_SAMPLES samples), scaled to its own maximum, over a baseline, the
    newest value marked; its title (the tooltip) says what it is, min, max and now, each
    drawn by ``shown``."""
    values = list(samples)
    box = '<svg width="%d" height="%d" viewBox="0 0 %d %d" role="img">' % (
        SPARK_WIDTH, SPARK_HEIGHT, SPARK_WIDTH, SPARK_HEIGHT)
    baseline = ('<line x1="0" y1="%.1f" x2="%d" y2="%.1f" stroke="#bbb" stroke-width="1"/>'
                % (SPARK_HEIGHT - 0.5, SPARK_WIDTH, SPARK_HEIGHT - 0.5))
    if not values:
        return '%s<title>%s: no sample yet</title>%s</svg>' % (box, what, baseline)
    top = max(values) or 1
    step = (SPARK_WIDTH - 4) / float(SPARK_SAMPLES - 1)      # 2 px kept for the mark
    points = [(SPARK_WIDTH - 2 - step * (len(values) - 1 - n),
               SPARK_HEIGHT - 2 - (SPARK_HEIGHT - 5) * value / float(top))
              for n, value in enumerate(values)]
    title = "%s over the last %d s: min %s, max %s, now %s" % (
        what, (len(values) - 1) * SPARK_EVERY, shown(min(values)),
        shown(max(values)), shown(values[-1]))
    return ('%s<title>%s</title>%s<polyline fill="none" stroke="#36c" stroke-width="1.5" '
            'points="%s"/><circle cx="%.1f" cy="%.1f" r="2" fill="#c33"/></svg>' % (
                box, title, baseline, " ".join("%.1f,%.1f" % point for point in points),
                points[-1][0], points[-1][1]))


def _pg_state_class(srv):
    state = srv.state.status
    if state == UP and srv.state.config.backup:
        return "backup"
    return state if state in (UP, DOWN, DRAIN, MAINT) else DOWN


def _pg_errors(counted):
    """Errors by kind, a "kind n" line each, the ends that are not a normal close."""
    parts = ["%s %d" % (cause, count) for cause, count in sorted(counted.ends.items())
             if count and (cause.startswith(BAD_HEADER_PREFIX) or cause.startswith(DENIED_PREFIX)
                           or cause.startswith("connect-") or cause == END_INTERNAL_ERROR)]
    return "<br>".join(escape(part) for part in parts) or "-"


_PG_SPARK_COLUMN = "%dpx" % (SPARK_WIDTH + 10)     # its padding and borders
# (heading, its tooltip, width): percentages of the page, the sparklines' in pixels
_PG_COLUMNS = (("", "", "8%"), ("state", "", "6.5%"), ("cur", "current sessions", "3.5%"),
               ("max", "highest sessions at once", "3.5%"), ("total", "sessions in all", "5%"),
               ("rate", "sessions in the last second", "3.5%"),
               ("bytes in", "from clients", "7%"), ("bytes out", "to clients", "7%"),
               ("errors", "by kind", "15%"), ("queue", "", "6.5%"),
               ("check", "the last health check: result and duration", "12%"),
               ("sessions", "current sessions, a sample every %d s, %s"
                % (SPARK_EVERY, _PG_SPARK_SPAN), _PG_SPARK_COLUMN),
               ("bytes", "bytes moved in each %d s, %s" % (SPARK_EVERY, _PG_SPARK_SPAN),
                _PG_SPARK_COLUMN))
_PG_HEAD = ("<colgroup>" + "".join('<col style="width:%s">' % width
                                   for _, _, width in _PG_COLUMNS) + "</colgroup><tr>" +
            "".join('<th title="%s">%s</th>' % (tooltip, heading) if tooltip else
                    "<th>%s</th>" % heading for heading, tooltip, _ in _PG_COLUMNS) + "</tr>")


def _pg_bytes_cell(count):
    return '<td title="%d bytes">%s</td>' % (count, human_bytes(count))


def _pg_row(name, state_class, state_text, counted, scur, queue, check):
    numbers = "".join("<td>%s</td>" % value for value in (
        scur, counted.smax, counted.stot, counted.rate))
    return ('<tr><td class="name">%s</td><td class="%s">%s</td>%s%s%s'
            '<td class="errors">%s</td><td>%s</td><td class="text">%s</td>'
            '<td class="spark">%s</td><td class="spark">%s</td></tr>' % (
                escape(name), state_class, escape(state_text), numbers,
                _pg_bytes_cell(counted.bin), _pg_bytes_cell(counted.bout), _pg_errors(counted),
                queue, check, sparkline(counted.spark_sessions, "sessions"),
                sparkline(counted.spark_bytes, "bytes per %d s" % SPARK_EVERY, human_bytes)))


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
               "Sparklines: %s.</p>" % (
                   escape(identity.name), escape(identity.version), escape(identity.node),
                   identity.pid, now - stats.started, stats.current_connections,
                   stats.cum_conns, ", <b>stopping</b>" if stats.stopping else "",
                   _PG_SPARK_SPAN))
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
