"""The command line as a user meets it: --version, -c on good and bad configs, --decode,
and refusing to start, through both launch forms."""
import glob
import json
import os
import socket
import subprocess

import pytest

from simpleproxy import __version__
from simpleproxy.cli import main
from stats_support import ask, http_get
from support import (BOTH_FORMS, REPO, SERVER_OPTIONS, V2_SIGNATURE, RecordingServer, exchange,
                     free_port, proxy_command, proxy_env, run_cli)

GOOD_TAIL = """
[frontend web]
bind = 127.0.0.1:8080
default_backend = app

[backend app]
server s1 = 127.0.0.1:9000
"""

# (config text, the exact error lines -c prints). Line numbers count from the first line.
BAD_CONFIGS = [
    ("[frontend web]\nbind = :80\ndefault_backend = webserver\n\n[backend webservers]\n"
     "server s1 = 127.0.0.1:80\n",
     ["{f}:3: [frontend web] default_backend: no backend named 'webserver' (backends: webservers)"]),
    ("[defaults]\ntimeout connect = 5x\n" + GOOD_TAIL,
     ["{f}:2: [defaults] timeout connect: '5x' is not a duration "
      "(expected a number with ms, s, m, h or d)"]),
    ("[defaults]\ntimeout client = s\n" + GOOD_TAIL,
     ["{f}:2: [defaults] timeout client: 's' is not a duration "
      "(expected a number with ms, s, m, h or d)"]),
    ("[global]\nmaxconn = lots\n" + GOOD_TAIL,
     ["{f}:2: [global] maxconn: 'lots' is not a whole number (expected a whole number from 1 to 1000000)"]),
    ("[frontend web]\nbind = :80 accept-prox\ndefault_backend = app\n[backend app]\n"
     "server s1 = 127.0.0.1:80\n",
     ["{f}:2: [frontend web] bind: unknown bind option 'accept-prox', did you mean 'accept-proxy'? "
      "(expected one of: accept-proxy, accept-proxy-from, accept-proxy-version, proxy-max-header, "
      "proxy-optional-from, v6only)"]),
    ("[frontend web]\nbind = [::1]:99999\ndefault_backend = app\n[backend app]\n"
     "server s1 = 127.0.0.1:80\n",
     ["{f}:2: [frontend web] bind: '99999' is not a port (expected 1 to 65535)"]),
    ("[frontend web]\nbind = :80\ndefault_backend = app\n[backend app]\n"
     "server s1 = 127.0.0.1:80 check chek\n",
     ["{f}:5: [backend app] server s1: unknown server option 'chek', did you mean 'check'? "
      "(expected one of: %s)" % SERVER_OPTIONS]),
    ("[frontend web]\nbind = :80\ndefault_backend = app\n[backend app]\n"
     "server s1 = 300.1.1.1:80\n",
     ["{f}:5: [backend app] server s1: '300.1.1.1' is not an IPv4 address "
      "(expected IPv4:PORT, [IPv6]:PORT, HOST:PORT or unix@/path)"]),
    ("[frontend web]\nbind = :80\ndefault_backend = app\n[backend app]\n"
     "server s1 = 127.0.0.1:80\nserver s1 = 127.0.0.1:81\n",
     ["{f}:6: [backend app] server s1: duplicated server name (first defined on line 5)"]),
    ("[frontend web]\nbind = :80\ndefault_backend = app\n[backend app]\n"
     "server s1 = 127.0.0.1:80\nfrobnicate = yes\n",
     ["{f}:6: [backend app] frobnicate: unknown key 'frobnicate' (expected one of: balance, "
      "default-server, maxqueue, option allbackups, option redispatch, retries, server NAME, "
      "server-template NAME, timeout check, timeout connect, timeout queue, timeout server, "
      "timeout server-fin)"]),
    ("[fronted x]\n" + GOOD_TAIL,
     ["{f}:1: [fronted x]: unknown section kind 'fronted', did you mean 'frontend'? "
      "(expected one of: global, defaults, frontend NAME, backend NAME, listen NAME)"]),
    # Several errors at once: all reported, in file order.
    ("[defaults]\ntimeout connect = 5x\n[frontend web]\nbind = :80\ndefault_backend = nope\n",
     ["{f}:2: [defaults] timeout connect: '5x' is not a duration "
      "(expected a number with ms, s, m, h or d)",
      "{f}:5: [frontend web] default_backend: no backend named 'nope' (backends: none)"]),
]


