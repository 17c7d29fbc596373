"""JSON log lines and RFC 5424 syslog frames."""
import json

from simpleproxy.logformat import json_log_line, syslog_frame
from simpleproxy.proxyproto import build_v2, parse_header


def test_json_line_keys_and_tlvs():
    header = build_v2(("203.0.113.7", 5555), ("10.0.0.1", 80),
                      tlvs=[(0x02, "ex\u00e9mple\n\".com".encode()), (0x01, b"h2\xff"),
                            (0xEA, b"\x01vpce-0abc")])
    parsed = parse_header(header)
    line = json_log_line("203.0.113.7:5555", "127.0.0.1:4000", "web", "app", "s1", 0, 1, 12,
                         1042, 22, "normal", "accept-proxy", parsed)
    assert "\n" not in line and all(ord(c) < 128 for c in line)
    record = json.loads(line)
    assert list(record)[:15] == ["client", "peer", "frontend", "backend", "server", "Tw", "Tc",
                                 "Tt", "bytes_in", "bytes_out", "end", "trust", "pp",
                                 "retries", "reason"]
    assert record["pp"] == "v2/TCP4" and record["vpce"] == "vpce-0abc"
    assert record["authority"] == "ex\u00e9mple\n\".com" and record["alpn"] == "h2\\xff"


def test_json_line_names_the_rule_that_routed_it():
    record = json.loads(json_log_line("1.2.3.4:5", "1.2.3.4:5", "web", "vip", "v1", 0, 1, 3,
                                      5, 5, "normal", rule="use_backend:2"))
    assert record["rule"] == "use_backend:2" and list(record)[15] == "rule"
    assert json.loads(json_log_line("1.2.3.4:5", "1.2.3.4:5", "web", None, None, 0, None, 3,
                                    0, 0, "no-server"))["rule"] is None


def test_json_line_without_header():
    record = json.loads(json_log_line("1.2.3.4:5", "1.2.3.4:5", "web", None, None, 0, None, 3,
                                      0, 0, "no-server"))
    assert (record["pp"], record["Tc"], record["trust"], record["server"]) == (None,) * 4


def test_syslog_frame():
    frame = syslog_frame("203.0.113.7:5555 end=normal", 1796610032.25, "vm one", 42)
    assert frame == (b"<134>1 2026-12-07T02:20:32.250Z vmone simpleproxy 42 - - "
                     b"203.0.113.7:5555 end=normal")
    cut = syslog_frame("\u00e9" * 2000, 0, "h", 1, limit=100)
    assert len(cut) <= 100 and cut.decode("utf-8")
