"""What an attacker or a careless operator found (issue 9): nothing a client sends, no duration,
no signal and no unread stderr may stop the proxy, and no client byte reaches a log line raw.
"""
import contextlib
import io
import json
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import time

import pytest

from simpleproxy.config import parse_config
from simpleproxy.health import CHECK_REGEX_WINDOW, check_spec, run_check
from simpleproxy.logs import log_escape, setup_logging
from simpleproxy.proxy import Proxy
from support import (DEFAULT_TIMEOUT, PAYLOAD, REPLY, V2_SIGNATURE, RecordingServer, connect,
                     dial, exchange, free_port, one_frontend, parsed_server, proxy_command,
                     proxy_env, proxy_in_thread, wait_until)

TWENTY_DIGIT_MS = 10 ** 19 / 1000.0          # seconds: "timestamp out of range for time_t"


class Banner(RecordingServer):
    """A server that sends ``reply`` as soon as a connection comes, then closes it."""

    def handle(self, conn, record):
        conn.sendall(self.reply)


# -- 1. durations too long for the selector or a socket ----------------------------------------

def test_every_duration_clamped_in_process(backend):
    """Config objects with 20-digit-millisecond durations, which no config file can give (-c
    stops at 24d): the header, connect and queue timers and the health checks all keep
    working. The loop alone is tested with such timers in test_loop.py."""
    port = free_port()
    text = ("[listen app]\nbind = 127.0.0.1:%d accept-proxy\nserver s1 = %s check inter 1s\n"
            % (port, backend.config_address))
    config = parse_config(text)
    huge = TWENTY_DIGIT_MS
    frontend = config.frontends[0]._replace(timeout_proxy_header=huge, timeout_client=huge)
    backend_ = config.backends["app"]
    servers = tuple(server._replace(inter=huge, fastinter=huge, downinter=huge)
                    for server in backend_.servers)
    backend_ = backend_._replace(servers=servers, timeout_connect=huge, timeout_queue=huge,
                                 timeout_server=huge)
    config = config._replace(frontends=(frontend,), backends={"app": backend_})
    with proxy_in_thread(config) as (proxy, thread, log):
        partial = dial(port)
        partial.sendall(b"PROXY TCP4 ")             # arms the header timer
        reply = exchange(("127.0.0.1", port),
                         b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n" + PAYLOAD, timeout=5)
        assert reply == REPLY
        # The first check went at once; its socket timeout was bounded too.
        wait_until(lambda: len(backend.accepted) >= 2, what="the health check")
        assert thread.is_alive(), log.getvalue()
        partial.close()
    assert "internal error" not in log.getvalue()
    assert "is DOWN" not in log.getvalue()


def test_the_longest_accepted_durations_in_a_real_proxy(launch, backend):
    """24d, the most a config may say: it reaches the selector and the check sockets as it is."""
    port = free_port()
    proxy = launch(one_frontend(
        ["127.0.0.1:%d accept-proxy" % port], backend.config_address + " check inter 24d",
        frontend="timeout proxy-header = 24d\n", backend="timeout connect = 24d\n"))
    partial = dial(port)
    partial.sendall(b"PROXY TCP4 ")
    wait_until(lambda: backend.accepted, what="the first health check")
    reply = exchange(("127.0.0.1", port),
                     b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n" + PAYLOAD, timeout=5)
    assert reply == REPLY
    assert proxy.proc.poll() is None
    partial.close()


# -- 2. client bytes in the log -----------------------------------------------------------------

def test_log_escape_every_byte_value():
    for byte in range(256):
        escaped = log_escape(bytes([byte]))
        if 0x21 <= byte <= 0x7e and byte != 0x5c:
            assert escaped == chr(byte)
        else:
            assert escaped == "\\x%02x" % byte
    everything = log_escape(bytes(range(256)))
    assert all(0x21 <= ord(char) <= 0x7e for char in everything)
    unescaped = re.sub(r"\\x([0-9a-f]{2})", lambda m: chr(int(m.group(1), 16)), everything)
    assert unescaped.encode("latin-1") == bytes(range(256))        # unambiguous
    # Text decoded with surrogateescape (socket and header paths) escapes as its bytes.
    path = bytes(range(1, 256)).decode("utf-8", "surrogateescape")
    assert log_escape(path) == log_escape(bytes(range(1, 256)))


FORGED_LINE = (b"\n2026-01-01T00:00:00.000 simpleproxy[1] INFO 6.6.6.6:1 peer=6.6.6.6:1 fe=x "
               b"end=normal\x1b[2J")


def v2_unix(src, dst, tlvs=b""):
    block = struct.pack("!108s108s", src, dst)
    return (V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", len(block) + len(tlvs)) + block
            + tlvs)


def test_v2_unix_paths_cannot_forge_log_lines(launch, backend):
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port],
                                     backend.config_address))
    src = b"/x" + FORGED_LINE[:100]
    assert exchange(("127.0.0.1", port), v2_unix(src, b"/dst\r\n") + PAYLOAD) == REPLY
    line = proxy.wait_for("pp=v2/UNIX")
    assert line.split(" ")[3] == "unix@" + log_escape(src)
    assert "\x1b" not in "\n".join(proxy.lines)
    assert len(proxy.log_lines("6.6.6.6")) == 1
    assert not [forged for forged in proxy.lines if forged.startswith("2026-01-01")]


