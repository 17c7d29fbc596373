"""The configuration: an INI file in HAProxy's words, read into frozen objects.

The file is configparser INI: ``key = value`` (``=`` is the only delimiter), keys keep
their case, ``#`` and ``;`` start a comment on a line of their own or after whitespace
(even inside quotes: write ``\\x23`` or ``\\x3b`` there), and indented lines continue the
value above them. A key without ``=`` is a flag (``option redispatch``).

Reading goes in three steps:

1. A line scan. configparser keeps no line numbers, so the scan walks the lines by the
   same rules to learn which lines each section and key span. It also reports what
   configparser would stop at or choke on: duplicated sections and keys (a duplicated
   server name among them), and an indented line under a key that has no value.
2. configparser itself, which owns the INI syntax and the values.
3. HAProxy's vocabulary: every key is checked against the kind of section it is in and
   converted, [defaults] fills in whatever a frontend, backend or listen leaves out, and
   the references between sections (default_backend, addresses bound twice) are
   checked last.

Every problem becomes one line, ``FILE:LINE: [SECTION] KEY: what is wrong (expected
...)``, and all of them are raised together in one ConfigError, sorted by line.
Nothing here opens a socket; a server's host name is resolved once, at load, as HAProxy
does at startup.
"""

import configparser
import ipaddress
import re
import socket
from collections import namedtuple

from .errors import ConfigError
from .process import parse_group, parse_user, parse_workers

# -- what the rest of simpleproxy reads ---------------------------------------------------

Address = namedtuple("Address", "family sockaddr text")
Address.__doc__ = """Where to listen or connect.

family: socket.AF_INET, AF_INET6 or AF_UNIX; sockaddr: ("1.2.3.4", 80), ("::1", 80)
or "/path"; text: the address as the user wrote it, for logs."""

Bind = namedtuple("Bind", "address accept_proxy accept_proxy_from proxy_optional_from "
                          "accept_proxy_version v6only proxy_max_header line")
Bind.__doc__ = """One listening address of a frontend.

accept_proxy: whether PROXY headers are handled on it at all. accept_proxy_from and
proxy_optional_from: tuples of ipaddress networks and/or the string "unix" (Unix-socket
peers); peers in the first must send a header, peers in the second may. An empty
accept_proxy_from with accept_proxy on trusts every peer. accept_proxy_version: "v1",
"v2" or "any". v6only: settled (see _CfgReader._settle_binds). proxy_max_header: bytes, the
bind's own value or else its frontend's."""

Frontend = namedtuple("Frontend", "name binds default_backend maxconn timeout_client "
                                  "timeout_client_fin timeout_proxy_header maxconn_per_source "
                                  "maxconn_pending_header dontlognull dontlog_normal line")
Frontend.__doc__ = """A frontend or the front half of a listen section.

maxconn None: only the global limit applies; maxconn_per_source 0: off. Timeouts are
float seconds."""

Server = namedtuple("Server", "name address send_proxy proxy_v2_options check check_send_proxy "
                              "inter fastinter downinter rise fall weight backup maxconn disabled "
                              "check_port check_addr check_send check_expect line")
Server.__doc__ = """One server line, with default-server and the built-in defaults applied.

send_proxy: 0, 1 or 2 (the header version sent to it); proxy_v2_options: frozenset of
"crc32c", "unique-id"; check_send_proxy: bool, resolved as HAProxy does (on with
send-proxy unless the check goes to its own port or addr); check_port: int or None (the
server's port); check_addr: an Address whose port is already the check port, or None
(check the server's address); check_send: bytes or None; check_expect: None,
("string", bytes) or ("rstring", bytes pattern); maxconn 0: unlimited. Durations are
float seconds."""

Backend = namedtuple("Backend", "name balance servers retries redispatch allbackups "
                                "timeout_connect timeout_server timeout_server_fin timeout_queue "
                                "timeout_check maxqueue line")
Backend.__doc__ = """A backend or the back half of a listen section.

servers: tuple of Server; timeout_check None: each server's inter; maxqueue 0:
unbounded."""

GlobalSettings = namedtuple("GlobalSettings", "maxconn log_level bufsize check_threads workers "
                                              "grace hard_stop_after pidfile user group")
GlobalSettings.__doc__ = """The [global] section. maxconn None: the engine derives it from
the descriptor limit; bufsize: the read chunk size in bytes; workers None: one process, no
master (see master.py), else the worker count; grace and hard_stop_after: float seconds or
None; pidfile, user, group: str or None."""
GlobalSettings.__new__.__defaults__ = (None,) * 6    # the process keys: absent means not set

Config = namedtuple("Config", "path global_settings frontends backends warnings")
Config.__doc__ = """A whole configuration. frontends: tuple in file order (listen sections
included); backends: dict name -> Backend in file order; warnings: tuple of messages."""


