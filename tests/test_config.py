"""The configuration reader: INI text in, frozen objects or exact messages out."""

import glob
import ipaddress
import os
import socket
import threading
import time

import pytest

from simpleproxy.config import (Address, Backend, Bind, Frontend, GlobalSettings, Server,
                                load_config, parse_config)
from simpleproxy.config_values import (INIT_ADDR_VALUE, expand_server_template, parse_duration,
                                       parse_size)
from simpleproxy.errors import ConfigError
from simpleproxy.resolve import resolve_addresses
from simpleproxy.rules import NO_RULES
from simpleproxy.tlvfmt import NO_TLVS, TlvPlan

from support import SERVER_OPTIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PATH = "conf/bad.ini"

# A working frontend and backend (6 lines), appended after the lines a test is about.
FRAME = """
[frontend web]
bind = 127.0.0.1:8080
default_backend = webservers
[backend webservers]
server s1 = 127.0.0.1:8081
"""

GLOBAL_KEYS = ("check-threads, grace, group, hard-stop-after, log, log-level, maxconn, pidfile, "
               "resolve-hold-nx, resolve-hold-other, resolve-hold-timeout, resolve-interval, "
               "stats auth, stats http, stats name, stats refresh, stats socket, "
               "tune.buffers.limit, tune.bufsize, tune.bufsize.large, user, workers")
DURATION = "(expected a number with ms, s, m, h or d)"


def errors_of(text):
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    return info.value.messages


def a_server(options):
    """The one Server of a config whose server line is ``options``."""
    config = parse_config("[frontend f]\nbind = 127.0.0.1:8080\ndefault_backend = b\n"
                          "[backend b]\nserver s1 = %s\n" % options)
    return config.backends["b"].servers[0]


def a_bind(line):
    """The binds of a frontend whose bind value is ``line``."""
    config = parse_config("[frontend f]\nbind = %s\ndefault_backend = b\n[backend b]\n"
                          "server s1 = 127.0.0.1:8081\n" % line)
    return config.frontends[0].binds


# -- durations and sizes ----------------------------------------------------------------------

@pytest.mark.parametrize("text, seconds", [
    ("5s", 5.0), ("1500ms", 1.5), ("1500", 1.5), ("2m", 120.0), ("1h", 3600.0),
    ("1d", 86400.0), ("0.5s", 0.5), ("0", 0.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text, reason", [
    ("5x", "'5x' is not a duration " + DURATION),
    ("s", "'s' is not a duration " + DURATION),
    ("", "'' is not a duration " + DURATION),
    ("-1s", "'-1s' is not a duration " + DURATION),
    ("5 s", "'5 s' is not a duration " + DURATION),
    ("5S", "'5S' is not a duration " + DURATION),
    ("1.s", "'1.s' is not a duration " + DURATION),
    ("1m30s", "'1m30s' has more than one unit (expected one number with one unit, such as 90s)"),
])
def test_bad_durations(text, reason):
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == reason


@pytest.mark.parametrize("text, size", [
    ("100", 100), ("16k", 16384), ("16K", 16384), ("1m", 1048576), ("256k", 262144),
])
def test_sizes(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["1g", "k", "1.5k", "-1", "16 k", ""])
def test_bad_sizes(text):
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert str(info.value) == ("'%s' is not a size (expected a number of bytes, optionally "
                               "with k or m)" % text)

# -- addresses ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text, family, sockaddr", [
    (":80", "ipv4", ("0.0.0.0", 80)),
    ("*:80", "ipv4", ("0.0.0.0", 80)),
    ("10.1.2.3:8080", "ipv4", ("10.1.2.3", 8080)),
    ("[::]:80", "ipv6", ("::", 80)),
    ("[::1]:65535", "ipv6", ("::1", 65535)),
    ("[0:0::1]:443", "ipv6", ("::1", 443)),             # canonical text
    ("[::ffff:10.0.0.1]:443", "ipv6", ("::ffff:10.0.0.1", 443)),
    ("unix@/run/simpleproxy.sock", "unix", "/run/simpleproxy.sock"),
])
def test_bind_addresses(text, family, sockaddr):
    (bind,) = a_bind(text)
    assert bind.address == Address(family, sockaddr, text)


BIND_FORMS = "(expected :PORT, *:PORT, IPv4:PORT, [IPv6]:PORT or unix@/path)"


@pytest.mark.parametrize("text, problem", [
    ("localhost:80", "'localhost' is not an IPv4 address " + BIND_FORMS),
    ("1.2.3:80", "'1.2.3' is not an IPv4 address " + BIND_FORMS),
    ("01.2.3.4:80", "'01.2.3.4' is not an IPv4 address " + BIND_FORMS),
    ("[1.2.3.4]:80", "'1.2.3.4' is not an IPv6 address " + BIND_FORMS),
    ("[fe80::1%lo]:80", "'fe80::1%lo' is not an IPv6 address " + BIND_FORMS),
    ("80", "'80' has no port " + BIND_FORMS),
    ("[::1]80", "'[::1]80' is not an address " + BIND_FORMS),
    ("::1:80", "'::1:80' needs brackets around the IPv6 address (expected '[::1]:80')"),
    ("1.2.3.4:0", "'0' is not a port (expected 1 to 65535)"),
    ("1.2.3.4:65536", "'65536' is not a port (expected 1 to 65535)"),
    ("1.2.3.4:http", "'http' is not a port (expected 1 to 65535)"),
    ("1.2.3.4:", "'' is not a port (expected 1 to 65535)"),
    ("unix@", "'unix@' has no path (expected unix@/path)"),
    ("unix@/" + "x" * 107, "the socket path is 108 bytes long (expected at most 107)"),
])
def test_bad_bind_addresses(text, problem):
    assert errors_of("[frontend f]\nbind = %s\ndefault_backend = webservers\n" % text
                     + FRAME) == ["conf/bad.ini:2: [frontend f] bind: " + problem]


@pytest.mark.parametrize("text, family, sockaddr", [
    ("10.0.0.1:80", "ipv4", ("10.0.0.1", 80)),
    ("[2001:db8::7]:3000", "ipv6", ("2001:db8::7", 3000)),
    ("unix@/run/app.sock", "unix", "/run/app.sock"),
])
def test_server_addresses(text, family, sockaddr):
    assert a_server(text).address == Address(family, sockaddr, text)


def test_server_host_name_is_kept_for_start_up_to_resolve():
    address = a_server("localhost:3000").address
    assert address == Address(None, ("localhost", 3000), "localhost:3000")


def test_reading_a_config_asks_no_name_server(monkeypatch):
    def no_lookups(*args, **kwargs):
        raise AssertionError("a name was looked up")
    monkeypatch.setattr(socket, "getaddrinfo", no_lookups)
    assert a_server("app.example:80").address.family is None


