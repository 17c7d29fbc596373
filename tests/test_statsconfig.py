"""The parsers of the new [global] keys: stats socket, stats http, stats auth, stats
refresh, stats name, log-format and log."""
import pytest

from simpleproxy.statsconfig import (LogTarget, StatsAuth, parse_log_format, parse_log_target,
                                     parse_stats_auth, parse_stats_http, parse_stats_name,
                                     parse_stats_refresh, parse_stats_socket)


@pytest.mark.parametrize("text, expected", [
    ("/run/sp.sock", ("unix", "/run/sp.sock", 0o600, "admin")),
    ("/run/sp.sock mode 660 level user", ("unix", "/run/sp.sock", 0o660, "user")),
    ("127.0.0.1:9999", ("ipv4", ("127.0.0.1", 9999), 0o600, "admin")),
    ("[::1]:9999 level user", ("ipv6", ("::1", 9999), 0o600, "user")),
    ("/run/sp.sock level root", "level 'root' is unknown (expected admin or user)"),
    ("/run/sp.sock mode 999", "mode '999' is not octal permissions (expected such as 600)"),
    ("/run/sp.sock mode", "unknown or incomplete option 'mode'"),
    ("localhost:9999", "'localhost' is not an IPv4 address"),
    ("::1:9999", "needs brackets around the IPv6 address"),
    ("unix@/run/sp.sock", "has no port"),
    ("", "no address"),
])
def test_stats_socket(text, expected):
    if isinstance(expected, str):
        with pytest.raises(ValueError) as error:
            parse_stats_socket(text)
        assert expected in str(error.value)
    else:
        parsed = parse_stats_socket(text)
        assert (parsed.address.family, parsed.address.sockaddr, parsed.mode,
                parsed.level) == expected


@pytest.mark.parametrize("parse, text, expected", [
    (parse_stats_http, "127.0.0.1:8404", ("127.0.0.1", 8404)),
    (parse_stats_auth, "admin:pa:ss", StatsAuth("admin", "pa:ss")),
    (parse_stats_refresh, "5s", 5),
    (parse_stats_refresh, "1m", 60),
    (parse_stats_name, "HAProxy", "HAProxy"),
    (parse_log_format, "json", "json"),
    (parse_log_format, "tcplog", "tcplog"),
    (parse_log_target, "stderr", LogTarget("stderr", None)),
    (parse_log_target, "/var/log/sp.log", LogTarget("file", "/var/log/sp.log")),
    (parse_log_target, "syslog", LogTarget("syslog", "/dev/log")),
    (parse_log_target, "syslog@127.0.0.1", LogTarget("syslog-udp", ("127.0.0.1", 514))),
    (parse_log_target, "syslog@[::1]:1514", LogTarget("syslog-udp", ("::1", 1514))),
])
def test_global_values(parse, text, expected):
    parsed = parse(text)
    assert (parsed.sockaddr if parse is parse_stats_http else parsed) == expected


@pytest.mark.parametrize("parse, text, message", [
    (parse_stats_http, "127.0.0.1", "has no port"),
    (parse_stats_http, "127.0.0.1:0", "is not a port"),
    (parse_stats_auth, "admin", "is not user:password"),
    (parse_stats_auth, ":pw", "is not user:password"),
    (parse_stats_refresh, "500ms", "is below a second"),
    (parse_stats_name, "a\tb", "is not a printable name"),
    (parse_log_format, "httplog", "is not a log format (expected tcplog or json)"),
    (parse_log_target, "journald", "is not a log destination"),
    (parse_log_target, "syslog@host.example:514", "is not an IPv4 address"),
])
def test_global_value_errors(parse, text, message):
    with pytest.raises(ValueError) as error:
        parse(text)
    assert message in str(error.value)
