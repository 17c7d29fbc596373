#!/usr/bin/env python3
"""Run simpleproxy with the cyclic garbage collector's passes counted and timed.

    python3 bench/gcwatch.py -m simpleproxy CONFIG [OPTIONS]

At exit it writes one line to standard error, which hotpath.py reads from the proxy's log:

    gcwatch: passes=18 seconds=0.003300 collected=305

A closed session is freed by reference counting (it releases its timer, which held it in a
cycle), so the collector has nothing per connection to do: passes and collected objects that
grow with the connections served mean that something holds a cycle again.
"""
import atexit
import gc
import runpy
import sys
import time

REPORT_PREFIX = "gcwatch:"


def main():
    if sys.argv[1:3] != ["-m", "simpleproxy"]:
        sys.exit("usage: gcwatch.py -m simpleproxy CONFIG [OPTIONS]")
    totals = {"passes": 0, "seconds": 0.0, "collected": 0}
    started = []

    def on_pass(phase, info):
        if phase == "start":
            started.append(time.perf_counter())
        else:
            totals["passes"] += 1
            totals["seconds"] += time.perf_counter() - started.pop()
            totals["collected"] += info["collected"]

    def report():
        sys.stderr.write("%s passes=%d seconds=%.6f collected=%d\n" % (
            REPORT_PREFIX, totals["passes"], totals["seconds"], totals["collected"]))

    gc.callbacks.append(on_pass)
    atexit.register(report)
    sys.argv = ["simpleproxy"] + sys.argv[3:]
    runpy.run_module("simpleproxy", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
