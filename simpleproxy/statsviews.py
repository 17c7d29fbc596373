"""The stats socket's text views, drawn from a ``ProxyStats``: pure functions, no I/O.

Each is HAProxy 2.6's format (doc/management.txt, "CSV format" and "Unix Socket commands"),
so that the tools written for HAProxy read them unchanged:

* ``show_info``: ``Key: value`` lines, HAProxy's keys in HAProxy's order (tools match
  ``^Maxconn:`` and ``^node:``); what simpleproxy has no value for says 0.
* ``show_stat``: the CSV, all 128 columns of 2.6.12 in their order, the header line starting
  with ``# `` and every line ending in a comma, as HAProxy writes them (hatop skips rows of
  fewer than 51 commas). A FRONTEND row per frontend; per backend, a row per server and then
  a BACKEND row. Columns simpleproxy has no value for stay empty.
* ``show_servers_state``: the state file format (version 1).
* ``show_sess`` and ``show_errors``: simpleproxy's own lines in HAProxy's spirit, with every
  byte a client controls escaped.

Times: ``now`` is the loop's monotonic clock, ``wall`` the time of day (time.time()).
"""
import re
import time

from .balancer import DRAIN, MAINT, UP
from .endings import END_INTERNAL_ERROR
from .logs import log_escape
from .stats import (BAD_HEADER_PREFIX, CHECK_STATUSES, CLIENT_ABORT_ENDS, DENIED_PREFIX,
                    SERVER_ABORT_ENDS)

STAT_COLUMNS = (
    "pxname svname qcur qmax scur smax slim stot bin bout dreq dresp ereq econ eresp wretr "
    "wredis status weight act bck chkfail chkdown lastchg downtime qlimit pid iid sid throttle "
    "lbtot tracked type rate rate_lim rate_max check_status check_code check_duration hrsp_1xx "
    "hrsp_2xx hrsp_3xx hrsp_4xx hrsp_5xx hrsp_other hanafail req_rate req_rate_max req_tot "
    "cli_abrt srv_abrt comp_in comp_out comp_byp comp_rsp lastsess last_chk last_agt qtime "
    "ctime rtime ttime agent_status agent_code agent_duration check_desc agent_desc check_rise "
    "check_fall check_health agent_rise agent_fall agent_health addr cookie mode algo conn_rate "
    "conn_rate_max conn_tot intercepted dcon dses wrew connect reuse cache_lookups cache_hits "
    "srv_icur src_ilim qtime_max ctime_max rtime_max ttime_max eint idle_conn_cur "
    "safe_conn_cur used_conn_cur need_conn_est uweight agg_server_status "
    "agg_server_check_status agg_check_status - ssl_sess ssl_reused_sess ssl_failed_handshake "
    "h2_headers_rcvd h2_data_rcvd h2_settings_rcvd h2_rst_stream_rcvd h2_goaway_rcvd "
    "h2_detected_conn_protocol_errors h2_detected_strm_protocol_errors h2_rst_stream_resp "
    "h2_goaway_resp h2_open_connections h2_backend_open_streams h2_total_connections "
    "h2_backend_total_streams h1_open_connections h1_open_streams h1_total_connections "
    "h1_total_streams h1_bytes_in h1_bytes_out h1_spliced_bytes_in h1_spliced_bytes_out"
).split()

