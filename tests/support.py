"""Test helpers: real loopback servers and clients, and the proxy run as a real process.

Everything waits on conditions with deadlines; nothing sleeps and hopes.
"""
import contextlib
import ctypes
import errno
import functools
import glob
import hashlib
import io
import json
import os
import queue
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest

from simpleproxy.config import parse_config
from simpleproxy.logs import setup_logging
from simpleproxy.proxy import Proxy
from simpleproxy.resolve import resolve_addresses

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLE = os.path.join(REPO, "simpleproxy.py")
DATA = os.path.join(REPO, "tests", "data")
DEFAULT_TIMEOUT = 10.0
# What an unknown server option's message lists, in its order.
SERVER_OPTIONS = ("addr, backup, check, check-expect, check-send, check-send-proxy, disabled, "
                  "downinter, fall, fastinter, init-addr, inter, maxconn, no-check-send-proxy, "
                  "port, proxy-v2-options, resolve, resolve-prefer, rise, send-proxy, "
                  "send-proxy-v2, set-proxy-v2-tlv-fmt(ID), weight")
# Seconds a timed event may come later than it ideally would, on a busy shared machine. Every
# upper bound on a duration is the ideal plus this; lower bounds have no slack (a timer that
# fires early is a bug).
TIMING_MARGIN = 1.5
# The interpreter that runs the proxy in end-to-end tests: pytest's own, or the one this
# variable names (a path, or a command such as python3.6 found on PATH or in pyenv).
PROXY_PYTHON_VARIABLE = "SIMPLEPROXY_PYTHON"
CLONE_NEWNET = 0x40000000          # setns(2): join a network namespace


# -- bytes on the wire, built by hand (independently of simpleproxy.proxyproto) -----------------

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V2_LOCAL = V2_SIGNATURE + b"\x20\x00\x00\x00"
PAYLOAD = b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)) * 4   # every byte value, NUL and CRLF too
REPLY = b"HTTP/1.0 200 OK\r\n\r\nhello \x00\xff"


def v1_line(src, dst, sport, dport):
    """The v1 line for a TCP connection."""
    return b"PROXY %s %s %s %d %d\r\n" % (b"TCP6" if ":" in src else b"TCP4", src.encode(),
                                           dst.encode(), sport, dport)


def v2_header(src, dst, sport, dport, transport=0x1):
    """The v2 PROXY header for an IP connection (transport 1 TCP, 2 UDP), with no TLVs."""
    family, family_nibble = (socket.AF_INET6, 0x20) if ":" in src else (socket.AF_INET, 0x10)
    block = (socket.inet_pton(family, src) + socket.inet_pton(family, dst)
             + struct.pack("!HH", sport, dport))
    return V2_SIGNATURE + struct.pack("!BBH", 0x21, family_nibble | transport, len(block)) + block


CLAIMED_V1 = v1_line("203.0.113.7", "198.51.100.1", 5555, 80)
CLAIMED_V2 = v2_header("203.0.113.7", "198.51.100.1", 5555, 80)


def load_vectors():
    """The PROXY header vectors of tests/data/vectors.json (sources in tests/data/README.md)."""
    with open(os.path.join(DATA, "vectors.json"), encoding="utf-8") as f:
        return json.load(f)


# -- proxy configurations ------------------------------------------------------------------------

TEST_DEFAULTS = "timeout connect = 2s\ntimeout client = 10s\ntimeout server = 10s\n"


def config(frontends=(), backends=(), defaults="", global_="", sections=""):
    """An INI config: [global] and [defaults] (short timeouts, then ``defaults``), a section per
    (name, bind lines, backend, more lines) frontend and (name, server lines, more lines)
    backend, then ``sections`` as written."""
    parts = ["[global]\n" + global_, "[defaults]\n" + TEST_DEFAULTS + defaults]
    for name, binds, backend, extra in frontends:
        parts.append("[frontend %s]\nbind = %s\ndefault_backend = %s\n%s"
                     % (name, "\n       ".join(binds), backend, extra))
    for name, servers, extra in backends:
        parts.append("[backend %s]\n%s\n%s" % (name, "\n".join(servers), extra))
    parts.append(sections)
    return "\n".join(parts)


