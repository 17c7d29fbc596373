"""Log destinations ([global] log): a file that logrotate moves away, syslog over UDP with
RFC 5424 framing, and a syslog socket that takes no more (dropped and counted, never waited
for). Real processes and real sockets; log_escape and the non-blocking stderr writer are in
tests/test_hardening.py."""
import io
import logging
import os
import re
import select
import socket
import subprocess
import sys
import time

import pytest

from simpleproxy.logs import (
    LOG, LOG_BATCH_DELAY, LOG_BATCH_LINES, LOG_HOLD_LIMIT, LogWriter, SyslogWriter, log_connection,
    setup_logging)
from simpleproxy.loop import EventLoop
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


# -- a connection's line: without a LogRecord, batched ------------------------------------------

LINE_HEAD = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} simpleproxy\[%d\] " % os.getpid()


@pytest.fixture
def pipe_writer():
    """A LogWriter on a pipe's write end, and a function that reads what it wrote so far."""
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    writer = LogWriter(write_end)

    def written():
        data = b""
        while True:
            try:
                chunk = os.read(read_end, 1 << 20)
            except BlockingIOError:
                return data.decode()
            if not chunk:
                return data.decode()
            data += chunk
    yield writer, written
    writer.on_held = None
    writer.close()
    os.close(write_end)
    os.close(read_end)


def record(level, message):
    return logging.LogRecord("simpleproxy", level, "", 0, "%s", (message,), None)


def test_a_connection_line_is_the_line_a_record_gives(pipe_writer):
    writer, written = pipe_writer
    writer.add_line(logging.INFO, str, "1.2.3.4:5 peer=1.2.3.4:5 end=normal")
    writer.handle(record(logging.INFO, "1.2.3.4:5 peer=1.2.3.4:5 end=normal"))
    writer.add_line(logging.WARNING, str, "caf\u00e9 \udcff")
    writer.handle(record(logging.WARNING, "caf\u00e9 \udcff"))
    lines = written().splitlines()
    assert len(lines) == 4
    assert re.fullmatch(LINE_HEAD + r"INFO 1\.2\.3\.4:5 peer=1\.2\.3\.4:5 end=normal", lines[0])
    assert re.fullmatch(LINE_HEAD + r"WARNING caf\u00e9 \\udcff", lines[2])
    for ours, logging_s in ((lines[0], lines[1]), (lines[2], lines[3])):
        assert ours[len("2026-12-07T05:00:00.000"):] == logging_s[len("2026-12-07T05:00:00.000"):]


@pytest.mark.parametrize("created", [1700000000.0, 1700000000.999, 1800000000.5004])
def test_the_time_text_is_what_the_logging_format_gives(created):
    """The writer's format, written out, is the one logging's Formatter spelled before."""
    spelled = logging.Formatter("%%(asctime)s.%%(msecs)03d simpleproxy[%d] %%(levelname)s "
                                "%%(message)s" % os.getpid(), "%Y-%m-%dT%H:%M:%S")
    line = record(logging.INFO, "x")
    line.created, line.msecs = created, (created - int(created)) * 1000
    read_end, write_end = os.pipe()
    try:
        writer = LogWriter(write_end)
        assert writer.format(line) == spelled.format(line)
        assert writer.formatter.line(created, logging.INFO, "x") == spelled.format(line)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_each_millisecond_and_level_has_its_own_time_and_level_text():
    """The text before a message is kept from line to line: a new millisecond, second or
    level makes it anew."""
    read_end, write_end = os.pipe()
    try:
        line = LogWriter(write_end).formatter.line
        heads = [line(created, level, "x").rsplit(" ", 1)[0].split(" simpleproxy")
                 for created, level in ((1700000000.0014, logging.INFO),
                                        (1700000000.0016, logging.INFO),
                                        (1700000000.0026, logging.INFO),
                                        (1700000000.0027, logging.WARNING),
                                        (1700000001.0027, logging.WARNING),
                                        (1700000001.0028, logging.INFO))]
    finally:
        os.close(read_end)
        os.close(write_end)
    second = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1700000000))
    next_second = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(1700000001))
    assert [(stamp, level.split("] ")[1]) for stamp, level in heads] == [
        (second + ".001", "INFO"), (second + ".001", "INFO"), (second + ".002", "INFO"),
        (second + ".002", "WARNING"), (next_second + ".002", "WARNING"),
        (next_second + ".002", "INFO")]