def test_json_log_lines_carry_no_raw_client_byte(launch, backend):
    """log-format = json: the UNIX path goes through log_escape as in the tcplog, the TLVs'
    text is JSON-escaped ASCII; the line stays one line and forges nothing."""
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d accept-proxy" % port], backend.config_address,
                                frontend="log-format = json\n"))
    src = b"/x" + FORGED_LINE[:100]
    authority = struct.pack("!BH", 0x02, len(FORGED_LINE)) + FORGED_LINE
    assert exchange(("127.0.0.1", port), v2_unix(src, b"/dst", authority) + PAYLOAD) == REPLY
    line = proxy.wait_for('"pp":"v2/UNIX"')
    assert all(0x20 <= ord(char) <= 0x7e for char in line)
    record = json.loads(line[line.index("{"):])
    assert record["client"] == "unix@" + log_escape(src)
    assert record["authority"] == FORGED_LINE.decode()
    assert not [forged for forged in proxy.lines if "2026-01-01" in forged and forged != line]


def test_unix_peer_paths_are_escaped(launch, backend, tmp_path):
    listen = str(tmp_path / "in.sock")
    proxy = launch(one_frontend(["unix@" + listen], backend.config_address))
    peer_path = str(tmp_path / "peer\n\x1b[31m fe=forged")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(DEFAULT_TIMEOUT)
    sock.bind(peer_path)
    sock.connect(listen)
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(len(REPLY) + 1) == REPLY
    sock.close()
    line = proxy.wait_for("end=normal")
    assert "peer=unix@" + log_escape(peer_path) in line
    assert " fe=forged" not in "\n".join(proxy.lines)


def test_decode_output_carries_no_raw_control_bytes(launch):
    """--decode prints JSON with ensure_ascii: every client byte comes out escaped, and the
    paths come back exactly."""
    src = bytes(range(1, 108)) + b"\0"
    dst = bytes(range(128, 236))
    authority = bytes(range(256))
    tlv = b"\x02" + struct.pack("!H", len(authority)) + authority
    result = launch.cli(["--decode", v2_unix(src, dst, tlv).hex()])
    assert result.returncode == 0, result.stderr
    assert all(0x20 <= ord(char) <= 0x7e for char in result.stdout.rstrip("\n"))
    decoded = json.loads(result.stdout)
    assert decoded["src_addr"].encode("utf-8", "surrogateescape") == src[:-1]
    assert decoded["dst_addr"].encode("utf-8", "surrogateescape") == dst
    assert decoded["tlvs"] == [[2, authority.hex()]]


# -- 3. unix@ binds replace only a stale socket --------------------------------------------------

def unix_bind_config(path, server):
    return one_frontend(["unix@" + path], server)