# show stat typed: each field's origin, nature and scope letters and its type, as HAProxy
# 2.6 prints them (a BACKEND row counts a few fields differently).
_SV_TYPED_TAGS = dict(pair.split("=") for pair in (
    "pxname=KNS:str svname=KNS:str qcur=MGP:u32 qmax=MMP:u32 scur=MGP:u32 smax=MMP:u32 "
    "slim=CLP:u32 stot=MCP:u64 bin=MCP:u64 bout=MCP:u64 dreq=MCP:u64 dresp=MCP:u64 "
    "ereq=MCP:u64 econ=MCP:u64 eresp=MCP:u64 wretr=MCP:u64 wredis=MCP:u64 status=SGP:str "
    "weight=MaP:u32 act=SGP:u32 bck=SGP:u32 chkfail=MCP:u64 chkdown=MCP:u64 lastchg=MAP:u32 "
    "downtime=MCP:u32 pid=KGP:u32 iid=KGS:u32 sid=KGS:u32 lbtot=MCP:u64 type=CGS:u32 "
    "rate=MRP:u32 rate_lim=CLP:u32 rate_max=MMP:u32 check_status=MOP:str "
    "check_duration=MDP:u64 cli_abrt=MCP:u64 srv_abrt=MCP:u64 lastsess=MAP:s32 "
    "last_chk=MOP:str check_desc=MOP:str check_rise=CGS:u32 check_fall=CGS:u32 "
    "check_health=CGS:u32 addr=CGS:str mode=CGS:str algo=CGS:str conn_rate=MRP:u32 "
    "conn_rate_max=MMP:u32 conn_tot=MCP:u64 dcon=MCP:u64 dses=MCP:u64 wrew=MCP:u64 "
    "eint=MCP:u64 uweight=MaP:u32"
).split())
_SV_TYPED_BACKEND_TAGS = dict(_SV_TYPED_TAGS, rate="MGP:u32", rate_max="MGP:u32",
                              act="MGP:u32", bck="MGP:u32")
_SV_TYPED_LETTERS = "FBS"      # by the type column: frontend, backend, server

# The "type" column and the bits of show stat's TYPE filter.
TYPE_FRONTEND, TYPE_BACKEND, TYPE_SERVER = 0, 1, 2
SHOW_ALL = -1

# show servers state: HAProxy's numbers for check statuses, results and server states.
_SV_CHECK_STATUS_NUMBERS = {"INI": 1, "SOCKERR": 5, "L4OK": 6, "L4TOUT": 7, "L4CON": 8,
                            "L7TOUT": 12, "L7RSP": 13, "L7OK": 15}
_SV_CHECK_RESULT_FAILED, _SV_CHECK_RESULT_PASSED = 2, 3
_SV_CHECK_CONFIGURED_ENABLED = 0x2 | 0x4
_SV_OP_STOPPED, _SV_OP_RUNNING = 0, 2
_SV_ADMIN_BITS = {MAINT: 0x01, DRAIN: 0x08}    # SRV_ADMF_FMAINT, SRV_ADMF_FDRAIN
_SV_ADMIN_DNS_MAINT = 0x20                      # SRV_ADMF_RMAINT: no address from DNS
SERVERS_STATE_COLUMNS = (
    "be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result srv_check_health "
    "srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord "
    "srv_use_ssl srv_check_port srv_check_addr srv_agent_addr srv_agent_port")


# -- show info -----------------------------------------------------------------------------------