@BOTH_FORMS
def test_version(launch):
    result = launch.cli(["--version"])
    assert result.returncode == 0
    assert result.stdout.strip() == "simpleproxy " + __version__


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(REPO, "conf", "*.ini"))),
                         ids=os.path.basename)
@BOTH_FORMS
def test_example_configs_pass_check(path, launch):
    result = launch.cli(["-c", path])
    assert result.returncode == 0, result.stderr
    assert "Configuration file is valid" in result.stdout


@pytest.mark.parametrize("text,expected", BAD_CONFIGS, ids=range(len(BAD_CONFIGS)))
def test_bad_config_check_messages(text, expected, launch, tmp_path):
    path = tmp_path / "bad.ini"
    path.write_text(text)
    result = launch.cli(["-c", str(path)])
    assert result.returncode != 0
    got = [line for line in result.stderr.splitlines() if line.strip()]
    assert got == [line.format(f=str(path)) for line in expected]


@BOTH_FORMS
def test_proxy_refuses_to_start_with_the_same_messages(launch, tmp_path):
    text, expected = BAD_CONFIGS[0]
    path = tmp_path / "bad.ini"
    path.write_text(text)
    result = launch.cli([str(path)])
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.strip()] == \
        [line.format(f=str(path)) for line in expected]


def test_missing_config_file(launch, tmp_path):
    result = launch.cli(["-c", str(tmp_path / "nope.ini")])
    assert result.returncode != 0
    assert result.stderr.strip() == ("%s: cannot read the file: No such file or directory "
                                     "(expected a readable INI file)" % (tmp_path / "nope.ini"))


@pytest.mark.parametrize("path, kind", [("/dev/zero", "a character device"), (".", "a directory")])
def test_check_refuses_what_is_not_a_file_in_one_line(path, kind, launch, tmp_path):
    # /dev/zero was read until memory ran out, then a traceback.
    result = launch.cli(["-c", path], timeout=30)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == ("%s: cannot read the file: it is %s (expected a regular file or "
                             "a pipe)\n" % (path, kind))