def test_connection_lines_wait_for_the_batch_to_be_written(pipe_writer):
    writer, written = pipe_writer
    turns_held = []
    writer.on_held = lambda: turns_held.append(1)        # as an EventLoop serving it does
    for number in range(3):
        writer.add_line(logging.INFO, str, "connection %d" % number)
    assert written() == ""
    writer.write_batch()
    assert [line.split(" INFO ")[1] for line in written().splitlines()] == [
        "connection 0", "connection 1", "connection 2"]
    writer.add_line(logging.INFO, str, "connection 3")
    writer.handle(record(logging.WARNING, "a line of its own"))       # goes after the batch
    assert [line.split(" ", 3)[3] for line in written().splitlines()] == [
        "connection 3", "a line of its own"]
    for number in range(LOG_BATCH_LINES):
        writer.add_line(logging.INFO, str, "busy %d" % number)
    assert len(written().splitlines()) == LOG_BATCH_LINES           # a full batch goes at once
    writer.add_line(logging.INFO, str, "at exit")
    writer.flush()
    assert written().endswith(" INFO at exit\n")
    assert turns_held == []


def test_a_line_that_cannot_be_built_costs_only_itself(pipe_writer):
    writer, written = pipe_writer
    writer.on_held = lambda: None
    broken = {"src": "1.2.3.4"}
    writer.add_line(logging.INFO, str, "first")
    writer.add_line(logging.INFO, lambda facts: facts["dst\n"], broken)
    writer.add_line(logging.INFO, str, "last")
    writer.write_batch()
    assert [line.split(" ", 3)[2:] for line in written().splitlines()] == [
        ["INFO", "first"],
        ["ERROR", "a connection's log line could not be built: KeyError('dst\\n')"],
        ["INFO", "last"]]


def test_without_a_loop_a_connection_line_is_written_at_once(pipe_writer):
    writer, written = pipe_writer
    writer.add_line(logging.INFO, str, "alone")
    assert written().endswith(" INFO alone\n")


def test_a_batch_the_descriptor_does_not_take_is_held_and_dropped_by_whole_lines(pipe_writer):
    writer, written = pipe_writer
    held_calls = []
    writer.on_held = lambda: held_calls.append(1)
    while True:                                   # fill the pipe
        try:
            os.write(writer.fd, b"." * 4096)
        except BlockingIOError:
            break
    count = 2 * LOG_HOLD_LIMIT // 100
    for number in range(count):
        writer.add_line(logging.INFO, str, "%05d %s" % (number, "x" * 60))
        if number % 50 == 49:
            writer.write_batch()
    writer.write_batch()
    assert held_calls == [1]
    assert 0 < writer.held_size <= LOG_HOLD_LIMIT and writer.dropped > 0
    dropped = writer.dropped
    output = ""
    deadline = time.monotonic() + DEFAULT_TIMEOUT
    while not writer.drain():
        output += written()
        assert time.monotonic() < deadline
    output += written()
    lines = output.lstrip(".").splitlines()
    numbers = [int(line.split(" INFO ")[1][:5]) for line in lines if " INFO " in line]
    assert numbers == list(range(len(numbers)))                 # whole, in order, the first ones
    assert len(numbers) + dropped == count
    assert lines[-1].endswith("WARNING dropped %d log lines: stderr was not taking them"
                              % dropped)


def test_the_loop_writes_a_batch_of_connection_lines_once_the_batch_delay_is_over(pipe_writer):
    """However quiet the loop is (no other timer, no event), a batch is written
    LOG_BATCH_DELAY after its first line, and not before; the lines left at shutdown are
    written when the loop closes, and after it each line at once."""
    writer, written = pipe_writer
    saved = LOG.handlers[:], LOG.level
    LOG.handlers[:] = [writer]
    LOG.setLevel(logging.INFO)
    loop = EventLoop()
    logged_at = []
    seen = []

    def log_two():
        logged_at.append(loop.now)               # the batch timer counts from the round's time
        log_connection(logging.INFO, str, "first")
        log_connection(logging.INFO, str, "second")
        seen.append(written())                    # not yet: batched
    try:
        loop.timer(log_two).arm(loop.now)
        output = ""
        deadline = time.monotonic() + DEFAULT_TIMEOUT
        while " INFO second\n" not in output:
            assert time.monotonic() < deadline, "the batch was never written"
            wait = loop.next_wait()
            loop.run_once(1.0 if wait is None else min(wait, 1.0))
            output += written()
        waited = time.monotonic() - logged_at[0]
        log_connection(logging.INFO, str, "closed at shutdown")   # as Proxy._shutdown's sessions
        seen.append(written())
        loop.close()                              # writes what is left
        seen.append(written())
        log_connection(logging.INFO, str, "after the loop")
        seen.append(written())
    finally:
        LOG.handlers[:], level = saved
        LOG.setLevel(level)
    assert seen[0] == ""
    assert [line.split(" INFO ")[1] for line in output.splitlines()] == ["first", "second"]
    assert waited >= LOG_BATCH_DELAY
    assert seen[1] == ""
    assert seen[2].endswith(" INFO closed at shutdown\n")
    assert seen[3].endswith(" INFO after the loop\n")