def test_start_up_resolves_host_names_once():
    config = resolve_addresses(parse_config("[listen l]\nbind = [::1]:8080\n"
                                            "server s1 = localhost:3000 addr 127.0.0.2\n"
                                            "server s2 = unix@/run/s2.sock\n"))
    (bind,) = config.frontends[0].binds
    assert bind.address == Address(socket.AF_INET6, ("::1", 8080), "[::1]:8080")
    s1, s2 = config.backends["l"].servers
    # /etc/hosts: no traffic leaves the host
    assert (s1.address.family, s1.address.sockaddr) in [(socket.AF_INET, ("127.0.0.1", 3000)),
                                                          (socket.AF_INET6, ("::1", 3000))]
    assert s1.address.text == "localhost:3000"
    assert s1.check_addr == Address(socket.AF_INET, ("127.0.0.2", 3000), "127.0.0.2")
    assert s2.address == Address(socket.AF_UNIX, "/run/s2.sock", "unix@/run/s2.sock")


def test_unresolvable_server_names_are_one_line_each_with_their_place(monkeypatch):
    def no_such_name(host, *args, **kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    # Faked: a real failed lookup would ask a DNS server, and tests stay on loopback.
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    config = parse_config("[backend c]\nserver s1 = app.example:80\n[listen l]\nbind = :81\n"
                          "server s2 = db.example:5432\n" + FRAME, PATH)
    with pytest.raises(ConfigError) as info:
        resolve_addresses(config)
    assert info.value.messages == [
        "conf/bad.ini:2: [backend c] server s1: cannot resolve 'app.example': Name or service "
        "not known (expected a host name that resolves, an IP address, or init-addr ending in "
        "none)",
        "conf/bad.ini:5: [listen l] server s2: cannot resolve 'db.example': Name or service "
        "not known (expected a host name that resolves, an IP address, or init-addr ending in "
        "none)"]


SERVER_FORMS = "(expected IPv4:PORT, [IPv6]:PORT, HOST:PORT or unix@/path)"


@pytest.mark.parametrize("text, problem", [
    ("300.1.1.1:80", "'300.1.1.1' is not an IPv4 address " + SERVER_FORMS),
    ("host..name:80", "'host..name' is not a host name " + SERVER_FORMS),
    ("-host:80", "'-host' is not a host name " + SERVER_FORMS),
    ("*:80", "'*' is not a host name " + SERVER_FORMS),
    (":80", "'' is not a host name " + SERVER_FORMS),
    ("[::1]:99999", "'99999' is not a port (expected 1 to 65535)"),
])
def test_bad_server_addresses(text, problem):
    assert errors_of("[backend c]\nserver s1 = %s\n" % text + FRAME) == [
        "conf/bad.ini:2: [backend c] server s1: " + problem]

# -- whole configurations -----------------------------------------------------------------------


CONTRACT_EXAMPLE = """\
[global]
maxconn = 10000

[defaults]
timeout connect = 5s
timeout client = 30s
timeout server = 30s

[frontend mywebsite]
bind = :80 accept-proxy
       [::]:80 accept-proxy
default_backend = webservers

[backend webservers]
balance = roundrobin
server s1 = 192.168.56.20:3000 check send-proxy
server s2 = 192.168.56.21:3000 check send-proxy-v2
"""


NO_RESOLVE_SETTINGS = dict(resolve_interval=None, resolve_hold_nx=30.0, resolve_hold_timeout=30.0,
                           resolve_hold_other=30.0)


def plain_server(name, address, line, **changes):
    """A Server as a bare server line makes it, with ``changes``."""
    server = Server(name=name, address=address, send_proxy=0, proxy_v2_tlvs=NO_TLVS,
                    check=False, check_send_proxy=False, inter=2.0, fastinter=2.0, downinter=2.0,
                    rise=2, fall=3, weight=1, backup=False, maxconn=0, disabled=False,
                    check_port=None, check_addr=None, check_send=None, check_expect=None,
                    host=None, init_addr=("last", "libc"), resolve_prefer="ipv6", resolve=False,
                    template=None, line=line)
    return server._replace(**changes)


def test_contract_example():
    config = parse_config(CONTRACT_EXAMPLE, "example.ini")
    assert config.path == "example.ini"
    assert config.global_settings == GlobalSettings(maxconn=10000, log_level="info",
                                                    bufsize=262144, check_threads=4,
                                                    **NO_RESOLVE_SETTINGS)
    header_handling = dict(accept_proxy=True, accept_proxy_from=(), proxy_optional_from=(),
                           accept_proxy_version="any", proxy_max_header=16384)
    assert config.frontends == (Frontend(
        name="mywebsite",
        binds=(Bind(address=Address("ipv4", ("0.0.0.0", 80), ":80"), v6only=False,
                    line=10, **header_handling),
               # :80 takes IPv4 on the same port, so [::]:80 is left the IPv6 clients.
               Bind(address=Address("ipv6", ("::", 80), "[::]:80"), v6only=True,
                    line=11, **header_handling)),
        default_backend="webservers", maxconn=None, timeout_client=30.0,
        timeout_client_fin=30.0, timeout_proxy_header=5.0, maxconn_per_source=0,
        maxconn_pending_header=1000, dontlognull=False, dontlog_normal=False, rules=NO_RULES,
        log_format="tcplog", line=9),)
    assert config.backends == {"webservers": Backend(
        name="webservers", balance="roundrobin",
        servers=(plain_server("s1", Address("ipv4", ("192.168.56.20", 3000),
                                            "192.168.56.20:3000"), 16,
                              check=True, send_proxy=1, check_send_proxy=True),
                 plain_server("s2", Address("ipv4", ("192.168.56.21", 3000),
                                            "192.168.56.21:3000"), 17,
                              check=True, send_proxy=2, check_send_proxy=True)),
        retries=3, redispatch=False, allbackups=False, timeout_connect=5.0, timeout_server=30.0,
        timeout_server_fin=30.0, timeout_queue=5.0, timeout_check=None, maxqueue=0, line=14)}
    assert config.warnings == tuple(
        "example.ini:%d: [frontend mywebsite] bind: PROXY headers are accepted from every peer, "
        "so any peer can claim any address (expected accept-proxy-from CIDR[,CIDR...] naming "
        "the proxies in front)" % line for line in (10, 11))


LISTEN = r"""[global]
log-level = debug
tune.bufsize = 1m
check-threads = 8

[defaults]
timeout connect = 2s
timeout client = 1m
timeout check = 1s
option redispatch
option dontlognull
proxy-max-header = 4k
default-server = inter 5s fall 5 send-proxy maxconn 100

[listen both]
bind = 127.0.0.1:9000
       [::1]:9000 accept-proxy-from 127.0.0.1,::1/128,unix proxy-optional-from 10.0.0.0/8 accept-proxy-version v2 proxy-max-header 1k
       unix@/run/sp.sock accept-proxy-from unix
maxconn = 50
maxconn-per-source = 10
maxconn-pending-header = 20
timeout proxy-header = 3s
timeout client-fin = 2s
option dontlog-normal
option tcplog
no option redispatch
option allbackups
balance = leastconn
retries = 0
maxqueue = 30
timeout queue = 9s
timeout server-fin = 1500ms
default-server = rise 4 send-proxy-v2
server a = 127.0.0.1:9001 check
server b = [::1]:9002 check inter 3s proxy-v2-options crc32c,unique-id weight 0 backup maxconn 0 disabled port 9100 addr 127.0.0.2 check-send "PING\r\n" check-expect string "+PONG"
server c = unix@/run/c.sock send-proxy no-check-send-proxy fastinter 100ms downinter 1m
           check check-expect rstring "^OK\x20\xff"
"""


def test_process_keys():
    config = parse_config("[global]\nworkers = 3\ngrace = 1s\nhard-stop-after = 2500ms\n"
                          "pidfile = /run/simpleproxy.pid\nuser = 65534\ngroup = nogroup\n"
                          "tune.bufsize.large = 8m\ntune.buffers.limit = 0\n"
                          "[listen a]\nbind = :8000\nserver s = 127.0.0.1:1\n")
    assert config.global_settings == GlobalSettings(
        maxconn=None, log_level="info", bufsize=256 * 1024, check_threads=4, workers=3,
        grace=1.0, hard_stop_after=2.5, pidfile="/run/simpleproxy.pid", user="nobody",
        group="nogroup", bufsize_large=8 << 20, buffers_limit=0, **NO_RESOLVE_SETTINGS)


def test_large_reads_default_to_4m_bounded_by_16_of_them():
    settings = parse_config("[listen a]\nbind = :8000\nserver s = 127.0.0.1:1\n").global_settings
    assert (settings.bufsize, settings.bufsize_large, settings.buffers_limit) == (
        256 * 1024, 4 << 20, 16)


def test_listen_section_with_defaults_and_default_server():
    config = parse_config(LISTEN)
    assert config.global_settings == GlobalSettings(maxconn=None, log_level="debug",
                                                    bufsize=1048576, check_threads=8,
                                                    **NO_RESOLVE_SETTINGS)
    assert config.frontends == (Frontend(
        name="both",
        binds=(Bind(Address("ipv4", ("127.0.0.1", 9000), "127.0.0.1:9000"), False, (),
                    (), "any", False, 4096, 16),
               Bind(Address("ipv6", ("::1", 9000), "[::1]:9000"), True,
                    (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128"),
                     "unix"),
                    (ipaddress.ip_network("10.0.0.0/8"),), "v2", False, 1024, 17),
               Bind(Address("unix", "/run/sp.sock", "unix@/run/sp.sock"), True,
                    ("unix",), (), "any", False, 4096, 18)),
        default_backend="both", maxconn=50, timeout_client=60.0, timeout_client_fin=2.0,
        timeout_proxy_header=3.0, maxconn_per_source=10, maxconn_pending_header=20,
        dontlognull=True, dontlog_normal=True, rules=NO_RULES,
        log_format="tcplog", line=15),)
    (backend,) = config.backends.values()
    assert backend._replace(servers=()) == Backend(
        name="both", balance="leastconn", servers=(), retries=0, redispatch=False,
        allbackups=True, timeout_connect=2.0, timeout_server=30.0, timeout_server_fin=1.5,
        timeout_queue=9.0, timeout_check=1.0, maxqueue=30, line=15)
    # defaults' default-server, then the section's, then the server line: the last one wins.
    inherited = dict(inter=5.0, fastinter=5.0, downinter=5.0, fall=5, rise=4, send_proxy=2,
                     maxconn=100, check_send_proxy=True)
    assert backend.servers == (
        plain_server("a", Address("ipv4", ("127.0.0.1", 9001), "127.0.0.1:9001"), 34,
                     check=True, **inherited),
        plain_server("b", Address("ipv6", ("::1", 9002), "[::1]:9002"), 35,
                     **dict(inherited, check=True, inter=3.0, fastinter=3.0, downinter=3.0,
                            proxy_v2_tlvs=TlvPlan(True, False, True, ()), weight=0,
                            backup=True, maxconn=0, disabled=True, check_port=9100,
                            check_send_proxy=False,
                            check_addr=Address("ipv4", ("127.0.0.2", 9100),
                                               "127.0.0.2"),
                            check_send=b"PING\r\n", check_expect=("string", b"+PONG"))),
        plain_server("c", Address("unix", "/run/c.sock", "unix@/run/c.sock"), 36,
                     **dict(inherited, check=True, send_proxy=1, check_send_proxy=False,
                            fastinter=0.1, downinter=60.0,
                            check_expect=("rstring", b"^OK \xff"))))
    assert config.warnings == ()


@pytest.mark.parametrize("options, check_send_proxy", [
    ("", False),
    ("send-proxy", True),
    ("send-proxy-v2", True),
    ("send-proxy port 8080", False),               # as HAProxy: the check goes elsewhere
    ("send-proxy addr 10.0.0.9", False),
    ("send-proxy-v2 port 8080 check-send-proxy", True),
    ("check-send-proxy", True),
    ("send-proxy no-check-send-proxy", False),
])
def test_check_send_proxy_follows_send_proxy_unless_set(options, check_send_proxy):
    assert a_server("10.0.0.1:80 check " + options).check_send_proxy is check_send_proxy


@pytest.mark.parametrize("options, check_addr", [
    ("addr 10.0.0.9", Address("ipv4", ("10.0.0.9", 80), "10.0.0.9")),
    ("addr 10.0.0.9 port 81", Address("ipv4", ("10.0.0.9", 81), "10.0.0.9")),
    ("addr ::1", Address("ipv6", ("::1", 80), "::1")),
    ("addr [::1]", Address("ipv6", ("::1", 80), "::1")),
    ("port 81", None),
])
def test_check_address_carries_the_check_port(options, check_addr):
    assert a_server("10.0.0.1:80 check " + options).check_addr == check_addr


@pytest.mark.parametrize("quoted, sent", [
    (r'"GET / HTTP/1.0\r\n\r\n"', b"GET / HTTP/1.0\r\n\r\n"),
    (r'"tab\there"', b"tab\there"),
    (r'"q\"uote\\"', b'q"uote\\'),
    (r'"\x00\x7f\x80\xff"', b"\x00\x7f\x80\xff"),
    ('"h\u00e9"', "h\u00e9".encode("utf-8")),      # text is UTF-8, \xHH is the byte
    ("plain\\n", b"plain\\n"),                     # unquoted: no escapes
    ('"a#b"', b"a#b"),                              # # only starts a comment after a space
])
def test_check_send_strings(quoted, sent):
    assert a_server("10.0.0.1:80 check check-send " + quoted).check_send == sent


def test_bind_lines_keep_their_own_line_numbers():
    config = parse_config("""\
[frontend f]
bind =
    # the public side
    127.0.0.1:8080

    127.0.0.1:8081 ; the other one
default_backend = b
[backend b]
server s1 = 127.0.0.1:9000  # main
""")
    assert [(bind.address.text, bind.line) for bind in config.frontends[0].binds] == [
        ("127.0.0.1:8080", 4), ("127.0.0.1:8081", 6)]
    assert errors_of("""\
[frontend f]
bind = 127.0.0.1:8080

    # comment

    127.0.0.1:8081 chek
default_backend = b
[backend b]
server s1 = 127.0.0.1:9000
""") == ["conf/bad.ini:6: [frontend f] bind: unknown bind option 'chek' (expected one of: "
         "accept-proxy, accept-proxy-from, accept-proxy-version, proxy-max-header, "
         "proxy-optional-from, v6only)"]


@pytest.mark.parametrize("binds, v6only", [
    (["[::]:80", ":80"], True),                 # IPv4 clients of port 80 have their own bind
    (["[::]:80", "*:80 accept-proxy-from 10.0.0.0/8"], True),
    (["[::]:80"], False),
    (["[::]:80", ":81"], False),
    (["[::]:80", "127.0.0.1:80"], False),       # other IPv4 addresses still come to [::]:80
    (["[::]:80 v6only"], True),
])
def test_v6only_is_settled_per_port(binds, v6only):
    (ipv6,) = [bind for bind in a_bind("\n  ".join(binds))
               if bind.address.family == "ipv6"]
    assert ipv6.v6only is v6only


def test_warnings():
    config = parse_config("""\
[frontend f]
bind = 127.0.0.1:8080 accept-proxy
       127.0.0.1:8081 proxy-optional-from 10.0.0.0/8
       127.0.0.1:8082 accept-proxy-from 10.0.0.0/8
default_backend = b
[backend b]
default-server = inter 5s
server s1 = 127.0.0.1:9000 inter 1s rise 3 addr 127.0.0.1
server s2 = 127.0.0.1:9001 check inter 1s
[backend empty]
""", "w.ini")
    assert config.warnings == (
        "w.ini:2: [frontend f] bind: PROXY headers are accepted from every peer, so any peer "
        "can claim any address (expected accept-proxy-from CIDR[,CIDR...] naming the proxies "
        "in front)",
        "w.ini:3: [frontend f] bind: PROXY headers are accepted from every peer, so any peer "
        "can claim any address (expected accept-proxy-from CIDR[,CIDR...] naming the proxies "
        "in front)",
        "w.ini:8: [backend b] server s1: 'inter', 'rise', 'addr' without 'check' does nothing "
        "(expected 'check' too)",
        "w.ini:10: [backend empty]: no server, so every connection to it fails (expected "
        "server NAME = ADDRESS [options])")

# -- bad configurations: every message exact ---------------------------------------------------


BAD_CONFIGS = [
    ("unknown server option", "[backend c]\nserver s1 = 127.0.0.1:80 chek\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: unknown server option 'chek', did you mean "
        "'check'? (expected one of: %s)" % SERVER_OPTIONS]),
    ("missing backend", "[frontend web2]\nbind = :81\ndefault_backend = webserver\n" + FRAME, [
        "conf/bad.ini:3: [frontend web2] default_backend: no backend named 'webserver' "
        "(backends: webservers)"]),
    ("bad duration", "[defaults]\n\ntimeout connect = 5x\n" + FRAME, [
        "conf/bad.ini:3: [defaults] timeout connect: '5x' is not a duration " + DURATION]),
    ("duration without a number", "[defaults]\ntimeout client = s\n" + FRAME, [
        "conf/bad.ini:2: [defaults] timeout client: 's' is not a duration " + DURATION]),
    ("zero duration", "[defaults]\ntimeout client = 0s\n" + FRAME, [
        "conf/bad.ini:2: [defaults] timeout client: '0s' is not more than zero (expected a "
        "duration such as 5s)"]),
    ("two units", "[defaults]\ntimeout server = 1m30s\n" + FRAME, [
        "conf/bad.ini:2: [defaults] timeout server: '1m30s' has more than one unit (expected "
        "one number with one unit, such as 90s)"]),
    ("duplicated server", "[backend b]\nserver s1 = 10.0.0.1:80\nserver  s1 = 10.0.0.2:80\n"
     + FRAME, [
        "conf/bad.ini:3: [backend b] server s1: duplicated server name (first defined on "
        "line 2)"]),
    ("duplicated key", "[defaults]\ntimeout connect = 1s\ntimeout connect = 2s\n" + FRAME, [
        "conf/bad.ini:3: [defaults] timeout connect: duplicated key (first defined on line 2)"]),
    ("duplicated section", "[global]\n[backend webservers]\n" + FRAME, [
        "conf/bad.ini:7: [backend webservers]: duplicated section (first defined on line 2)"]),
    ("unknown section", "[fronted web2]\nbind = :81\n" + FRAME, [
        "conf/bad.ini:1: [fronted web2]: unknown section kind 'fronted', did you mean "
        "'frontend'? (expected one of: global, defaults, frontend NAME, backend NAME, "
        "listen NAME)"]),
    ("section without a name", "[backend]\n" + FRAME, [
        "conf/bad.ini:1: [backend]: needs one name (expected [backend NAME])"]),
    ("section with a bad name", "[backend a/b]\n" + FRAME, [
        "conf/bad.ini:1: [backend a/b]: 'a/b' is not a valid name (expected letters, digits, "
        "'.', ':', '-' and '_')"]),
    ("named global", "[global main]\n" + FRAME, [
        "conf/bad.ini:1: [global main]: takes no name (expected [global])"]),
    ("unknown key", "[backend c]\nbalanc = roundrobin\nserver s1 = 10.0.0.1:80\n" + FRAME, [
        "conf/bad.ini:2: [backend c] balanc: unknown key 'balanc', did you mean 'balance'? "
        "(expected one of: balance, default-server, maxqueue, option allbackups, "
        "option redispatch, retries, server NAME, server-template NAME, timeout check, "
        "timeout connect, "
        "timeout queue, timeout server, timeout server-fin)"]),
    ("unknown global key", "[global]\nmaxconns = 10\n" + FRAME, [
        "conf/bad.ini:2: [global] maxconns: unknown key 'maxconns', did you mean 'maxconn'? "
        "(expected one of: %s)" % GLOBAL_KEYS]),
    ("process keys", "[global]\nworkers = 0\ngrace = soon\nhard-stop-after = 0s\n"
     "user = no-such-user\ngroup = no-such-group\n" + FRAME, [
        "conf/bad.ini:2: [global] workers: '0' is not a worker count (expected a whole number "
        "from 1 to 256, or auto)",
        "conf/bad.ini:3: [global] grace: 'soon' is not a duration " + DURATION,
        "conf/bad.ini:4: [global] hard-stop-after: '0s' is not more than zero (expected a "
        "duration such as 5s)",
        "conf/bad.ini:5: [global] user: no user 'no-such-user' on this host (expected a user "
        "name or id from /etc/passwd)",
        "conf/bad.ini:6: [global] group: no group 'no-such-group' on this host (expected a "
        "group name or id from /etc/group)"]),
    ("process values in other digits or too long", "[global]\nworkers = \u00b2\nuser = "
     + "9" * 30 + "\n" + FRAME, [
        "conf/bad.ini:2: [global] workers: '\u00b2' is not a worker count (expected a whole "
        "number from 1 to 256, or auto)",
        "conf/bad.ini:3: [global] user: no user '" + "9" * 30 + "' on this host (expected a "
        "user name or id from /etc/passwd)"]),
    ("key in the wrong section", "[frontend web2]\nbind = :81\ndefault_backend = webservers\n"
     "balance = roundrobin\n" + FRAME, [
        "conf/bad.ini:4: [frontend web2] balance: not valid in a frontend section (expected "
        "in: defaults, backend, listen)"]),
    ("listen with default_backend", "[listen l]\nbind = :81\ndefault_backend = webservers\n"
     "server s1 = 10.0.0.1:80\n" + FRAME, [
        "conf/bad.ini:3: [listen l] default_backend: a listen section is its own backend "
        "(expected no default_backend in it)"]),
    ("bad IPv4 address", "[backend c]\nserver s1 = 10.0.0.256:80\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: '10.0.0.256' is not an IPv4 address "
        + SERVER_FORMS]),
    ("port out of range", "[frontend web2]\nbind = 127.0.0.1:70000\ndefault_backend = "
     "webservers\n" + FRAME, [
        "conf/bad.ini:2: [frontend web2] bind: '70000' is not a port (expected 1 to 65535)"]),
    ("frontend without bind", "[frontend web2]\ndefault_backend = webservers\n" + FRAME, [
        "conf/bad.ini:1: [frontend web2] bind: missing (expected bind = ADDRESS [options])"]),
    ("frontend without default_backend", "[frontend web2]\nbind = :81\n" + FRAME, [
        "conf/bad.ini:1: [frontend web2] default_backend: missing (expected default_backend = "
        "NAME; backends: webservers)"]),
    ("same address twice", "[frontend web2]\nbind = :8080\n  0.0.0.0:8080\n"
     "default_backend = webservers\n[frontend web3]\nbind = 0.0.0.0:8080\n"
     "default_backend = webservers\n" + FRAME, [
        "conf/bad.ini:3: [frontend web2] bind: '0.0.0.0:8080' is already bound on line 2 in "
        "[frontend web2] (expected each address once)",
        "conf/bad.ini:6: [frontend web3] bind: '0.0.0.0:8080' is already bound on line 2 in "
        "[frontend web2] (expected each address once)"]),
    ("same unix socket twice", "[frontend web2]\nbind = unix@/run/a.sock\n"
     "default_backend = webservers\n[listen l]\nbind = unix@/run/a.sock\n"
     "server s1 = 10.0.0.1:80\n" + FRAME, [
        "conf/bad.ini:5: [listen l] bind: 'unix@/run/a.sock' is already bound on line 2 in "
        "[frontend web2] (expected each address once)"]),
    ("host bits in a trusted network", "[frontend web2]\n"
     "bind = :81 accept-proxy-from 10.0.0.1/8,192.0.2.1\ndefault_backend = webservers\n" + FRAME, [
        "conf/bad.ini:2: [frontend web2] bind: accept-proxy-from: '10.0.0.1/8' has host bits "
        "set (expected 10.0.0.0/8)"]),
    ("not a network", "[frontend web2]\nbind = :81 proxy-optional-from 10.0.0.0/8,\n"
     "default_backend = webservers\n" + FRAME, [
        "conf/bad.ini:2: [frontend web2] bind: proxy-optional-from: '' is not an address or "
        "network (expected CIDR[,CIDR...] such as 10.0.0.0/16,192.0.2.7, or unix)"]),
    ("header options without header handling", "[frontend web2]\n"
     "bind = :81 accept-proxy-version v2 proxy-max-header 1k\ndefault_backend = webservers\n"
     + FRAME, [
        "conf/bad.ini:2: [frontend web2] bind: 'accept-proxy-version' needs PROXY header "
        "handling (expected accept-proxy, accept-proxy-from or proxy-optional-from on the line "
        "too)",
        "conf/bad.ini:2: [frontend web2] bind: 'proxy-max-header' needs PROXY header handling "
        "(expected accept-proxy, accept-proxy-from or proxy-optional-from on the line too)"]),
    ("bad PROXY version", "[frontend web2]\nbind = :81 accept-proxy accept-proxy-version 2\n"
     "default_backend = webservers\n" + FRAME, [
        "conf/bad.ini:2: [frontend web2] bind: accept-proxy-version: unknown PROXY version '2', "
        "did you mean 'v2'? (expected one of: any, v1, v2)"]),
    ("header cap out of range", "[defaults]\nproxy-max-header = 64m\n" + FRAME, [
        "conf/bad.ini:2: [defaults] proxy-max-header: '64m' is out of range (expected a size "
        "from 16 to 65551 bytes)"]),
    ("v6only on IPv4", "[frontend web2]\nbind = :81 v6only\ndefault_backend = webservers\n"
     + FRAME, [
        "conf/bad.ini:2: [frontend web2] bind: 'v6only' is for IPv6 addresses (expected it "
        "after [IPv6]:PORT only)"]),
    ("option given twice on a line", "[frontend web2]\nbind = :81 accept-proxy accept-proxy\n"
     "default_backend = webservers\n" + FRAME, [
        "conf/bad.ini:2: [frontend web2] bind: 'accept-proxy' given twice (expected it once)"]),
    ("conflicting options", "[backend c]\nserver s1 = 10.0.0.1:80 send-proxy send-proxy-v2\n"
     + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: 'send-proxy-v2' conflicts with 'send-proxy' "
        "(expected one of them)"]),
    ("proxy-v2-options without v2", "[backend c]\ndefault-server = send-proxy-v2 "
     "proxy-v2-options crc32c\nserver s1 = 10.0.0.1:80 send-proxy\n" + FRAME, [
        "conf/bad.ini:3: [backend c] server s1: 'proxy-v2-options' needs send-proxy-v2 "
        "(expected send-proxy-v2 too)"]),
    ("unknown proxy-v2-option", "[backend c]\nserver s1 = 10.0.0.1:80 send-proxy-v2 "
     "proxy-v2-options crc32,ssl\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: proxy-v2-options: unknown proxy-v2-options "
        "value 'crc32', did you mean 'crc32c'? (expected one of: authority, crc32c, "
        "unique-id)"]),
    ("several bad server options", "[backend c]\nserver s1 = 10.0.0.1:80 weight 300 rise 0 "
     "inter soon check-expect rstring (\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: weight: 300 is out of range (expected a whole "
        "number from 0 to 256)",
        "conf/bad.ini:2: [backend c] server s1: rise: 0 is out of range (expected a whole "
        "number from 1 to 1000)",
        "conf/bad.ini:2: [backend c] server s1: inter: 'soon' is not a duration " + DURATION,
        "conf/bad.ini:2: [backend c] server s1: check-expect: '(' is not a regular "
        "expression: missing ), unterminated subpattern at position 0 (expected a Python "
        "regular expression)"]),
    ("option without its value", "[backend c]\ndefault-server = check inter\n" + FRAME, [
        "conf/bad.ini:2: [backend c] default-server: 'inter' needs a value (expected inter "
        "followed by a duration such as 5s, at most 24d)"]),
    ("unknown check-expect kind", "[backend c]\nserver s1 = 10.0.0.1:80 check check-expect "
     "status 200\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: check-expect: unknown check-expect kind "
        "'status' (expected one of: rstring, string)"]),
    ("unterminated quote", "[backend c]\nserver s1 = 10.0.0.1:80 check-send \"PING\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: unterminated quoted string '\"PING' (expected a "
        "closing \")"]),
    ("quote inside a word", "[backend c]\nserver s1 = 10.0.0.1:80 check-send a\"b\"\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: 'a\"b\"' runs into a quote (expected whitespace "
        "around a quoted string)"]),
    ("unknown escape", "[backend c]\nserver s1 = 10.0.0.1:80 check-send \"\\q\"\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: unknown escape '\\q' (expected \\r, \\n, \\t, "
        "\\\\, \\\" or \\xHH)"]),
    ("unix server with half a check address", "[backend c]\n"
     "server s1 = unix@/run/app.sock check port 81\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: a unix@ server is checked on its own socket "
        "unless 'addr' and 'port' are both given (expected both or neither)"]),
    ("server without a name", "[backend c]\nserver = 10.0.0.1:80\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server: needs exactly one name (expected server NAME = "
        "ADDRESS [options])"]),
    ("server without an address", "[backend c]\nserver s1 =\n" + FRAME, [
        "conf/bad.ini:2: [backend c] server s1: missing address (expected server s1 = ADDRESS "
        "[options])"]),
    ("flag with a value", "[defaults]\noption redispatch = yes\n" + FRAME, [
        "conf/bad.ini:2: [defaults] option redispatch: takes no value (expected a line with "
        "just 'option redispatch')"]),
    ("value missing", "[defaults]\ntimeout connect =\nretries\n" + FRAME, [
        "conf/bad.ini:2: [defaults] timeout connect: missing value (expected timeout connect = "
        "a duration such as 5s, at most 24d)",
        "conf/bad.ini:3: [defaults] retries: missing value (expected retries = a whole number "
        "from 0 to 100)"]),
    ("option and no option", "[backend c]\noption redispatch\nno option redispatch\n"
     "server s1 = 10.0.0.1:80\n" + FRAME, [
        "conf/bad.ini:3: [backend c] no option redispatch: conflicts with 'option redispatch' "
        "on line 2 (expected one of them)"]),
    ("indented line under a flag", "[defaults]\noption redispatch\n  yes\n" + FRAME, [
        "conf/bad.ini:3: [defaults] option redispatch: an indented line continues a key that "
        "has no value (expected 'option redispatch = ...' above it, or no indent)"]),
    ("bad global values", "[global]\nmaxconn = lots\nlog-level = verbose\ntune.bufsize = 1\n"
     "tune.bufsize.large = 65m\ntune.buffers.limit = -1\n" + FRAME, [
        "conf/bad.ini:2: [global] maxconn: 'lots' is not a whole number (expected a whole "
        "number from 1 to 1000000)",
        "conf/bad.ini:3: [global] log-level: unknown log level 'verbose' (expected one of: "
        "debug, error, info, warning)",
        "conf/bad.ini:4: [global] tune.bufsize: '1' is out of range (expected a size from 1024 "
        "to 67108864 bytes)",
        "conf/bad.ini:5: [global] tune.bufsize.large: '65m' is out of range (expected a size "
        "from 1024 to 67108864 bytes)",
        "conf/bad.ini:6: [global] tune.buffers.limit: '-1' is not a whole number (expected a "
        "whole number from 0 to 1000000)"]),
    ("name taken", "[listen webservers]\nbind = :81\n" + FRAME, [
        "conf/bad.ini:7: [backend webservers]: the name 'webservers' is taken by [listen "
        "webservers] on line 1 (expected a unique name)"]),
    ("text before any section", "maxconn = 10\n" + FRAME, [
        "conf/bad.ini:1: 'maxconn = 10' comes before any section (expected a [section] line "
        "first)"]),
    ("line configparser cannot read", "[defaults]\n= 5\n" + FRAME, [
        "conf/bad.ini:2: cannot read '= 5' (expected KEY = VALUE, a flag, [SECTION] or a "
        "comment)"]),
    ("nothing to listen on", "[backend b]\nserver s1 = 10.0.0.1:80\n", [
        "conf/bad.ini: no frontend or listen section (expected at least one, with a bind)"]),
]