def load_config(path):
    """Read and check the INI file at ``path``; raises ConfigError listing every problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError("%s: cannot read the file: %s (expected a readable INI file)"
                          % (path, exc.strerror or exc))
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("%s:%d: byte 0x%02x is not UTF-8 (expected a UTF-8 text file)"
                          % (path, raw[:exc.start].count(b"\n") + 1, raw[exc.start]))
    return parse_config(text, path)


def parse_config(text, path="<config>"):
    """Check the INI ``text`` (``path`` names it in messages); raises ConfigError."""
    return _CfgReader(path).read(text)


def parse_duration(text):
    """Seconds from ``5s``, ``1500ms``, ``2m``, ``1h``, ``1d`` or a bare number of ms.

    One unit per value, as in HAProxy's simple form; raises ValueError with the reason.
    """
    match = _CFG_DURATION.match(text)
    if match is None:
        if _CFG_MULTI_UNIT_DURATION.match(text):
            raise ValueError("'%s' has more than one unit (expected one number with one unit, "
                             "such as 90s)" % text)
        raise ValueError("'%s' is not a duration (expected a number with ms, s, m, h or d)" % text)
    number, unit = match.groups()
    return float(number) * _CFG_DURATION_UNITS[unit or "ms"]


def parse_size(text):
    """Bytes from a number, optionally with ``k`` or ``m`` (1024s); raises ValueError."""
    match = _CFG_SIZE.match(text)
    if match is None:
        raise ValueError("'%s' is not a size (expected a number of bytes, optionally with k or m)"
                         % text)
    number, unit = match.groups()
    return int(number) * _CFG_SIZE_UNITS[unit.lower()]


_CFG_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?\Z")
_CFG_MULTI_UNIT_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d)){2,}\Z")
_CFG_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CFG_SIZE = re.compile(r"([0-9]+)([kKmM]?)\Z")
_CFG_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}

# -- value kinds: a parser raising ValueError(reason) and what to write instead -----------

_CfgValue = namedtuple("_CfgValue", "parse expected")

_CFG_DIGITS = re.compile(r"[0-9]+\Z")
_CFG_NAME = re.compile(r"[A-Za-z0-9_.:-]+\Z")
_CFG_NAME_RULE = "letters, digits, '.', ':', '-' and '_'"


def _cfg_positive_duration(text):
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("'%s' is not more than zero (expected a duration such as 5s)" % text)
    return seconds


def _cfg_whole_number(low, high=None):
    if high is None:
        expected = "a whole number of at least %d" % low
    else:
        expected = "a whole number from %d to %d" % (low, high)

    def parse(text):
        if not _CFG_DIGITS.match(text):
            raise ValueError("'%s' is not a whole number (expected %s)" % (text, expected))
        number = int(text)
        if number < low or (high is not None and number > high):
            raise ValueError("%d is out of range (expected %s)" % (number, expected))
        return number
    return _CfgValue(parse, expected)


def _cfg_size_range(low, high):
    expected = "a size from %d to %d bytes" % (low, high)

    def parse(text):
        size = parse_size(text)
        if not low <= size <= high:
            raise ValueError("'%s' is out of range (expected %s)" % (text, expected))
        return size
    return _CfgValue(parse, expected)


def _cfg_one_of(what, words):
    def parse(text):
        if text not in words:
            raise ValueError(_cfg_unknown(what, text, words))
        return text
    return _CfgValue(parse, "one of: %s" % ", ".join(sorted(words)))


def _cfg_port(text):
    if not _CFG_DIGITS.match(text) or not 1 <= int(text) <= 65535:
        raise ValueError("'%s' is not a port (expected 1 to 65535)" % text)
    return int(text)


def _cfg_sources(text):
    """accept-proxy-from / proxy-optional-from: networks, and "unix" for Unix-socket peers."""
    sources = []
    for item in text.split(","):
        if item == "unix":
            sources.append(item)
            continue
        try:
            sources.append(ipaddress.ip_network(item))
        except ValueError:
            try:
                network = ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError("'%s' is not an address or network (expected CIDR[,CIDR...] "
                                 "such as 10.0.0.0/16,192.0.2.7, or unix)" % item)
            raise ValueError("'%s' has host bits set (expected %s)" % (item, network))
    return tuple(sources)


def _cfg_v2_options(text):
    words = text.split(",")
    for word in words:
        if word not in _CFG_V2_OPTION_WORDS:
            raise ValueError(_cfg_unknown("proxy-v2-options value", word, _CFG_V2_OPTION_WORDS))
    return frozenset(words)


_CFG_V2_OPTION_WORDS = ("crc32c", "unique-id")


def _cfg_ip(host, family):
    """The canonical text of an IP address of ``family``, or None if ``host`` is not one."""
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, host))
    except (OSError, ValueError):
        return None


def _cfg_check_addr(text):
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    for family in (socket.AF_INET, socket.AF_INET6):
        ip = _cfg_ip(host, family)
        if ip is not None:
            return family, ip
    raise ValueError("'%s' is not an IP address (expected an IPv4 or IPv6 address)" % text)


def _cfg_bytes(text):
    if not text:
        raise ValueError("an empty string (expected at least one byte)")
    return text.encode("utf-8", "surrogateescape")


def _cfg_check_expect(kind, pattern):
    if kind == "string":
        return kind, _cfg_bytes(pattern)
    if kind == "rstring":
        pattern = _cfg_bytes(pattern)
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError("'%s' is not a regular expression: %s (expected a Python regular "
                             "expression)" % (pattern.decode("utf-8", "replace"), exc))
        return kind, pattern
    raise ValueError(_cfg_unknown("check-expect kind", kind, ("string", "rstring")))


_CFG_DURATION_VALUE = _CfgValue(_cfg_positive_duration, "a duration such as 5s")
_CFG_HEADER_SIZE = _cfg_size_range(16, 65551)       # a v2 header: 16 bytes + a 16-bit length
_CFG_SOURCES = _CfgValue(_cfg_sources, "CIDR[,CIDR...]")

# -- unknown words, with a guess at what was meant ------------------------------------------


def _cfg_unknown(what, word, choices, shown=None):
    """Say ``word`` is not one of ``choices``; ``shown`` lists them if not just sorted."""
    guess = _cfg_closest(word, choices)
    hint = ", did you mean '%s'?" % guess if guess else ""
    return "unknown %s '%s'%s (expected one of: %s)" % (
        what, word, hint, shown or ", ".join(sorted(choices)))


def _cfg_closest(word, choices):
    """The choice a mistyped ``word`` most likely meant: at most two edits away, or None."""
    best, best_distance = None, max(1, min(2, len(word) // 3)) + 1
    for choice in sorted(choices):
        distance = _cfg_edit_distance(word, choice)
        if distance < best_distance:
            best, best_distance = choice, distance
    return best


def _cfg_edit_distance(a, b):
    """Levenshtein distance: insertions, deletions and substitutions."""
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1,
                               previous[j - 1] + (char_a != char_b)))
        previous = current
    return previous[-1]

# -- option lines: words, quoting, and the bind and server options --------------------------

_CFG_WORD = re.compile(r'"(?P<quoted>(?:[^"\\\n]|\\.)*)"|(?P<plain>[^\s"]+)')
_CFG_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)")
_CFG_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\", '"': '"'}


def _cfg_words(text):
    """Split on whitespace; a double-quoted word keeps its spaces and decodes its escapes.

    \\xHH above 0x7f becomes a lone surrogate, so that encoding the word with
    surrogateescape gives back exactly that byte while other text stays UTF-8.
    """
    words = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        match = _CFG_WORD.match(text, position)
        if match is None:
            raise ValueError("unterminated quoted string %s (expected a closing \")"
                             % text[position:])
        position = match.end()
        if position < len(text) and not text[position].isspace():
            raise ValueError("'%s' runs into a quote (expected whitespace around a quoted string)"
                             % text[match.start():].split()[0])
        quoted = match.group("quoted")
        words.append(match.group("plain") if quoted is None else
                     _CFG_ESCAPE.sub(_cfg_unescape, quoted))
    return words


def _cfg_unescape(match):
    code = match.group(1)
    if code in _CFG_ESCAPES:
        return _CFG_ESCAPES[code]
    if len(code) == 3:
        byte = int(code[1:], 16)
        return chr(byte) if byte < 0x80 else chr(0xDC00 + byte)
    raise ValueError("unknown escape '\\%s' (expected \\r, \\n, \\t, \\\\, \\\" or \\xHH)" % code)


_CfgOption = namedtuple("_CfgOption", "field nargs value")
# nargs 0: a flag, and value is what it sets; otherwise value is a _CfgValue given nargs words.

_CFG_BIND_OPTIONS = {
    "accept-proxy": _CfgOption("accept_proxy", 0, True),
    "accept-proxy-from": _CfgOption("accept_proxy_from", 1, _CFG_SOURCES),
    "proxy-optional-from": _CfgOption("proxy_optional_from", 1, _CFG_SOURCES),
    "accept-proxy-version": _CfgOption("accept_proxy_version", 1,
                                       _cfg_one_of("PROXY version", ("v1", "v2", "any"))),
    "proxy-max-header": _CfgOption("proxy_max_header", 1, _CFG_HEADER_SIZE),
    "v6only": _CfgOption("v6only", 0, True),
}

_CFG_SERVER_OPTIONS = {
    "send-proxy": _CfgOption("send_proxy", 0, 1),
    "send-proxy-v2": _CfgOption("send_proxy", 0, 2),
    "proxy-v2-options": _CfgOption("proxy_v2_options", 1,
                                   _CfgValue(_cfg_v2_options, "a comma list of crc32c, unique-id")),
    "check": _CfgOption("check", 0, True),
    "check-send-proxy": _CfgOption("check_send_proxy", 0, True),
    "no-check-send-proxy": _CfgOption("check_send_proxy", 0, False),
    "inter": _CfgOption("inter", 1, _CFG_DURATION_VALUE),
    "fastinter": _CfgOption("fastinter", 1, _CFG_DURATION_VALUE),
    "downinter": _CfgOption("downinter", 1, _CFG_DURATION_VALUE),
    "rise": _CfgOption("rise", 1, _cfg_whole_number(1)),
    "fall": _CfgOption("fall", 1, _cfg_whole_number(1)),
    "weight": _CfgOption("weight", 1, _cfg_whole_number(0, 256)),
    "backup": _CfgOption("backup", 0, True),
    "maxconn": _CfgOption("maxconn", 1, _cfg_whole_number(0)),
    "disabled": _CfgOption("disabled", 0, True),
    "port": _CfgOption("check_port", 1, _CfgValue(_cfg_port, "a port from 1 to 65535")),
    "addr": _CfgOption("check_addr", 1, _CfgValue(_cfg_check_addr, "an IP address")),
    "check-send": _CfgOption("check_send", 1, _CfgValue(_cfg_bytes, "a STRING, may be quoted")),
    "check-expect": _CfgOption("check_expect", 2,
                               _CfgValue(_cfg_check_expect, "string STRING or rstring REGEX")),
}

# The options that only matter to health checks: given without "check", they do nothing.
_CFG_CHECK_FIELDS = ("check_send_proxy", "inter", "fastinter", "downinter", "rise", "fall",
                     "check_port", "check_addr", "check_send", "check_expect")

_CFG_SERVER_DEFAULTS = {
    "send_proxy": 0, "proxy_v2_options": frozenset(), "check": False, "check_send_proxy": None,
    "inter": 2.0, "fastinter": None, "downinter": None, "rise": 2, "fall": 3, "weight": 1,
    "backup": False, "maxconn": 0, "disabled": False, "check_port": None, "check_addr": None,
    "check_send": None, "check_expect": None,
}


def _cfg_read_options(words, table, what):
    """The options after an address: (values by field, the word that set each field, problems).

    Reading stops at an unknown word: whether it took an argument cannot be known.
    """
    values, given, problems = {}, {}, []
    position = 0
    while position < len(words):
        word = words[position]
        option = table.get(word)
        if option is None:
            problems.append(_cfg_unknown(what, word, table))
            break
        args = words[position + 1:position + 1 + option.nargs]
        position += 1 + option.nargs
        if len(args) < option.nargs:
            problems.append("'%s' needs a value (expected %s followed by %s)"
                            % (word, word, option.value.expected))
            break
        if option.field in given:
            earlier = given[option.field]
            problems.append("'%s' given twice (expected it once)" % word if earlier == word else
                            "'%s' conflicts with '%s' (expected one of them)" % (word, earlier))
            continue
        given[option.field] = word
        if not option.nargs:
            values[option.field] = option.value
            continue
        try:
            values[option.field] = option.value.parse(*args)
        except ValueError as exc:
            problems.append("%s: %s" % (word, exc))
    return values, given, problems

# -- addresses ------------------------------------------------------------------------------

_CFG_BIND_FORMS = ":PORT, *:PORT, IPv4:PORT, [IPv6]:PORT or unix@/path"
_CFG_SERVER_FORMS = "IPv4:PORT, [IPv6]:PORT, HOST:PORT or unix@/path"
_CFG_UNIX_PREFIX = "unix@"
_CFG_UNIX_PATH_MAX = 107                 # sun_path is 108 bytes, the last one a NUL
_CFG_DOTTED_NUMBERS = re.compile(r"[0-9.]+\Z")
_CFG_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


def _cfg_unix_address(text):
    path = text[len(_CFG_UNIX_PREFIX):]
    if not path:
        raise ValueError("'%s' has no path (expected unix@/path)" % text)
    if len(path.encode("utf-8")) > _CFG_UNIX_PATH_MAX:
        raise ValueError("the socket path is %d bytes long (expected at most %d)"
                         % (len(path.encode("utf-8")), _CFG_UNIX_PATH_MAX))
    return Address(socket.AF_UNIX, path, text)


def _cfg_host_and_port(text, forms):
    """Split HOST:PORT or [IPv6]:PORT into (host, whether bracketed, port)."""
    if text.startswith("["):
        host, separator, port = text[1:].partition("]:")
        if not separator:
            raise ValueError("'%s' is not an address (expected %s)" % (text, forms))
        return host, True, _cfg_port(port)
    host, separator, port = text.rpartition(":")
    if not separator:
        raise ValueError("'%s' has no port (expected %s)" % (text, forms))
    if ":" in host:
        raise ValueError("'%s' needs brackets around the IPv6 address (expected [%s]:%s)"
                         % (text, host, port))
    return host, False, _cfg_port(port)


def _cfg_bind_address(text):
    if text.startswith(_CFG_UNIX_PREFIX):
        return _cfg_unix_address(text)
    host, bracketed, port = _cfg_host_and_port(text, _CFG_BIND_FORMS)
    if bracketed:
        family, ip = socket.AF_INET6, _cfg_ip(host, socket.AF_INET6)
    else:
        family = socket.AF_INET
        ip = "0.0.0.0" if host in ("", "*") else _cfg_ip(host, socket.AF_INET)
    if ip is None:
        raise ValueError("'%s' is not an IP%s address (expected %s)"
                         % (host, "v6" if bracketed else "v4", _CFG_BIND_FORMS))
    return Address(family, (ip, port), text)


def _cfg_server_address(text):
    """A server's address; a host name is resolved now, once, to its first address."""
    if text.startswith(_CFG_UNIX_PREFIX):
        return _cfg_unix_address(text)
    host, bracketed, port = _cfg_host_and_port(text, _CFG_SERVER_FORMS)
    if bracketed:
        ip = _cfg_ip(host, socket.AF_INET6)
        if ip is None:
            raise ValueError("'%s' is not an IPv6 address (expected %s)" % (host, _CFG_SERVER_FORMS))
        return Address(socket.AF_INET6, (ip, port), text)
    ip = _cfg_ip(host, socket.AF_INET)
    if ip is not None:
        return Address(socket.AF_INET, (ip, port), text)
    if _CFG_DOTTED_NUMBERS.match(host):
        raise ValueError("'%s' is not an IPv4 address (expected %s)" % (host, _CFG_SERVER_FORMS))
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    if len(host) > 253 or not all(_CFG_HOST_LABEL.match(label) for label in labels):
        raise ValueError("'%s' is not a host name (expected %s)" % (host, _CFG_SERVER_FORMS))
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise ValueError("cannot resolve '%s': %s (expected a host name that resolves, or an "
                         "IP address)" % (host, exc.strerror or exc))
    return Address(family, sockaddr[:2], text)

