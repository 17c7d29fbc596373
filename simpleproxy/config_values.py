"""What a value in the configuration may be: durations, sizes, counts, addresses, strings.

Each kind of value is a parser that returns the value or raises ValueError with the
reason, in the words of the message the user will read (``'5x' is not a duration
(expected ...)``), plus what to write instead. Every duration, size and count has a
maximum, so no value reaches the event loop that its selector cannot take (timeouts at or
above 2^31 ms overflow it). Whatever the user wrote is echoed through ``shown``.

No socket here: an address is checked and written down with its family as a word
("ipv4", "ipv6", "unix"); a server's host name is kept as it is, for start-up to resolve
(resolve.py), so that checking a configuration asks no name server.
"""

import grp
import ipaddress
import os
import pwd
import re
from collections import namedtuple

from .ini import shown
from .rules import parse_network
from .timeouts import LONGEST_WAIT
from .tlvfmt import TLV_FMT_EXPECTED, V2_OPTION_WORDS, compile_tlv_fmt

Address = namedtuple("Address", "family sockaddr text")
Address.__doc__ = """Where to listen or connect.

family: "ipv4", "ipv6" or "unix" as read, None for a host name not resolved yet; start-up
(resolve_addresses) puts socket.AF_INET, AF_INET6 or AF_UNIX in its place and resolves the
name. sockaddr: ("1.2.3.4", 80), ("::1", 80), ("host.example", 80) or "/path"; text: the
address as the user wrote it, for logs."""

MAX_DURATION = LONGEST_WAIT
"""24 days, in seconds: a selector's timeout overflows at 2^31 ms (about 24.86 days), see
timeouts.py."""
MAX_DURATION_TEXT = "24d"
MAX_COUNT = 1000000
"""Connections, queue places and check counts: far above what one process can hold."""

# -- durations and sizes ------------------------------------------------------------------------

_CFG_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)?\Z")
_CFG_MULTI_UNIT_DURATION = re.compile(r"(?:[0-9]+(?:\.[0-9]+)?(?:ms|s|m|h|d)){2,}\Z")
_CFG_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_CFG_SIZE = re.compile(r"([0-9]+)([kKmM]?)\Z")
_CFG_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}
_CFG_DIGITS = re.compile(r"[0-9]+\Z")
_CFG_MAX_DIGITS = 18               # more cannot be in range, and int() of them is not free


def parse_duration(text):
    """Seconds from ``5s``, ``1500ms``, ``2m``, ``1h``, ``1d`` or a bare number of ms.

    One unit per value, as in HAProxy's simple form; raises ValueError with the reason.
    """
    match = _CFG_DURATION.match(text)
    if match is None:
        if _CFG_MULTI_UNIT_DURATION.match(text):
            raise ValueError("%s has more than one unit (expected one number with one unit, "
                             "such as 90s)" % shown(text))
        raise ValueError("%s is not a duration (expected a number with ms, s, m, h or d)"
                         % shown(text))
    number, unit = match.groups()
    return float(number) * _CFG_DURATION_UNITS[unit or "ms"]


def parse_size(text):
    """Bytes from a number, optionally with ``k`` or ``m`` (1024s); raises ValueError."""
    match = _CFG_SIZE.match(text)
    if match is None:
        raise ValueError("%s is not a size (expected a number of bytes, optionally with k or m)"
                         % shown(text))
    if len(match.group(1)) > _CFG_MAX_DIGITS:
        raise ValueError("%s is too large a size (expected at most %d digits)"
                         % (shown(text), _CFG_MAX_DIGITS))
    number, unit = match.groups()
    return int(number) * _CFG_SIZE_UNITS[unit.lower()]


ValueKind = namedtuple("ValueKind", "parse expected")
ValueKind.__doc__ = """parse: text -> value, raising ValueError(reason); expected: what to
write instead, for messages."""


def _cfg_duration(text):
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError("%s is not more than zero (expected a duration such as 5s)" % shown(text))
    if seconds > MAX_DURATION:
        raise ValueError("%s is more than the maximum, %s (expected a duration of at most %s)"
                         % (shown(text), MAX_DURATION_TEXT, MAX_DURATION_TEXT))
    return seconds


DURATION_VALUE = ValueKind(_cfg_duration, "a duration such as 5s, at most %s"
                           % MAX_DURATION_TEXT)


