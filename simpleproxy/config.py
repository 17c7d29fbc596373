"""The configuration: HAProxy's words in an INI file, checked and read into frozen objects.

ini.py reads the file into sections of keys with their line numbers; this module says what
the keys mean. Every key is checked against the kind of section it is in and converted
(config_values.py holds the kinds of values), [defaults] fills in whatever a frontend,
backend or listen leaves out, and the references between sections (default_backend,
addresses bound twice) are checked last. What it builds are settings.py's objects.

Every problem becomes one line, ``FILE:LINE: [SECTION] KEY: what is wrong (expected
...)``, and all of them are raised together in one ConfigError, sorted by line.
Nothing here opens a socket or asks a name server: a server's host name is resolved at
start-up (resolve.py), as HAProxy does when it starts, or by ``-c --resolve``.
"""

import re
from collections import namedtuple

from .config_values import (CHECK_ADDR_VALUE, CHECK_EXPECT_VALUE, CHECK_SEND_VALUE,
                            DEFAULT_INIT_ADDR, DURATION_VALUE, GROUP_VALUE,
                            HEADER_SIZE_VALUE, INIT_ADDR_VALUE, MAX_COUNT, PORT_VALUE,
                            SOURCES_VALUE, TLV_FMT_VALUE, USER_VALUE, V2_OPTIONS_VALUE,
                            WORKERS_VALUE, Address, ValueKind, bind_address,
                            expand_server_template, one_of, server_address, size_range,
                            unknown_word, whole_number)
from .ini import ConfigProblems, read_config_file, read_ini, shown, split_words
from .rules import (NO_RULES, TCP_REQUEST_CONNECTION, TCP_REQUEST_CONTENT, USE_BACKEND,
                    FrontendRules, compile_acl, compile_rule)
from .settings import Backend, Bind, Config, Frontend, GlobalSettings, Server
from .statsconfig import (LOG_FORMAT_VALUE, LOG_TARGET_VALUE, STATS_AUTH_VALUE,
                          STATS_HTTP_VALUE, STATS_NAME_VALUE, STATS_REFRESH_VALUE,
                          STATS_SOCKET_VALUE)
from .tlvfmt import TLV_FMT_OPTION, V2_MAX_LENGTH, compile_tlv_plan, max_header_length


def load_config(path):
    """Read and check the INI file at ``path``; raises ConfigError listing every problem."""
    return parse_config(read_config_file(path), path)


def parse_config(text, path="<config>"):
    """Check the INI ``text`` (``path`` names it in messages); raises ConfigError."""
    return _CfgReader(path).read(text)


_CFG_NAME = re.compile(r"[A-Za-z0-9_.:-]+\Z")
_CFG_NAME_RULE = "letters, digits, '.', ':', '-' and '_'"

# -- option lines: the bind and server options --------------------------------------------

_CfgOption = namedtuple("_CfgOption", "field nargs value")
# nargs 0: a flag, and value is what it sets; otherwise value is a ValueKind given nargs words.

_CFG_BIND_OPTIONS = {
    "accept-proxy": _CfgOption("accept_proxy", 0, True),
    "accept-proxy-from": _CfgOption("accept_proxy_from", 1, SOURCES_VALUE),
    "proxy-optional-from": _CfgOption("proxy_optional_from", 1, SOURCES_VALUE),
    "accept-proxy-version": _CfgOption("accept_proxy_version", 1,
                                       one_of("PROXY version", ("v1", "v2", "any"))),
    "proxy-max-header": _CfgOption("proxy_max_header", 1, HEADER_SIZE_VALUE),
    "v6only": _CfgOption("v6only", 0, True),
}