@pytest.mark.parametrize("text, messages", [case[1:] for case in BAD_CONFIGS],
                         ids=[case[0] for case in BAD_CONFIGS])
def test_bad_config(text, messages):
    assert errors_of(text) == messages


def test_every_problem_is_reported_in_line_order():
    messages = errors_of("""\
[frontend web2]
bind = :81 chek
default_backend = nowhere
[backend c]
server s1 = 10.0.0.1:80 weight -1
[defaults]
timeout connect = 5x
""" + FRAME)
    assert [message.split(":")[1] for message in messages] == ["2", "3", "5", "7"]

# -- bounds: no value the event loop cannot take ---------------------------------------------------

MAX_DURATION = "is more than the maximum, 24d (expected a duration of at most 24d)"
MAX_COUNT = "is out of range (expected a whole number from %d to 1000000)"


@pytest.mark.parametrize("line, value", [
    ("timeout client = 24d", 24 * 86400.0),
    ("timeout client = 2073600000", 24 * 86400.0),                   # 24d in ms
    ("maxconn = 1000000", 1000000),
    ("maxconn-per-source = 1000000", 1000000),
])
def test_the_maxima_are_accepted(line, value):
    config = parse_config("[defaults]\n%s\n" % line + FRAME)
    frontend = config.frontends[0]
    assert value in (frontend.timeout_client, frontend.maxconn, frontend.maxconn_per_source)


