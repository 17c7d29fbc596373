"""The [global] keys of the runtime API, the stats listener and the log, as pure parsers.

Each takes the value as written and returns a frozen namedtuple, or raises ValueError with a
message in config.py's style ("... (expected ...)"), for the config reader to put its file,
line and key in front of:

    stats socket = /run/simpleproxy.sock [mode 600] [level admin|user]   (or HOST:PORT)
    stats http = 127.0.0.1:8404
    stats auth = user:password
    stats refresh = 5s
    stats name = HAProxy
    log-format = tcplog | json
    log = stderr | stdout | /path/file | syslog | syslog@HOST:PORT
"""
from collections import namedtuple

from .config_values import ValueKind, bind_address, ip_listen_address, parse_duration

StatsSocket = namedtuple("StatsSocket", "address mode level")
StatsSocket.__doc__ = """stats socket: an Address (a Unix path or a TCP endpoint), the Unix
socket's permission bits (int, 0o600 by default) and the level, "admin" or "user"."""

StatsAuth = namedtuple("StatsAuth", "user password")

StatsHttpSettings = namedtuple("StatsHttpSettings", "address auth refresh name")
StatsHttpSettings.__doc__ = """The stats listener: its Address, a StatsAuth or None, the
page's refresh in whole seconds (None: never) and the name the page and realm show."""

LogTarget = namedtuple("LogTarget", "kind destination")
LogTarget.__doc__ = """Where log lines go. kind: "stderr", "stdout", "file" (destination: the
path), "syslog" (destination: "/dev/log") or "syslog-udp" (destination: (host, port))."""

LOG_FORMATS = ("tcplog", "json")
STATS_LEVELS = ("admin", "user")
DEFAULT_SOCKET_MODE = 0o600
DEFAULT_STATS_NAME = "simpleproxy"
SYSLOG_PATH = "/dev/log"
SYSLOG_PORT = 514
_SC_SOCKET_FORMS = "/path/to.sock [mode 600] [level admin|user], or HOST:PORT"


def parse_stats_socket(text):
    words = text.split()
    if not words:
        raise ValueError("no address (expected %s)" % _SC_SOCKET_FORMS)
    where = words[0]
    if where.startswith("/"):
        address = bind_address("unix@" + where)._replace(text=where)
    else:
        address = ip_listen_address(where)
    options = {"mode": "600", "level": "admin"}
    rest = words[1:]
    while rest:
        if rest[0] not in options or len(rest) < 2:
            raise ValueError("unknown or incomplete option '%s' (expected %s)"
                             % (rest[0], _SC_SOCKET_FORMS))
        options[rest[0]] = rest[1]
        rest = rest[2:]
    try:
        mode = int(options["mode"], 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise ValueError("mode '%s' is not octal permissions (expected such as 600)"
                         % options["mode"])
    if options["level"] not in STATS_LEVELS:
        raise ValueError("level '%s' is unknown (expected admin or user)" % options["level"])
    return StatsSocket(address, mode, options["level"])


def parse_stats_http(text):
    return ip_listen_address(text.strip())


def parse_stats_auth(text):
    user, colon, password = text.strip().partition(":")
    if not colon or not user or not password:
        raise ValueError("'%s' is not user:password (expected user:password)" % text)
    return StatsAuth(user, password)


def parse_stats_refresh(text):
    """Whole seconds, at least 1 (a meta refresh counts in seconds)."""
    seconds = parse_duration(text.strip())
    if seconds < 1:
        raise ValueError("'%s' is below a second (expected a duration such as 5s)" % text)
    return int(seconds)


def parse_stats_name(text):
    name = text.strip()
    if not name or not name.isprintable():
        raise ValueError("'%s' is not a printable name (expected such as HAProxy)" % text)
    return name


def parse_log_format(text):
    word = text.strip()
    if word not in LOG_FORMATS:
        raise ValueError("'%s' is not a log format (expected tcplog or json)" % word)
    return word


def parse_log_target(text):
    word = text.strip()
    if word in ("stderr", "stdout"):
        return LogTarget(word, None)
    if word == "syslog":
        return LogTarget("syslog", SYSLOG_PATH)
    if word.startswith("syslog@"):
        endpoint = word[len("syslog@"):]
        if not endpoint.rpartition(":")[2].isdigit():
            endpoint += ":%d" % SYSLOG_PORT
        address = ip_listen_address(endpoint)
        return LogTarget("syslog-udp", address.sockaddr)
    if word.startswith("/"):
        return LogTarget("file", word)
    raise ValueError("'%s' is not a log destination (expected stderr, stdout, /path/file, "
                     "syslog or syslog@HOST:PORT)" % word)


# The keys' values as config.py reads them (its errors get the file, line and key in front).
STATS_SOCKET_VALUE = ValueKind(parse_stats_socket, _SC_SOCKET_FORMS)
STATS_HTTP_VALUE = ValueKind(parse_stats_http, "IPv4:PORT, :PORT or [IPv6]:PORT")
STATS_AUTH_VALUE = ValueKind(parse_stats_auth, "user:password")
STATS_REFRESH_VALUE = ValueKind(parse_stats_refresh, "a duration of a second or more, such as 5s")
STATS_NAME_VALUE = ValueKind(parse_stats_name, "a printable name, such as HAProxy")
LOG_FORMAT_VALUE = ValueKind(parse_log_format, "tcplog or json")
LOG_TARGET_VALUE = ValueKind(parse_log_target, "stderr, stdout, /path/file, syslog or "
                                               "syslog@HOST:PORT")