@pytest.mark.parametrize("kind", ["regular file", "directory", "symbolic link"])
def test_unix_bind_refuses_to_replace_what_is_not_a_socket(kind, tmp_path, launch, backend):
    path = str(tmp_path / "in.sock")
    target = str(tmp_path / "precious")
    with open(target, "w") as f:
        f.write("keep me")
    if kind == "regular file":
        os.rename(target, path)
    elif kind == "directory":
        os.mkdir(path)
    else:
        os.symlink(target, path)
    config_path = str(tmp_path / "proxy.ini")
    text = unix_bind_config(path, backend.config_address)
    with open(config_path, "w") as f:
        f.write(text)
    bind_line = text.splitlines().index("bind = unix@" + path) + 1
    result = launch.cli([config_path], timeout=30)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1, result.stderr
    assert errors[0].endswith("cannot listen on unix@%s (line %d): a %s is in the way (only a "
                              "stale socket is replaced)" % (path, bind_line, kind)), errors[0]
    assert "Traceback" not in result.stderr
    with open(path if kind == "regular file" else target) as f:
        assert f.read() == "keep me"


def test_unix_bind_replaces_a_stale_socket_and_removes_only_its_own(launch, tmp_path, backend):
    path = str(tmp_path / "in.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()                               # the file stays, nobody listens
    proxy = launch(unix_bind_config(path, backend.config_address))
    assert exchange(path, PAYLOAD) == REPLY
    os.unlink(path)                             # someone puts a file there meanwhile
    with open(path, "w") as f:
        f.write("not yours")
    assert proxy.stop() == 0
    with open(path) as f:
        assert f.read() == "not yours"


def test_unix_bind_socket_removed_at_exit(launch, tmp_path, backend):
    path = str(tmp_path / "in.sock")
    proxy = launch(unix_bind_config(path, backend.config_address))
    assert exchange(path, PAYLOAD) == REPLY
    assert proxy.stop() == 0
    assert not os.path.lexists(path)


# -- 4. signals -------------------------------------------------------------------------------

def test_reload_signals_and_sigpipe_do_not_kill_a_single_process(launch, echo):
    """Without a master (no process key), HAProxy's reload signals only say why nothing
    reloads; a live connection carries on. (SIGUSR1, the soft stop: tests/test_master.py.)"""
    port = free_port()
    proxy = launch(one_frontend(["127.0.0.1:%d" % port], echo.config_address))
    live = dial(port)
    live.sendall(b"before")
    assert live.recv(6) == b"before"
    for signum in (signal.SIGHUP, signal.SIGUSR2, signal.SIGPIPE):
        proxy.proc.send_signal(signum)
        if signum != signal.SIGPIPE:
            line = proxy.wait_for("received %s: not reloading: a reload needs the master "
                                  "process" % signum.name)
            assert " WARNING " in line
    live.sendall(b"after")
    assert live.recv(5) == b"after"
    assert exchange(("127.0.0.1", port), PAYLOAD) == PAYLOAD
    assert proxy.proc.poll() is None
    live.close()


# -- 5. check-expect rstring searches a small window ---------------------------------------------

@pytest.mark.parametrize("expect, where, ok", [
    (("string", b"OK"), CHECK_REGEX_WINDOW, True),        # a string is searched in 16 KiB
    (("rstring", b"OK"), CHECK_REGEX_WINDOW - 2, True),   # ends right at the window's edge
    (("rstring", b"OK"), CHECK_REGEX_WINDOW - 1, False),  # one byte past it
])
def test_rstring_searches_only_the_window(expect, where, ok):
    server = Banner(reply=b"x" * where + b"OK")
    try:
        server_config, backend_ = parsed_server(server.config_address + " check")
        spec = check_spec(server_config._replace(check_expect=expect), backend_)
        result = run_check(spec)
        assert result.ok is ok, result
    finally:
        server.close()


def test_a_backtracking_regex_does_not_freeze_the_proxy(launch, backend):
    """a*a*b takes hours over 16 KiB of 'a' and ~25 ms over the window; the loop holds."""
    server = Banner(reply=b"a" * 16384)
    try:
        port = free_port()
        proxy = launch(one_frontend(["127.0.0.1:%d" % port], [
            ("s1", backend.config_address),
            ("s2", server.config_address + " check inter 200ms check-expect rstring a*a*b")]))
        proxy.wait_for("server be/s2 is DOWN, reason: response did not match")
        for _ in range(3):
            started = time.monotonic()
            assert exchange(("127.0.0.1", port), PAYLOAD, timeout=5) == REPLY
            assert time.monotonic() - started < 2.0
    finally:
        server.close()


# -- 6. an unread stderr never blocks the traffic -------------------------------------------------

def test_unread_stderr_drops_lines_and_says_how_many(tmp_path, proxy_python, backend):
    port = free_port()
    config_path = str(tmp_path / "proxy.ini")
    with open(config_path, "w") as f:
        f.write(one_frontend(["127.0.0.1:%d" % port], backend.config_address))
    proc = subprocess.Popen(proxy_command("module", str(tmp_path)) + [config_path],
                            cwd=str(tmp_path), env=proxy_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def listening():
            try:
                socket.create_connection(("127.0.0.1", port), 1).close()
                return True
            except OSError:
                return False
        wait_until(listening, what="the proxy to listen")
        connections = 1200
        for _ in range(connections):
            assert exchange(("127.0.0.1", port), b"ping", timeout=5) == REPLY
        assert proc.poll() is None
        output = b""
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while b"log lines: stderr was not taking them" not in output:
            assert time.monotonic() < deadline, output[-2000:]
            if select.select([proc.stderr], [], [], 0.2)[0]:
                output += os.read(proc.stderr.fileno(), 65536)
        proc.send_signal(signal.SIGTERM)
        output += proc.stderr.read()
        assert proc.wait(DEFAULT_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    lines = output.decode().splitlines()
    dropped = [int(re.search(r"dropped (\d+) log lines", line).group(1))
               for line in lines if "log lines: stderr" in line]
    logged = [line for line in lines if " end=" in line]
    assert len(dropped) == 1 and dropped[0] > 0
    assert len(logged) + dropped[0] == connections + 1     # and the probe that found it ready
    assert lines[-1].endswith(" INFO stopped")              # flushed at exit


# -- 7. maxconn and the descriptor limit; IPv4 on a dual-stack bind -----------------------------

@contextlib.contextmanager
def soft_descriptor_limit(limit):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_maxconn_above_the_descriptor_limit_warns_at_start():
    config = parse_config("[global]\nmaxconn = 1000\n[listen app]\nbind = 127.0.0.1:%d\n"
                          "server s1 = 127.0.0.1:9\n" % free_port())
    log = io.StringIO()
    setup_logging("info", log)
    with soft_descriptor_limit(max(256, len(os.listdir("/proc/self/fd")) + 64)):
        limit = os.sysconf("SC_OPEN_MAX")
        proxy = Proxy(config)
    proxy._shutdown()
    assert ("WARNING maxconn 1000 is more than the descriptor limit allows (%d: %d descriptors, "
            "two per connection, 64 kept back); connections beyond it end with "
            "end=rejected:no-descriptors" % ((limit - 64) // 2, limit)) in log.getvalue()


def test_no_descriptor_for_the_server_ends_with_its_own_word(launch):
    silent = RecordingServer(mode="silent")
    try:
        port = free_port()
        proxy = launch(one_frontend(["127.0.0.1:%d" % port], silent.config_address))
        held_count = 3
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        # Room for held_count sessions and one descriptor more: the next client is accepted,
        # and its server socket cannot be made.
        resource.prlimit(proxy.proc.pid, resource.RLIMIT_NOFILE,
                         (proxy.open_fds() + 2 * held_count + 1, hard))
        held = [dial(port) for _ in range(held_count)]
        wait_until(lambda: len(silent.accepted) == held_count, what="the held sessions")
        extra = dial(port)
        line = proxy.wait_for("end=rejected:no-descriptors")
        assert 'reason="cannot create a socket: Too many open files"' in line
        assert not proxy.log_lines("internal-error")
        extra.close()
        for sock in held:
            sock.close()
        resource.prlimit(proxy.proc.pid, resource.RLIMIT_NOFILE, (hard, hard))
    finally:
        silent.close()


def test_ipv4_peer_on_a_dual_stack_bind_is_logged_as_ipv4(launch, backend):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    port = free_port("::")
    proxy = launch(one_frontend(["[::]:%d" % port], backend.config_address))
    sock = connect(("127.0.0.1", port))
    client_port = sock.getsockname()[1]
    sock.sendall(PAYLOAD)
    sock.shutdown(socket.SHUT_WR)
    assert sock.recv(len(REPLY) + 1) == REPLY
    sock.close()
    line = proxy.wait_for("end=normal")
    assert " 127.0.0.1:%d peer=127.0.0.1:%d " % (client_port, client_port) in line