_CFG_SERVER_OPTIONS = {
    "send-proxy": _CfgOption("send_proxy", 0, 1),
    "send-proxy-v2": _CfgOption("send_proxy", 0, 2),
    "proxy-v2-options": _CfgOption("proxy_v2_options", 1,
                                   V2_OPTIONS_VALUE),
    # NAME(: the option word carries its argument, set-proxy-v2-tlv-fmt(ID), and may repeat.
    TLV_FMT_OPTION + "(": _CfgOption("proxy_v2_tlv_fmts", 1, TLV_FMT_VALUE),
    "check": _CfgOption("check", 0, True),
    "check-send-proxy": _CfgOption("check_send_proxy", 0, True),
    "no-check-send-proxy": _CfgOption("check_send_proxy", 0, False),
    "inter": _CfgOption("inter", 1, DURATION_VALUE),
    "fastinter": _CfgOption("fastinter", 1, DURATION_VALUE),
    "downinter": _CfgOption("downinter", 1, DURATION_VALUE),
    "rise": _CfgOption("rise", 1, whole_number(1, 1000)),        # checks in a row
    "fall": _CfgOption("fall", 1, whole_number(1, 1000)),
    "weight": _CfgOption("weight", 1, whole_number(0, 256)),
    "backup": _CfgOption("backup", 0, True),
    "maxconn": _CfgOption("maxconn", 1, whole_number(0, MAX_COUNT)),
    "disabled": _CfgOption("disabled", 0, True),
    "port": _CfgOption("check_port", 1, PORT_VALUE),
    "addr": _CfgOption("check_addr", 1, CHECK_ADDR_VALUE),
    "check-send": _CfgOption("check_send", 1, CHECK_SEND_VALUE),
    "check-expect": _CfgOption("check_expect", 2,
                               CHECK_EXPECT_VALUE),
    "resolve": _CfgOption("resolve", 0, True),
    "init-addr": _CfgOption("init_addr", 1, INIT_ADDR_VALUE),
    "resolve-prefer": _CfgOption("resolve_prefer", 1, one_of("address family", ("ipv4", "ipv6"))),
}

# The options that only matter to health checks: given without "check", they do nothing.
_CFG_CHECK_FIELDS = ("check_send_proxy", "inter", "fastinter", "downinter", "rise", "fall",
                     "check_port", "check_addr", "check_send", "check_expect")

_CFG_SERVER_DEFAULTS = {
    "send_proxy": 0, "proxy_v2_options": frozenset(), "proxy_v2_tlv_fmts": (), "check": False,
    "check_send_proxy": None, "inter": 2.0, "fastinter": None, "downinter": None, "rise": 2,
    "fall": 3, "weight": 1, "backup": False, "maxconn": 0, "disabled": False, "check_port": None,
    "check_addr": None, "check_send": None, "check_expect": None, "init_addr": DEFAULT_INIT_ADDR,
    "resolve_prefer": "ipv6", "resolve": False,      # HAProxy's default family: IPv6
}


def _cfg_read_options(words, table, what):
    """The options after an address: (values by field, the word that set each field, problems).

    Reading stops at an unknown word: whether it took an argument cannot be known.
    """
    values, given, problems = {}, {}, []
    position = 0
    while position < len(words):
        word = words[position]
        name, parenthesis, _ = word.partition("(")
        option = table.get(name + parenthesis)
        if option is None:
            problems.append(unknown_word(what, word, [
                known + "ID)" if known.endswith("(") else known for known in table]))
            break
        args = words[position + 1:position + 1 + option.nargs]
        position += 1 + option.nargs
        if len(args) < option.nargs:
            problems.append("'%s' needs a value (expected %s followed by %s)"
                            % (word, word, option.value.expected))
            break
        if parenthesis:
            try:
                values[option.field] = values.get(option.field, ()) + (
                    option.value.parse(word, *args),)
            except ValueError as exc:
                problems.append("%s: %s" % (word, exc))
            given[option.field] = name
            continue
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


# -- the keys of each section -----------------------------------------------------------------

_CfgKey = namedtuple("_CfgKey", "field value sections")
# value: a ValueKind; None for a flag ("option X", which "no option X" turns off); or
# _CFG_SPECIAL for the keys _CfgReader reads itself (bind, server, ...).

_CFG_SPECIAL = object()
_CFG_FRONT = ("defaults", "frontend", "listen")
_CFG_BACK = ("defaults", "backend", "listen")