# -- the keys of each section -----------------------------------------------------------------

_CfgKey = namedtuple("_CfgKey", "field value sections")
# value: a _CfgValue; None for a flag ("option X", which "no option X" turns off); or
# _CFG_SPECIAL for the keys _CfgReader reads itself (bind, server, ...).

_CFG_SPECIAL = object()
_CFG_FRONT = ("defaults", "frontend", "listen")
_CFG_BACK = ("defaults", "backend", "listen")

_CFG_GLOBAL_KEYS = {
    "maxconn": _CfgKey("maxconn", _cfg_whole_number(1), ("global",)),
    "log-level": _CfgKey("log_level", _cfg_one_of("log level", ("debug", "info", "warning", "error")),
                         ("global",)),
    "tune.bufsize": _CfgKey("bufsize", _cfg_size_range(1024, 64 * 1024 * 1024), ("global",)),
    "check-threads": _CfgKey("check_threads", _cfg_whole_number(1, 256), ("global",)),
    "workers": _CfgKey("workers", _CfgValue(parse_workers, "a worker count or auto"), ("global",)),
    "grace": _CfgKey("grace", _CFG_DURATION_VALUE, ("global",)),
    "hard-stop-after": _CfgKey("hard_stop_after", _CFG_DURATION_VALUE, ("global",)),
    "pidfile": _CfgKey("pidfile", _CfgValue(str, "a file path"), ("global",)),
    "user": _CfgKey("user", _CfgValue(parse_user, "a user name"), ("global",)),
    "group": _CfgKey("group", _CfgValue(parse_group, "a group name"), ("global",)),
}
_CFG_GLOBAL_DEFAULTS = GlobalSettings(maxconn=None, log_level="info", bufsize=256 * 1024,
                                      check_threads=4, workers=None, grace=None,
                                      hard_stop_after=None, pidfile=None, user=None, group=None)

