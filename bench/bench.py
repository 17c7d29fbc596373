#!/usr/bin/env python3
"""Benchmark simpleproxy side by side with HAProxy and with no proxy at all, in one run.

    python3 bench/bench.py                  the full run (about 15 minutes)
    python3 bench/bench.py --quick          about two minutes, for developers
    python3 bench/bench.py --python /root/.pyenv/versions/3.8.18/bin/python --python python3.13
    python3 bench/bench.py --tree mine=/path/to/other/checkout     compare two source trees
    python3 bench/bench.py --workers 4      simpleproxy as a master and 4 workers (repeatable;
                                            without it: workers = 1 and workers = 2; 0: none)

Needs HAProxy (``apt-get install -y haproxy``; ``--skip-haproxy`` runs without it) and Linux
(epoll, /proc). Everything runs on 127.0.0.1 and every loop ends by a deadline.

What runs: one backend process (loadgen.py), one process per proxy under test, and the load
generator in this process. Every proxy serves the same six routes: bulk sink, 16-byte reply and
echo, each plain and with the PROXY protocol on (``accept-proxy`` on the bind, the client
sending a v2 header; ``send-proxy-v2`` to the server). "no proxy" sends the same traffic to the
backend directly: the limit of this machine. Rounds interleave the targets (each test runs for
every target, in a rotating order, before the next test starts) and the table shows medians.

Columns:
  bulk 1 / bulk 8     MB/s (10^6 bytes) pushed through 1 or 8 connections
  conn/s              new connections per second: connect, 16-byte reply, server closes
  keep-alive req/s    16-byte request/response ping-pong, 32 connections, one request each in flight
  keep-alive p99 µs   99th percentile of a keep-alive request's latency (poll round to poll round)
  CPU/conn            proxy CPU (user+system, from /proc/PID/stat) per connection, in µs
  CPU/GB              proxy CPU seconds per GB in the 1-stream bulk test
  idle KiB/conn       growth of the proxy's RSS over N idle proxied connections, divided by N,
                      each measured on a freshly started proxy (kernel socket memory is not RSS)

Rows: no proxy, HAProxy, simpleproxy on each ``--python`` (the first also as a master with
workers, and with ``log-level info``: one log line per connection, whose cost is printed under
the tables). The last line, for scripts, is ``ratio throughput=X connrate=Y cpu=Z``: bulk 1
stream, PROXY-path conn/s and PROXY-path CPU per connection of the first simpleproxy row, each
against HAProxy in the same run.

The machine has two cores shared by the load generator, the backend and the proxy: a second
table says how much of a core each used, and how much every other process on the machine took
meanwhile, so a rate capped by the load generator, or disturbed by someone else's work, shows
as such.
"""
import argparse
import ctypes
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from loadgen import bulk, connection_rate, idle_connections, keepalive

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH_DIR)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"
TCP_LISTEN = "0A"                             # the LISTEN state in /proc/net/tcp
ROUTES = ("sink", "reply", "echo")            # the backend port each route ends on, plain mode
PP_BACKEND_PORT = {"sink": "sink", "reply": "reply_pp", "echo": "echo_pp"}
CONN_CONCURRENCY = 32                         # connections in flight in the conn/s test
KEEPALIVE_CONNECTIONS = 32
WHO_USED_CPU = ("proxy", "loadgen", "backend", "other")
DISTURBED = 0.15                # other processes using more of a core than this during a test
FD_RESERVE = 200                # descriptors a proxy needs besides its idle connections

FULL = {"rounds": 5, "seconds": 3.0, "warmup": 0.5, "idle": 2000}
QUICK = {"rounds": 2, "seconds": 0.8, "warmup": 0.2, "idle": 1000}


# -- processes -----------------------------------------------------------------------------------

def cpu_times(pid):
    """(user, system) CPU seconds of a whole process (all its threads), from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def process_tree(pid):
    """``pid`` and its children: the workers of a simpleproxy master count as the proxy."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [pid] + [int(child) for child in f.read().split()]
    except OSError:
        return [pid]


