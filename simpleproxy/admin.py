"""The runtime API (``stats socket``): HAProxy's CLI protocol as a state machine over bytes.

An ``AdminConversation`` is one connection to the socket. The loop hands it what it reads
(``feed``) and sends what it returns; nothing here touches a socket or a clock. As in
HAProxy 2.6:

* without ``prompt``, the first line is the only one: its answer is sent and the connection
  closes. ``prompt`` switches to interactive mode: every answer is followed by ``> `` and
  lines are read until ``quit`` or the end of input (``prompt`` again switches back).
* a line holds one or more commands separated by ``;``; each answer ends with an empty line,
  and a command that succeeds silently answers just that empty line (tools such as
  haproxyadmin take a lone ``"\\n"`` as success).
* errors start with HAProxy's own first lines (``Unknown command, but maybe one of the
  following ones is a better match:`` for any word it does not know, ``Permission
  denied``, ``No such server.``).
* a line longer than ``MAX_LINE`` bytes is refused and the connection closed: the buffer
  never grows past it.
* level ``user`` may only look; ``admin`` may also change servers.

The commands act on a *target*, which the proxy implements (tests use one over real
``BackendPool`` objects):

    target.stats_model()           the ProxyStats to draw views from
    target.clock()                 (loop time, wall time) for those views
    target.session_views()         SessionView tuples, one per live connection
    target.set_server(backend, server, state=None, weight=None, maxconn=None)
        state: balancer READY, DRAIN or MAINT; weight 0-256; maxconn 0 = no limit; None
        leaves one as it is

The setter gets names that exist (checked here first) and returns None or an error line. A
single process is its own target (proxy.Proxy); under a master, the master's view of all
the workers is (master.MasterStats).
"""
import logging
import re
from collections import namedtuple

from .balancer import DRAIN, MAINT, MAX_WEIGHT, READY
from .config_values import parse_duration
from .logs import LOG
from .statsviews import (SHOW_ALL, proxies, show_errors, show_info, show_servers_state,
                         show_sess, show_stat, show_stat_typed)

MAX_LINE = 16384              # bytes of one command line, HAProxy's default buffer size
PROMPT = "> "
LEVEL_USER = "user"
LEVEL_ADMIN = "admin"
MAX_MAXCONN = (1 << 31) - 1   # HAProxy's is an int; a negative one is refused here
_ADM_INTEGER = re.compile(r"-?[0-9]+\Z")
_ADM_STRTOL = re.compile(r"([-+]?[0-9]+)(.*)\Z", re.DOTALL)   # strtol's number, then the rest
_ADM_MAX_PERCENT = 25600      # HAProxy caps a relative weight there before scaling

SessionView = namedtuple("SessionView", "id client peer frontend backend server state started "
                                        "bytes_in bytes_out proxy tlvs")
SessionView.__doc__ = """One live connection for "show sess": id (an int); client and peer as
the log writes them; frontend, backend and server names (None before a server is chosen);
the state word; started (loop time); bytes so far; proxy: "v2/TCP4" or None without a
header; tlvs: (name, text or bytes) pairs of the TLVs received."""

LINE_TOO_LONG = "Command line too long (at most %d bytes), closing.\n" % MAX_LINE
PERMISSION_DENIED = "Permission denied\n"
NO_SUCH_BACKEND = "No such backend.\n"
NO_SUCH_SERVER = "No such server.\n"
REQUIRE_SERVER = "Require 'backend/server'.\n"


_ADM_SETTINGS = (("administrative state", logging.WARNING), ("weight", logging.INFO),
                 ("maxconn", logging.INFO))


def log_server_setting(label, before, after):
    """Log what an operator changed on a server: ``before`` and ``after`` are (state, weight,
    maxconn), None in ``after`` for what was not set."""
    for (words, level), was, now in zip(_ADM_SETTINGS, before, after):
        if now is not None and now != was:
            LOG.log(level, "server %s %s changed from %s to %s by the runtime API", label, words,
                    was, now)


class _AdmCommand(namedtuple("_AdmCommand", "words usage help admin handler")):
    """A command: the words that name it, its help line, whether it needs level admin, and
    its handler(target, args), or None for the one that sets the conversation itself
    (``set timeout cli``)."""


