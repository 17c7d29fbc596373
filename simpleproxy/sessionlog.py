"""A finished session's log line: tcplog (``log-format = tcplog``, the default) or JSON.

When the line will be written, the proxy takes the session's facts (``line_facts``: a tuple,
made in a fraction of the line's cost) and hands them with the frontend's builder to the log
writer, which builds the text when it writes its batch (logs.LogWriter). Built one after
another there, with their code and format warm, facts and text together cost about 40 %
less than a line built at the close, among the connection's other work (timed in one
running proxy, docs/benchmark.md). Everything a client controls in a line
(a Unix path, a TLV's value) is escaped.
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


def line_facts(session, trust_rule, detail):
    """What a closed session's line says, as the builders take it: (client, peer, frontend
    name, server or None, backend pool, Tw s, Tc s or None, Tt s, bytes in, bytes out, end,
    trust rule or None, routing rule or None, header or None, servers tried, detail).
    ``trust_rule``: the rule its bind's trust named for it (the proxy has it at hand)."""
    connected_at = session.connected_at
    return (session.client, session.peer, session.fe.frontend.name, session.server,
            session.pool, session.queue_wait,
            connected_at - session.connect_started if connected_at is not None else None,
            session.loop.now - session.started, session.bytes_in, session.bytes_out,
            session.end, trust_rule, session.rule, session.header, len(session.tried),
            detail)


def tcplog_line(facts):
    """The line in the spirit of HAProxy's tcplog: the fields every line has, in one format,
    then those a connection may have; ``detail`` is the end's reason."""
    (client, peer, frontend, server, _, queue_wait, connect_time, duration, bytes_in,
     bytes_out, end, trust, rule, header, tried, detail) = facts
    client_text = endpoint_text(client)
    line = "%s peer=%s fe=%s be=%s Tw=%d Tc=%s Tt=%d in=%d out=%d end=%s" % (
        client_text, client_text if peer is client else endpoint_text(peer), frontend,
        server.label if server is not None else "-", queue_wait * 1000,
        "%d" % (connect_time * 1000) if connect_time is not None else "-",
        duration * 1000, bytes_in, bytes_out, end)
    if trust is not None:
        line += " trust=" + trust
    if rule is not None:
        line += " rule=" + rule
    if header is not None:
        line += " pp=" + proxy_text(header)
        vpce = aws_vpce_id(header) if header.tlvs else None
        if vpce:
            line += " vpce=" + log_escape(vpce)
    if tried > 1:
        line += " retries=%d" % (tried - 1)
    if detail:
        line += ' reason="%s"' % detail.replace('"', "'")
    return line


def json_line(facts):
    """The same facts as tcplog_line, as one JSON object (``log-format = json``)."""
    (client, peer, frontend, server, pool, queue_wait, connect_time, duration, bytes_in,
     bytes_out, end, trust, rule, header, tried, detail) = facts
    return json_log_line(
        endpoint_text(client), endpoint_text(peer), frontend,
        pool.backend.name if server is not None else None,
        server.config.name if server is not None else None, int(queue_wait * 1000),
        int(connect_time * 1000) if connect_time is not None else None, int(duration * 1000),
        bytes_in, bytes_out, end, trust, header, tried - 1 if tried else 0, detail, rule)