@pytest.mark.parametrize("line, problem", [
    # 2^31 ms and above overflow a selector's timeout: the proxy died on the first timer.
    ("timeout client = 25d", "'25d' " + MAX_DURATION),
    ("timeout client = 2073600001", "'2073600001' " + MAX_DURATION),
    ("timeout proxy-header = 2147483648", "'2147483648' " + MAX_DURATION),
    ("timeout connect = 99999999999999999999", "'99999999999999999999' " + MAX_DURATION),
    ("timeout server = 100000h", "'100000h' " + MAX_DURATION),
    ("timeout check = " + "9" * 400, "'%s...' (400 characters) %s" % ("9" * 60, MAX_DURATION)),
    ("maxconn = 1000001", "1000001 " + MAX_COUNT % 1),
    ("maxqueue = 99999999999999999999",
     "'99999999999999999999' " + MAX_COUNT % 0),
    ("maxconn-pending-header = " + "9" * 5000,                        # int() of it: not free
     "'%s...' (5000 characters) %s" % ("9" * 60, MAX_COUNT % 1)),
    ("proxy-max-header = 99999999999999999999k",
     "'99999999999999999999k' is too large a size (expected at most 18 digits)"),
], ids=lambda value: value[:40])
def test_durations_and_counts_beyond_their_maximum(line, problem):
    key = line.split(" = ")[0]
    assert errors_of("[defaults]\n%s\n" % line + FRAME) == [
        "conf/bad.ini:2: [defaults] %s: %s" % (key, problem)]