_CFG_GLOBAL_KEYS = {
    "maxconn": _CfgKey("maxconn", whole_number(1, MAX_COUNT), ("global",)),
    "log-level": _CfgKey("log_level", one_of("log level", ("debug", "info", "warning", "error")),
                         ("global",)),
    "tune.bufsize": _CfgKey("bufsize", size_range(1024, 64 * 1024 * 1024), ("global",)),
    "tune.bufsize.large": _CfgKey("bufsize_large", size_range(1024, 64 * 1024 * 1024),
                                  ("global",)),
    "tune.buffers.limit": _CfgKey("buffers_limit", whole_number(0, MAX_COUNT), ("global",)),
    "check-threads": _CfgKey("check_threads", whole_number(1, 256), ("global",)),
    "resolve-interval": _CfgKey("resolve_interval", DURATION_VALUE, ("global",)),
    # HAProxy's ``hold nx`` and kin (words of its resolvers section, which simpleproxy has not).
    "resolve-hold-nx": _CfgKey("resolve_hold_nx", DURATION_VALUE, ("global",)),
    "resolve-hold-timeout": _CfgKey("resolve_hold_timeout", DURATION_VALUE, ("global",)),
    "resolve-hold-other": _CfgKey("resolve_hold_other", DURATION_VALUE, ("global",)),
    "workers": _CfgKey("workers", WORKERS_VALUE, ("global",)),
    "grace": _CfgKey("grace", DURATION_VALUE, ("global",)),
    "hard-stop-after": _CfgKey("hard_stop_after", DURATION_VALUE, ("global",)),
    "pidfile": _CfgKey("pidfile", ValueKind(str, "a file path"), ("global",)),
    "user": _CfgKey("user", USER_VALUE, ("global",)),
    "group": _CfgKey("group", GROUP_VALUE, ("global",)),
    "stats socket": _CfgKey("stats_socket", STATS_SOCKET_VALUE, ("global",)),
    "stats http": _CfgKey("stats_http", STATS_HTTP_VALUE, ("global",)),
    "stats auth": _CfgKey("stats_auth", STATS_AUTH_VALUE, ("global",)),
    "stats refresh": _CfgKey("stats_refresh", STATS_REFRESH_VALUE, ("global",)),
    "stats name": _CfgKey("stats_name", STATS_NAME_VALUE, ("global",)),
    "log": _CfgKey("log_target", LOG_TARGET_VALUE, ("global",)),
}
_CFG_GLOBAL_DEFAULTS = GlobalSettings(maxconn=None, log_level="info", bufsize=256 * 1024,
                                      check_threads=4, resolve_interval=None,
                                      resolve_hold_nx=30.0, resolve_hold_timeout=30.0,
                                      resolve_hold_other=30.0, workers=None, grace=None,
                                      hard_stop_after=None, pidfile=None, user=None, group=None)

_CFG_PROXY_KEYS = {
    "bind": _CfgKey("binds", _CFG_SPECIAL, ("frontend", "listen")),
    "default_backend": _CfgKey("default_backend", _CFG_SPECIAL, ("frontend",)),
    # rules.py: acl NAME, then rules one per line; compiled once every acl is known
    "acl": _CfgKey("acls", _CFG_SPECIAL, ("frontend", "listen")),
    USE_BACKEND: _CfgKey("use_backend", _CFG_SPECIAL, ("frontend", "listen")),
    TCP_REQUEST_CONNECTION: _CfgKey("connection", _CFG_SPECIAL, ("frontend", "listen")),
    TCP_REQUEST_CONTENT: _CfgKey("content", _CFG_SPECIAL, ("frontend", "listen")),
    "server": _CfgKey("servers", _CFG_SPECIAL, ("backend", "listen")),
    "server-template": _CfgKey("servers", _CFG_SPECIAL, ("backend", "listen")),
    "default-server": _CfgKey("default_server", _CFG_SPECIAL, _CFG_BACK),
    "maxconn": _CfgKey("maxconn", whole_number(1, MAX_COUNT), _CFG_FRONT),
    "timeout client": _CfgKey("timeout_client", DURATION_VALUE, _CFG_FRONT),
    "timeout client-fin": _CfgKey("timeout_client_fin", DURATION_VALUE, _CFG_FRONT),
    "timeout proxy-header": _CfgKey("timeout_proxy_header", DURATION_VALUE, _CFG_FRONT),
    "proxy-max-header": _CfgKey("proxy_max_header", HEADER_SIZE_VALUE, _CFG_FRONT),
    "maxconn-per-source": _CfgKey("maxconn_per_source", whole_number(0, MAX_COUNT), _CFG_FRONT),
    "maxconn-pending-header": _CfgKey("maxconn_pending_header", whole_number(1, MAX_COUNT),
                                      _CFG_FRONT),
    "option dontlognull": _CfgKey("dontlognull", None, _CFG_FRONT),
    "option dontlog-normal": _CfgKey("dontlog_normal", None, _CFG_FRONT),
    "option tcplog": _CfgKey("tcplog", None, _CFG_FRONT),      # log-format's default: accepted
    "log-format": _CfgKey("log_format", LOG_FORMAT_VALUE, _CFG_FRONT),
    "balance": _CfgKey("balance", one_of("balance algorithm", (
        "roundrobin", "static-rr", "leastconn", "first", "source", "random")), _CFG_BACK),
    "retries": _CfgKey("retries", whole_number(0, 100), _CFG_BACK),
    "option redispatch": _CfgKey("redispatch", None, _CFG_BACK),
    "option allbackups": _CfgKey("allbackups", None, _CFG_BACK),
    "timeout connect": _CfgKey("timeout_connect", DURATION_VALUE, _CFG_BACK),
    "timeout server": _CfgKey("timeout_server", DURATION_VALUE, _CFG_BACK),
    "timeout server-fin": _CfgKey("timeout_server_fin", DURATION_VALUE, _CFG_BACK),
    "timeout queue": _CfgKey("timeout_queue", DURATION_VALUE, _CFG_BACK),
    "timeout check": _CfgKey("timeout_check", DURATION_VALUE, _CFG_BACK),
    "maxqueue": _CfgKey("maxqueue", whole_number(0, MAX_COUNT), _CFG_BACK),
}