def _adm_help_line(usage, text):
    return "  %-40s: %s\n" % (usage, text)


class AdminConversation(object):
    """One client of the stats socket (see the module docstring)."""

    def __init__(self, target, level=LEVEL_ADMIN):
        self.target = target
        self.level = level
        self.interactive = False
        self.closed = False
        self.timeout = None          # seconds a request may take; None: the listener's own
        self._buffer = b""

    def feed(self, data):
        """Bytes read from the client; returns the bytes to send. ``closed`` says when the
        connection must be closed once they are sent."""
        if self.closed:
            return b""
        self._buffer += data
        out = []
        while not self.closed:
            line, newline, rest = self._buffer.partition(b"\n")
            if not newline:
                if len(self._buffer) > MAX_LINE:
                    self._buffer = b""
                    self.closed = True
                    out.append(LINE_TOO_LONG.encode())
                break
            self._buffer = rest
            if len(line) > MAX_LINE:
                self.closed = True
                out.append(LINE_TOO_LONG.encode())
                break
            out.append(self._line(line.rstrip(b"\r")))
        return b"".join(out)

    def eof(self):
        """The client closed its side: a last line without its newline still counts, as
        HAProxy runs it. Returns the bytes to send; the connection closes after them."""
        out = b""
        if not self.closed and self._buffer.strip():
            out = self._line(self._buffer.rstrip(b"\r"))
        self.closed = True
        return out

    def _line(self, raw):
        text = raw.decode("utf-8", "replace")
        answers = []
        for command in text.split(";"):
            answers.append(self._answer(command.split()))
            if self.closed:
                break
            if self.interactive:
                answers.append(PROMPT)      # after each command of the line, as HAProxy
        if not self.interactive:
            self.closed = True
        return "".join(answers).encode("utf-8", "replace")

    def _answer(self, words):
        """One command's answer, its closing empty line included."""
        if words == ["quit"]:
            self.closed = True
            return ""
        if words == ["prompt"]:
            self.interactive = not self.interactive
            return "\n"
        if words[:1] == ["help"]:
            return self._help(words[1:]) + "\n"
        command = _adm_find(words)
        if command is None:
            return self._unknown(words) + "\n"
        if command.admin and self.level != LEVEL_ADMIN:
            return PERMISSION_DENIED + "\n"
        args = words[len(command.words):]
        if command.handler is None:
            return self._set_timeout(args) + "\n"
        try:
            return command.handler(self.target, args) + "\n"
        except _AdmUsage as usage:
            return str(usage) + "\n"

    def _set_timeout(self, args):
        """``set timeout cli DELAY`` (seconds unless a unit says otherwise): this connection's
        own deadline, as HAProxy's (hatop asks for 60 s when it connects)."""
        if args[:1] != ["cli"]:
            return "'set timeout' only supports 'cli'.\n"
        if len(args) < 2:
            return "Expects an integer value.\n"
        text = args[1]
        try:
            seconds = parse_duration(text if not text.isdigit() else text + "s")
        except ValueError:
            seconds = 0
        if seconds < 1:
            return "Invalid timeout value.\n"
        self.timeout = seconds
        return ""

    def _command_lines(self, words=()):
        """The help lines of the commands this level may run whose names start with
        ``words``."""
        return [_adm_help_line(command.usage, command.help) for command in _ADM_COMMANDS
                if (self.level == LEVEL_ADMIN or not command.admin) and
                command.words[:len(words)] == tuple(words)]

    def _help(self, words):
        """``help [words]``: the matching commands, or all of them."""
        lines = self._command_lines(words) or self._command_lines()
        return "The following commands are valid at this level:\n" + "".join(lines) + \
            _ADM_BUILTIN_HELP

    def _unknown(self, words):
        """HAProxy 2.6's answer to an unknown command: for an empty one, all the commands;
        otherwise "maybe one of the following" and the commands sharing its first word, or
        all of them (HAProxy's guesses are fuzzier; its first line is what tools match)."""
        if not words:
            return ("Unknown command. Please enter one of the following commands only:\n" +
                    "".join(self._command_lines()) + _ADM_BUILTIN_HELP)
        close = self._command_lines(words[:1]) or self._command_lines()
        return ("Unknown command, but maybe one of the following ones is a better match:\n" +
                "".join(close) + _ADM_BUILTIN_HELP)


