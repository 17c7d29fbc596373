"""Real peers for the interop tests: HAProxy, nginx and curl, found, configured, run, stopped.

Each instance runs in the foreground as a child of the test, on free loopback ports, with its
configuration, pid file and logs in the test's own folder. It counts as started once every
port it was given is listening (see port_listening), and it is stopped by the fixture that
started it.

A peer that is not installed skips the test, unless SIMPLEPROXY_REQUIRE_PEERS=1 (set by
.ci/run), where it fails it (support.skip_or_fail): CI must never pass by skipping.
"""
import csv
import errno
import io
import os
import re
import shutil
import signal
import socket
import subprocess

from support import (DEFAULT_TIMEOUT, PAYLOAD, REPLY, Launcher, config, connect, finish,
                     read_to_eof, skip_or_fail, wait_until)
from support import free_port as free_port_probed_with

SYSTEM_BIN_DIRS = ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin", "/usr/local/bin")
NGINX_STREAM_MODULES = ("/usr/lib/nginx/modules/ngx_stream_module.so",
                        "/usr/lib64/nginx/modules/ngx_stream_module.so")

# Where test clients come from, and the address they reach, per family: 127.0.0.2 stands
# apart from the proxies' own 127.0.0.1 (all of 127.0.0.0/8 is on loopback).
CLIENTS = {"ipv4": ("127.0.0.2", "127.0.0.1"), "ipv6": ("::1", "::1")}


def find_program(name):
    """The peer's executable (sbin included, where Debian puts daemons), or skip/fail."""
    path = shutil.which(name) or shutil.which(name, path=os.pathsep.join(SYSTEM_BIN_DIRS))
    if path is None:
        skip_or_fail("%s is not installed (Debian package %s)" % (name, name))
    return path


def program_output(argv):
    """stdout and stderr of a short command, as text (version banners go to either)."""
    result = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, timeout=DEFAULT_TIMEOUT)
    return result.stdout


def _wildcard_socket():
    """A TCP socket, and the wildcard address that covers every local address of both
    families (dual-stack ``::``, or ``0.0.0.0`` without IPv6)."""
    if not socket.has_ipv6:
        return socket.socket(socket.AF_INET, socket.SOCK_STREAM), "0.0.0.0"
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock, "::"


def free_port():
    """A port free on every local address of both families (a port free on 127.0.0.1 may
    still be taken on ::1 by someone else's connection)."""
    return free_port_probed_with(make_socket=_wildcard_socket)