# Built-in values of what a section may set; None: derived from another value when built.
_CFG_FRONTEND_DEFAULTS = {
    "maxconn": None, "timeout_client": 30.0, "timeout_client_fin": None,
    "timeout_proxy_header": 5.0, "proxy_max_header": 16 * 1024, "maxconn_per_source": 0,
    "maxconn_pending_header": 1000, "dontlognull": False, "dontlog_normal": False,
    "log_format": "tcplog",
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
        self.servers = []             # (name, Address, option values, option words, line,
                                      #  server-template NAME or None)
        self.default_server = {}
        self.default_backend = None   # (name, line)
        self.acls = []                # (key, name, value, line)
        self.rule_keys = []           # (rules.USE_BACKEND or TCP_REQUEST_*, value, lines)


class _CfgReader(ConfigProblems):
    """Reads one configuration, collecting every problem before giving up."""

    def read(self, text):
        global_settings = _CFG_GLOBAL_DEFAULTS
        defaults = _CfgProxySection("defaults", "", "defaults", 0)
        proxies = []
        for section in read_ini(text, self):
            kind = self._section_kind(section)
            if kind == "global":
                settings, _ = self._read_keys(section.title, kind, section.entries,
                                              _CFG_GLOBAL_KEYS)
                global_settings = global_settings._replace(**settings)
            elif kind is not None:
                proxy = _CfgProxySection(kind, section.title.partition(" ")[2], section.title,
                                         section.line)
                self._read_proxy_section(proxy, section.entries)
                if kind == "defaults":
                    defaults = proxy
                else:
                    proxies.append(proxy)
        frontends, backends = self._build(proxies, defaults)
        self.raise_errors()
        return Config(self.path, global_settings, frontends, backends, self.sorted_warnings())

    def _section_kind(self, section):
        """The kind of a section (global, defaults, frontend...), or None if it is wrong."""
        words = section.title.split()
        kind = words[0] if words else ""
        named = kind in ("frontend", "backend", "listen")
        if kind not in _CFG_SECTION_KINDS:
            problem = unknown_word("section kind", kind, _CFG_SECTION_KINDS,
                                   "global, defaults, frontend NAME, backend NAME, listen NAME")
        elif len(words) != 1 + named:
            problem = ("needs one name (expected [%s NAME])" if named else
                       "takes no name (expected [%s])") % kind
        elif named and not _CFG_NAME.match(words[1]):
            problem = "%s is not a valid name (expected %s)" % (shown(words[1]), _CFG_NAME_RULE)
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
            elif key.split()[0] in ("server", "server-template", "acl"):
                spec_key = key.split()[0]        # server NAME, server-template NAME, acl NAME
            else:
                spec_key = key
            spec = table.get(spec_key)
            if spec is None or (negated and spec.value is not None):
                allowed = [name for name, other in table.items() if kind in other.sections]
                self.error(line, title, key, unknown_word("key", key, allowed, ", ".join(sorted(
                    name + " NAME" if name in ("server", "server-template", "acl") else name
                    for name in allowed))))
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
            elif spec_key in ("server", "server-template"):
                self._read_server(proxy, key, value, line)
            elif spec_key == "acl":
                proxy.acls.append((key, key.partition(" ")[2], value, line))
            elif spec_key in (USE_BACKEND, TCP_REQUEST_CONNECTION, TCP_REQUEST_CONTENT):
                proxy.rule_keys.append((spec_key, value, line, lines))
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
            return split_words(text)
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
            address = bind_address(words[0])
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
        if options.get("v6only") and address is not None and address.family != "ipv6":
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
        """A server line, or a server-template line: its COUNT servers share the rest."""
        kind, names = key.split()[0], key.split()[1:]
        form = ("server-template NAME = COUNT HOST:PORT [options]" if kind == "server-template"
                else "server NAME = ADDRESS [options]")
        if len(names) != 1:
            self.error(line, proxy.title, key, "needs exactly one name (expected %s)" % form)
            return
        if not _CFG_NAME.match(names[0]):
            self.error(line, proxy.title, key, "%s is not a valid name (expected %s)"
                       % (shown(names[0]), _CFG_NAME_RULE))
            return
        words = self._words(proxy.title, key, value or "", line)
        if words is None:
            return
        template = names[0] if kind == "server-template" else None
        if template is not None:
            try:
                names, words = expand_server_template(template, words)
            except ValueError as exc:
                self.error(line, proxy.title, key, str(exc))
                return
        if not words:
            self.error(line, proxy.title, key, "missing address (expected %s = ADDRESS "
                       "[options])" % key)
            return
        problems = []
        try:
            address = server_address(words[0])
            if template is not None and address.family is not None:
                problems.append("%s is not a host name (expected %s: its addresses fill the "
                                "servers)" % (shown(words[0]), form))
        except ValueError as exc:
            problems.append(str(exc))
        values, given, option_problems = _cfg_read_options(words[1:], _CFG_SERVER_OPTIONS,
                                                           "server option")
        if self.report(line, proxy.title, key, problems + option_problems):
            proxy.servers.extend((name, address, values, given, line, template)
                                 for name in names)

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
        self._check_header_lengths(proxies, frontends, backends)
        return tuple(frontends), backends

    def _check_header_lengths(self, proxies, frontends, backends):
        """Warn about servers whose v2 header may not fit when a client's header is as large
        as a bind allows: those connections would be closed (bad-outgoing-header)."""
        largest = max([bind.proxy_max_header for frontend in frontends
                       for bind in frontend.binds if bind.accept_proxy] or [0])
        for proxy in proxies:
            if proxy.kind not in ("backend", "listen"):
                continue
            for server in backends[proxy.name].servers:
                length = max_header_length(server.proxy_v2_tlvs, largest)
                if server.send_proxy == 2 and length > 16 + V2_MAX_LENGTH:
                    self.warn(server.line, proxy.title, "server " + server.name, "its v2 header "
                              "can reach %d bytes with a client header of %d (proxy-max-header), "
                              "more than the %d a v2 header holds: such connections are closed "
                              "(expected fewer forwarded TLVs, or a smaller proxy-max-header)"
                              % (length, largest, 16 + V2_MAX_LENGTH))

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
                if address.family == "ipv4" and address.sockaddr[0] == "0.0.0.0":
                    ipv4_any_ports.add(address.sockaddr[1])
        for proxy in proxies:
            proxy.binds = [bind._replace(v6only=True) if bind.address.family == "ipv6"
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
                        rules=self._frontend_rules(proxy, back_names), line=proxy.line,
                        **settings)

    def _frontend_rules(self, proxy, back_names):
        """The FrontendRules of a section: every acl first, so that a rule may name an acl
        written below it, then each line of the rule keys, numbered from 1 per key."""
        acls = {}
        for key, name, value, line in proxy.acls:
            if not name:
                self.error(line, proxy.title, key, "needs a name (expected acl NAME = CRITERION "
                           "[-m METHOD] VALUE...)")
                continue
            words = self._words(proxy.title, key, value or "", line)
            if words is None:
                continue
            try:
                acls[name] = compile_acl(name, words)
            except ValueError as exc:
                self.error(line, proxy.title, key, str(exc))
        compiled = {USE_BACKEND: [], TCP_REQUEST_CONNECTION: [], TCP_REQUEST_CONTENT: []}
        for kind, value, line, lines in proxy.rule_keys:
            if not value:
                self.error(line, proxy.title, kind, "missing value (expected %s = RULE, one "
                           "per line)" % kind)
                continue
            for text, rule_line in zip(value.split("\n"), lines):
                words = self._words(proxy.title, kind, text, rule_line)
                if not words:
                    continue
                try:
                    compiled[kind].append(compile_rule(kind, len(compiled[kind]) + 1, words,
                                                       acls, back_names))
                except ValueError as exc:
                    self.error(rule_line, proxy.title, kind, str(exc))
        if not any(compiled.values()):
            return NO_RULES
        return FrontendRules(tuple(compiled[TCP_REQUEST_CONNECTION]),
                             tuple(compiled[TCP_REQUEST_CONTENT]), tuple(compiled[USE_BACKEND]))

    def _default_backend(self, proxy, back_names):
        known = "backends: %s" % (", ".join(sorted(back_names)) or "none")
        if proxy.default_backend is None:
            if "default_backend" not in proxy.given:
                self.error(proxy.line, proxy.title, "default_backend", "missing (expected "
                           "default_backend = NAME; %s)" % known)
            return None
        name, line = proxy.default_backend
        if name not in back_names:
            self.error(line, proxy.title, "default_backend", "no backend named %s (%s)"
                       % (shown(name), known))
        return name

    def _build_backend(self, proxy, defaults):
        settings = _cfg_merged(_CFG_BACKEND_DEFAULTS, defaults.settings, proxy.settings)
        if settings["timeout_server_fin"] is None:
            settings["timeout_server_fin"] = settings["timeout_server"]
        if settings["timeout_queue"] is None:
            settings["timeout_queue"] = settings["timeout_connect"]
        servers = []
        # set-proxy-v2-tlv-fmt adds up, as in HAProxy: the default-server's, then the server's.
        inherited_tlvs = _cfg_merged({"proxy_v2_tlv_fmts": ()}, defaults.default_server,
                                     proxy.default_server)["proxy_v2_tlv_fmts"]
        first_line = {}
        for name, address, values, given, line, template in proxy.servers:
            if name in first_line:
                # Plain server lines are compared as keys (ini.py); a template's names here.
                self.error(line, proxy.title, "server-template " + template if template else
                           "server " + name, "duplicated server name %s (first defined on line "
                           "%d)" % (name, first_line[name]))
                continue
            first_line[name] = line
            options = _cfg_merged(_CFG_SERVER_DEFAULTS, defaults.default_server,
                                  proxy.default_server, values)
            options["proxy_v2_tlv_fmts"] = inherited_tlvs + values.get("proxy_v2_tlv_fmts", ())
            server = self._build_server(proxy.title, name, address, options, line, template)
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

    def _build_server(self, title, name, address, options, line, template):
        """The Server from its merged options, or None after reporting what contradicts."""
        problems = []
        v2_options, tlv_fmts = options.pop("proxy_v2_options"), options.pop("proxy_v2_tlv_fmts")
        for word, given in (("proxy-v2-options", v2_options), (TLV_FMT_OPTION, tlv_fmts)):
            if given and options["send_proxy"] != 2:
                problems.append("'%s' needs send-proxy-v2 (expected send-proxy-v2 too)" % word)
        try:
            options["proxy_v2_tlvs"] = compile_tlv_plan(tlv_fmts, v2_options)
        except ValueError as exc:
            problems.append(str(exc))
        check_port, check_addr = options["check_port"], options["check_addr"]
        if address.family == "unix" and (check_port is None) != (check_addr is None):
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
        host = address.sockaddr[0] if address.family is None else None
        return Server(name=name, address=address, host=host, template=template, line=line,
                      **options)


def _cfg_misplaced(kind, key, spec):
    if kind == "listen" and key == "default_backend":
        return "a listen section is its own backend (expected no default_backend in it)"
    return "not valid in a %s section (expected in: %s)" % (kind, ", ".join(spec.sections))