@pytest.mark.parametrize("option, problem", [
    ("inter 25d", "inter: '25d' " + MAX_DURATION),
    ("fastinter 2147483648", "fastinter: '2147483648' " + MAX_DURATION),
    ("maxconn 1000001", "maxconn: 1000001 " + MAX_COUNT % 0),
    ("rise 1001", "rise: 1001 is out of range (expected a whole number from 1 to 1000)"),
    ("fall 99999999999999999999", "fall: '99999999999999999999' is out of range (expected a "
     "whole number from 1 to 1000)"),
])
def test_server_durations_and_counts_beyond_their_maximum(option, problem):
    assert errors_of("[backend c]\nserver s1 = 10.0.0.1:80 check %s\n" % option + FRAME) == [
        "conf/bad.ini:2: [backend c] server s1: " + problem]

# -- what is echoed back: short, and without control characters ------------------------------------


def test_a_megabyte_unknown_token_is_answered_at_once_and_cut_short():
    token = "x" * 1000000
    started = time.monotonic()
    messages = errors_of("[global]\n%s\n" % token + FRAME)
    elapsed = time.monotonic() - started
    cut = "'%s...' (1000000 characters)" % ("x" * 60)
    assert messages == ["conf/bad.ini:2: [global] %s: unknown key %s (expected one of: "
                        "%s)" % (cut, cut, GLOBAL_KEYS)]
    assert elapsed < 5, "was quadratic: a megabyte took %.1f s" % elapsed


