"""How two worker processes should share a listening address: measured, not guessed.

Four ways for N workers to accept on one address (simpleproxy/master.py says which one it
uses and why):

    shared      one listening socket, inherited by every worker, in each worker's selector
                as usual: every connection wakes every idle worker, all but one get EAGAIN
    nested      the same socket, but each worker watches it through a small epoll of its own
                registered with EPOLLEXCLUSIVE, inside its selector, the way simpleproxy's
                workers did until 2026-12; the kernel does not count waking a nested epoll
                as exclusive, so every worker still wakes
    exclusive   the same socket registered with EPOLLEXCLUSIVE in the epoll the worker's
                loop waits on, as simpleproxy's workers do now (loop.py's epoll poller)
    reuseport   one SO_REUSEPORT socket per worker: the kernel hashes each connection to one
                socket (a closed socket's queue is lost, which is why it is not used)

Each worker is a toy with simpleproxy's accept path (a ``selectors`` loop, or an epoll one
for "exclusive", accept in a batch until EAGAIN) that answers 16 bytes and closes, so the figure is the accept path's
cost, not the proxy's. The load generator is bench/loadgen.py's connection test. Reported:
connections per second, the workers' CPU time (utime + stime from /proc) per connection,
and the share of wake-ups that found nothing to accept.

    python3 bench/accept_modes.py [--seconds 5] [--rounds 3] [--concurrency 1 16]
"""
import argparse
import os
import select
import selectors
import signal
import socket
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench import stop_on_sigterm  # noqa: E402
from loadgen import REPLY, connection_rate  # noqa: E402

MODES = ("shared", "nested", "exclusive", "reuseport")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def listening_socket(port, reuseport):
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def worker(sock, mode, report_fd):
    """Serve until SIGTERM, then write 'wakeups empty' to report_fd."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    counts = [0, 0]                 # wake-ups, wake-ups that found nothing

    def on_listener():
        counts[0] += 1
        for position in range(64):
            try:
                conn, _ = sock.accept()
            except (BlockingIOError, InterruptedError):
                counts[1] += position == 0
                return
            try:
                conn.send(REPLY)
            except OSError:
                pass
            conn.close()

    if mode == "exclusive":
        poller = select.epoll()
        poller.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)

        def ready(timeout):
            return [on_listener] if poller.poll(timeout) else []
    else:
        selector = selectors.DefaultSelector()
        if mode == "nested":
            inner = select.epoll()
            inner.register(sock.fileno(), select.EPOLLIN | select.EPOLLEXCLUSIVE)

            def on_inner():
                if inner.poll(0):
                    on_listener()
                else:
                    counts[0] += 1
                    counts[1] += 1
            selector.register(inner.fileno(), selectors.EVENT_READ, on_inner)
        else:
            selector.register(sock, selectors.EVENT_READ, on_listener)

        def ready(timeout):
            return [key.data for key, _ in selector.select(timeout)]
    while not stopping:
        try:
            callbacks = ready(0.5)
        except InterruptedError:
            continue
        for callback in callbacks:
            callback()
    os.write(report_fd, ("%d %d\n" % tuple(counts)).encode())
    os._exit(0)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run(mode, workers, concurrency, seconds, port):
    shared = None if mode == "reuseport" else listening_socket(port, False)
    pids, reads = [], []
    for _ in range(workers):
        sock = shared or listening_socket(port, True)
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read_fd)
            worker(sock, mode, write_fd)
        os.close(write_fd)
        if shared is None:
            sock.close()
        pids.append(pid)
        reads.append(read_fd)
    if shared is not None:
        shared.close()
    try:
        probe = lambda: sum(cpu_seconds(pid) for pid in pids)   # noqa: E731
        result = connection_rate(("127.0.0.1", port), concurrency, 1.0, seconds, probe)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        wakeups = empty = 0
        for pid, read_fd in zip(pids, reads):
            os.waitpid(pid, 0)
            text = os.read(read_fd, 100).split()
            os.close(read_fd)
            if text:
                wakeups += int(text[0])
                empty += int(text[1])
    cpu = result["probe_end"] - result["probe_start"]
    return {"rate": result["rate"], "us_per_conn": cpu / result["count"] * 1e6,
            "empty_wakeups": empty / max(1, wakeups), "errors": result["errors"]}


def median(values):
    values = sorted(values)
    return values[len(values) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--port", type=int, default=17999)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    print("| mode | concurrency | conn/s | worker CPU us/conn | empty wake-ups | errors |")
    print("|---|---|---|---|---|---|")
    for concurrency in args.concurrency:
        results = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:          # interleaved, so a noisy neighbour hits every mode
                results[mode].append(run(mode, args.workers, concurrency, args.seconds,
                                         args.port))
        for mode in MODES:
            rows = results[mode]
            print("| %s | %d | %.0f | %.1f | %.0f %% | %d |" % (
                mode, concurrency, median([r["rate"] for r in rows]),
                median([r["us_per_conn"] for r in rows]),
                100 * median([r["empty_wakeups"] for r in rows]),
                sum(r["errors"] for r in rows)))
            sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
