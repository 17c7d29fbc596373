#!/usr/bin/env python3
"""Profile simpleproxy's hot path (accept, read, write, close) next to HAProxy's.

    python3 bench/hotpath.py                 about 3 minutes
    python3 bench/hotpath.py --seconds 1     shorter
    python3 bench/hotpath.py --rounds 9      steadier medians in sections 4 and 6
    python3 bench/hotpath.py --tree mine=/path/to/checkout --python python3.13

Prints six sections:

1. Per proxied connection and per keep-alive request, counted by ``perf stat`` on the proxy
   process only: syscalls (raw_syscalls:sys_enter), CPU (task-clock) and context switches, and
   which syscalls they are (syscalls:sys_enter_*). perf counts in the kernel, so unlike
   ``strace -c`` it does not slow the proxy down or change what it does.
2. Where simpleproxy's Python time goes, sampled by py-spy (when installed: ``pip install
   py-spy``): own time per function, which is not distorted by profiling overhead.
3. The same under cProfile: calls and own time per connection, per function.
4. What the per-connection log line costs (``--log-level info`` against ``warning``).
5. What the cyclic garbage collector does per connection (``gcwatch.py``): nothing, when
   closed sessions are freed by reference counting as they should be.
6. Who waits for a core: how much of the wall time the proxy, the load generator and the
   backend ran, and how much they waited on a run queue, ready to run while others held
   the cores (the kernel's schedstat of each thread, nothing attached), with a row for
   simpleproxy with two workers. A process whose running and waiting add up to about
   100 % was never idle: its rate is what the scheduler gave it. Each thread or worker
   counts, so HAProxy's waiting can pass 100 %.

Needs perf (``apt-get install -y linux-perf``) with access to tracepoints (root, or
kernel.perf_event_paranoid <= 1), and HAProxy for the comparison (``--skip-haproxy``).
"""
import argparse
import glob
import os
import pstats
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter

from bench import (BENCH_DIR, BackendProcess, Probe, Target, cpu_times, haproxy_version,
                   interpreter_version, median, process_tree, stop_on_sigterm, REPO)
from gcwatch import REPORT_PREFIX
from loadgen import connection_rate, keepalive

CONCURRENCY = 32