def test_check_reads_a_config_from_process_substitution(tmp_path):
    path = tmp_path / "good.ini"
    path.write_text(GOOD_TAIL)
    command = proxy_command("module", str(tmp_path))
    result = subprocess.run(["bash", "-c", 'exec "$@" -c <(cat "$CONFIG")', "bash"] + command,
                            cwd=str(tmp_path), env=dict(proxy_env(), CONFIG=str(path)),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith("Configuration file is valid: /dev/fd/")


def test_check_of_a_host_name_resolves_it_only_with_resolve(launch, tmp_path):
    path = tmp_path / "names.ini"
    # .invalid never resolves (RFC 6761): -c passes because it does not ask.
    path.write_text(GOOD_TAIL.replace("127.0.0.1:9000", "app.invalid:9000"))
    result = launch.cli(["-c", str(path)])
    assert (result.returncode, result.stderr) == (0, "")
    path.write_text(GOOD_TAIL.replace("127.0.0.1:9000", "localhost:9000"))
    result = launch.cli(["-c", "--resolve", str(path)])
    assert (result.returncode, result.stderr) == (0, "")


UNRESOLVED = ("{f}:7: [backend app] server s1: cannot resolve 'app.example': Name or service not "
              "known (expected a host name that resolves, an IP address, or init-addr ending in "
              "none)\n")


@pytest.mark.parametrize("args, status, stderr", [
    (["-c"], 0, ""),
    (["-c", "--resolve"], 1, UNRESOLVED),
    ([], 1, UNRESOLVED),                    # starting: the same line, before anything is bound
])
def test_names_are_looked_up_at_start_up_or_when_asked(args, status, stderr, tmp_path,
                                                       monkeypatch, capsys):
    looked_up = []

    def no_such_name(host, *more, **options):
        looked_up.append(host)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    # In process, with the lookup faked: a real failed lookup would ask a DNS server.
    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    path = tmp_path / "names.ini"
    path.write_text(GOOD_TAIL.replace("127.0.0.1:9000", "app.example:9000"))
    assert main(args + [str(path)]) == status
    assert capsys.readouterr().err == stderr.format(f=path)
    assert looked_up == (["app.example"] if status else [])


def test_a_long_token_with_control_characters_is_echoed_short_and_escaped(tmp_path):
    path = tmp_path / "bad.ini"
    path.write_bytes(b"[global]\nlog-level = \x1b]0;owned\x07" + b"v" * 5000 + b"\n"
                     + GOOD_TAIL.encode())
    result = run_cli(["-c", str(path)], "module", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr == (
        "%s:2: [global] log-level: unknown log level '\\x1b]0;owned\\x07%s...' (5010 "
        "characters) (expected one of: debug, error, info, warning)\n" % (path, "v" * 50))


@BOTH_FORMS
def test_port_in_use_is_one_clear_line(launch, tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    port = busy.getsockname()[1]
    path = tmp_path / "busy.ini"
    path.write_text(GOOD_TAIL.replace("127.0.0.1:8080", "127.0.0.1:%d" % port))
    try:
        result = launch.cli([str(path)])
    finally:
        busy.close()
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1
    assert errors[0].endswith("cannot listen on 127.0.0.1:%d (line 3): Address already in use"
                              % port)


DECODES = [
    ("50524f5859205443503420312e322e332e3420352e362e372e3820383020343433 0d0a",
     {"version": 1, "command": "PROXY", "family": "TCP4", "transport": None,
      "src_addr": "1.2.3.4", "src_port": 80, "dst_addr": "5.6.7.8", "dst_port": 443,
      "header_len": 35, "tlvs": []}),
    ("0d0a0d0a000d0a515549540a 2000 0000",
     {"version": 2, "command": "LOCAL", "family": "UNKNOWN", "transport": "UNSPEC",
      "src_addr": None, "src_port": None, "dst_addr": None, "dst_port": None,
      "header_len": 16, "tlvs": []}),
    ("0d0a0d0a000d0a515549540a 2111 0011 7f000001 7f000002 0050 01bb 04 0002 abcd",
     {"version": 2, "command": "PROXY", "family": "TCP4", "transport": "STREAM",
      "src_addr": "127.0.0.1", "src_port": 80, "dst_addr": "127.0.0.2", "dst_port": 443,
      "header_len": 33, "tlvs": [[4, "abcd"]]}),
]


@pytest.mark.parametrize("hex_text,expected", DECODES, ids=range(len(DECODES)))
@BOTH_FORMS
def test_decode_prints_one_json_object(hex_text, expected, launch):
    result = launch.cli(["--decode", hex_text])
    assert result.returncode == 0, result.stderr
    decoded = json.loads(result.stdout)
    assert {key: decoded[key] for key in expected} == expected


@pytest.mark.parametrize("hex_text,kind", [
    ("474554202f20485454502f312e310d0a", "not-proxy"),
    ("50524f585920544350342031", "truncated"),
    ("zz", None),
])
def test_decode_rejects_with_one_line(hex_text, kind, launch):
    result = launch.cli(["--decode", hex_text])
    assert result.returncode == 1
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1
    if kind:
        assert "(%s)" % kind in result.stderr



def test_the_demo_does_what_its_comments_say(launch):
    """conf/simpleproxy.ini, run as its comments tell a newcomer (its ports swapped for free
    ones): round robin gives s1 a v1 header and s2 a v2 one, the second frontend passes on
    the client a header names, and the stats page and socket answer."""
    with open(os.path.join(REPO, "conf", "simpleproxy.ini"), encoding="utf-8") as f:
        text = f.read()
    s1, s2 = RecordingServer(port=0), RecordingServer(port=0)
    try:
        ports = {"8080": free_port(), "8443": free_port(), "8404": free_port(),
                 "9999": free_port(), "8081": s1.port, "8082": s2.port}
        for demo_port, port in ports.items():
            assert "127.0.0.1:" + demo_port in text
            text = text.replace("127.0.0.1:" + demo_port, "127.0.0.1:%d" % port)
        launch(text)
        client = ("127.0.0.1", ports["8080"])
        assert exchange(client, b"hello\n") == b""
        assert exchange(client, b"hello\n") == b""
        first, second = s1.next_connection(), s2.next_connection()
        assert bytes(first.received).startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 ")
        assert bytes(first.received).endswith(b" %d\r\nhello\n" % ports["8080"])
        assert bytes(second.received).startswith(V2_SIGNATURE + b"\x21\x11\x00\x0c")
        assert bytes(second.received).endswith(b"hello\n")
        exchange(("127.0.0.1", ports["8443"]),
                 b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 8443\r\nhello\n")
        assert bytes(s1.next_connection().received) == \
            b"PROXY TCP4 203.0.113.7 127.0.0.1 51000 8443\r\nhello\n"
        status, page = http_get(ports["8404"], "/")
        assert status == 200 and b" demo</h2>" in page and b" behind-a-proxy</h2>" in page
        assert "demo,s1," in ask(("127.0.0.1", ports["9999"]), "show stat\n")
    finally:
        s1.close()
        s2.close()