def parsed_server(options, extra=""):
    """The parsed (Server, Backend) of a config whose one backend has the server ``options``
    (``ADDRESS OPTIONS``) and the lines ``extra``, addresses resolved as at start-up."""
    parsed = resolve_addresses(parse_config(one_frontend(["127.0.0.1:8000"], options,
                                                         backend=extra)))
    return parsed.backends["be"].servers[0], parsed.backends["be"]


def one_frontend(binds, servers, frontend="", backend="", global_=""):
    """config() with frontend ``fe`` (these bind lines) in front of backend ``be``; servers: one
    server's ``ADDRESS OPTIONS`` text, or a list of (name, that text) pairs; frontend and
    backend: more lines for either section."""
    if isinstance(servers, str):
        servers = [("s1", servers)]
    return config([("fe", binds, "be", frontend)],
                  [("be", ["server %s = %s" % pair for pair in servers], backend)],
                  global_=global_)


def wait_until(predicate, timeout=DEFAULT_TIMEOUT, interval=0.005, what="condition"):
    """Poll ``predicate`` until it returns a true value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def _test_ports():
    """Ports outside the kernel's ephemeral range, shuffled, each handed out once per run.

    A port the kernel picked for bind(0) is in the ephemeral range, and once it is free again
    any connect() on the machine may take it before the test's server binds it. connect()
    never picks a port outside that range on its own.
    """
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    ports = [port for port in range(10000, 65536) if not low <= port <= high]
    random.shuffle(ports)
    return iter(ports)


_TEST_PORTS = _test_ports()


def free_port(host="127.0.0.1", make_socket=None):
    """A port that nothing uses now and that only an explicit bind will take (see _test_ports).

    The probe binds ``host``, or the (socket, address) that ``make_socket()`` returns."""
    for port in _TEST_PORTS:
        if make_socket is None:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock, address = socket.socket(family, socket.SOCK_STREAM), host
        else:
            sock, address = make_socket()
        with sock:
            try:
                sock.bind((address, port))
            except OSError:
                continue
        return port
    raise AssertionError("every test port has been handed out")


def hostport(host, port):
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class Connection(object):
    """What one connection to a RecordingServer carried."""

    def __init__(self, peer):
        self.peer = peer
        self.received = bytearray()     # everything, except in "hash" mode
        self.count = 0
        self.digest = None
        self.done = threading.Event()
        self.error = None


class RecordingServer(object):
    """A loopback TCP (or Unix) server, one thread per connection.

    mode "record": read to EOF, then send ``reply`` and close (exercises half-close).
    mode "echo": send back everything as it arrives, close after EOF.
    mode "hash": read to EOF counting and hashing, then send the digest, close.
    mode "silent": accept, read to EOF, never answer.
    """

    def __init__(self, host="127.0.0.1", mode="record", reply=b"", path=None, port=0):
        self.mode = mode
        self.reply = reply
        if path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(path)
            self.address = path
        else:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            self.sock = socket.socket(family, socket.SOCK_STREAM)
            self.sock.bind((host, port))
            self.address = (host, self.sock.getsockname()[1])
        self.sock.listen(128)
        self.connections = queue.Queue()
        self.accepted = []
        self._closing = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def port(self):
        return self.address[1]

    @property
    def config_address(self):
        if isinstance(self.address, str):
            return "unix@" + self.address
        return hostport(*self.address)

    def _accept_loop(self):
        while True:
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            record = Connection(peer)
            self.accepted.append(record)
            threading.Thread(target=self._serve, args=(conn, record), daemon=True).start()

    def _serve(self, conn, record):
        conn.settimeout(60)
        try:
            self.handle(conn, record)
        except OSError as exc:
            record.error = exc
        finally:
            conn.close()
            record.done.set()
            self.connections.put(record)

    def handle(self, conn, record):
        """Serve one connection the way ``mode`` says; subclasses misbehave here."""
        digest = hashlib.sha256()
        while True:
            data = conn.recv(262144)
            if not data:
                break
            record.count += len(data)
            if self.mode == "hash":
                digest.update(data)
                continue
            record.received += data
            if self.mode == "echo":
                conn.sendall(data)
        if self.mode == "record" and self.reply:
            conn.sendall(self.reply)
        elif self.mode == "hash":
            record.digest = digest.hexdigest()
            conn.sendall(record.digest.encode())

    def next_connection(self, timeout=DEFAULT_TIMEOUT):
        """The next connection that has finished, in order of finishing."""
        try:
            return self.connections.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("the backend saw no finished connection in %.1fs" % timeout)

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()


class Firehose(RecordingServer):
    """A server that sends ``total`` bytes as fast as the network takes them, then closes."""

    def __init__(self, total):
        self.total = total
        RecordingServer.__init__(self)

    def handle(self, conn, record):
        chunk = b"\xab" * (1 << 20)
        for _ in range(self.total // len(chunk)):
            conn.sendall(chunk)


class JammedListener(object):
    """A loopback port whose accept queue is full, so the kernel drops SYNs to it: a connect
    there hangs until the connecting side's own timeout."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.address = self.sock.getsockname()
        self._fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(self.address)
            self._fillers.append(filler)

    @property
    def config_address(self):
        return hostport(*self.address)

    def close(self):
        for sock in self._fillers + [self.sock]:
            sock.close()


