"""Log destinations ([global] log): a file that logrotate moves away, syslog over UDP with
RFC 5424 framing, and a syslog socket that takes no more (dropped and counted, never waited
for). Real processes and real sockets; log_escape and the non-blocking stderr writer are in
tests/test_hardening.py."""
import logging
import os
import re
import socket
import subprocess
import time

import pytest

from simpleproxy.logs import SyslogWriter
from support import (DEFAULT_TIMEOUT, RecordingServer, exchange, free_port, proxy_command,
                     proxy_env, wait_until)

SYSLOG_READY = (r"<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z %s simpleproxy %d - - "
                r"simpleproxy ready: app 127\.0\.0\.1:%d")


@pytest.fixture
def echo_server():
    server = RecordingServer(mode="echo")
    yield server
    server.close()


@pytest.fixture
def start_quiet(tmp_path):
    """Start simpleproxy on a config whose log does not go to stderr: the test waits on the
    log's destination, not on the output. Stopped (SIGTERM, then SIGKILL) in any case."""
    started = []

    def start(config_text):
        path = str(tmp_path / "proxy.ini")
        with open(path, "w") as f:
            f.write(config_text)
        proc = subprocess.Popen(proxy_command("module", str(tmp_path)) + [path],
                                cwd=str(tmp_path), env=proxy_env(), stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        started.append(proc)
        return proc
    yield start
    for proc in started:
        proc.terminate()
        try:
            assert proc.wait(DEFAULT_TIMEOUT) == 0
        finally:
            proc.kill()
            proc.wait()
            proc.stderr.close()


def listen_config(port, server, global_lines):
    return "[global]\n%s\n[listen app]\nbind = 127.0.0.1:%d\nserver s1 = %s\n" % (
        global_lines, port, server.config_address)


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_a_log_file_moved_away_is_reopened_at_its_path(start_quiet, echo_server, tmp_path):
    log = str(tmp_path / "proxy.log")
    port = free_port()
    start_quiet(listen_config(port, echo_server, "log = %s" % log))
    wait_until(lambda: "simpleproxy ready" in read(log), what="the ready line in the file")
    assert exchange(("127.0.0.1", port), b"before") == b"before"
    wait_until(lambda: "fe=app" in read(log), what="the first connection's line")
    os.rename(log, log + ".1")                        # what logrotate does
    # Lines go on into the moved file until the writer notices (within a second), then into
    # a new file at the path.
    wait_until(lambda: exchange(("127.0.0.1", port), b"after") == b"after"
               and "fe=app" in read(log), what="a new log file at the path")
    moved = read(log + ".1")
    assert "simpleproxy ready" in moved and "simpleproxy ready" not in read(log)
    assert oct(os.stat(log).st_mode & 0o777) == oct(0o640)


def test_syslog_over_udp_gets_rfc_5424_frames(start_quiet, echo_server):
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(DEFAULT_TIMEOUT)
    port = free_port()
    try:
        proc = start_quiet(listen_config(port, echo_server, "log = syslog@127.0.0.1:%d"
                                         % receiver.getsockname()[1]))
        frame = receiver.recv(4096)
        assert re.fullmatch(SYSLOG_READY % (re.escape(socket.gethostname()), proc.pid, port),
                            frame.decode()), frame
        assert exchange(("127.0.0.1", port), b"hi") == b"hi"
        frame = receiver.recv(4096).decode()
        assert re.fullmatch(r"<134>1 \S+ \S+ simpleproxy %d - - 127\.0\.0\.1:\d+ peer=.* "
                            r"fe=app be=app/s1 .* end=normal" % proc.pid, frame), frame
    finally:
        receiver.close()


def test_a_full_syslog_socket_drops_and_counts_lines_without_waiting(tmp_path):
    path = str(tmp_path / "log.sock")
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(path)                               # bound, and never read until the end
    writer = SyslogWriter(socket.AF_UNIX, path)
    writer.setFormatter(logging.Formatter("%(message)s"))
    try:
        started = time.monotonic()
        sent = 0
        while writer.dropped_total == 0:
            writer.handle(logging.LogRecord("simpleproxy", logging.WARNING, "", 0,
                                            "line %d", (sent,), None))
            sent += 1
            assert sent < 100000, "the socket never filled"
        writer.handle(logging.LogRecord("simpleproxy", logging.ERROR, "", 0, "x", (), None))
        assert writer.dropped_total == 2
        assert time.monotonic() - started < 5
        receiver.setblocking(False)
        first = receiver.recv(4096).decode()
        assert re.fullmatch(r"<132>1 \S+ \S+ simpleproxy %d - - line 0" % os.getpid(), first)
        received = 1
        while True:
            try:
                receiver.recv(4096)
            except BlockingIOError:
                break
            received += 1
        assert received == sent - 1                  # every line but the dropped one, whole
    finally:
        writer.close()
        receiver.close()