def show_info(stats, now, wall):
    """``show info``: HAProxy 2.6's keys, in its order. hatop needs a word after
    ``Release_date:``, so a build without a release date says ``-``."""
    identity = stats.identity
    uptime = int(now - stats.started)
    days, rest = divmod(uptime, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    session_rate = sum(fe.rate for fe in stats.frontends)
    current = stats.current_connections
    values = [
        ("Name", identity.name), ("Version", identity.version),
        ("Release_date", identity.release_date or "-"), ("Nbthread", 1), ("Nbproc", 1),
        ("Process_num", 1), ("Pid", identity.pid),
        ("Uptime", "%dd %dh%02dm%02ds" % (days, hours, minutes, seconds)),
        ("Uptime_sec", uptime), ("Memmax_MB", 0), ("PoolAlloc_MB", 0), ("PoolUsed_MB", 0),
        ("PoolFailed", 0), ("Ulimit-n", identity.ulimit_n), ("Maxsock", identity.ulimit_n),
        ("Maxconn", identity.maxconn), ("Hard_maxconn", identity.maxconn),
        ("CurrConns", current), ("CumConns", stats.cum_conns), ("CumReq", 0),
        ("MaxSslConns", 0), ("CurrSslConns", 0), ("CumSslConns", 0), ("Maxpipes", 0),
        ("PipesUsed", 0), ("PipesFree", 0), ("ConnRate", stats.conn_rate),
        ("ConnRateLimit", 0), ("MaxConnRate", stats.max_conn_rate),
        ("SessRate", session_rate), ("SessRateLimit", 0),
        ("MaxSessRate", max([fe.rate_max for fe in stats.frontends] or [0])),
        ("SslRate", 0), ("SslRateLimit", 0), ("MaxSslRate", 0), ("SslFrontendKeyRate", 0),
        ("SslFrontendMaxKeyRate", 0), ("SslFrontendSessionReuse_pct", 0),
        ("SslBackendKeyRate", 0), ("SslBackendMaxKeyRate", 0), ("SslCacheLookups", 0),
        ("SslCacheMisses", 0), ("CompressBpsIn", 0), ("CompressBpsOut", 0),
        ("CompressBpsRateLim", 0), ("Tasks", current), ("Run_queue", 0), ("Idle_pct", 100),
        ("node", identity.node),
    ]
    if identity.description:
        values.append(("description", identity.description))
    values += [
        ("Stopping", int(stats.stopping)), ("Jobs", current), ("Unstoppable Jobs", 0),
        ("Listeners", len(stats.frontends)), ("ActivePeers", 0), ("ConnectedPeers", 0),
        ("DroppedLogs", stats.dropped_logs), ("BusyPolling", 0), ("FailedResolutions", 0),
        ("TotalBytesOut", stats.bytes_out), ("TotalSplicdedBytesOut", 0),   # HAProxy's spelling
        ("BytesOutRate", 0), ("DebugCommandsIssued", 0), ("CumRecvLogs", 0),
        ("Build info", identity.version), ("Memmax_bytes", 0), ("PoolAlloc_bytes", 0),
        ("PoolUsed_bytes", 0), ("Start_time_sec", int(stats.started_wall)), ("Tainted", 0),
    ]
    return "".join("%s: %s\n" % (key, _sv_one_line(value)) for key, value in values)


def _sv_one_line(value):
    """A value on one line: a name or description cannot break the Key: value format."""
    return str(value).replace("\r", " ").replace("\n", " ")


# -- show stat -----------------------------------------------------------------------------------

def server_status(srv):
    """The status column of a server: UP, DOWN, DRAIN, MAINT, "no check", or a check count on
    its way ("UP 1/3": one failed check of the three that take it down; "DOWN 1/2")."""
    state = srv.state.status
    server = srv.state.config
    if state in (MAINT, DRAIN):
        return state
    if not server.check:
        return "no check"
    health, rise, fall = srv.check_health, server.rise, server.fall
    if state == UP:
        return "UP %d/%d" % (health - rise + 1, fall) if health < rise + fall - 1 else UP
    return "DOWN %d/%d" % (health, rise) if 0 < health < rise else state


def _sv_aborts(counted):
    return counted.ended(causes=CLIENT_ABORT_ENDS), counted.ended(causes=SERVER_ABORT_ENDS)


def _sv_last_session(srv_list, now):
    stamps = [srv.last_session for srv in srv_list if srv.last_session is not None]
    return int(now - max(stamps)) if stamps else -1


def frontend_row(stats, fe):
    return {
        "pxname": fe.name, "svname": "FRONTEND", "scur": fe.scur, "smax": fe.smax,
        "slim": fe.slim, "stot": fe.stot, "bin": fe.bin, "bout": fe.bout, "dreq": 0,
        "dresp": 0, "ereq": fe.ended(prefix=BAD_HEADER_PREFIX),
        "status": "STOP" if stats.stopping else "OPEN", "pid": 1, "iid": fe.iid, "sid": 0,
        "type": TYPE_FRONTEND, "rate": fe.rate, "rate_lim": 0, "rate_max": fe.rate_max,
        "mode": "tcp", "conn_rate": fe.rate, "conn_rate_max": fe.rate_max, "conn_tot": fe.stot,
        "dcon": fe.ended(prefix=DENIED_PREFIX), "dses": 0, "wrew": 0,
        "eint": fe.ends[END_INTERNAL_ERROR], "-": "-",
    }


def server_row(be, srv, now):
    state, server = srv.state, srv.state.config
    client_aborts, server_aborts = _sv_aborts(srv)
    row = {
        "pxname": be.name, "svname": srv.name, "qcur": 0, "qmax": 0, "scur": srv.scur,
        "smax": srv.smax, "slim": state.maxconn or "", "stot": srv.stot, "bin": srv.bin,
        "bout": srv.bout, "dresp": 0, "econ": srv.econ, "eresp": 0, "wretr": srv.wretr,
        "wredis": srv.wredis, "status": server_status(srv), "weight": state.weight,
        "act": int(not server.backup), "bck": int(server.backup), "lastchg": int(now - srv.lastchg),
        "pid": 1, "iid": be.iid, "sid": srv.sid, "lbtot": srv.stot, "type": TYPE_SERVER,
        "rate": srv.rate, "rate_max": srv.rate_max, "cli_abrt": client_aborts,
        "srv_abrt": server_aborts, "lastsess": _sv_last_session([srv], now),
        "addr": addr_column(state.address or server.address), "mode": "tcp",
        "eint": srv.ends[END_INTERNAL_ERROR],
        "uweight": state.weight, "-": "-",
    }
    if server.check:
        row.update({
            "chkfail": srv.chkfail, "chkdown": srv.chkdown,
            "downtime": int(srv.total_downtime(now)), "check_status": srv.check_status,
            "check_duration": "" if srv.check_duration is None else srv.check_duration,
            "last_chk": srv.last_check, "check_desc": CHECK_STATUSES[srv.check_status],
            "check_rise": server.rise, "check_fall": server.fall,
            "check_health": srv.check_health,
        })
    return row


def backend_row(be, now):
    client_aborts, server_aborts = _sv_aborts(be)
    normal, backup = be.pool.usable_counts()
    weight = sum(state.weight for state in be.pool.candidates)
    return {
        "pxname": be.name, "svname": "BACKEND", "qcur": be.qcur, "qmax": be.qmax,
        "scur": be.scur, "smax": be.smax, "stot": be.stot, "bin": be.bin, "bout": be.bout,
        "dreq": 0, "dresp": 0, "econ": be.econ, "eresp": 0, "wretr": be.wretr,
        "wredis": be.wredis, "status": "UP" if be.up else "DOWN", "weight": weight,
        "act": normal, "bck": backup, "chkdown": sum(srv.chkdown for srv in be.servers),
        "lastchg": int(now - be.lastchg), "downtime": int(be.total_downtime(now)), "pid": 1,
        "iid": be.iid, "sid": 0, "lbtot": be.stot, "type": TYPE_BACKEND, "rate": be.rate,
        "rate_max": be.rate_max, "cli_abrt": client_aborts, "srv_abrt": server_aborts,
        "lastsess": _sv_last_session(be.servers, now), "mode": "tcp",
        "algo": be.pool.backend.balance, "eint": be.ends[END_INTERNAL_ERROR], "uweight": weight,
        "-": "-",
    }


def proxies(stats):
    """(iid, FrontendStats or None, BackendStats or None) by proxy id: a listen section is
    one proxy with both halves."""
    halves = {}
    for fe in stats.frontends:
        halves.setdefault(fe.iid, [None, None])[0] = fe
    for be in stats.backends:
        halves.setdefault(be.iid, [None, None])[1] = be
    return [(iid, fe, be) for iid, (fe, be) in sorted(halves.items())]


def stat_rows(stats, now, iid=SHOW_ALL, types=SHOW_ALL, sid=SHOW_ALL):
    """The rows of ``show stat IID TYPE SID`` as dicts, in HAProxy's order: proxies by id,
    each proxy's frontend, then its servers, then its backend. -1 means all; ``types`` is a
    bit mask: 1 frontends, 2 backends, 4 servers."""
    rows = []
    for proxy_id, fe, be in proxies(stats):
        if iid != SHOW_ALL and proxy_id != iid:
            continue
        if fe is not None and types & 1 and sid in (SHOW_ALL, 0):
            rows.append(frontend_row(stats, fe))
        if be is None:
            continue
        if types & 4:
            rows += [server_row(be, srv, now) for srv in be.servers
                     if sid in (SHOW_ALL, srv.sid)]
        if types & 2 and sid in (SHOW_ALL, 0):
            rows.append(backend_row(be, now))
    return rows


_SV_CSV_SPECIAL = re.compile(r'[,"\r\n]')


def csv_field(value):
    """One CSV field; quoted when it holds a comma, a quote or a line break (as HAProxy's
    csv_enc does), so a reason text can never shift the columns."""
    if not isinstance(value, str):
        return str(value)
    if _SV_CSV_SPECIAL.search(value):
        return '"%s"' % value.replace('"', '""').replace("\r", " ").replace("\n", " ")
    return value


def show_stat(stats, now, iid=SHOW_ALL, types=SHOW_ALL, sid=SHOW_ALL):
    """``show stat`` and the stats listener's ``/;csv``: the header, then the rows, each
    line ending in a comma (the CLI adds its closing empty line)."""
    lines = ["# " + ",".join(STAT_COLUMNS) + ","]
    for row in stat_rows(stats, now, iid, types, sid):
        lines.append(",".join([csv_field(row[column]) if column in row else ""
                               for column in STAT_COLUMNS]) + ",")
    return "\n".join(lines) + "\n"


def show_stat_typed(stats, now, iid=SHOW_ALL, types=SHOW_ALL, sid=SHOW_ALL):
    """``show stat typed``: a line per field that has a value,
    ``F.IID.SID.INDEX.NAME.1:TAGS:TYPE:VALUE``."""
    lines = []
    for row in stat_rows(stats, now, iid, types, sid):
        tags = _SV_TYPED_BACKEND_TAGS if row["type"] == TYPE_BACKEND else _SV_TYPED_TAGS
        prefix = "%s.%d.%d." % (_SV_TYPED_LETTERS[row["type"]], row["iid"], row["sid"])
        lines += ["%s%d.%s.1:%s:%s" % (prefix, index, name, tags[name], _sv_one_line(row[name]))
                  for index, name in enumerate(STAT_COLUMNS)
                  if row.get(name, "") != "" and name in tags]
    return "".join(line + "\n" for line in lines)


def addr_column(address):
    """A server's address as HAProxy's addr column shows it: IP:PORT, [IPv6]:PORT, or the
    Unix socket path."""
    sockaddr = address.sockaddr
    if isinstance(sockaddr, str):
        return "unix@" + sockaddr
    host, port = sockaddr[0], sockaddr[1]
    return ("[%s]:%d" if ":" in host else "%s:%d") % (host, port)


# -- show servers state --------------------------------------------------------------------------

def show_servers_state(stats, now, backend=None):
    """``show servers state [backend]``: version 1 of HAProxy's state file, its 25 columns
    exactly (HAProxy's loader refuses a line with more), then, for the servers that follow a
    host name, the last lookup's outcome in comment lines, which a loader skips:
    ``# resolution BACKEND/SERVER STATUS`` (discovery.VALID, NX, TIMEOUT or OTHER)."""
    lines, outcomes = ["1", "# " + SERVERS_STATE_COLUMNS], []
    for be in stats.backends:
        if backend is not None and be.name != backend:
            continue
        for srv in be.servers:
            lines.append(" ".join(str(field) for field in _sv_server_state(be, srv, now)))
            if srv.state.dns_status is not None:
                outcomes.append("# resolution %s/%s %s" % (be.name, srv.name,
                                                             srv.state.dns_status))
    return "\n".join(lines + outcomes) + "\n"


def _sv_server_state(be, srv, now):
    state, server = srv.state, srv.state.config
    # Where new connections go (discovery may have moved it); "-": a host name with no
    # address yet (init-addr none).
    if state.address is None:
        host, port = "-", server.address.sockaddr[1]
    elif isinstance(state.address.sockaddr, str):
        host, port = state.address.sockaddr, 0
    else:
        host, port = state.address.sockaddr[:2]
    running = state.status in (UP, DRAIN) or (state.status == MAINT and state.healthy)
    if server.check:
        check = (_SV_CHECK_STATUS_NUMBERS[srv.check_status],
                 _SV_CHECK_RESULT_PASSED if state.healthy else _SV_CHECK_RESULT_FAILED,
                 srv.check_health, _SV_CHECK_CONFIGURED_ENABLED)
    else:
        check = (_SV_CHECK_STATUS_NUMBERS["INI"], 0, 0, 0)
    check_addr = server.check_addr.sockaddr[0] if server.check_addr is not None else "-"
    admin = _SV_ADMIN_BITS.get(state.admin, 0) | (_SV_ADMIN_DNS_MAINT if state.dns_maint else 0)
    return ((be.iid, be.name, srv.sid, srv.name, host,
             _SV_OP_RUNNING if running else _SV_OP_STOPPED, admin,
             state.weight, server.weight, int(now - srv.lastchg)) + check +
            (0, 0, 0, server.host or "-", port, "-", 0, server.check_port or 0, check_addr, "-", 0))


# -- show sess and show errors -------------------------------------------------------------------

def show_sess(views, now):
    """``show sess``: one line per live connection (``SessionView`` objects, see admin.py)."""
    lines = []
    for view in views:
        parts = ["%#x:" % view.id, "src=" + log_escape(view.client),
                 "peer=" + log_escape(view.peer),
                 "fe=" + view.frontend, "be=" + (view.backend or "<NONE>"),
                 "srv=" + (view.server or "<none>"), "state=" + view.state,
                 "age=%ds" % (now - view.started), "bytes_in=%d" % view.bytes_in,
                 "bytes_out=%d" % view.bytes_out]
        if view.proxy is not None:
            parts.append("pp=" + log_escape(view.proxy))
        for name, value in view.tlvs:
            parts.append("%s=%s" % (name, log_escape(value)))
        lines.append(" ".join(parts))
    return "".join(line + "\n" for line in lines)


def _sv_date(wall):
    """HAProxy's log date: [07/Dec/2026:02:20:34.462] (local time)."""
    return "[%s.%03d]" % (time.strftime("%d/%b/%Y:%H:%M:%S", time.localtime(wall)),
                          int(wall * 1000) % 1000)


def show_errors(stats, wall):
    """``show errors``: the refused PROXY headers kept, oldest first, each with a hex dump of
    its first bytes."""
    ring = stats.header_errors
    out = ["Total events captured on %s : %d\n" % (_sv_date(wall), ring.total)]
    for event in ring.events:
        out.append("\n%s frontend %s: PROXY header refused, %s (%s), event #%d\n"
                   % (_sv_date(event.wall), event.frontend, event.kind, log_escape(event.reason),
                      event.number))
        out.append("  src %s, %d bytes received, the first %d:\n"
                   % (log_escape(event.peer), event.received, len(event.data)))
        for offset in range(0, len(event.data), 16):
            chunk = event.data[offset:offset + 16]
            out.append("  %05d  %-47s  %s\n" % (
                offset, " ".join("%02x" % b for b in chunk),
                "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)))
    return "".join(out)