_CFG_PROXY_KEYS = {
    "bind": _CfgKey("binds", _CFG_SPECIAL, ("frontend", "listen")),
    "default_backend": _CfgKey("default_backend", _CFG_SPECIAL, ("frontend",)),
    "server": _CfgKey("servers", _CFG_SPECIAL, ("backend", "listen")),
    "default-server": _CfgKey("default_server", _CFG_SPECIAL, _CFG_BACK),
    "maxconn": _CfgKey("maxconn", _cfg_whole_number(1), _CFG_FRONT),
    "timeout client": _CfgKey("timeout_client", _CFG_DURATION_VALUE, _CFG_FRONT),
    "timeout client-fin": _CfgKey("timeout_client_fin", _CFG_DURATION_VALUE, _CFG_FRONT),
    "timeout proxy-header": _CfgKey("timeout_proxy_header", _CFG_DURATION_VALUE, _CFG_FRONT),
    "proxy-max-header": _CfgKey("proxy_max_header", _CFG_HEADER_SIZE, _CFG_FRONT),
    "maxconn-per-source": _CfgKey("maxconn_per_source", _cfg_whole_number(0), _CFG_FRONT),
    "maxconn-pending-header": _CfgKey("maxconn_pending_header", _cfg_whole_number(1), _CFG_FRONT),
    "option dontlognull": _CfgKey("dontlognull", None, _CFG_FRONT),
    "option dontlog-normal": _CfgKey("dontlog_normal", None, _CFG_FRONT),
    "option tcplog": _CfgKey("tcplog", None, _CFG_FRONT),      # the only log format: accepted
    "balance": _CfgKey("balance", _cfg_one_of("balance algorithm", (
        "roundrobin", "static-rr", "leastconn", "first", "source", "random")), _CFG_BACK),
    "retries": _CfgKey("retries", _cfg_whole_number(0, 100), _CFG_BACK),
    "option redispatch": _CfgKey("redispatch", None, _CFG_BACK),
    "option allbackups": _CfgKey("allbackups", None, _CFG_BACK),
    "timeout connect": _CfgKey("timeout_connect", _CFG_DURATION_VALUE, _CFG_BACK),
    "timeout server": _CfgKey("timeout_server", _CFG_DURATION_VALUE, _CFG_BACK),
    "timeout server-fin": _CfgKey("timeout_server_fin", _CFG_DURATION_VALUE, _CFG_BACK),
    "timeout queue": _CfgKey("timeout_queue", _CFG_DURATION_VALUE, _CFG_BACK),
    "timeout check": _CfgKey("timeout_check", _CFG_DURATION_VALUE, _CFG_BACK),
    "maxqueue": _CfgKey("maxqueue", _cfg_whole_number(0), _CFG_BACK),
}