@pytest.mark.parametrize("line, problem", [
    ("balance = \x1b[2Jround\x07robin", "[backend c] balance: unknown balance algorithm "
     "'\\x1b[2Jround\\x07robin' (expected one of: first, leastconn, random, roundrobin, "
     "source, static-rr)"),
    ("server s1 = 10.0.0.1:80 check-expect rstring \"(\\x1b\"",
     "[backend c] server s1: check-expect: '(\\x1b' is not a regular expression: missing ), "
     "unterminated subpattern at position 0 (expected a Python regular expression)"),
    ("server s1 = 10.0.0.1:80 \"\\x9b31m\"", "[backend c] server s1: unknown server option "
     "'\\x9b31m' (expected one of: %s)" % SERVER_OPTIONS),
])
def test_control_characters_are_escaped_where_they_are_echoed(line, problem):
    assert errors_of("[backend c]\n%s\n" % line + FRAME) == ["conf/bad.ini:2: " + problem]

# -- check-expect rstring: patterns that backtrack without end are refused -------------------------

BACKTRACKING = ("{0} {1}, which can take exponential time on a reply and stall every connection "
                "(expected a pattern without it, such as ^a+$ rather than ^(a+)+$)")
NESTED = "repeats a group that itself repeats"
OVERLAPPING = "repeats a group whose alternatives can match the same text"