class PerfCounters(object):
    """``perf stat`` attached to a process, counting only between enable() and disable()."""

    EVENTS = "raw_syscalls:sys_enter,task-clock,context-switches,syscalls:sys_enter_*"

    def __init__(self, pid):
        ctl_read, self.ctl = os.pipe()
        self.ack, ack_write = os.pipe()
        self.popen = subprocess.Popen(
            ["perf", "stat", "-x", ",", "--delay", "-1", "-e", self.EVENTS,
             "--control", "fd:%d,%d" % (ctl_read, ack_write), "-p", str(pid)],
            pass_fds=(ctl_read, ack_write), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(ctl_read)
        os.close(ack_write)

    def _command(self, word):
        os.write(self.ctl, word.encode() + b"\n")
        ready, _, _ = select.select([self.ack], [], [], 30)
        if not ready or not os.read(self.ack, 64).startswith(b"ack"):
            raise RuntimeError("perf did not acknowledge %r: %s" % (word, self.finish()))

    def enable(self):
        self._command("enable")

    def disable(self):
        self._command("disable")

    def finish(self):
        """Stop perf; returns {event: count} (task-clock in milliseconds)."""
        self.popen.send_signal(signal.SIGINT)
        _, err = self.popen.communicate(timeout=30)
        os.close(self.ctl)
        os.close(self.ack)
        counts = {}
        for line in err.decode().splitlines():
            fields = line.split(",")
            if len(fields) > 2:
                try:
                    counts[fields[2]] = float(fields[0])
                except ValueError:
                    pass          # "<not counted>", "<not supported>"
        if "raw_syscalls:sys_enter" not in counts:
            raise RuntimeError("perf counted nothing; its output:\n" + err.decode())
        return counts


def run_workload(test, instance, mode, backend, seconds, probe=None):
    suffix = "_pp" if mode == "pp" else ""
    probe = probe or Probe(instance.process.pid, backend.pid)
    common = dict(warmup=0.2, seconds=seconds, probe=probe, send_header=(mode == "pp"))
    if test == "conn":
        return connection_rate(instance.addresses["reply" + suffix], CONCURRENCY, **common)
    return keepalive(instance.addresses["echo" + suffix], CONCURRENCY, **common)


def count_syscalls(target, backend, workdir, seconds):
    """Rows of section 1 for one target: perf counts per connection / request."""
    rows = []
    for test, mode in (("conn", "plain"), ("conn", "pp"), ("keepalive", "plain")):
        instance = target.start(backend, workdir)
        pid = instance.process.pid
        try:
            perf = PerfCounters(pid)
            perf.enable()
            user, system = cpu_times(pid)
            outcome = run_workload(test, instance, mode, backend, seconds)
            user_end, system_end = cpu_times(pid)
            perf.disable()
            counts = perf.finish()
        finally:
            instance.stop()
        counts["user"], counts["system"] = user_end - user, system_end - system
        # perf counted the whole workload, warm-up included: divide by everything it served.
        per_unit = {event: value / outcome["total"] for event, value in counts.items()}
        rows.append((target.label, test, mode, outcome["rate"], per_unit))
    return rows


def print_syscall_tables(rows):
    print("## 1. Per connection (conn) or per request (keepalive), "
          "perf stat on the proxy process\n")
    print("| proxy | test | mode | rate/s | syscalls | CPU µs | of which user µs | system µs "
          "| context switches |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, test, mode, rate, per_unit in rows:
        print("| %s | %s | %s | %.0f | %.1f | %.1f | %.1f | %.1f | %.2f |" % (
            label, test, mode, rate, per_unit["raw_syscalls:sys_enter"],
            per_unit.get("task-clock", 0) * 1000, per_unit["user"] * 1e6,
            per_unit["system"] * 1e6, per_unit.get("context-switches", 0)))
    print("\nWhich syscalls, per connection / request (0.05 and over):\n")
    for label, test, mode, rate, per_unit in rows:
        calls = sorted(((value, event.split("sys_enter_", 1)[1])
                        for event, value in per_unit.items()
                        if event.startswith("syscalls:") and value >= 0.05), reverse=True)
        print("- %s, %s %s: %s" % (label, test, mode,
                                   ", ".join("%s %.2f" % (name, value) for value, name in calls)))
    print()


def py_spy_profile(target, backend, workdir, seconds, test, mode):
    """Own-time share per function from py-spy samples (idle time in select excluded)."""
    instance = target.start(backend, workdir)
    raw = os.path.join(workdir, "py-spy.txt")
    try:
        spy = subprocess.Popen(["py-spy", "record", "--nonblocking", "--rate", "1000", "--format",
                                "raw", "--output", raw, "--duration", "%d" % (seconds + 1),
                                "--pid", str(instance.process.pid)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        run_workload(test, instance, mode, backend, seconds)
        _, err = spy.communicate(timeout=seconds + 60)
        if spy.returncode:
            raise RuntimeError("py-spy failed: %s" % err.decode())
    finally:
        instance.stop()
    own = Counter()
    with open(raw) as f:
        for line in f:
            stack, _, count = line.rstrip().rpartition(" ")
            own[stack.rsplit(";", 1)[-1]] += int(count)
    return own


def print_py_spy(own, title):
    """Own time per function, with the line of each that took most of it."""
    total = sum(own.values()) or 1
    functions = Counter()
    hottest = {}
    for frame, count in own.items():
        function, _, line = frame.rpartition(":")        # "name (file.py:LINE)"
        function = function + ")" if line.endswith(")") else frame
        functions[function] += count
        if count > hottest.get(function, (0, ""))[0]:
            hottest[function] = (count, line.rstrip(")"))
    print("### %s: own time, %% of %d busy samples (hottest line)\n" % (title, total))
    for function, count in functions.most_common(15):
        print("    %5.1f%%  %s  (line %s)" % (100.0 * count / total, function,
                                              hottest[function][1]))
    print()


# ``python -c PROFILED_MODULE -m simpleproxy CONFIG``: ``python -m cProfile -m simpleproxy``
# is Python 3.7+; this runs on the 3.6 that appliances ship too. cProfile.run writes its
# file when the module exits, also by sys.exit.
PROFILED_MODULE = ("import cProfile, runpy, sys; sys.argv[:3] = ['simpleproxy']; "
                   "cProfile.run('runpy.run_module(\"simpleproxy\", run_name=\"__main__\", "
                   "alter_sys=True)', %r)")


def cprofile(target, backend, workdir, seconds, test, mode):
    """pstats of simpleproxy run under cProfile for one workload, and the units it served."""
    stats_path = os.path.join(workdir, "cprofile.out")
    profiled = Target(target.label, "simpleproxy", python=target.python, tree=target.tree,
                      wrapper=["-c", PROFILED_MODULE % stats_path])
    instance = profiled.start(backend, workdir)
    try:
        outcome = run_workload(test, instance, mode, backend, seconds)
    finally:
        instance.stop()              # SIGTERM: the loop returns and cProfile writes its file
    return pstats.Stats(stats_path), outcome["total"]


def print_cprofile(stats, units, title):
    # Calls per unit, counting the functions called at least every third unit (so that
    # start-up, imports and config parsing stay out): in all, and to functions written in
    # Python (those that have a line number).
    per_unit = [(line, calls / units) for (_, line, _), (_, calls, _, _, _)
                in stats.stats.items() if calls >= units * 0.3]
    print("### %s: %d units (connections or requests), %.1f calls per unit, %.1f of them to "
          "Python functions; top own time\n" % (title, units, sum(c for _, c in per_unit),
                                                 sum(c for line, c in per_unit if line)))
    print("    calls/unit  own µs/unit  cum µs/unit  function")
    entries = sorted(stats.stats.items(), key=lambda item: item[1][2], reverse=True)
    for (filename, line, name), (_, calls, own, cumulative, _) in entries[:20]:
        where = "%s:%d(%s)" % (os.path.basename(filename), line, name) if line else name
        print("    %10.2f  %11.2f  %11.2f  %s" % (calls / units, own * 1e6 / units,
                                                 cumulative * 1e6 / units, where))
    print()


def logging_cost(target, backend, workdir, seconds, rounds):
    """Connection rate and CPU per connection with and without per-connection log lines."""
    results = {}
    variants = (("log-level warning", target),
                ("log-level info", Target(target.label, "simpleproxy", python=target.python,
                                          tree=target.tree, options=["--log-level", "info"])))
    for _ in range(rounds):
        for name, variant in variants:
            instance = variant.start(backend, workdir)
            try:
                outcome = run_workload("conn", instance, "plain", backend, seconds)
            finally:
                instance.stop()
            cpu = outcome["probe_end"]["proxy"] - outcome["probe_start"]["proxy"]
            results.setdefault(name, []).append((outcome["rate"], cpu * 1e6 / outcome["count"]))
    print("## 4. What the per-connection log line costs (conn test, plain; medians of %d)\n"
          % rounds)
    for name, runs in results.items():
        rates = sorted(rate for rate, _ in runs)
        cpus = sorted(cpu for _, cpu in runs)
        print("    %-18s %8.0f conn/s  %6.1f µs CPU/conn" % (name, rates[len(rates) // 2],
                                                           cpus[len(cpus) // 2]))
    print()


def garbage_collection(target, backend, workdir, seconds):
    """Section 5: the collector's passes, time and collected objects per connection, over the
    whole run of the proxy (start-up included) under gcwatch.py, in the conn tests."""
    print("## 5. The cyclic garbage collector per connection (conn test, whole run)\n")
    watched = Target(target.label, "simpleproxy", python=target.python, tree=target.tree,
                     wrapper=[os.path.join(BENCH_DIR, "gcwatch.py")])
    for mode in ("plain", "pp"):
        instance = watched.start(backend, workdir)
        try:
            outcome = run_workload("conn", instance, mode, backend, seconds)
        finally:
            instance.stop()              # SIGTERM: the loop returns and gcwatch reports
        with open(instance.process.log_path) as log:
            report = [line for line in log if line.startswith(REPORT_PREFIX)]
        if not report:
            print("    %-5s  no report from gcwatch.py (the proxy did not exit cleanly)" % mode)
            continue
        totals = dict(field.split("=") for field in report[-1].split()[1:])
        units = outcome["total"]
        print("    %-5s  %d connections: %d passes, %.2f µs collecting and %.2f objects "
              "collected per connection" % (mode, units, int(totals["passes"]),
                                            float(totals["seconds"]) * 1e6 / units,
                                            int(totals["collected"]) / units))
    print()


def scheduler_times(pids):
    """(running, waiting on a run queue) seconds of the processes ``pids``, all threads
    (/proc/PID/task/TID/schedstat); None where the kernel keeps no such counts."""
    running = waiting = 0
    paths = [path for pid in pids for path in glob.glob("/proc/%d/task/*/schedstat" % pid)]
    if not paths:
        return None
    for path in paths:
        try:
            with open(path) as f:
                ran, waited = f.read().split()[:2]
        except OSError:
            continue                     # a thread that ended meanwhile
        running += int(ran)
        waiting += int(waited)
    return running / 1e9, waiting / 1e9


def core_waits(targets, backend, workdir, seconds, rounds):
    """Section 6: the share of the wall time each process ran and waited for a core, in the
    plain conn and keep-alive tests, medians of ``rounds`` rounds in alternating order."""
    print("## 6. Who waits for a core (schedstat, plain, medians of %d rounds)\n" % rounds)
    if scheduler_times([os.getpid()]) is None:
        print("    this kernel keeps no schedstat (/proc/PID/task/TID/schedstat): skipped\n")
        return
    instances = {}
    samples = {}                 # (label, test) -> [(rate, {who: (running, waiting)}), ...]
    try:
        for number, target in enumerate(targets):
            instances[target.label] = target.start(backend, os.path.join(workdir, str(number)))
        for round_index in range(rounds):
            shift = round_index % len(targets)
            for test in ("conn", "keepalive"):
                for target in targets[shift:] + targets[:shift]:
                    instance = instances[target.label]
                    # The load generator is this process, less its children (the others).
                    pids = {"proxy": process_tree(instance.process.pid),
                            "loadgen": [os.getpid()], "backend": [backend.pid]}
                    outcome = run_workload(test, instance, "plain", backend, seconds,
                                           SchedulerProbe(pids))
                    if not instance.process.alive():
                        raise RuntimeError("%s died during %s:\n%s" % (
                            target.label, test, instance.process.log_tail()))
                    start, end, wall = (outcome["probe_start"], outcome["probe_end"],
                                        outcome["seconds"])
                    shares = dict((who, ((end[who][0] - start[who][0]) / wall,
                                         (end[who][1] - start[who][1]) / wall)) for who in pids)
                    samples.setdefault((target.label, test), []).append(
                        (outcome["rate"], shares))
    finally:
        for instance in instances.values():
            instance.stop()
    print("| proxy | test | rate/s | proxy running | proxy waiting | proxy CPU µs/unit "
          "| load generator running, waiting | backend running, waiting |")
    print("|---|---|---|---|---|---|---|---|")
    for test in ("conn", "keepalive"):
        for target in targets:
            rows = samples[(target.label, test)]
            print("| %s | %s | %.0f | %s | %s | %.1f | %s, %s | %s, %s |" % (
                target.label, test, median([rate for rate, _ in rows]),
                _median_share(rows, "proxy", 0), _median_share(rows, "proxy", 1),
                median([shares["proxy"][0] / rate * 1e6 for rate, shares in rows]),
                _median_share(rows, "loadgen", 0), _median_share(rows, "loadgen", 1),
                _median_share(rows, "backend", 0), _median_share(rows, "backend", 1)))
    print()


def _median_share(rows, who, which):
    """The median over ``rows`` of ``who``'s running (``which`` 0) or waiting (1) share."""
    return "%.0f %%" % (100 * median([shares[who][which] for _, shares in rows]))


class SchedulerProbe(object):
    """The load generator's probe for section 6: scheduler_times of each named process
    group (a master and its workers are one)."""

    def __init__(self, groups):
        self.groups = groups             # {who: [pid, ...]}

    def __call__(self):
        return dict((who, scheduler_times(pids)) for who, pids in self.groups.items())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each workload")
    parser.add_argument("--python", default=sys.executable, help="interpreter for simpleproxy")
    parser.add_argument("--tree", default="simpleproxy=" + REPO, metavar="LABEL=DIR",
                        help="the simpleproxy source tree to profile (default: this checkout)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds whose medians sections 4 and 6 print")
    parser.add_argument("--skip-haproxy", action="store_true")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    if not shutil.which("perf"):
        parser.error("perf is not installed: apt-get install -y linux-perf")
    name, tree = args.tree.split("=", 1)
    simpleproxy = Target("%s (py%s)" % (name, interpreter_version(args.python)), "simpleproxy",
                         python=args.python, tree=os.path.abspath(tree))
    targets = [simpleproxy]
    if not args.skip_haproxy:
        targets.insert(0, Target("HAProxy " + haproxy_version(), "haproxy"))
    workdir = tempfile.mkdtemp(prefix="simpleproxy-hotpath-")
    backend = BackendProcess(workdir)
    try:
        print("# simpleproxy hot path, %s, load average %.2f before\n" % (
            time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), os.getloadavg()[0]))
        rows = []
        for target in targets:
            rows += count_syscalls(target, backend, os.path.join(workdir, "perf"), args.seconds)
        print_syscall_tables(rows)
        workloads = (("conn", "plain"), ("conn", "pp"), ("keepalive", "plain"))
        if shutil.which("py-spy"):
            print("## 2. py-spy (sampling, 1 kHz, %s)\n" % simpleproxy.label)
            for test, mode in workloads:
                own = py_spy_profile(simpleproxy, backend, os.path.join(workdir, "spy"),
                                     args.seconds, test, mode)
                print_py_spy(own, "%s %s" % (test, mode))
        else:
            print("## 2. py-spy: not installed (pip install py-spy), skipped\n")
        print("## 3. cProfile (%s; profiling inflates small calls)\n" % simpleproxy.label)
        for test, mode in workloads:
            stats, units = cprofile(simpleproxy, backend, os.path.join(workdir, "cprofile"),
                                    args.seconds, test, mode)
            print_cprofile(stats, units, "%s %s" % (test, mode))
        logging_cost(simpleproxy, backend, os.path.join(workdir, "log"), args.seconds,
                     args.rounds)
        garbage_collection(simpleproxy, backend, os.path.join(workdir, "gc"), args.seconds)
        two_workers = Target(simpleproxy.label + ", workers=2", "simpleproxy",
                             python=args.python, tree=simpleproxy.tree, workers=2)
        core_waits(targets + [two_workers], backend, os.path.join(workdir, "sched"),
                   args.seconds, args.rounds)
    finally:
        backend.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
