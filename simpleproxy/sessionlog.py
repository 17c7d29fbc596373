"""A finished session's log line: tcplog (``log-format = tcplog``, the default) or JSON.

The proxy calls the frontend's builder once per connection, only when the line will be
written (proxy.Proxy.session_closed). A builder reads what the session holds directly: it
runs on the hot path of every connection logged at log-level info. Everything a client
controls in a line (a Unix path, a TLV's value) is escaped.
"""
from .logformat import json_log_line, proxy_text
from .logs import log_escape
from .proxyproto import aws_vpce_id


def endpoint_text(endpoint):
    """How an endpoint reads in the log: 1.2.3.4:5, [::1]:5, unix@/path, or - when unknown."""
    if endpoint.__class__ is tuple:          # (host, port): nearly every line's, so first
        return ("[%s]:%d" if ":" in endpoint[0] else "%s:%d") % endpoint
    if endpoint is None:
        return "-"
    # A Unix path is the client's choice (its own socket's, or a v2 header's): escaped.
    if endpoint.startswith("\0"):
        return "unix@@" + log_escape(endpoint[1:])     # abstract namespace, as ss(8) shows it
    return "unix@" + (log_escape(endpoint) if endpoint else "(unnamed)")


def tcplog_line(session, detail=None):
    """The connection's line in the spirit of HAProxy's tcplog: the fields every line has,
    in one format, then those a connection may have; ``detail`` is the end's reason."""
    client = endpoint_text(session.client)
    connected_at = session.connected_at
    line = "%s peer=%s fe=%s be=%s Tw=%d Tc=%s Tt=%d in=%d out=%d end=%s" % (
        client, client if session.peer is session.client else endpoint_text(session.peer),
        session.fe.frontend.name, session.server.label if session.server is not None else "-",
        session.queue_wait * 1000,
        "%d" % ((connected_at - session.connect_started) * 1000)
        if connected_at is not None else "-",
        (session.loop.now - session.started) * 1000, session.bytes_in, session.bytes_out,
        session.end)
    header = session.header
    if session.trust is not None:
        line += " trust=" + session.trust.rule_for(header)
    if session.rule is not None:
        line += " rule=" + session.rule
    if header is not None:
        line += " pp=" + proxy_text(header)
        vpce = aws_vpce_id(header) if header.tlvs else None
        if vpce:
            line += " vpce=" + log_escape(vpce)
    if len(session.tried) > 1:
        line += " retries=%d" % (len(session.tried) - 1)
    if detail:
        line += ' reason="%s"' % detail.replace('"', "'")
    return line


def json_line(session, detail=None):
    """The same facts as tcplog_line, as one JSON object (``log-format = json``)."""
    server = session.server
    return json_log_line(
        endpoint_text(session.client), endpoint_text(session.peer), session.fe.frontend.name,
        session.pool.backend.name if server is not None else None,
        server.config.name if server is not None else None,
        int(session.queue_wait * 1000),
        int((session.connected_at - session.connect_started) * 1000)
        if session.connected_at is not None else None,
        int((session.loop.now - session.started) * 1000), session.bytes_in, session.bytes_out,
        session.end, session.trust.rule_for(session.header) if session.trust is not None else None,
        session.header, len(session.tried) - 1 if session.tried else 0, detail, session.rule)