class _AdmUsage(Exception):
    """A command used the wrong way; the message is the answer."""


def _adm_find(words):
    for command in _ADM_COMMANDS:
        if tuple(words[:len(command.words)]) == command.words:
            return command
    return None


def _adm_server(target, args):
    """The ServerStats a ``B/S`` argument names, checked against the model."""
    backend_name, slash, server_name = (args[0] if args else "").partition("/")
    if not slash or not backend_name or not server_name:
        raise _AdmUsage(REQUIRE_SERVER)
    be = target.stats_model().backend(backend_name)
    if be is None:
        raise _AdmUsage(NO_SUCH_BACKEND)
    for srv in be.servers:
        if srv.name == server_name:
            return srv
    raise _AdmUsage(NO_SUCH_SERVER)


def _adm_done(error):
    """A setter's result: nothing (success is the empty line) or its error line."""
    return "" if error is None else error.rstrip("\n") + "\n"


def _adm_show_info(target, args):
    now, wall = target.clock()
    return show_info(target.stats_model(), now, wall)


def _adm_show_stat(target, args):
    """``show stat [IID TYPE SID] [typed]``, read as HAProxy 2.6 reads it: with three words
    or more, the first three are the filters; IID is a proxy's id or name (-1: all), and a
    TYPE or SID that is not a number counts as 0 (C's atoi). HAProxy's other words (json,
    desc, up, no-maint) are ignored, as HAProxy ignores words it does not know."""
    stats = target.stats_model()
    filters = [SHOW_ALL, SHOW_ALL, SHOW_ALL]
    if len(args) >= 3:
        proxy = args[0]
        iid = int(proxy) if _ADM_INTEGER.match(proxy) else _adm_proxy_id(stats, proxy)
        if iid is None:
            return "No such proxy.\n"
        filters = [iid] + [int(arg) if _ADM_INTEGER.match(arg) else 0 for arg in args[1:3]]
    now, _ = target.clock()
    view = show_stat_typed if "typed" in args else show_stat
    return view(stats, now, *filters)


def _adm_proxy_id(stats, name):
    """The id of the frontend, backend or listen section called ``name``, or None."""
    for iid, fe, be in proxies(stats):
        if any(half is not None and half.name == name for half in (fe, be)):
            return iid
    return None


def _adm_show_servers_state(target, args):
    stats = target.stats_model()
    backend = args[0] if args else None
    if backend is not None and stats.backend(backend) is None:
        return "Can't find backend.\n"
    now, _ = target.clock()
    return show_servers_state(stats, now, backend)


def _adm_show_sess(target, args):
    now, _ = target.clock()
    return show_sess(target.session_views(), now)


def _adm_show_errors(target, args):
    _, wall = target.clock()
    return show_errors(target.stats_model(), wall)


_ADM_STATES = {"ready": READY, "drain": DRAIN, "maint": MAINT}


def _adm_set_server(target, args):
    srv = _adm_server(target, args)
    if args[1:2] == ["state"]:
        admin = _ADM_STATES.get(args[2] if len(args) > 2 else "")
        if admin is None:
            return "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n"
        return _adm_done(target.set_server(srv.backend.name, srv.name, state=admin))
    if args[1:2] == ["weight"]:
        return _adm_set_weight(target, [args[0]] + args[2:])
    return "usage: set server <backend>/<server> state | weight\n"


def _adm_set_weight(target, args):
    """``set weight B/S N`` (HAProxy's older form, which haproxyadmin sends), and the weight
    part of ``set server``."""
    srv = _adm_server(target, args)
    weight = _adm_weight(args[1:], srv.state.config.weight)
    return _adm_done(target.set_server(srv.backend.name, srv.name, weight=weight))


