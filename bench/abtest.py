#!/usr/bin/env python3
"""Paired A/B of simpleproxy source trees on one test: is a change a win beyond the noise?

    python3 bench/abtest.py --tree before=../old-checkout --tree after=. --rounds 12 conn
    python3 bench/abtest.py --tree a=. --tree b=../other --modes pp --seconds 2 keepalive
    python3 bench/abtest.py --tree warning=. --tree info=. --log-level info=info conn
    python3 bench/abtest.py --haproxy --tree now=. --rounds 12 conn    # against HAProxy

bench.py's medians over a few rounds move by 10-15 % on this machine from one run to the
next, more than most single changes on the hot path. Here the trees take turns on a fresh
proxy each, round after round, each in each place of a round in turn, so that whatever
drifts (other load, the host's clock speed) or comes with a place (what ran just before)
hits all alike, and each round's figures of a tree are divided by the first tree's of the
same round: the median of those paired ratios is the change's effect, and the median of the
paired differences of CPU per unit its cost in time (with one tree under two log levels: the
log line's cost). With ``--haproxy``, HAProxy is the reference, as in bench.py.
Same routes, load and backend as bench.py.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile

from bench import (TESTS, BackendProcess, Target, haproxy_version, run_load_test,
                   stop_on_sigterm)

# What a unit's CPU is shown in: bulk tests count bytes, the others connections or requests.
CPU_SCALE = {"bulk1": (1e9, "CPU s/GB"), "bulk8": (1e9, "CPU s/GB"),
             "conn": (1e6, "CPU µs/conn"), "keepalive": (1e6, "CPU µs/request")}


def compare(trees, test, modes, rounds, seconds, python, workdir, log_levels):
    """{(label, mode): [(rate, CPU µs per unit), ...]} over ``rounds`` interleaved rounds;
    ``log_levels``: {label: the --log-level of that tree's proxy}, bench.py's otherwise. A
    tree of None is HAProxy."""
    backend = BackendProcess(workdir)
    settings = {"warmup": 0.3, "seconds": seconds}
    results = {}
    try:
        for number in range(rounds):
            shift = number % len(trees)         # each tree takes each place in turn, as in
            for label, tree in trees[shift:] + trees[:shift]:     # bench.py's rounds
                options = ["--log-level", log_levels[label]] if label in log_levels else []
                target = (Target(label, "haproxy") if tree is None else
                          Target(label, "simpleproxy", python=python, tree=tree, options=options))
                for mode in modes:
                    instance = target.start(backend, os.path.join(workdir, label))
                    try:
                        figures = run_load_test(test, instance, mode, backend, settings)
                    finally:
                        instance.stop()
                    results.setdefault((label, mode), []).append(
                        (figures["rate"], figures["cpu_per_unit"] * CPU_SCALE[test][0]))
            print("round %d of %d done" % (number + 1, rounds), file=sys.stderr)
    finally:
        backend.stop()
    return results


def report(trees, test, modes, results):
    first = trees[0][0]
    cpu_name = CPU_SCALE[test][1]
    for mode in modes:
        for label, _ in trees:
            rates, cpus = zip(*results[label, mode])
            print("%-10s %-5s rate/s median %8.0f   %s median %6.3g   (per round: %s)"
                  % (label, mode, statistics.median(rates), cpu_name, statistics.median(cpus),
                     " ".join("%.3g" % cpu for cpu in cpus)))
        for label, _ in trees[1:]:
            pairs = list(zip(results[label, mode], results[first, mode]))
            rate, cpu = (statistics.median(ours[i] / theirs[i] for ours, theirs in pairs)
                         for i in (0, 1))
            more_cpu = statistics.median(ours[1] - theirs[1] for ours, theirs in pairs)
            print("%s / %s, %s: paired ratio medians: rate %.3f, CPU per unit %.3f "
                  "(paired difference median %+.3g)" % (label, first, mode, rate, cpu, more_cpu))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("test", choices=TESTS)
    parser.add_argument("--tree", action="append", required=True, metavar="LABEL=DIR",
                        help="a source tree (twice or more; the first is the reference)")
    parser.add_argument("--haproxy", action="store_true",
                        help="HAProxy as the reference, before the trees (one tree is enough)")
    parser.add_argument("--modes", default="plain,pp", help="plain, pp or both (default)")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each measurement")
    parser.add_argument("--python", default=sys.executable, help="interpreter for simpleproxy")
    parser.add_argument("--log-level", action="append", default=[], metavar="LABEL=LEVEL",
                        help="run that tree's proxy at this --log-level (info: a line per "
                             "connection)")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    trees = [(label, tree) for label, _, tree in (spec.partition("=") for spec in args.tree)]
    if not all(label and tree for label, tree in trees):
        parser.error("give each --tree as LABEL=DIR")
    trees = [(label, os.path.abspath(tree)) for label, tree in trees]
    if args.haproxy:
        trees.insert(0, ("HAProxy " + haproxy_version(), None))
    if len(trees) < 2:
        parser.error("give at least two --tree LABEL=DIR, or --haproxy and one")
    log_levels = dict(spec.split("=", 1) for spec in args.log_level)
    unknown = set(log_levels) - {label for label, _ in trees}
    if unknown:
        parser.error("--log-level for no --tree: %s" % ", ".join(sorted(unknown)))
    modes = args.modes.split(",")
    workdir = tempfile.mkdtemp(prefix="simpleproxy-abtest-")
    try:
        results = compare(trees, args.test, modes, args.rounds, args.seconds, args.python,
                          workdir, log_levels)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    report(trees, args.test, modes, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