def whole_number(low, high):
    """A ValueKind for a whole number from ``low`` to ``high``."""
    expected = "a whole number from %d to %d" % (low, high)

    def parse(text):
        if not _CFG_DIGITS.match(text):
            raise ValueError("%s is not a whole number (expected %s)" % (shown(text), expected))
        if len(text) > _CFG_MAX_DIGITS or not low <= int(text) <= high:
            raise ValueError("%s is out of range (expected %s)"
                             % (text if len(text) <= _CFG_MAX_DIGITS else shown(text), expected))
        return int(text)
    return ValueKind(parse, expected)


def size_range(low, high):
    """A ValueKind for a size from ``low`` to ``high`` bytes."""
    expected = "a size from %d to %d bytes" % (low, high)

    def parse(text):
        size = parse_size(text)
        if not low <= size <= high:
            raise ValueError("%s is out of range (expected %s)" % (shown(text), expected))
        return size
    return ValueKind(parse, expected)


def one_of(what, words):
    """A ValueKind for one of ``words``."""
    def parse(text):
        if text not in words:
            raise ValueError(unknown_word(what, text, words))
        return text
    return ValueKind(parse, "one of: %s" % ", ".join(sorted(words)))

# -- unknown words, with a guess at what was meant ------------------------------------------


def unknown_word(what, word, choices, listed=None):
    """Say ``word`` is not one of ``choices``; ``listed`` lists them if not just sorted."""
    guess = _cfg_closest(word, choices)
    hint = ", did you mean '%s'?" % guess if guess else ""
    return "unknown %s %s%s (expected one of: %s)" % (
        what, shown(word), hint, listed or ", ".join(sorted(choices)))