def _adm_weight(args, initial):
    """The weight ``args[0]`` asks for, read as HAProxy 2.6 does: an absolute 0-256, or
    ``N%`` of the configured weight (hatop's F4 sends ``100%`` to reset it), with HAProxy's
    messages."""
    if not args:
        raise _AdmUsage("Require <weight> or <weight%>.\n")
    match = _ADM_STRTOL.match(args[0])
    if match is None:
        raise _AdmUsage("Empty weight string empty or preceded by garbage")
    weight, rest = int(match.group(1)), match.group(2)
    if rest == "%":
        if weight < 0:
            raise _AdmUsage("Relative weight must be positive.\n")
        return min(MAX_WEIGHT, initial * min(weight, _ADM_MAX_PERCENT) // 100)
    if not 0 <= weight <= MAX_WEIGHT:
        raise _AdmUsage("Absolute weight can only be between 0 and 256 inclusive.\n")
    if rest:
        raise _AdmUsage("Trailing garbage in weight string")
    return weight


def _adm_get_weight(target, args):
    """``get weight B/S``: HAProxy's "current (initial initial)" line."""
    state = _adm_server(target, args).state
    return "%d (initial %d)\n" % (state.weight, state.config.weight)


def _adm_set_maxconn_server(target, args):
    srv = _adm_server(target, args)
    maxconn = _adm_maxconn(args[1:])
    return _adm_done(target.set_server(srv.backend.name, srv.name, maxconn=maxconn))


def _adm_maxconn(args):
    """The limit ``args[0]`` asks for, with HAProxy 2.6's messages; HAProxy takes a negative
    one without a word, which is refused here (0 means no limit)."""
    if not args:
        raise _AdmUsage("Require <maxconn>.\n")
    match = _ADM_STRTOL.match(args[0])
    if match is None:
        raise _AdmUsage("maxconn string empty or preceded by garbage")
    if match.group(2):
        raise _AdmUsage("Trailing garbage in maxconn string")
    maxconn = int(match.group(1))
    if not 0 <= maxconn <= MAX_MAXCONN:
        raise _AdmUsage("maxconn must be between 0 (no limit) and %d.\n" % MAX_MAXCONN)
    return maxconn


def _adm_state_setter(admin):
    def set_state(target, args):
        srv = _adm_server(target, args)
        return _adm_done(target.set_server(srv.backend.name, srv.name, state=admin))
    return set_state


_ADM_COMMANDS = (
    _AdmCommand(("disable", "server"), "disable server <bk>/<srv>",
                "disable a server for maintenance (use 'set server' instead)", True,
                _adm_state_setter(MAINT)),
    _AdmCommand(("enable", "server"), "enable server <bk>/<srv>",
                "enable a disabled server (use 'set server' instead)", True,
                _adm_state_setter(READY)),
    _AdmCommand(("get", "weight"), "get weight <bk>/<srv>",
                "report a server's current weight", False, _adm_get_weight),
    _AdmCommand(("set", "maxconn", "server"), "set maxconn server <bk>/<srv>",
                "change a server's maxconn setting", True, _adm_set_maxconn_server),
    _AdmCommand(("set", "server"), "set server <bk>/<srv> [opts]",
                "change a server's state or weight", True, _adm_set_server),
    _AdmCommand(("set", "timeout"), "set timeout [cli] <delay>", "change a timeout setting",
                False, None),
    _AdmCommand(("set", "weight"), "set weight <bk>/<srv>",
                "change a server's weight (use 'set server' instead)", True, _adm_set_weight),
    _AdmCommand(("show", "errors"), "show errors",
                "report the last PROXY headers refused", False, _adm_show_errors),
    _AdmCommand(("show", "info"), "show info",
                "report information about the running process", False, _adm_show_info),
    _AdmCommand(("show", "servers", "state"), "show servers state [<backend>]",
                "dump volatile server information (all or for a single backend)", False,
                _adm_show_servers_state),
    _AdmCommand(("show", "sess"), "show sess",
                "report the list of current sessions", False, _adm_show_sess),
    _AdmCommand(("show", "stat"), "show stat [<iid> <type> <sid>] [typed]",
                "report counters for each proxy and server", False, _adm_show_stat),
)
_ADM_BUILTIN_HELP = "".join(_adm_help_line(usage, text) for usage, text in (
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect")))