# Built-in values of what a section may set; None: derived from another value when built.
_CFG_FRONTEND_DEFAULTS = {
    "maxconn": None, "timeout_client": 30.0, "timeout_client_fin": None,
    "timeout_proxy_header": 5.0, "proxy_max_header": 16 * 1024, "maxconn_per_source": 0,
    "maxconn_pending_header": 1000, "dontlognull": False, "dontlog_normal": False,
}
_CFG_BACKEND_DEFAULTS = {
    "balance": "roundrobin", "retries": 3, "redispatch": False, "allbackups": False,
    "timeout_connect": 5.0, "timeout_server": 30.0, "timeout_server_fin": None,
    "timeout_queue": None, "timeout_check": None, "maxqueue": 0,
}

_CFG_SECTION_KINDS = ("global", "defaults", "frontend", "backend", "listen")


def _cfg_merged(defaults, *layers):
    """``defaults`` overridden by each layer in turn, keeping only the keys of ``defaults``."""
    merged = dict(defaults)
    for layer in layers:
        merged.update((field, value) for field, value in layer.items() if field in defaults)
    return merged

# -- step 1: the line scan ----------------------------------------------------------------------

_CfgSection = namedtuple("_CfgSection", "header title line entries")
_CfgEntry = namedtuple("_CfgEntry", "key line lines")
# header: as configparser names the section; title: its words joined by one space.
# key: as scanned (values are looked up in order, with configparser's own key); lines: the
# line of each line of the value, as configparser joins them (blank lines included).

_CFG_COMMENT = re.compile(r"(?:^|(?<=\s))[#;]")


def _cfg_scan(lines, reader):
    """Sections and keys with their lines; reports duplicates and continued flags."""
    sections = []
    section_lines = {}
    key_lines = {}
    entry = None
    indent = 0
    for number, line in enumerate(lines, 1):
        content = _CFG_COMMENT.split(line, 1)[0].strip()
        if not content:
            if entry is not None and entry.lines and not line.strip():
                entry.lines.append(number)          # a blank line inside a value
            continue
        line_indent = len(line) - len(line.lstrip())
        if entry is not None and line_indent > indent:
            if entry.lines:
                entry.lines.append(number)
            else:
                reader.error(number, sections[-1].title, entry.key,
                             "an indented line continues a key that has no value (expected "
                             "'%s = ...' above it, or no indent)" % entry.key)
            continue
        indent = line_indent
        entry = None
        header = configparser.RawConfigParser.SECTCRE.match(content)
        if header:
            section = _CfgSection(header.group("header"), " ".join(header.group("header").split()),
                                  number, [])
            if section.title in section_lines:
                reader.error(number, section.title, None, "duplicated section (first defined "
                             "on line %d)" % section_lines[section.title])
            section_lines.setdefault(section.title, number)
            key_lines = {}
            sections.append(section)
            continue
        key, equals, _ = content.partition("=")
        key = " ".join(key.split())
        if not sections or not key:
            continue                            # configparser reports these lines itself
        entry = _CfgEntry(key, number, [number] if equals else [])
        if key in key_lines:
            what = "server name" if key.split()[0] == "server" else "key"
            reader.error(number, sections[-1].title, key, "duplicated %s (first defined on line %d)"
                         % (what, key_lines[key]))
        key_lines.setdefault(key, number)
        sections[-1].entries.append(entry)
    return sections