def connect(address, timeout=DEFAULT_TIMEOUT, source=None):
    """A connected socket to a Unix path or (host, port), from ``source`` if given (any of
    127.0.0.0/8 is local, so a test can be several clients)."""
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    else:
        sock = socket.socket(socket.AF_INET6 if ":" in address[0] else socket.AF_INET,
                             socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source:
            sock.bind((source, 0))
        sock.connect(address)
    except BaseException:
        sock.close()
        raise
    return sock


def dial(port, source=None, timeout=DEFAULT_TIMEOUT):
    """connect() to 127.0.0.1:port."""
    return connect(("127.0.0.1", port), timeout, source)


def read_to_eof(sock, limit=1 << 30):
    chunks = []
    total = 0
    while total < limit:
        data = sock.recv(262144)
        if not data:
            break
        chunks.append(data)
        total += len(data)
    return b"".join(chunks)


def exchange(address, payload, timeout=DEFAULT_TIMEOUT):
    """Send ``payload``, half-close, and return everything received until EOF."""
    sock = connect(address, timeout)
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)
    finally:
        sock.close()


RESET = "reset"
PEER_CLOSED_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN)


def finish(sock, payload=b""):
    """Send ``payload`` and EOF on ``sock``, read to EOF and close it: what came back, or RESET.

    The proxy resets a client it closes with bytes unread, and the reset can come at any
    point: during the send (EPIPE, ECONNRESET), before the half-close (ENOTCONN) or the read.
    """
    try:
        sock.sendall(payload)
        sock.shutdown(socket.SHUT_WR)
        return read_to_eof(sock)
    except OSError as exc:
        if exc.errno not in PEER_CLOSED_ERRNOS:
            raise
        return RESET
    finally:
        sock.close()


def exchange_or_reset(address, payload):
    """exchange(), for a connection the proxy may close with a reset: the reply, or RESET."""
    return finish(connect(address), payload)


def bundle_copy(directory):
    """A copy of the one-file build in an empty folder, where no package can shadow it."""
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, "simpleproxy.py")
    shutil.copy(BUNDLE, target)
    return target


