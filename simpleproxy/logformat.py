"""Log line builders for ``log-format = json`` and RFC 5424 syslog framing: pure functions.

``json_log_line`` gives one JSON object per connection, with stable keys (documented, never
renamed): ``client``, ``peer``, ``frontend``, ``backend``, ``server``, ``Tw``, ``Tc``,
``Tt`` (ms; ``Tc`` null without a connection to a server), ``bytes_in``, ``bytes_out``,
``end``, ``trust`` (null on binds without header handling), ``pp`` ("v2/TCP4", "v2/LOCAL",
null without a header), ``retries``, ``reason`` (null or the detail), ``rule`` (the frontend
rule that routed or rejected the connection, as the tcplog's ``rule=``; null when none did),
and one key per TLV
received that simpleproxy knows (``vpce``, ``authority``, ``alpn``, ``unique_id``, ``netns``,
``ssl``, ``azure_linkid``, ``gcp_psc_connection_id``). Client bytes are text decoded with
backslash escapes, then JSON-encoded ASCII-only, so a line is always one line of ASCII.

``syslog_frame`` wraps a line as RFC 5424: ``<PRI>1 TIMESTAMP HOST APP PROCID - - MSG``.
"""
import json
import time

from .proxyproto import header_as_dict

FACILITY_LOCAL0 = 16
SEVERITY_INFO = 6
SYSLOG_MAX = 1024             # bytes of a frame, HAProxy's default "len"

# TLV views of proxyproto.header_as_dict, by the key the JSON line uses.
_LF_TLV_KEYS = (("aws_vpce_id", "vpce"), ("authority", "authority"), ("alpn", "alpn"),
                ("unique_id", "unique_id"), ("netns", "netns"), ("ssl", "ssl"),
                ("azure_linkid", "azure_linkid"),
                ("gcp_psc_connection_id", "gcp_psc_connection_id"))


def proxy_text(header):
    """What the log says about a PROXY header received: v2/TCP4, v2/LOCAL, ..."""
    return "v%d/%s" % (header.version, header.command if header.command == "LOCAL"
                       else header.family)


def json_log_line(client, peer, frontend, backend, server, tw_ms, tc_ms, tt_ms, bytes_in,
                  bytes_out, end, trust=None, header=None, retries=0, reason=None, rule=None):
    """One connection's line as a JSON object (see the module docstring)."""
    record = {
        "client": client, "peer": peer, "frontend": frontend, "backend": backend,
        "server": server, "Tw": tw_ms, "Tc": tc_ms, "Tt": tt_ms, "bytes_in": bytes_in,
        "bytes_out": bytes_out, "end": end, "trust": trust,
        "pp": proxy_text(header) if header is not None else None,
        "retries": retries, "reason": reason, "rule": rule,
    }
    if header is not None and header.tlvs:
        view = header_as_dict(header)
        for name, key in _LF_TLV_KEYS:
            if name in view:
                record[key] = view[name]
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"))


def _lf_header_field(text):
    """An RFC 5424 header field: printable ASCII without spaces, 1-255 bytes, or "-"."""
    cleaned = "".join(c for c in text if "!" <= c <= "~")[:255]
    return cleaned or "-"


def syslog_frame(message, wall, hostname, pid, severity=SEVERITY_INFO,
                 facility=FACILITY_LOCAL0, app="simpleproxy", limit=SYSLOG_MAX):
    """``message`` (text) as one RFC 5424 frame of at most ``limit`` bytes, UTC timestamp
    with milliseconds; a longer message is cut (never a UTF-8 sequence in half)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(wall))
    head = "<%d>1 %s.%03dZ %s %s %d - - " % (facility * 8 + severity, stamp,
                                             int(wall * 1000) % 1000, _lf_header_field(hostname),
                                             _lf_header_field(app), pid)
    frame = (head + message.replace("\n", " ")).encode("utf-8", "backslashreplace")
    return frame[:limit].decode("utf-8", "ignore").encode("utf-8")