def _cfg_ini_values(lines, path, reader):
    """configparser's reading of the lines: {header: [(key, value or None), ...]}."""
    parser = configparser.RawConfigParser(
        delimiters=("=",), comment_prefixes=("#", ";"), inline_comment_prefixes=("#", ";"),
        allow_no_value=True, strict=True, default_section="")   # no section can be named ""
    parser.optionxform = str
    try:
        parser.read_file(lines, source=path)
    except configparser.MissingSectionHeaderError as exc:
        reader.error(exc.lineno, None, None, "'%s' comes before any section (expected a "
                     "[section] line first)" % lines[exc.lineno - 1].strip())
    except configparser.ParsingError as exc:
        for number, _ in exc.errors:     # the line is a repr before Python 3.13: not shown
            reader.error(number, None, None, "cannot read '%s' (expected KEY = VALUE, a flag, "
                         "[SECTION] or a comment)" % lines[number - 1].strip())
    return {header: list(parser[header].items()) for header in parser.sections()}

# -- steps 2 and 3: the reader --------------------------------------------------------------------


def _cfg_plain_value(key, spec, value, negated):
    """The value of a key that is neither special nor misplaced; ValueError says what is wrong."""
    if spec.value is None:
        if value is not None:
            raise ValueError("takes no value (expected a line with just '%s')" % key)
        return not negated
    if not value:
        raise ValueError("missing value (expected %s = %s)" % (key, spec.value.expected))
    return spec.value.parse(" ".join(value.split()))


class _CfgProxySection(object):
    """What a defaults, frontend, backend or listen section says, before defaults apply."""

    def __init__(self, kind, name, title, line):
        self.kind, self.name, self.title, self.line = kind, name, title, line
        self.settings = {}
        self.given = set()            # the special keys present: bind, default_backend, ...
        self.binds = []
        self.servers = []             # (name, Address, option values, option words, line)
        self.default_server = {}
        self.default_backend = None   # (name, line)