@pytest.mark.parametrize("pattern, reason", [
    ("^(a+)+$", NESTED),
    ("(a*)*", NESTED),
    ("(a+){2,}", NESTED),
    ("((a+))+b", NESTED),
    ("(x+x+)+y", NESTED),
    ("^([a-z]+)*$", NESTED),
    ("(\\d+\\.)+", NESTED),            # harmless in fact: the detector errs on the safe side
    ("(a|a)*", OVERLAPPING),
    ("^(a|ab)+$", OVERLAPPING),
    ("(?:x|y|x)+", OVERLAPPING),
])
def test_a_pattern_that_can_backtrack_without_end_is_refused(pattern, reason):
    assert errors_of("[backend c]\nserver s1 = 10.0.0.1:80 check check-expect rstring %s\n"
                     % pattern + FRAME) == [
        "conf/bad.ini:2: [backend c] server s1: check-expect: "
        + BACKTRACKING.format("'%s'" % pattern.replace("\\\\", "\\"), reason)]


@pytest.mark.parametrize("pattern", [
    "^OK", "^HTTP/1\\.[01]\\x20200", "(GET|POST)\\x20/", "a+b+", "(ab)+", "[(+]+x", "\\(a+\\)+",
    "(?:OK|READY)\\r\\n", "^(a+)?b", "(a|b)*c", "[a|a]*", "(ab){1}",
])
def test_ordinary_patterns_are_accepted(pattern):
    assert a_server("10.0.0.1:80 check check-expect rstring %s" % pattern).check_expect == (
        "rstring", pattern.replace("\\\\", "\\").encode())


# -- files ----------------------------------------------------------------------------------------


def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "crlf.ini"
    path.write_bytes(b"\xef\xbb\xbf" + CONTRACT_EXAMPLE.replace("\n", "\r\n").encode())
    config = load_config(str(path))
    assert config.path == str(path)
    assert config == parse_config(CONTRACT_EXAMPLE, str(path))


def test_missing_file(tmp_path):
    path = str(tmp_path / "nowhere.ini")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.messages == ["%s: cannot read the file: No such file or directory "
                                   "(expected a readable INI file)" % path]


@pytest.mark.parametrize("path, kind", [
    (".", "a directory"), ("/dev/zero", "a character device"), ("/dev/null", "a character device"),
])
def test_only_a_regular_file_or_a_pipe_is_read(path, kind):
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.messages == ["%s: cannot read the file: it is %s (expected a regular file "
                                   "or a pipe)" % (path, kind)]


def test_a_config_from_a_pipe_is_read(tmp_path):
    path = str(tmp_path / "fifo")
    os.mkfifo(path)
    writer = threading.Thread(target=lambda: open(path, "w").write(CONTRACT_EXAMPLE),
                              daemon=True)
    writer.start()
    try:
        assert load_config(path) == parse_config(CONTRACT_EXAMPLE, path)
    finally:
        writer.join(10)


def test_a_file_over_16_mib_is_refused_without_reading_it_all(tmp_path):
    path = tmp_path / "huge.ini"
    with open(str(path), "wb") as f:
        f.write(b"# " + b"x" * (16 * 1024 * 1024) + b"\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.messages == ["%s: cannot read the file: it is larger than 16 MiB "
                                   "(expected a configuration of at most 16 MiB)" % path]


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[global]\n# caf\xe9\n")
    with pytest.raises(ConfigError) as info:
        load_config(str(path))
    assert info.value.messages == ["%s:2: byte 0xe9 is not UTF-8 (expected a UTF-8 text file)"
                                   % path]


EXAMPLE_WARNINGS = {
    "accept-proxy.ini": ["conf/accept-proxy.ini:9: [frontend mywebsite] bind: PROXY headers "
                         "are accepted from every peer, so any peer can claim any address "
                         "(expected accept-proxy-from CIDR[,CIDR...] naming the proxies in "
                         "front)"],
}