def cpu_seconds(pid):
    return sum(sum(cpu_times(member)) for member in process_tree(pid))


def machine_busy_seconds():
    """CPU seconds spent by all processes over every core (/proc/stat), counted as a process's
    own time is: user, nice, system, and the interrupts that tick accounting charges to it."""
    with open("/proc/stat") as f:
        user, nice, system, _idle, _iowait, irq, softirq = f.readline().split()[1:8]
    return sum(int(ticks) for ticks in (user, nice, system, irq, softirq)) / CLOCK_TICKS


def rss_kib(pid):
    return sum(_own_rss_kib(member) for member in process_tree(pid))


def _own_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for process %d" % pid)


def tcp_connections(pid):
    """How many TCP sockets other than listeners process ``pid`` and its children hold
    (/proc/net/tcp{,6})."""
    inodes = set()
    for fd_dir, fd in [("/proc/%d/fd" % member, fd) for member in process_tree(pid)
                       for fd in os.listdir("/proc/%d/fd" % member)]:
        try:
            target = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue            # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                if fields[3] != TCP_LISTEN and fields[9] in inodes:
                    count += 1
    return count


def free_ports(count):
    """``count`` distinct free ports: each stays bound until all are chosen (a port bound and
    let go at once may be the kernel's next choice too)."""
    socks = []
    try:
        for _ in range(count):
            socks.append(socket.socket())
            socks[-1].bind((HOST, 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def wait_until(predicate, timeout, what, interval=0.02):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError("timed out after %.0fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def accepts_connections(port):
    try:
        socket.create_connection((HOST, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Process(object):
    """A child process whose output goes to a log file, stopped with SIGTERM then SIGKILL.

    It also gets SIGTERM when the bench ends without stopping it: a SIGKILLed bench runs no
    ``finally`` (stop_on_sigterm covers SIGTERM only), and would leave HAProxy and the
    proxies holding their ports."""

    def __init__(self, args, log_path, env=None, cwd=None, stdin=subprocess.DEVNULL):
        self.args = args
        self.log_path = log_path
        self.log = open(log_path, "wb")
        self.popen = subprocess.Popen(args, stdin=stdin, stdout=self.log, stderr=subprocess.STDOUT,
                                      env=env, cwd=cwd, preexec_fn=_ended_with(os.getpid()))
        self.pid = self.popen.pid

    def alive(self):
        return self.popen.poll() is None

    def log_tail(self, lines=20):
        with open(self.log_path, "rb") as f:
            return b"\n".join(f.read().splitlines()[-lines:]).decode("utf-8", "replace")

    def stop(self):
        if self.alive():
            self.popen.terminate()
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self.log.close()


PR_SET_PDEATHSIG = 1             # prctl(2): the signal a process gets when its parent ends


def _ended_with(parent):
    """The child's last step before exec: SIGTERM when ``parent`` ends (Linux's
    PR_SET_PDEATHSIG), and at once if it ended before the child could ask. libc's prctl is
    looked up here, in the parent: the child between fork and exec only calls it."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def ask():
        prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
    return ask


class BackendProcess(object):
    """loadgen.py's backend, serving until its standard input closes."""

    def __init__(self, workdir):
        log_path = os.path.join(workdir, "backend.log")
        self.process = Process([sys.executable, os.path.join(BENCH_DIR, "loadgen.py"), "backend"],
                               log_path, stdin=subprocess.PIPE)
        self.log = open(log_path, "rb")
        line = b""
        deadline = time.monotonic() + 10
        while not line.endswith(b"\n"):
            if time.monotonic() > deadline or not self.process.alive():
                raise RuntimeError("the backend did not start:\n" + self.process.log_tail())
            line += self.log.readline()
            time.sleep(0.01)
        self.ports = json.loads(line.decode())
        self.pid = self.process.pid

    def stop(self):
        self.process.popen.stdin.close()
        self.process.stop()
        self.log.close()


# -- the targets ---------------------------------------------------------------------------------

def backend_routes(backend_ports):
    """Each route's backend port, and whether the route carries PROXY headers."""
    table = {}
    for route in ROUTES:
        table[route] = (backend_ports[route], False)
        table[route + "_pp"] = (backend_ports[PP_BACKEND_PORT[route]], True)
    return table


def route_table(backend_ports):
    """Each route's listening port on a proxy, the backend port it forwards to, and its mode."""
    routes = backend_routes(backend_ports)
    return {route: (port, backend_port, pp)
            for port, (route, (backend_port, pp)) in zip(free_ports(len(routes)), routes.items())}


# Each proxy's configuration: a head, then one frontend/backend pair per route. HAProxy keeps its
# defaults (nbthread 2 as on a two-core host, 16 KiB buffers, no splicing) and simpleproxy its own;
# neither logs each connection (HAProxy has no "log" line; hotpath.py measures what simpleproxy's
# log lines cost).
CONFIG_TEMPLATES = {
    "haproxy": (
        "global\n    nbthread 2\n\ndefaults\n    mode tcp\n    timeout connect 5s\n"
        "    timeout client 30s\n    timeout server 30s\n\n",
        "frontend fe_{name}\n    bind {listen}{accept}\n    default_backend be_{name}\n\n"
        "backend be_{name}\n    server s1 {server}{send}\n\n"),
    "simpleproxy": (
        "[global]\nlog-level = warning\n\n[defaults]\ntimeout connect = 5s\n"
        "timeout client = 30s\ntimeout server = 30s\n\n",
        "[frontend fe_{name}]\nbind = {listen}{accept}\ndefault_backend = be_{name}\n\n"
        "[backend be_{name}]\nserver s1 = {server}{send}\n\n"),
}


DEFAULT_WORKERS = [1, 2]      # the rows beside the single process: master + 1, master + 2
# The row run with --log-level info (a line per connection, to a file: the proxy's output is
# one here), as users run it; the others log at warning as the config says.
LOGGING_ROW = "log-level info"


def proxy_config(kind, routes, workers=None):
    head, route_template = CONFIG_TEMPLATES[kind]
    if workers is not None:
        head = head.replace("[global]\n", "[global]\nworkers = %d\n" % workers)
    return head + "".join(
        route_template.format(name=name, listen="%s:%d" % (HOST, port),
                              accept=" accept-proxy" if pp else "",
                              server="%s:%d" % (HOST, backend_port),
                              send=" send-proxy-v2" if pp else "")
        for name, (port, backend_port, pp) in sorted(routes.items()))


class Instance(object):
    """A running target: its process (None for "no proxy") and the address of each route."""

    def __init__(self, process, addresses):
        self.process = process
        self.addresses = addresses

    def stop(self):
        if self.process:
            self.process.stop()


class Target(object):
    """Something to send the traffic through: a proxy that can be started afresh, or nothing."""

    def __init__(self, label, kind, python=None, tree=None, wrapper=(), options=(), workers=None):
        self.label = label
        self.workers = workers            # simpleproxy's [global] workers, None: not set
        self.kind = kind             # "none", "haproxy" or "simpleproxy"
        self.python = python
        self.tree = tree
        self.wrapper = list(wrapper)      # interpreter options before "-m simpleproxy"
        self.options = list(options)      # command-line options of simpleproxy

    def start(self, backend, workdir):
        if self.kind == "none":
            return Instance(None, {route: (HOST, port) for route, (port, _)
                                   in backend_routes(backend.ports).items()})
        routes = route_table(backend.ports)
        os.makedirs(workdir, exist_ok=True)
        config_path = os.path.join(workdir, "proxy.cfg")
        with open(config_path, "w") as f:
            f.write(proxy_config(self.kind, routes, self.workers))
        if self.kind == "haproxy":
            args, env = [shutil.which("haproxy"), "-db", "-f"], None
        else:
            args = [self.python] + self.wrapper + ["-m", "simpleproxy"] + self.options
            env = dict(os.environ, PYTHONPATH=self.tree)
        process = Process(args + [config_path], os.path.join(workdir, "proxy.log"), env=env,
                          cwd=workdir)
        try:
            for port, _, _ in routes.values():
                wait_until(lambda: not process.alive() or accepts_connections(port), 15,
                           "%s to listen" % self.label)
                if not process.alive():
                    raise RuntimeError("%s exited at start:\n%s" % (self.label, process.log_tail()))
        except Exception:
            process.stop()
            raise
        return Instance(process, {route: (HOST, port) for route, (port, _, _) in routes.items()})


def interpreter_version(python):
    out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                         stdout=subprocess.PIPE, check=True, universal_newlines=True)
    return out.stdout.strip()


def stop_on_sigterm():
    """SIGTERM (``kill``, ``timeout``) unwinds like Ctrl-C, so that every ``finally`` stops the
    proxies, backends and load generators it started rather than leave them running."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def haproxy_version():
    """HAProxy's version, or exit with how to install it (every bench command compares)."""
    haproxy = shutil.which("haproxy")
    if not haproxy:
        sys.exit("haproxy is not installed: apt-get install -y haproxy (bench.py and hotpath.py "
                 "also run without it: --skip-haproxy)")
    out = subprocess.run([haproxy, "-v"], stdout=subprocess.PIPE,
                         universal_newlines=True)
    return out.stdout.split()[2].split("-")[0]          # 2.6.12-1+deb12u4: 2.6.12


# -- the tests -----------------------------------------------------------------------------------

TESTS = ("bulk1", "bulk8", "conn", "keepalive")
MODES = ("plain", "pp")


class Probe(object):
    """CPU counters of the proxy, the backend, this process (the load generator) and the machine.

    The machine's count less the other three is what everything else took from the cores.
    """

    def __init__(self, proxy_pid, backend_pid):
        self.proxy_pid = proxy_pid
        self.backend_pid = backend_pid

    def __call__(self):
        times = os.times()
        return {"proxy": cpu_seconds(self.proxy_pid) if self.proxy_pid else None,
                "backend": cpu_seconds(self.backend_pid),
                "loadgen": times[0] + times[1],
                "machine": machine_busy_seconds()}


def run_load_test(test, instance, mode, backend, settings):
    """One measurement: the rate, errors, each process's share of a core, proxy CPU per unit."""
    suffix = "_pp" if mode == "pp" else ""
    probe = Probe(instance.process.pid if instance.process else None, backend.pid)
    common = dict(warmup=settings["warmup"], seconds=settings["seconds"], probe=probe,
                  send_header=(mode == "pp"))
    if test == "bulk1":
        outcome = bulk(instance.addresses["sink" + suffix], 1, **common)
    elif test == "bulk8":
        outcome = bulk(instance.addresses["sink" + suffix], 8, **common)
    elif test == "conn":
        outcome = connection_rate(instance.addresses["reply" + suffix], CONN_CONCURRENCY, **common)
    else:
        outcome = keepalive(instance.addresses["echo" + suffix], KEEPALIVE_CONNECTIONS, **common)
    figures = {"rate": outcome["rate"], "errors": outcome["errors"], "p99": outcome.get("p99")}
    for who in ("proxy", "backend", "loadgen", "machine"):
        start, end = outcome["probe_start"][who], outcome["probe_end"][who]
        figures["cpu_" + who] = None if start is None else (end - start) / outcome["seconds"]
    ours = sum(figures["cpu_" + who] or 0 for who in ("proxy", "backend", "loadgen"))
    figures["cpu_other"] = max(0.0, figures.pop("cpu_machine") - ours)
    if figures["cpu_proxy"] is not None and outcome["count"]:
        figures["cpu_per_unit"] = figures["cpu_proxy"] * outcome["seconds"] / outcome["count"]
    return figures


def run_idle_test(target, mode, backend, settings, workdir):
    """KiB of proxy RSS per idle proxied connection, on a freshly started instance."""
    instance = target.start(backend, workdir)
    pid = instance.process.pid
    address = instance.addresses["echo_pp" if mode == "pp" else "echo"]
    send_header = mode == "pp"
    try:
        # What the first connections ever cost (lazy imports, pools) is not per-connection.
        idle_connections(address, 20, lambda: None, send_header=send_header)
        wait_until(lambda: tcp_connections(pid) == 0, 10,
                   "%s to close the warm-up connections" % target.label)
        before = rss_kib(pid)
        after = idle_connections(address, settings["idle"], lambda: rss_kib(pid),
                                 send_header=send_header)
        return {"kib_per_conn": (after - before) / settings["idle"]}
    finally:
        instance.stop()


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def run_benchmark(targets, settings, workdir, say):
    """Every test for every target and mode, interleaved, ``rounds`` times; returns the samples."""
    samples = {}                     # (target label, mode, test) -> [figures, ...]
    backend = BackendProcess(workdir)
    instances = {}
    try:
        for number, target in enumerate(targets):
            instances[target.label] = target.start(
                backend, os.path.join(workdir, "target%d" % number))
        for round_index in range(settings["rounds"]):
            shift = round_index % len(targets)
            order = targets[shift:] + targets[:shift]
            for mode in MODES:
                for target in order:
                    if target.kind == "none":
                        continue
                    figures = run_idle_test(target, mode, backend, settings,
                                            os.path.join(workdir, "idle"))
                    samples.setdefault((target.label, mode, "idle"), []).append(figures)
                    say("round %d  idle       %-5s %-28s %6.2f KiB/conn" % (
                        round_index + 1, mode, target.label, figures["kib_per_conn"]))
            for test in TESTS:
                for mode in MODES:
                    for target in order:
                        instance = instances[target.label]
                        figures = run_load_test(test, instance, mode, backend, settings)
                        if instance.process and not instance.process.alive():
                            raise RuntimeError("%s died during %s:\n%s" % (
                                target.label, test, instance.process.log_tail()))
                        samples.setdefault((target.label, mode, test), []).append(figures)
                        say("round %d  %-10s %-5s %-28s %12.1f/s  errors %d  cpu %s" % (
                            round_index + 1, test, mode, target.label, figures["rate"],
                            figures["errors"], cpu_shares(figures)))
    finally:
        for instance in instances.values():
            instance.stop()
        backend.stop()
    return samples


def cpu_shares(figures):
    """proxy/loadgen/backend/other, each in % of one core."""
    shares = (figures.get("cpu_" + who) for who in WHO_USED_CPU)
    return "/".join("-" if share is None else "%d%%" % (100 * share) for share in shares)


# -- the report ----------------------------------------------------------------------------------

def summarise(samples):
    """Medians per (target, mode): the table's columns."""
    summary = {}
    for (label, mode, test), runs in samples.items():
        row = summary.setdefault((label, mode), {})
        if test == "idle":
            row["idle"] = median(run["kib_per_conn"] for run in runs)
            continue
        row[test] = median(run["rate"] for run in runs)
        row[test + "_errors"] = sum(run["errors"] for run in runs)
        for who in WHO_USED_CPU:
            row[test + "_cpu_" + who] = median(run.get("cpu_" + who) for run in runs)
        p99 = median(run.get("p99") for run in runs)
        if test == "keepalive" and p99 is not None:
            row["keepalive_p99_us"] = p99 * 1e6
        per_unit = median(run.get("cpu_per_unit") for run in runs)
        if test == "conn" and per_unit is not None:
            row["cpu_conn_us"] = per_unit * 1e6
        elif test == "bulk1" and per_unit is not None:
            row["cpu_gb_s"] = per_unit * 1e9          # per byte -> per 10^9 bytes
    return summary


COLUMNS = (
    ("bulk 1 MB/s", "bulk1", 1e-6, "%.0f"),
    ("bulk 8 MB/s", "bulk8", 1e-6, "%.0f"),
    ("conn/s", "conn", 1, "%.0f"),
    ("keep-alive req/s", "keepalive", 1, "%.0f"),
    ("keep-alive p99 µs", "keepalive_p99_us", 1, "%.0f"),
    ("CPU µs/conn", "cpu_conn_us", 1, "%.0f"),
    ("CPU s/GB", "cpu_gb_s", 1, "%.2f"),
    ("idle KiB/conn", "idle", 1, "%.1f"),
)


def row_label(target, mode):
    if mode == "plain":
        return target.label
    if target.kind == "none":
        return "no proxy, v2 header sent"
    return target.label + ", accept-proxy + send-proxy-v2"


def format_table(targets, summary, reference):
    """A Markdown table; each cell also gives the ratio to ``reference`` (HAProxy) in its mode."""
    lines = ["| target | " + " | ".join(title for title, _, _, _ in COLUMNS) + " |",
             "|---" * (len(COLUMNS) + 1) + "|"]
    for mode in MODES:
        for target in targets:
            row = summary.get((target.label, mode), {})
            base = summary.get((reference.label, mode), {}) if reference else {}
            cells = []
            for _, key, scale, fmt in COLUMNS:
                value = row.get(key)
                if value is None:
                    cells.append("-")
                    continue
                cell = fmt % (value * scale)
                if base.get(key) and target is not reference:
                    cell += " (%.2f×)" % (value / base[key])
                cells.append(cell)
            lines.append("| %s | %s |" % (row_label(target, mode), " | ".join(cells)))
    return "\n".join(lines)


def format_cpu_table(targets, summary):
    """Who used the cores during each test: proxy/load generator/backend/others, % of a core."""
    tests = ("bulk1", "bulk8", "conn", "keepalive")
    lines = ["| target | " + " | ".join(tests) + " |", "|---" * (len(tests) + 1) + "|"]
    for mode in MODES:
        for target in targets:
            row = summary.get((target.label, mode), {})
            cells = ["/".join("-" if row.get("%s_cpu_%s" % (test, who)) is None
                              else "%d" % (100 * row["%s_cpu_%s" % (test, who)])
                              for who in WHO_USED_CPU) for test in tests]
            lines.append("| %s | %s |" % (row_label(target, mode), " | ".join(cells)))
    return "\n".join(lines)


def machine_description():
    model = "unknown CPU"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return "%s %s, %d CPUs (%s)" % (platform.system(), platform.release(), os.cpu_count(), model)


def warnings_about(targets, summary):
    """Failed connections, and tests during which other processes took a good part of a core."""
    notes = []
    disturbed = []
    for mode in MODES:
        for target in targets:
            row = summary.get((target.label, mode), {})
            for test in TESTS:
                if row.get(test + "_errors"):
                    notes.append("%s, %s: %d failed connections" % (
                        row_label(target, mode), test, row[test + "_errors"]))
                other = row.get(test + "_cpu_other") or 0
                if other > DISTURBED:
                    disturbed.append(other)
    if disturbed:
        notes.append("other processes took %d%% to %d%% of a core during %d of the %d load tests: "
                     "those figures are low and noisy" % (
                         100 * min(disturbed), 100 * max(disturbed), len(disturbed),
                         len(TESTS) * len(MODES) * len(targets)))
    return notes


def paired_median(samples, label, other, mode, test, key, combine):
    """The median over the rounds of ``combine(label's figure, other's figure)`` of the same
    round (a round's drift hits both rows alike); None without rounds of both."""
    pairs = zip(samples.get((label, mode, test), ()), samples.get((other, mode, test), ()))
    return median([combine(mine[key], theirs[key]) for mine, theirs in pairs
                   if mine.get(key) and theirs.get(key)])


def logging_cost(targets, samples, ours):
    """What a log line per connection costs: CPU per connection of the logging row less that
    of ``ours`` (which logs at warning) in the same round of the conn test, on each path;
    None without a logging row."""
    logging_row = next((target for target in targets if target.label == ours.label + ", " +
                        LOGGING_ROW), None)
    if logging_row is None:
        return None
    costs = []
    for mode in MODES:
        cost = paired_median(samples, logging_row.label, ours.label, mode, "conn",
                             "cpu_per_unit", lambda mine, theirs: mine - theirs)
        if cost is not None:
            costs.append("%s %.1f µs" % (mode, cost * 1e6))
    return ("log line cost per connection (CPU/conn at log-level info less at warning, paired "
            "by round): " + (", ".join(costs) or "-"))


def paired_ratios(samples, ours, reference):
    """The first simpleproxy row against HAProxy, each round's figure divided by HAProxy's of
    the same round and the median taken: what drifts from round to round (this machine's
    speed moves by 10-20 %) hits both alike. None without rounds of both."""
    parts = []
    for test, key, name in (("conn", "rate", "conn/s"), ("conn", "cpu_per_unit", "CPU/conn"),
                            ("keepalive", "rate", "keep-alive req/s"),
                            ("keepalive", "p99", "keep-alive p99"),
                            ("bulk1", "rate", "bulk 1"), ("bulk8", "rate", "bulk 8")):
        ratios = []
        for mode in MODES:
            ratio = paired_median(samples, ours.label, reference.label, mode, test, key,
                                  lambda mine, theirs: mine / theirs)
            if ratio is not None:
                ratios.append("%s %.2f×" % (mode, ratio))
        if ratios:
            parts.append("%s %s" % (name, ", ".join(ratios)))
    if not parts:
        return None
    return ("%s against %s, paired by round (median of the rounds' ratios): %s"
            % (ours.label, reference.label, "; ".join(parts)))


def ratio_line(summary, ours, reference):
    """The last line of a run, for scripts: bulk 1 stream, PROXY-path conn/s and PROXY-path CPU
    per connection of the first simpleproxy row, each against HAProxy in this run."""
    def ratio(mode, key):
        value = summary.get((ours.label, mode), {}).get(key)
        base = summary.get((reference.label, mode), {}).get(key)
        return "-" if not value or not base else "%.2f" % (value / base)
    return "ratio throughput=%s connrate=%s cpu=%s" % (
        ratio("plain", "bulk1"), ratio("pp", "conn"), ratio("pp", "cpu_conn_us"))


# -- the command line ----------------------------------------------------------------------------

def build_targets(args):
    targets = [Target("no proxy", "none")]
    if not args.skip_haproxy:
        targets.append(Target("HAProxy " + haproxy_version(), "haproxy"))
    reference_targets = list(targets)
    trees = [("simpleproxy", REPO)] + [tuple(spec.split("=", 1)) for spec in args.tree]
    for name, tree in trees:
        for python in args.python or [sys.executable]:
            label = "%s (py%s)" % (name, interpreter_version(python))
            first = len(targets) == len(reference_targets)
            # The master-and-workers rows and the logging row only for the first tree and
            # interpreter: they answer questions about the process model and the log line,
            # which the same figures for another interpreter would not change.
            for workers in [None] + (worker_rows(args.workers) if first else []):
                targets.append(Target(label + ("" if workers is None else ", workers=%d" % workers),
                                      "simpleproxy", python=python, tree=os.path.abspath(tree),
                                      workers=workers))
            if first and not args.skip_logging:
                targets.append(Target(label + ", " + LOGGING_ROW, "simpleproxy", python=python,
                                      tree=os.path.abspath(tree), options=["--log-level", "info"]))
    return targets


def worker_rows(asked):
    """The ``workers`` values to run beside the single process: those asked for (0 alone:
    none), or DEFAULT_WORKERS."""
    if not asked:
        return DEFAULT_WORKERS
    return [workers for workers in asked if workers > 0]


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="about two minutes: 2 short rounds")
    parser.add_argument("--rounds", type=int, help="rounds per test (medians are reported)")
    parser.add_argument("--seconds", type=float, help="measuring window of each test")
    parser.add_argument("--idle", type=int, help="connections in the idle-memory test")
    parser.add_argument("--python", action="append", default=[],
                        help="run simpleproxy with this interpreter (repeatable)")
    parser.add_argument("--tree", action="append", default=[], metavar="LABEL=DIR",
                        help="also run the simpleproxy package found in DIR (repeatable)")
    parser.add_argument("--workers", type=int, action="append", default=[],
                        help="also run simpleproxy as a master and this many workers "
                             "(repeatable; default: 1 and 2; 0: no such row)")
    parser.add_argument("--skip-haproxy", action="store_true", help="run without HAProxy")
    parser.add_argument("--skip-logging", action="store_true",
                        help="leave out the row with one log line per connection (log-level info)")
    parser.add_argument("--json", metavar="FILE", help="also write every sample to FILE")
    args = parser.parse_args(argv)
    for spec in args.tree:
        if "=" not in spec or not os.path.isdir(os.path.join(spec.split("=", 1)[1], "simpleproxy")):
            parser.error("--tree wants LABEL=DIR with DIR/simpleproxy/ in it: %r" % spec)
    # A proxied idle connection holds two descriptors in the proxy: the open-file limit, raised
    # here to its hard value for this process and its children, bounds the idle test.
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        most_idle = (hard - FD_RESERVE) // 2
        if args.idle and args.idle > most_idle:
            parser.error("the open-file limit (%d) allows at most %d idle connections here"
                         % (hard, most_idle))
    return args


def main(argv=None):
    args = parse_args(argv)
    stop_on_sigterm()
    settings = dict(QUICK if args.quick else FULL)
    for key in ("rounds", "seconds", "idle"):
        if getattr(args, key):
            settings[key] = getattr(args, key)
    targets = build_targets(args)
    started = time.time()

    def say(text):
        sys.stderr.write("[%4.0fs] %s\n" % (time.time() - started, text))
        sys.stderr.flush()

    load_before = os.getloadavg()[0]
    workdir = tempfile.mkdtemp(prefix="simpleproxy-bench-")
    try:
        samples = run_benchmark(targets, settings, workdir, say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(samples)
    reference = next((target for target in targets if target.kind == "haproxy"), None)
    print("simpleproxy benchmark, %s, %s" % (
        time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)), machine_description()))
    print("medians of %d rounds, %.1f s windows after %.1f s warm-up, %d idle connections; "
          "load generator and backend in Python %s; took %.0f s; load average %.2f before" % (
              settings["rounds"], settings["seconds"], settings["warmup"], settings["idle"],
              platform.python_version(), time.time() - started, load_before))
    print()
    print(format_table(targets, summary, reference))
    print()
    print("CPU use during each test, % of one core: proxy/load generator/backend/other processes")
    print()
    print(format_cpu_table(targets, summary))
    for note in warnings_about(targets, summary):
        print("warning: " + note)
    ours = next(target for target in targets if target.kind == "simpleproxy")
    log_cost = logging_cost(targets, samples, ours)
    if log_cost:
        print()
        print(log_cost)
    paired = paired_ratios(samples, ours, reference) if reference is not None else None
    if paired:
        print()
        print(paired)
    if reference is not None:
        print()
        print(ratio_line(summary, ours, reference))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"settings": settings, "samples": [
                {"target": label, "mode": mode, "test": test, "runs": runs}
                for (label, mode, test), runs in sorted(samples.items())]}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