class _CfgReader(object):
    """Reads one configuration, collecting every problem before giving up."""

    def __init__(self, path):
        self.path = path
        self.errors = []
        self.warnings = []

    def _message(self, line, title, key, text):
        where = "%s:%d:" % (self.path, line) if line else "%s:" % self.path
        if title is not None:
            where += " [%s] %s:" % (title, key) if key else " [%s]:" % title
        return line, "%s %s" % (where, text)

    def error(self, line, title, key, text):
        self.errors.append(self._message(line, title, key, text))

    def warn(self, line, title, key, text):
        self.warnings.append(self._message(line, title, key, text))

    def report(self, line, title, key, problems):
        """Record each problem as an error; True if there was none."""
        for problem in problems:
            self.error(line, title, key, problem)
        return not problems

    def _raise_errors(self):
        if self.errors:
            raise ConfigError([text for _, text in sorted(self.errors, key=lambda e: e[0])])

    def read(self, text):
        lines = text.replace("\r\n", "\n").split("\n")
        sections = _cfg_scan(lines, self)
        self._raise_errors()
        values = _cfg_ini_values(lines, self.path, self)
        self._raise_errors()
        global_settings = _CFG_GLOBAL_DEFAULTS
        defaults = _CfgProxySection("defaults", "", "defaults", 0)
        proxies = []
        for section in sections:
            entries = [(" ".join(key.split()), value, scanned.line, scanned.lines)
                       for (key, value), scanned in zip(values[section.header], section.entries)]
            kind = self._section_kind(section)
            if kind == "global":
                settings, _ = self._read_keys(section.title, kind, entries, _CFG_GLOBAL_KEYS)
                global_settings = global_settings._replace(**settings)
            elif kind is not None:
                proxy = _CfgProxySection(kind, section.title.partition(" ")[2], section.title,
                                         section.line)
                self._read_proxy_section(proxy, entries)
                if kind == "defaults":
                    defaults = proxy
                else:
                    proxies.append(proxy)
        frontends, backends = self._build(proxies, defaults)
        self._raise_errors()
        return Config(self.path, global_settings, frontends, backends,
                      tuple(text for _, text in sorted(self.warnings, key=lambda w: w[0])))

    def _section_kind(self, section):
        """The kind of a section (global, defaults, frontend...), or None if it is wrong."""
        words = section.title.split()
        kind = words[0] if words else ""
        named = kind in ("frontend", "backend", "listen")
        if kind not in _CFG_SECTION_KINDS:
            problem = _cfg_unknown("section kind", kind, _CFG_SECTION_KINDS,
                                   "global, defaults, frontend NAME, backend NAME, listen NAME")
        elif len(words) != 1 + named:
            problem = ("needs one name (expected [%s NAME])" if named else
                       "takes no name (expected [%s])") % kind
        elif named and not _CFG_NAME.match(words[1]):
            problem = "'%s' is not a valid name (expected %s)" % (words[1], _CFG_NAME_RULE)
        else:
            return kind
        self.error(section.line, section.title, None, problem)
        return None

    def _read_keys(self, title, kind, entries, table):
        """The plain keys of a section as {field: value}, and its special entries in order."""
        settings, set_by, specials = {}, {}, []
        for key, value, line, lines in entries:
            negated = key.startswith("no option ")
            if negated:
                spec_key = key[len("no "):]
            elif key.split()[0] == "server":
                spec_key = "server"              # server NAME
            else:
                spec_key = key
            spec = table.get(spec_key)
            if spec is None or (negated and spec.value is not None):
                allowed = [name for name, other in table.items() if kind in other.sections]
                self.error(line, title, key, _cfg_unknown("key", key, allowed, ", ".join(sorted(
                    name + " NAME" if name == "server" else name for name in allowed))))
            elif kind not in spec.sections:
                self.error(line, title, key, _cfg_misplaced(kind, spec_key, spec))
            elif spec.value is _CFG_SPECIAL:
                specials.append((spec_key, key, value, line, lines))
            elif spec.field in set_by:
                self.error(line, title, key, "conflicts with '%s' on line %d (expected one of "
                           "them)" % set_by[spec.field])
            else:
                set_by[spec.field] = key, line
                try:
                    settings[spec.field] = _cfg_plain_value(key, spec, value, negated)
                except ValueError as exc:
                    self.error(line, title, key, str(exc))
        return settings, specials

    def _read_proxy_section(self, proxy, entries):
        proxy.settings, specials = self._read_keys(proxy.title, proxy.kind, entries,
                                                   _CFG_PROXY_KEYS)
        for spec_key, key, value, line, lines in specials:
            proxy.given.add(spec_key)
            if spec_key == "bind":
                self._read_bind_lines(proxy, value, line, lines)
            elif spec_key == "server":
                self._read_server(proxy, key, value, line)
            elif spec_key == "default-server":
                words = self._words(proxy.title, key, value or "", line)
                values, _, problems = _cfg_read_options(words or (), _CFG_SERVER_OPTIONS,
                                                        "server option")
                if self.report(line, proxy.title, key, problems):
                    proxy.default_server = values
            elif not value:
                self.error(line, proxy.title, key, "missing value (expected default_backend = "
                           "NAME)")
            else:
                proxy.default_backend = " ".join(value.split()), line

    def _words(self, title, key, text, line):
        """The words of an option line, or None after reporting bad quoting."""
        try:
            return _cfg_words(text)
        except ValueError as exc:
            self.error(line, title, key, str(exc))
            return None

    def _read_bind_lines(self, proxy, value, line, lines):
        if not value:
            self.error(line, proxy.title, "bind", "missing value (expected bind = ADDRESS "
                       "[options], one per line)")
            return
        for text, bind_line in zip(value.split("\n"), lines):
            words = self._words(proxy.title, "bind", text, bind_line)
            if words:
                self._read_bind(proxy, words, bind_line)

    def _read_bind(self, proxy, words, line):
        problems = []
        try:
            address = _cfg_bind_address(words[0])
        except ValueError as exc:
            address = None
            problems.append(str(exc))
        options, given, option_problems = _cfg_read_options(words[1:], _CFG_BIND_OPTIONS,
                                                            "bind option")
        problems += option_problems
        accept_proxy = bool(options.get("accept_proxy") or "accept_proxy_from" in options or
                            "proxy_optional_from" in options)
        for field in ("accept_proxy_version", "proxy_max_header"):
            if field in options and not accept_proxy:
                problems.append("'%s' needs PROXY header handling (expected accept-proxy, "
                                "accept-proxy-from or proxy-optional-from on the line too)"
                                % given[field])
        if options.get("v6only") and address is not None and address.family != socket.AF_INET6:
            problems.append("'v6only' is for IPv6 addresses (expected it after [IPv6]:PORT only)")
        if not self.report(line, proxy.title, "bind", problems):
            return
        if accept_proxy and not options.get("accept_proxy_from"):
            self.warn(line, proxy.title, "bind", "PROXY headers are accepted from every peer, so "
                      "any peer can claim any address (expected accept-proxy-from CIDR[,CIDR...] "
                      "naming the proxies in front)")
        proxy.binds.append(Bind(address, accept_proxy, options.get("accept_proxy_from", ()),
                                options.get("proxy_optional_from", ()),
                                options.get("accept_proxy_version", "any"),
                                options.get("v6only", False), options.get("proxy_max_header"),
                                line))

    def _read_server(self, proxy, key, value, line):
        names = key.split()[1:]
        if len(names) != 1:
            self.error(line, proxy.title, key, "needs exactly one name (expected server NAME = "
                       "ADDRESS [options])")
            return
        if not _CFG_NAME.match(names[0]):
            self.error(line, proxy.title, key, "'%s' is not a valid name (expected %s)"
                       % (names[0], _CFG_NAME_RULE))
            return
        words = self._words(proxy.title, key, value or "", line)
        if words is None:
            return
        if not words:
            self.error(line, proxy.title, key, "missing address (expected %s = ADDRESS "
                       "[options])" % key)
            return
        problems = []
        try:
            address = _cfg_server_address(words[0])
        except ValueError as exc:
            problems.append(str(exc))
        values, given, option_problems = _cfg_read_options(words[1:], _CFG_SERVER_OPTIONS,
                                                           "server option")
        if self.report(line, proxy.title, key, problems + option_problems):
            proxy.servers.append((names[0], address, values, given, line))

    # -- applying defaults and checking references --------------------------------------------

    def _build(self, proxies, defaults):
        front_names = self._unique_names(proxies, ("frontend", "listen"))
        back_names = self._unique_names(proxies, ("backend", "listen"))
        if not front_names:
            self.error(0, None, None, "no frontend or listen section (expected at least one, "
                       "with a bind)")
        self._settle_binds(proxies)
        frontends, backends = [], {}
        for proxy in proxies:
            if proxy.kind in ("frontend", "listen"):
                frontends.append(self._build_frontend(proxy, defaults, back_names))
            if proxy.kind in ("backend", "listen"):
                backends[proxy.name] = self._build_backend(proxy, defaults)
        return tuple(frontends), backends

    def _unique_names(self, proxies, kinds):
        """The names of the sections of ``kinds`` (a listen is both a frontend and a backend)."""
        names = {}
        for proxy in proxies:
            if proxy.kind not in kinds:
                continue
            if proxy.name in names:
                self.error(proxy.line, proxy.title, None, "the name '%s' is taken by [%s] on "
                           "line %d (expected a unique name)" % ((proxy.name,) + names[proxy.name]))
            names.setdefault(proxy.name, (proxy.title, proxy.line))
        return names

    def _settle_binds(self, proxies):
        """Report addresses bound twice, and settle v6only on every bind.

        A [::]:PORT bind also takes IPv4 clients, unless v6only. When the same PORT is also
        bound on every IPv4 address (:PORT), IPv4 clients evidently belong to that bind, and
        the two could not both listen anyway: the IPv6 one gets v6only.
        """
        first_use = {}
        ipv4_any_ports = set()
        for proxy in proxies:
            for bind in proxy.binds:
                address = bind.address
                key = (address.family, address.sockaddr)
                if key in first_use:
                    title, other = first_use[key]
                    self.error(bind.line, proxy.title, "bind", "'%s' is already bound on line %d "
                               "in [%s] (expected each address once)"
                               % (address.text, other.line, title))
                first_use.setdefault(key, (proxy.title, bind))
                if address.family == socket.AF_INET and address.sockaddr[0] == "0.0.0.0":
                    ipv4_any_ports.add(address.sockaddr[1])
        for proxy in proxies:
            proxy.binds = [bind._replace(v6only=True) if bind.address.family == socket.AF_INET6
                           and bind.address.sockaddr[0] == "::"
                           and bind.address.sockaddr[1] in ipv4_any_ports else bind
                           for bind in proxy.binds]

    def _build_frontend(self, proxy, defaults, back_names):
        settings = _cfg_merged(_CFG_FRONTEND_DEFAULTS, defaults.settings, proxy.settings)
        if "bind" not in proxy.given:
            self.error(proxy.line, proxy.title, "bind", "missing (expected bind = ADDRESS "
                       "[options])")
        header_cap = settings.pop("proxy_max_header")
        if settings["timeout_client_fin"] is None:
            settings["timeout_client_fin"] = settings["timeout_client"]
        binds = tuple(bind._replace(proxy_max_header=bind.proxy_max_header or header_cap)
                      for bind in proxy.binds)
        if proxy.kind == "listen":
            default_backend = proxy.name
        else:
            default_backend = self._default_backend(proxy, back_names)
        return Frontend(name=proxy.name, binds=binds, default_backend=default_backend,
                        line=proxy.line, **settings)

    def _default_backend(self, proxy, back_names):
        known = "backends: %s" % (", ".join(sorted(back_names)) or "none")
        if proxy.default_backend is None:
            if "default_backend" not in proxy.given:
                self.error(proxy.line, proxy.title, "default_backend", "missing (expected "
                           "default_backend = NAME; %s)" % known)
            return None
        name, line = proxy.default_backend
        if name not in back_names:
            self.error(line, proxy.title, "default_backend", "no backend named '%s' (%s)"
                       % (name, known))
        return name

    def _build_backend(self, proxy, defaults):
        settings = _cfg_merged(_CFG_BACKEND_DEFAULTS, defaults.settings, proxy.settings)
        if settings["timeout_server_fin"] is None:
            settings["timeout_server_fin"] = settings["timeout_server"]
        if settings["timeout_queue"] is None:
            settings["timeout_queue"] = settings["timeout_connect"]
        servers = []
        for name, address, values, given, line in proxy.servers:
            options = _cfg_merged(_CFG_SERVER_DEFAULTS, defaults.default_server,
                                  proxy.default_server, values)
            server = self._build_server(proxy.title, name, address, options, line)
            if server is not None:
                servers.append(server)
            idle = [given[field] for field in _CFG_CHECK_FIELDS if field in given]
            if idle and not options["check"]:
                self.warn(line, proxy.title, "server " + name, "%s without 'check' does nothing "
                          "(expected 'check' too)" % ", ".join("'%s'" % word for word in idle))
        if "server" not in proxy.given:
            self.warn(proxy.line, proxy.title, None, "no server, so every connection to it fails "
                      "(expected server NAME = ADDRESS [options])")
        return Backend(name=proxy.name, servers=tuple(servers), line=proxy.line, **settings)

    def _build_server(self, title, name, address, options, line):
        """The Server from its merged options, or None after reporting what contradicts."""
        problems = []
        if options["proxy_v2_options"] and options["send_proxy"] != 2:
            problems.append("'proxy-v2-options' needs send-proxy-v2 (expected send-proxy-v2 too)")
        check_port, check_addr = options["check_port"], options["check_addr"]
        if address.family == socket.AF_UNIX and (check_port is None) != (check_addr is None):
            problems.append("a unix@ server is checked on its own socket unless 'addr' and "
                            "'port' are both given (expected both or neither)")
        if not self.report(line, title, "server " + name, problems):
            return None
        if check_addr is not None:
            family, ip = check_addr
            options["check_addr"] = Address(family, (ip, check_port or address.sockaddr[1]), ip)
        if options["check_send_proxy"] is None:
            # As HAProxy: a check sent to another port or address may not speak PROXY.
            options["check_send_proxy"] = bool(options["send_proxy"] and check_port is None
                                               and check_addr is None)
        for field in ("fastinter", "downinter"):
            if options[field] is None:
                options[field] = options["inter"]
        return Server(name=name, address=address, line=line, **options)


def _cfg_misplaced(kind, key, spec):
    if kind == "listen" and key == "default_backend":
        return "a listen section is its own backend (expected no default_backend in it)"
    return "not valid in a %s section (expected in: %s)" % (kind, ", ".join(spec.sections))