@pytest.mark.parametrize("name", sorted(os.path.basename(path) for path in
                                        glob.glob(os.path.join(ROOT, "conf", "*.ini"))))
def test_example_configs_load(name, monkeypatch):
    monkeypatch.chdir(ROOT)
    config = load_config("conf/" + name)
    assert list(config.warnings) == EXAMPLE_WARNINGS.get(name, [])
    assert config.frontends


def test_all_five_examples_are_there():
    assert {os.path.basename(path) for path in glob.glob(os.path.join(ROOT, "conf", "*.ini"))} \
        >= {"simpleproxy.ini", "accept-proxy.ini", "send-proxy.ini", "send-proxy-v2.ini",
            "aws-nlb.ini", "routing.ini"}


# -- following host names: init-addr and server-template ------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("last,libc,none", ("last", "libc", "none")),
    ("libc", ("libc",)),
    ("none,192.0.2.1", ("none", "192.0.2.1")),
    ("2001:DB8:0::1,libc", ("2001:db8::1", "libc")),
])
def test_parse_init_addr(text, expected):
    assert INIT_ADDR_VALUE.parse(text) == expected


INIT_ADDR_EXPECTED = ("(expected a comma list of last, libc, none or an IP address, such as "
                      "last,libc,none)")


@pytest.mark.parametrize("text, error", [
    ("lib", "unknown init-addr method 'lib' " + INIT_ADDR_EXPECTED),
    ("last,,none", "unknown init-addr method '' " + INIT_ADDR_EXPECTED),
    ("last libc", "unknown init-addr method 'last libc' " + INIT_ADDR_EXPECTED),
    ("192.0.2.256", "unknown init-addr method '192.0.2.256' " + INIT_ADDR_EXPECTED),
    ("libc,last,libc", "'libc' given twice (expected each init-addr method once)"),
    ("::1,0:0::1", "'0:0::1' given twice (expected each init-addr method once)"),
])
def test_parse_init_addr_errors(text, error):
    with pytest.raises(ValueError) as caught:
        INIT_ADDR_VALUE.parse(text)
    assert str(caught.value) == error


def test_server_template_expands_to_numbered_servers_sharing_one_line():
    assert expand_server_template("web", ["3", "web.test:80", "check", "weight", "2"]) == (
        ("web1", "web2", "web3"), ["web.test:80", "check", "weight", "2"])
    assert len(expand_server_template("w", ["1024", "w.test:80"])[0]) == 1024


@pytest.mark.parametrize("count", ["0", "1025", "x", "3.0", "-1", "+2", "\u00b2", "1_0"])
def test_server_template_counts_are_bounded(count):
    with pytest.raises(ValueError) as caught:
        expand_server_template("web", [count, "web.test:80"])
    assert str(caught.value) == ("'%s' is not a server count (expected a whole number from 1 to "
                                 "1024)" % count)


@pytest.mark.parametrize("words, error", [
    ([], "missing count and address (expected server-template web = COUNT HOST:PORT [options])"),
    (["3"], "missing address (expected server-template web = COUNT HOST:PORT [options])"),
])
def test_server_template_needs_a_count_and_an_address(words, error):
    with pytest.raises(ValueError) as caught:
        expand_server_template("web", words)
    assert str(caught.value) == error



TEMPLATE_FORM = "(expected server-template NAME = COUNT HOST:PORT [options])"


def test_server_template_servers_share_their_line_and_name():
    config = parse_config("[global]\nresolve-interval = 2s\nresolve-hold-nx = 5s\n"
                          "[backend c]\ndefault-server = init-addr last,libc,none\n"
                          "server-template web = 2 web.test:80 check resolve-prefer ipv4\n"
                          "server s1 = db.test:5432 resolve\n" + FRAME, PATH)
    settings = config.global_settings
    assert (settings.resolve_interval, settings.resolve_hold_nx, settings.resolve_hold_timeout,
            settings.resolve_hold_other) == (2.0, 5.0, 30.0, 30.0)
    web1, web2, s1 = config.backends["c"].servers
    assert (web1.name, web2.name, s1.name) == ("web1", "web2", "s1")
    assert web1._replace(name="web2") == web2
    assert (web1.host, web1.template, web1.init_addr, web1.resolve_prefer, web1.resolve,
            web1.check) == ("web.test", "web", ("last", "libc", "none"), "ipv4", False, True)
    assert web1.address == Address(None, ("web.test", 80), "web.test:80")
    assert (s1.host, s1.template, s1.resolve, s1.resolve_prefer) == ("db.test", None, True, "ipv6")
    ip_server = config.backends["webservers"].servers[0]
    assert (ip_server.host, ip_server.template) == (None, None)


@pytest.mark.parametrize("lines, line, message", [
    ("server-template web = 2 10.0.0.1:80\n", 2,
     "server-template web: '10.0.0.1:80' is not a host name " + TEMPLATE_FORM[:-1]
     + ": its addresses fill the servers)"),
    ("server-template web = 2 unix@/run/web.sock\n", 2,
     "server-template web: 'unix@/run/web.sock' is not a host name " + TEMPLATE_FORM[:-1]
     + ": its addresses fill the servers)"),
    ("server-template web = 0 web.test:80\n", 2,
     "server-template web: '0' is not a server count (expected a whole number from 1 to 1024)"),
    ("server web2 = 10.0.0.1:80\nserver-template web = 3 web.test:80\n", 3,
     "server-template web: duplicated server name web2 (first defined on line 2)"),
    ("server-template web = 3 web.test:80\nserver web2 = 10.0.0.1:80\n", 3,
     "server web2: duplicated server name web2 (first defined on line 2)"),
    ("server-template a b = 3 web.test:80\n", 2,
     "server-template a b: needs exactly one name " + TEMPLATE_FORM),
    ("server s1 = web.test:80 init-addr libc,lib\n", 2,
     "server s1: init-addr: unknown init-addr method 'lib' " + INIT_ADDR_EXPECTED),
    ("server s1 = web.test:80 resolve-prefer ipv5\n", 2,
     "server s1: resolve-prefer: unknown address family 'ipv5', did you mean 'ipv4'? "
     "(expected one of: ipv4, ipv6)"),
])
def test_server_template_and_resolve_option_errors(lines, line, message):
    assert errors_of("[backend c]\n" + lines + FRAME) == [
        "conf/bad.ini:%d: [backend c] %s" % (line, message)]


def test_resolve_keys_are_global_durations():
    assert errors_of("[global]\nresolve-interval = 0s\nresolve-hold-nx = 2\x1bs\n" + FRAME) == [
        "conf/bad.ini:2: [global] resolve-interval: '0s' is not more than zero (expected a "
        "duration such as 5s)",
        "conf/bad.ini:3: [global] resolve-hold-nx: '2\\x1bs' is not a duration (expected a "
        "number with ms, s, m, h or d)"]