@functools.lru_cache(maxsize=None)
def proxy_python():
    """The interpreter that runs the proxy: $SIMPLEPROXY_PYTHON, else pytest's own.

    The variable holds a path or a command name (python3.6). A name is looked for among
    pyenv's installed versions first (its shim on PATH exists even where the version is not
    active, and then fails), then on PATH. Raises LookupError when nothing found runs.
    """
    wanted = os.environ.get(PROXY_PYTHON_VARIABLE)
    if not wanted:
        return sys.executable
    candidates = [wanted] if os.sep in wanted else (
        sorted(glob.glob(os.path.join(_pyenv_root(), "versions", "*", "bin", wanted)))
        + [shutil.which(wanted)])
    for candidate in filter(None, candidates):
        try:
            subprocess.run([candidate, "-c", "import sys"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL, timeout=DEFAULT_TIMEOUT, check=True)
        except (OSError, subprocess.SubprocessError):
            continue
        return candidate
    raise LookupError("%s=%s: no interpreter of that name runs here (looked in pyenv's %s "
                      "and on PATH)" % (PROXY_PYTHON_VARIABLE, wanted, _pyenv_root()))


def _pyenv_root():
    """Where pyenv keeps its versions (``pyenv root``), wherever pyenv is installed."""
    if os.environ.get("PYENV_ROOT"):
        return os.environ["PYENV_ROOT"]
    try:
        return subprocess.run(["pyenv", "root"], stdout=subprocess.PIPE, universal_newlines=True,
                              timeout=DEFAULT_TIMEOUT).stdout.strip()
    except OSError:
        return os.path.expanduser("~/.pyenv")


def proxy_command(form, workdir):
    """How to start simpleproxy: ``python -m simpleproxy`` ("module"), or a copy of the one
    file in an empty folder ("bundle"), on proxy_python()."""
    if form == "bundle":
        return [proxy_python(), bundle_copy(os.path.join(workdir, "bundle"))]
    return [proxy_python(), "-m", "simpleproxy"]


def proxy_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


def run_cli(args, form="module", workdir=None, timeout=60):
    """Run the command line to completion; returns CompletedProcess with text output."""
    workdir = workdir or REPO
    return subprocess.run(proxy_command(form, workdir) + list(args), cwd=workdir,
                          env=proxy_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)


def enter_netns(name):
    """Move the calling thread into network namespace ``name`` (``ip netns add``'s)."""
    fd = os.open("/var/run/netns/" + name, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns into %s failed" % name)
    finally:
        os.close(fd)


def in_netns(name, function):
    """``function()`` run on a thread inside network namespace ``name``: the sockets and
    processes it creates live there, whichever thread uses them afterwards."""
    outcome = {}

    def run():
        try:
            enter_netns(name)
            outcome["value"] = function()
        except BaseException as exc:        # handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


@contextlib.contextmanager
def proxy_in_thread(config):
    """A Proxy serving the parsed ``config`` on a thread of this process, logging into a
    StringIO; yields (proxy, thread, log). For what cannot be provoked from outside (a bug
    injected, config objects no file can give). A loop that died is a thread no longer alive;
    at the end the proxy is stopped and its thread must end."""
    log = io.StringIO()
    setup_logging("info", log)
    proxy = Proxy(config)
    proxy.bind_all()
    thread = threading.Thread(target=proxy.run, daemon=True)
    thread.start()
    try:
        yield proxy, thread, log
    finally:
        proxy.stop()
        thread.join(DEFAULT_TIMEOUT)
    assert not thread.is_alive(), "the proxy's loop did not stop"


class ProxyProcess(object):
    """simpleproxy running as a real process on a config written for the test."""

    def __init__(self, config_text, workdir, form="module", args=(), env=None,
                 pass_fds=(), command_prefix=(), command=None):
        """``command_prefix``: a command the proxy runs under, such as ``ip netns exec NAME``;
        ``command``: what runs instead of simpleproxy's own (a test's driver of it)."""
        os.makedirs(str(workdir), exist_ok=True)
        self.config_path = os.path.join(str(workdir), "proxy.ini")
        with open(self.config_path, "w") as f:
            f.write(config_text)
        self.lines = []
        self._cond = threading.Condition()
        # Its own session: kill_group() reaches the workers of a master too.
        self.proc = subprocess.Popen(
            list(command_prefix) + (command or proxy_command(form, str(workdir))) + list(args)
            + [self.config_path],
            cwd=str(workdir), env=env or proxy_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
            start_new_session=True, pass_fds=pass_fds)
        self._reader = threading.Thread(target=self._read_output, daemon=True)
        self._reader.start()
        self.wait_for("simpleproxy ready")

    def _read_output(self):
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, text, timeout=DEFAULT_TIMEOUT, start=0):
        """The first output line (from index ``start``) containing ``text``."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if text in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError("no output line with %r; output so far:\n%s"
                                         % (text, "\n".join(self.lines)))
                self._cond.wait(min(remaining, 0.2))

    def log_lines(self, text):
        with self._cond:
            return [line for line in self.lines if text in line]

    def dropped_lines(self):
        """How many log lines the proxy dropped because its stderr (our reader) fell behind,
        from its ``dropped N log lines`` lines."""
        return sum(int(re.search(r"dropped (\d+) log lines", line).group(1))
                   for line in self.log_lines("log lines: stderr was not taking them"))

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def open_fds(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def kill_group(self):
        """SIGKILL whatever is left of the process group (a fixture's last word)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except OSError:
            pass
        self.proc.wait()

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """SIGTERM, and the exit status (which should be 0)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the proxy did not stop within %.1fs of SIGTERM" % timeout)
        self._reader.join(timeout)
        crashes = [line for line in self.lines if "internal error" in line]
        assert not crashes, "the proxy logged internal errors:\n%s" % "\n".join(self.lines)
        return code


class Launcher(object):
    """Starts proxies (ProxyProcess) in one launch form, each in a folder of its own under
    ``folder``, and stops them all in stop_all(): the `launch` fixture, or a ``with`` block
    for a fixture of wider scope. Every proxy must exit 0 on SIGTERM and log no internal
    error; a proxy a test stopped itself is only checked again."""

    def __init__(self, form, folder):
        self.form = form
        self.folder = str(folder)
        self.started = []

    def __call__(self, config_text, args=(), command_prefix=()):
        """Start a proxy on ``config_text`` (under ``command_prefix``, if any) and wait
        until it is ready. The form "selectors" is "module" on the loop's portable poller."""
        workdir = os.path.join(self.folder, "proxy%d" % len(self.started))
        env = None
        form = self.form
        if form == "selectors":
            form, env = "module", dict(proxy_env(), SIMPLEPROXY_POLLER="selectors")
        proxy = ProxyProcess(config_text, workdir, form=form, args=args, env=env,
                             command_prefix=command_prefix)
        self.started.append(proxy)
        return proxy

    def cli(self, args, timeout=60):
        """run_cli() in this launch form, from this folder."""
        return run_cli(args, self.form, self.folder, timeout)

    def stop_all(self):
        failures = []
        while self.started:
            proxy = self.started.pop()
            try:
                status = proxy.stop()
            except AssertionError as exc:
                failures.append(str(exc))
                continue
            if status != 0:
                failures.append("simpleproxy exited with status %s; its last lines:\n%s"
                                % (status, "\n".join(proxy.lines[-20:])))
        assert not failures, "\n".join(failures)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.stop_all()


# Run a test (or, as a module's pytestmark, every test there) in both launch forms.
BOTH_FORMS = pytest.mark.parametrize("launch", ["module", "bundle"], indirect=True)
# Run a test on both of the loop's pollers: epoll where there is one, and selectors.
BOTH_POLLERS = pytest.mark.parametrize("launch", ["module", "selectors"], indirect=True)
EVERY_FORM = pytest.mark.parametrize("launch", ["module", "bundle", "selectors"], indirect=True)


def skip_or_fail(reason):
    """Skip a test whose tool, peer or privilege is missing here; fail it instead where CI
    sets SIMPLEPROXY_REQUIRE_PEERS=1, because CI must never pass by skipping."""
    if os.environ.get("SIMPLEPROXY_REQUIRE_PEERS") == "1":
        pytest.fail("%s, and SIMPLEPROXY_REQUIRE_PEERS=1 makes that a failure" % reason,
                    pytrace=False)
    pytest.skip(reason)