def _cfg_closest(word, choices):
    """The choice a mistyped ``word`` most likely meant: at most two edits away, or None.

    A choice whose length differs by more than the edits allowed cannot be that close, so
    the distance is only worked out for words of about the right length: a token of a
    megabyte costs a comparison of lengths, not a megabyte-long table.
    """
    best, best_distance = None, max(1, min(2, len(word) // 3)) + 1
    for choice in sorted(choices):
        if abs(len(choice) - len(word)) >= best_distance:
            continue
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

# -- ports, networks, PROXY v2 options --------------------------------------------------------


def _cfg_port(text):
    if not _CFG_DIGITS.match(text) or len(text) > 5 or not 1 <= int(text) <= 65535:
        raise ValueError("%s is not a port (expected 1 to 65535)" % shown(text))
    return int(text)


PORT_VALUE = ValueKind(_cfg_port, "a port from 1 to 65535")


_CFG_SOURCES_EXPECTED = "CIDR[,CIDR...] such as 10.0.0.0/16,192.0.2.7, or unix"


def _cfg_sources(text):
    """accept-proxy-from / proxy-optional-from: networks (as acls read them, rules.py), and
    "unix" for Unix-socket peers."""
    return tuple(item if item == "unix" else parse_network(item, _CFG_SOURCES_EXPECTED)
                 for item in text.split(","))


SOURCES_VALUE = ValueKind(_cfg_sources, "CIDR[,CIDR...]")
HEADER_SIZE_VALUE = size_range(16, 65551)       # a v2 header: 16 bytes + a 16-bit length


def _cfg_v2_options(text):
    words = text.split(",")
    for word in words:
        if word not in V2_OPTION_WORDS:
            raise ValueError(unknown_word("proxy-v2-options value", word, V2_OPTION_WORDS))
    return frozenset(words)


V2_OPTIONS_VALUE = ValueKind(_cfg_v2_options, "a comma list of %s" % ", ".join(V2_OPTION_WORDS))


# set-proxy-v2-tlv-fmt(ID) FMT: parse(option word, FMT) -> tlvfmt.TlvFormat
TLV_FMT_VALUE = ValueKind(compile_tlv_fmt, "FMT, %s" % TLV_FMT_EXPECTED)

# -- IP addresses ---------------------------------------------------------------------------------

_CFG_IPV4 = re.compile(r"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}\Z")
_CFG_IPV6 = re.compile(r"[0-9A-Fa-f:.]+\Z")


def _cfg_ip(host, family):
    """The canonical text of an IP address of ``family``, or None if ``host`` is not one.

    As inet_pton reads them: four decimal parts without leading zeros for IPv4; no zone id
    for IPv6, and an IPv4-mapped address keeps its dotted tail, as inet_ntop writes it.
    """
    try:
        if family == "ipv4":
            return str(ipaddress.IPv4Address(host)) if _CFG_IPV4.match(host) else None
        if not _CFG_IPV6.match(host):
            return None
        ip = ipaddress.IPv6Address(host)
    except ValueError:
        return None
    if ip.ipv4_mapped is not None:
        return "::ffff:%s" % ip.ipv4_mapped
    return ip.compressed


def _cfg_check_addr(text):
    host = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    for family in ("ipv4", "ipv6"):
        ip = _cfg_ip(host, family)
        if ip is not None:
            return family, ip
    raise ValueError("%s is not an IP address (expected an IPv4 or IPv6 address)" % shown(text))


CHECK_ADDR_VALUE = ValueKind(_cfg_check_addr, "an IP address")

# -- following host names: init-addr and server-template ------------------------------------------

INIT_ADDR_METHODS = ("last", "libc", "none")
DEFAULT_INIT_ADDR = ("last", "libc")
_CFG_INIT_ADDR_FORMS = "a comma list of last, libc, none or an IP address, such as last,libc,none"
MAX_TEMPLATE_SLOTS = 1024


def _cfg_init_addr(text):
    """init-addr: the methods in order, each a word or the canonical text of an IP address
    (discovery.initial_addresses tries them at start-up)."""
    methods = []
    for item in text.split(","):
        method = item if item in INIT_ADDR_METHODS else (
            _cfg_ip(item, "ipv4") or _cfg_ip(item, "ipv6"))
        if method is None:
            raise ValueError("unknown init-addr method %s (expected %s)"
                             % (shown(item), _CFG_INIT_ADDR_FORMS))
        if method in methods:
            raise ValueError("%s given twice (expected each init-addr method once)" % shown(item))
        methods.append(method)
    return tuple(methods)


INIT_ADDR_VALUE = ValueKind(_cfg_init_addr, _CFG_INIT_ADDR_FORMS)


def expand_server_template(prefix, words):
    """``server-template PREFIX = COUNT HOST:PORT [options]``, its value split into words:
    the names of its servers, PREFIX1..PREFIXCOUNT, and the words of the server line they
    all share (HOST:PORT [options], read as a server line's)."""
    if len(words) < 2:
        raise ValueError("missing %s (expected server-template %s = COUNT HOST:PORT [options])"
                         % ("count and address" if not words else "address", prefix))
    count = words[0]
    if (not _CFG_DIGITS.match(count) or len(count) > _CFG_MAX_DIGITS
            or not 1 <= int(count) <= MAX_TEMPLATE_SLOTS):
        raise ValueError("%s is not a server count (expected a whole number from 1 to %d)"
                         % (shown(count), MAX_TEMPLATE_SLOTS))
    names = tuple("%s%d" % (prefix, number) for number in range(1, int(count) + 1))
    return names, list(words[1:])

# -- listening and server addresses ---------------------------------------------------------------

_CFG_BIND_FORMS = ":PORT, *:PORT, IPv4:PORT, [IPv6]:PORT or unix@/path"
_CFG_IP_LISTEN_FORMS = ":PORT, *:PORT, IPv4:PORT or [IPv6]:PORT"
_CFG_SERVER_FORMS = "IPv4:PORT, [IPv6]:PORT, HOST:PORT or unix@/path"
_CFG_UNIX_PREFIX = "unix@"
_CFG_UNIX_PATH_MAX = 107                 # sun_path is 108 bytes, the last one a NUL
_CFG_DOTTED_NUMBERS = re.compile(r"[0-9.]+\Z")
_CFG_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\Z")


def _cfg_unix_address(text):
    path = text[len(_CFG_UNIX_PREFIX):]
    if not path:
        raise ValueError("%s has no path (expected unix@/path)" % shown(text))
    if len(path.encode("utf-8", "surrogateescape")) > _CFG_UNIX_PATH_MAX:
        raise ValueError("the socket path is %d bytes long (expected at most %d)"
                         % (len(path.encode("utf-8", "surrogateescape")), _CFG_UNIX_PATH_MAX))
    return Address("unix", path, text)


def _cfg_host_and_port(text, forms):
    """Split HOST:PORT or [IPv6]:PORT into (host, whether bracketed, port)."""
    if text.startswith("["):
        host, separator, port = text[1:].partition("]:")
        if not separator:
            raise ValueError("%s is not an address (expected %s)" % (shown(text), forms))
        return host, True, _cfg_port(port)
    host, separator, port = text.rpartition(":")
    if not separator:
        raise ValueError("%s has no port (expected %s)" % (shown(text), forms))
    if ":" in host:
        raise ValueError("%s needs brackets around the IPv6 address (expected %s)"
                         % (shown(text), shown("[%s]:%s" % (host, port))))
    return host, False, _cfg_port(port)


def bind_address(text):
    """The Address of a bind line's first word; ValueError says what is wrong."""
    if text.startswith(_CFG_UNIX_PREFIX):
        return _cfg_unix_address(text)
    return ip_listen_address(text, _CFG_BIND_FORMS)


def ip_listen_address(text, forms=_CFG_IP_LISTEN_FORMS):
    """The Address to listen on at ``text``, an IP address and port as a bind line writes
    them (``:PORT`` and ``*:PORT``: every IPv4 address); ``forms`` is what error messages
    say is expected."""
    host, bracketed, port = _cfg_host_and_port(text, forms)
    if bracketed:
        family, ip = "ipv6", _cfg_ip(host, "ipv6")
    else:
        family = "ipv4"
        ip = "0.0.0.0" if host in ("", "*") else _cfg_ip(host, "ipv4")
    if ip is None:
        raise ValueError("%s is not an IP%s address (expected %s)"
                         % (shown(host), "v6" if bracketed else "v4", forms))
    return Address(family, (ip, port), text)


def server_address(text):
    """The Address of a server; a host name is checked here and resolved at start-up."""
    if text.startswith(_CFG_UNIX_PREFIX):
        return _cfg_unix_address(text)
    host, bracketed, port = _cfg_host_and_port(text, _CFG_SERVER_FORMS)
    if bracketed:
        ip = _cfg_ip(host, "ipv6")
        if ip is None:
            raise ValueError("%s is not an IPv6 address (expected %s)"
                             % (shown(host), _CFG_SERVER_FORMS))
        return Address("ipv6", (ip, port), text)
    ip = _cfg_ip(host, "ipv4")
    if ip is not None:
        return Address("ipv4", (ip, port), text)
    if _CFG_DOTTED_NUMBERS.match(host):
        raise ValueError("%s is not an IPv4 address (expected %s)"
                         % (shown(host), _CFG_SERVER_FORMS))
    labels = (host[:-1] if host.endswith(".") else host).split(".")
    if len(host) > 253 or not all(_CFG_HOST_LABEL.match(label) for label in labels):
        raise ValueError("%s is not a host name (expected %s)" % (shown(host), _CFG_SERVER_FORMS))
    return Address(None, (host, port), text)

# -- health check strings and patterns ------------------------------------------------------------


def _cfg_bytes(text):
    if not text:
        raise ValueError("an empty string (expected at least one byte)")
    return text.encode("utf-8", "surrogateescape")


CHECK_SEND_VALUE = ValueKind(_cfg_bytes, "a STRING, may be quoted")


def _cfg_check_expect(kind, pattern):
    if kind == "string":
        return kind, _cfg_bytes(pattern)
    if kind == "rstring":
        pattern = _cfg_bytes(pattern)
        text = shown(pattern.decode("latin-1"))
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError("%s is not a regular expression: %s (expected a Python regular "
                             "expression)" % (text, exc))
        problem = _cfg_backtracking_risk(pattern.decode("latin-1"))
        if problem:
            raise ValueError("%s %s, which can take exponential time on a reply and stall "
                             "every connection (expected a pattern without it, such as ^a+$ "
                             "rather than ^(a+)+$)" % (text, problem))
        return kind, pattern
    raise ValueError(unknown_word("check-expect kind", kind, ("string", "rstring")))


CHECK_EXPECT_VALUE = ValueKind(_cfg_check_expect, "string STRING or rstring REGEX")

_CFG_REPEAT = re.compile(r"[*+]|\{[0-9]*,[0-9]*\}|\{[0-9]*[2-9][0-9]*\}|\{[1-9][0-9]+\}")


_CFG_GROUP_EXTENSION = re.compile(r"\?(?:P<\w+>|<?[=!]|[aiLmsux-]*:)")


class _CfgGroup(object):
    """A group of a pattern being scanned: whether it holds a repeat, and its alternatives."""

    def __init__(self):
        self.repeats = False
        self.alternatives = [""]


def _cfg_backtracking_risk(pattern):
    """Why ``pattern`` may backtrack catastrophically, or None.

    ``re`` holds the interpreter lock while it searches, so one such pattern freezes the
    whole proxy. Two shapes cause it: a repeated group that holds a repeat (``(a+)+``,
    ``(a*b?)*``), and a repeated group whose alternatives can match the same text (``(a|a)*``,
    ``(a|ab)+``: one alternative equal to, or a prefix of, another). The scan reads the
    pattern text, and errs on the side of finding them.
    """
    stack = [_CfgGroup()]
    position = 0
    while position < len(pattern):
        char = pattern[position]
        start = position
        if char == "\\":
            position += 2
        elif char == "[":
            position = _cfg_class_end(pattern, position)
        elif char == "(":
            stack.append(_CfgGroup())
            extension = _CFG_GROUP_EXTENSION.match(pattern, position + 1)
            position = extension.end() if extension else position + 1
            continue
        elif char == "|":
            stack[-1].alternatives.append("")
            position += 1
            continue
        elif char == ")" and len(stack) > 1:
            group = stack.pop()
            position += 1
            repeat = _CFG_REPEAT.match(pattern, position)
            if repeat:
                if group.repeats:
                    return "repeats a group that itself repeats"
                choices = [text for text in group.alternatives if text]
                if any(i != j and choices[j].startswith(choices[i])
                       for i in range(len(choices)) for j in range(len(choices))):
                    return "repeats a group whose alternatives can match the same text"
                position = repeat.end()
            stack[-1].repeats = stack[-1].repeats or group.repeats or bool(repeat)
            stack[-1].alternatives[-1] += pattern[start:position]
            continue
        else:
            position += 1
        repeat = _CFG_REPEAT.match(pattern, position)
        if repeat:
            stack[-1].repeats = True
            position = repeat.end()
        stack[-1].alternatives[-1] += pattern[start:position]
    return None


def _cfg_class_end(pattern, position):
    """Where the character class opening at ``position`` ends (past its ``]``)."""
    position += 1
    if position < len(pattern) and pattern[position] == "^":
        position += 1
    if position < len(pattern) and pattern[position] == "]":
        position += 1
    while position < len(pattern) and pattern[position] != "]":
        position += 2 if pattern[position] == "\\" else 1
    return position + 1


# -- the process model: how many workers, whom they run as (master.py, process.py) ---------

WORKERS_AUTO = "auto"
MAX_WORKERS = 256
_CFG_ID_DIGITS = re.compile(r"[0-9]{1,10}\Z")     # ASCII digits only: "²".isdigit() is True


def usable_cpus():
    """The CPUs this process may run on (its affinity mask), or the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parse_workers(text):
    """``workers = N | auto``: a count from 1 to 256, or ``auto`` for the usable CPUs."""
    if text == WORKERS_AUTO:
        return usable_cpus()
    if not _CFG_ID_DIGITS.match(text) or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError("%s is not a worker count (expected a whole number from 1 to %d, "
                         "or auto)" % (shown(text), MAX_WORKERS))
    return int(text)


def parse_user(text):
    """``user = NAME | UID``: the user the workers run as; it must exist here."""
    return _host_name(text, pwd.getpwuid, pwd.getpwnam, "user", "/etc/passwd").pw_name


def parse_group(text):
    """``group = NAME | GID``: the group the workers run as; it must exist here."""
    return _host_name(text, grp.getgrgid, grp.getgrnam, "group", "/etc/group").gr_name


def _host_name(text, by_id, by_name, what, where):
    try:
        return by_id(int(text)) if _CFG_ID_DIGITS.match(text) else by_name(text)
    except (KeyError, OverflowError, ValueError):     # ValueError: a NUL in the name
        raise ValueError("no %s %s on this host (expected a %s name or id from %s)"
                         % (what, shown(text), what, where))


WORKERS_VALUE = ValueKind(parse_workers, "a worker count or auto")
USER_VALUE = ValueKind(parse_user, "a user name")
GROUP_VALUE = ValueKind(parse_group, "a group name")