def port_listening(port):
    """True once some socket listens on ``port`` at any local address, IPv4 or IPv6.

    A probe binds the wildcard with SO_REUSEADDR: Linux lets that through everything on
    the port (time-wait leftovers included) except a listening socket. No connection is
    made, so readiness leaves no trace in the peer's logs.
    """
    probe, wildcard = _wildcard_socket()
    with probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((wildcard, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return True
            raise
    return False


def complete_lines(path):
    """The newline-terminated lines of a log file so far (a line being written is left out)."""
    try:
        with open(str(path), errors="replace") as f:
            text = f.read()
    except FileNotFoundError:
        return []
    return [line for line in text.split("\n")[:-1] if line]


def wait_for_lines(path, count, timeout=DEFAULT_TIMEOUT, matching=""):
    """Wait until the log file holds at least ``count`` lines containing ``matching``."""
    def enough():
        lines = [line for line in complete_lines(path) if matching in line]
        return lines if len(lines) >= count else None
    return wait_until(enough, timeout=timeout,
                      what="%d lines with %r in %s" % (count, matching, path))


def round_trip(source_host, address):
    """PAYLOAD from ``source_host`` to ``address``, half-closed, and REPLY back through
    whatever chain is there; returns the client's port, the one its headers must carry."""
    sock = connect(address, source=source_host)
    client_port = sock.getsockname()[1]
    assert finish(sock, PAYLOAD) == REPLY
    return client_port


class PeerProcess(object):
    """A peer daemon in the foreground, its output in ``<name>.out`` in its folder."""

    name = "peer"

    def __init__(self, argv, workdir, ports):
        self.workdir = str(workdir)
        self.output_path = os.path.join(self.workdir, self.name + ".out")
        with open(self.output_path, "w") as output:
            # A session of its own, so that a stop that goes wrong can take its workers too.
            self.proc = subprocess.Popen(argv, cwd=self.workdir, stdin=subprocess.DEVNULL,
                                         stdout=output, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        try:
            wait_until(lambda: self._listening(ports),
                       what="%s to listen on %s" % (self.name, sorted(ports)))
        except BaseException:
            self.stop()
            raise

    def _listening(self, ports):
        if self.proc.poll() is not None:
            raise AssertionError("%s exited with status %d:\n%s"
                                 % (self.name, self.proc.returncode, self.output()))
        return all(port_listening(port) for port in ports)

    def output(self):
        return "\n".join(complete_lines(self.output_path))

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """SIGTERM, then SIGKILL to the whole session if it will not go."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class HAProxy(PeerProcess):
    """haproxy -db on a config made of ``sections`` after a common global/defaults part.

    Its log goes to stdout in the raw format, so ``log_lines()`` are exactly what each
    frontend's log-format printed. A stats socket answers ``show stat``.
    """

    name = "haproxy"
    PREAMBLE = """\
global
    log stdout format raw local0 info
    stats socket {stats} mode 600 level admin
    maxconn 4096

defaults
    mode tcp
    log global
    timeout connect 2s
    timeout client 10s
    timeout server 10s

"""

    def __init__(self, workdir, sections, ports):
        workdir = str(workdir)
        self.stats_path = os.path.join(workdir, "haproxy.stats")
        self.config_path = os.path.join(workdir, "haproxy.cfg")
        with open(self.config_path, "w") as f:
            f.write(self.PREAMBLE.format(stats=self.stats_path) + sections)
        super().__init__([find_program("haproxy"), "-db", "-f", self.config_path,
                          "-p", os.path.join(workdir, "haproxy.pid")], workdir, ports)

    def _listening(self, ports):
        """Ready once the stats socket answers too: HAProxy may bind it after the ports."""
        return super()._listening(ports) and self._stats_socket_accepts()

    def _stats_socket_accepts(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.stats_path)
        except OSError:
            return False
        finally:
            sock.close()
        return True

    def log_lines(self):
        return complete_lines(self.output_path)

    def stats_command(self, command):
        """One command on the stats socket, and HAProxy's answer."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(DEFAULT_TIMEOUT)
            sock.connect(self.stats_path)
            sock.sendall(command.encode() + b"\n")
            return read_to_eof(sock).decode()
        finally:
            sock.close()

    def show_stat(self):
        """``show stat``: {(proxy, server): {field: value}}."""
        rows = csv.DictReader(io.StringIO(self.stats_command("show stat").lstrip("# ")))
        return {(row["pxname"], row["svname"]): row for row in rows}


class Nginx(PeerProcess):
    """nginx with ``daemon off``: ``http`` and ``stream`` are the bodies of those blocks.

    Both blocks get a log format ``pp``, one line per request or session:
    ``$proxy_protocol_addr $proxy_protocol_port $remote_addr $remote_port $server_port``;
    ``{dir}`` in a body stands for the instance's folder (for access_log paths).
    """

    name = "nginx"
    LOG_FORMAT = ("log_format pp '$proxy_protocol_addr $proxy_protocol_port "
                  "$remote_addr $remote_port $server_port';")

    def __init__(self, workdir, ports, http="", stream=""):
        workdir = str(workdir)
        program = find_program("nginx")
        parts = ["daemon off;", "worker_processes 1;", "pid %s/nginx.pid;" % workdir,
                 "error_log %s/error.log info;" % workdir]
        if os.geteuid() == 0:
            parts.append("user root;")   # workers keep access to the test's private folder
        if stream:
            parts.insert(0, _nginx_stream_module_directive(program))
        parts.append("events { worker_connections 1024; }")
        if http:
            temp = "".join("%s_temp_path %s/%s;\n" % (kind, workdir, kind)
                           for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
            parts.append("http {\n%s%s\n%s}" % (temp, self.LOG_FORMAT, http))
        if stream:
            parts.append("stream {\n%s\n%s}" % (self.LOG_FORMAT, stream))
        self.config_path = os.path.join(workdir, "nginx.conf")
        with open(self.config_path, "w") as f:
            f.write("\n".join(parts).replace("{dir}", workdir) + "\n")
        super().__init__([program, "-p", workdir, "-c", self.config_path,
                          "-e", os.path.join(workdir, "error.log")], workdir, ports)

    def access_log(self, name="access.log"):
        return os.path.join(self.workdir, name)


def _nginx_stream_module_directive(program):
    """``load_module`` for a dynamic stream module (Debian's libnginx-mod-stream), or nothing
    when this nginx has the stream module built in."""
    configure = program_output([program, "-V"])
    if re.search(r"--with-stream(?=\s|$)", configure):
        return ""
    modules = [path for path in NGINX_STREAM_MODULES if os.path.exists(path)]
    if not modules:
        skip_or_fail("nginx has no stream module (Debian package libnginx-mod-stream)")
    return "load_module %s;" % modules[0]


class Lab(object):
    """The instances a test started, each in a folder of its own; ``stop_all`` ends them.
    simpleproxy instances are started by a support.Launcher, which checks how they exit."""

    def __init__(self, folder, form="module"):
        self.folder = folder
        self.instances = []
        self.launch = Launcher(form, folder / "simpleproxy")

    def _folder(self, name):
        path = self.folder / ("%s%d" % (name, len(self.instances)))
        path.mkdir()
        return path

    def haproxy(self, sections, ports):
        return self._started(HAProxy(self._folder("haproxy"), sections, ports))

    def nginx(self, ports, http="", stream=""):
        return self._started(Nginx(self._folder("nginx"), ports, http=http, stream=stream))

    def simpleproxy(self, sections):
        """simpleproxy on config(sections=sections): the test's sections, short timeouts."""
        return self.launch(config(sections=sections))

    def _started(self, instance):
        self.instances.append(instance)
        return instance

    def stop_all(self):
        """Stop everything: the peers newest first, then simpleproxy (which must exit 0)."""
        try:
            while self.instances:
                self.instances.pop().stop()
        finally:
            self.launch.stop_all()