def test_a_connection_line_to_syslog_is_the_frame_a_record_gives():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(DEFAULT_TIMEOUT)
    writer = SyslogWriter(socket.AF_INET, receiver.getsockname())
    try:
        writer.add_line(logging.INFO, str, "1.2.3.4:5 end=normal")
        writer.handle(record(logging.INFO, "1.2.3.4:5 end=normal"))
        ours, logging_s = receiver.recv(4096).decode(), receiver.recv(4096).decode()
    finally:
        writer.close()
        receiver.close()
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z"
    assert re.fullmatch(r"<134>1 %s \S+ simpleproxy %d - - 1\.2\.3\.4:5 end=normal"
                        % (stamp, os.getpid()), ours)
    assert re.sub(stamp, "T", ours) == re.sub(stamp, "T", logging_s)


def test_a_batch_goes_out_in_writes_of_whole_lines_no_longer_than_pipe_buf():
    """Workers share their master's stderr: a write of at most PIPE_BUF bytes to a pipe is
    never interleaved with another's, so no write mixes part of a line. A SOCK_SEQPACKET pair
    keeps each write a message of its own, which shows where the writes were cut."""
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    receiver.settimeout(DEFAULT_TIMEOUT)
    writer = LogWriter(sender.fileno())
    writer.on_held = lambda: None
    try:
        for number in range(LOG_BATCH_LINES - 1):
            writer.add_line(logging.INFO, str, "%03d %s" % (number, "x" * (number % 7 * 30)))
        writer.write_batch()
        writes, received = [], 0
        while received < LOG_BATCH_LINES - 1:
            writes.append(receiver.recv(65536))
            received += writes[-1].count(b"\n")
    finally:
        writer.on_held = None
        writer.close()
        sender.close()
        receiver.close()
    assert len(writes) > 1
    assert all(len(write) <= select.PIPE_BUF and write.endswith(b"\n") for write in writes)
    numbers = [int(line.split(b" INFO ")[1][:3]) for line in b"".join(writes).splitlines()]
    assert numbers == list(range(LOG_BATCH_LINES - 1))


def write_syscalls():
    """How many write(2) calls this process has made (Linux's /proc/self/io)."""
    with open("/proc/self/io") as io_counts:
        return int(re.search(r"^syscw: (\d+)$", io_counts.read(), re.M).group(1))


def test_a_batch_goes_to_a_regular_file_in_one_write(tmp_path):
    """A regular file takes each write whole, so a batch longer than PIPE_BUF is one write."""
    path = tmp_path / "proxy.log"
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    writer = LogWriter(fd)
    writer.on_held = lambda: None
    try:
        for number in range(LOG_BATCH_LINES - 1):
            writer.add_line(logging.INFO, str, "%03d %s" % (number, "x" * (number % 7 * 30)))
        before = write_syscalls()
        writer.write_batch()
        writes = write_syscalls() - before
    finally:
        writer.on_held = None
        writer.close()
        os.close(fd)
    lines = path.read_bytes().splitlines(keepends=True)
    assert sum(map(len, lines)) > select.PIPE_BUF and writes == 1
    numbers = [int(line.split(b" INFO ")[1][:3]) for line in lines]
    assert numbers == list(range(LOG_BATCH_LINES - 1))


CUT_SHORT_BY_FILE_SIZE_LIMIT = """
import logging, os, resource, signal, sys
from simpleproxy.logs import LogWriter
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # a write past the limit says EFBIG instead
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
writer = LogWriter(fd)
writer.on_held = lambda: None
hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, hard))
for number in range(40):
    writer.add_line(logging.INFO, str, "%02d %s" % (number, "x" * 40))
writer.write_batch()
print(os.fstat(fd).st_size, len(writer.held))
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
writer.on_held = None
writer.close()
"""


def test_a_file_write_cut_short_keeps_the_rest_of_its_lines_held_and_whole(tmp_path):
    """A file at its size limit (or a full disk) takes part of a batch's one write: the line
    it cut goes on from where it was cut, and the lines after it are held, then written."""
    path = tmp_path / "proxy.log"
    done = subprocess.run([sys.executable, "-c", CUT_SHORT_BY_FILE_SIZE_LIMIT, str(path)],
                          env=proxy_env(), stdout=subprocess.PIPE, timeout=DEFAULT_TIMEOUT)
    size_at_limit, held = done.stdout.split()
    assert done.returncode == 0 and int(size_at_limit) == 1000 and int(held) > 1
    lines = path.read_bytes().splitlines()
    assert [int(line.split(b" INFO ")[1][:2]) for line in lines] == list(range(40))
    assert all(line.endswith(b" " + b"x" * 40) for line in lines)


def test_any_other_handler_gets_a_connection_line_as_a_record():
    """A test's StringIO (setup_logging with a stream without a descriptor) still gets the
    line, through logging, in the same format."""
    saved = LOG.handlers[:], LOG.level
    stream = io.StringIO()
    try:
        setup_logging("info", stream)
        log_connection(logging.INFO, str, "1.2.3.4:5 end=normal")
    finally:
        LOG.handlers[:], level = saved
        LOG.setLevel(level)
    assert re.fullmatch(LINE_HEAD + r"INFO 1\.2\.3\.4:5 end=normal\n", stream.getvalue())
