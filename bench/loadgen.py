"""Both ends of the benchmark's traffic: a backend process and the client workloads.

Everything here runs on loopback, uses only the standard library, and drives ``select.epoll``
directly: on a two-core machine the load generator and the backend share the cores with the
proxy under test, so every microsecond they spend is one the proxy does not get. Hence raw
epoll instead of ``selectors`` (no key objects), closing a socket instead of unregistering it
(the kernel drops a closed descriptor from the epoll set), one large send or read per event,
and no per-connection objects beyond the socket.

The backend (``python3 loadgen.py backend``) prints one JSON line naming its ports, then serves
until its standard input closes. Its ports:

    sink        reads and discards everything (bulk throughput)
    reply       sends 16 bytes and closes at once (new connections per second)
    reply_pp    the same once a PROXY header has arrived
    echo        echoes what arrives (keep-alive ping-pong, idle connections)
    echo_pp     the same after skipping a PROXY header

Every loop is bounded in time (a deadline) and, where it counts things, in count.
"""
import errno
import json
import select
import socket
import struct
import sys
import time

REPLY = b"0123456789abcdef"          # the connection-rate test's 16-byte answer
REQUEST = b"ping-0123456789\n"       # the keep-alive test's 16-byte request (echoed back)
CHUNK = 1 << 20                      # bulk sends and sink reads, 1 MiB
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
BACKLOG = 4096

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT


def proxy_v2_header(src, dst):
    """A PROXY v2 PROXY/TCP4 header for the client side of the accept-proxy tests."""
    return (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", 12) + socket.inet_aton(src[0])
            + socket.inet_aton(dst[0]) + struct.pack("!HH", src[1], dst[1]))


def proxy_header_length(data):
    """Length of the PROXY header (v1 or v2) that starts ``data``, or None while incomplete."""
    if data[:12] == V2_SIGNATURE:
        if len(data) < 16:
            return None
        length = 16 + struct.unpack_from("!H", data, 14)[0]
        return length if len(data) >= length else None
    if data[:6] == b"PROXY ":
        end = data.find(b"\r\n")
        return end + 2 if end >= 0 else None
    if V2_SIGNATURE.startswith(data[:12]) or b"PROXY ".startswith(data[:6]):
        return None
    raise ValueError("the connection does not start with a PROXY header: %r" % bytes(data[:16]))


# -- the backend ---------------------------------------------------------------------------------

class Backend(object):
    """One epoll loop serving the five backend ports."""

    KINDS = (("sink", False), ("reply", False), ("reply_pp", True), ("echo", False),
             ("echo_pp", True))

    def __init__(self, host="127.0.0.1"):
        self.epoll = select.epoll()
        self.listeners = {}          # fd -> (kind, listening socket)
        self.ports = {}
        self.conns = {}              # fd -> [socket, kind, bytes before the header ends or None]
        self.buffer = bytearray(CHUNK)
        for kind, _ in self.KINDS:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, 0))
            sock.listen(BACKLOG)
            sock.setblocking(False)
            self.listeners[sock.fileno()] = (kind, sock)
            self.ports[kind] = sock.getsockname()[1]
            self.epoll.register(sock.fileno(), EPOLLIN)

    def serve(self, stop_fd, max_seconds):
        """Serve until ``stop_fd`` is readable (EOF on the parent's pipe) or time runs out."""
        self.epoll.register(stop_fd, EPOLLIN)
        deadline = time.monotonic() + max_seconds
        listeners, conns = self.listeners, self.conns
        while time.monotonic() < deadline:
            for fd, mask in self.epoll.poll(1.0):
                if fd == stop_fd:
                    return
                if fd in listeners:
                    self._accept(*listeners[fd])
                elif fd in conns:
                    self._on_data(fd, conns[fd])

    def _accept(self, kind, listener):
        for _ in range(256):
            try:
                conn, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE):
                    return          # the clients will see their connects time out and say so
                raise
            if kind == "reply":
                # Server speaks first: nothing to read, so close() sends a FIN, not a reset.
                try:
                    conn.send(REPLY)
                except OSError:
                    pass
                conn.close()
                continue
            conn.setblocking(False)
            fd = conn.fileno()
            self.conns[fd] = [conn, kind, bytearray() if kind.endswith("_pp") else None]
            self.epoll.register(fd, EPOLLIN)

    def _on_data(self, fd, state):
        conn, kind, before_header = state
        try:
            n = conn.recv_into(self.buffer)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if not n:
            del self.conns[fd]
            conn.close()
            return
        if kind == "sink":
            return
        data = self.buffer[:n]
        if before_header is not None:
            before_header += data
            length = proxy_header_length(before_header)
            if length is None:
                return
            data = before_header[length:]
            state[2] = None
        if kind == "reply_pp":
            del self.conns[fd]
            try:
                conn.send(REPLY)
            except OSError:
                pass
            conn.close()
        elif data:
            # Echo. Requests are 16 bytes and one at a time, so a send never blocks; a blocking
            # send keeps the rare partial write correct without any bookkeeping.
            conn.setblocking(True)
            try:
                conn.sendall(data)
            except OSError:
                del self.conns[fd]
                conn.close()
                return
            conn.setblocking(False)


def run_backend(max_seconds):
    backend = Backend()
    sys.stdout.write(json.dumps(backend.ports) + "\n")
    sys.stdout.flush()
    backend.serve(sys.stdin.fileno(), max_seconds)


# -- the client workloads ------------------------------------------------------------------------
#
# Each workload measures over a window that opens after a warm-up and calls ``probe()`` at both
# ends of it; the caller's probe reads the CPU counters of the processes involved, so rates and
# CPU figures cover exactly the same interval.

class Window(object):
    """The measuring window of a workload: warm-up, then a timed interval bracketed by probes.

    The workload adds to ``count`` all along; the result counts what happened inside the
    window, and ``total`` everything (for tools that count per connection over the whole run).
    """

    def __init__(self, warmup, seconds, probe):
        now = time.monotonic()
        self.opens = now + warmup
        self.closes = self.opens + seconds
        self.probe = probe
        self.start = self.end = None
        self.count = 0

    def tick(self, now):
        """Called from the loop; returns False once the window has closed."""
        if self.start is None and now >= self.opens:
            self.start = (now, self.probe(), self.count)
        elif self.start is not None and now >= self.closes:
            self.end = (now, self.probe(), self.count)
            return False
        return True

    def result(self, **extra):
        elapsed = self.end[0] - self.start[0]
        count = self.end[2] - self.start[2]
        outcome = {"count": count, "seconds": elapsed, "rate": count / elapsed,
                   "total": self.count, "probe_start": self.start[1], "probe_end": self.end[1]}
        outcome.update(extra)
        return outcome


def _open_blocking(address, header, timeout=5.0):
    sock = socket.create_connection(address, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if header:
        sock.sendall(header)
    return sock


def _header_for(address, send_header):
    if not send_header:
        return b""
    return proxy_v2_header(("192.0.2.1", 40000), address)


def _close_after_eof(socks, deadline):
    """Half-close each socket and wait for the far end's EOF, so nothing is left in flight."""
    epoll = select.epoll()
    pending = {}
    for sock in socks:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            sock.close()
            continue
        sock.setblocking(False)
        pending[sock.fileno()] = sock
        epoll.register(sock.fileno(), EPOLLIN)
    buffer = bytearray(CHUNK)
    unclean = 0
    while pending and time.monotonic() < deadline:
        for fd, _ in epoll.poll(0.2):
            sock = pending.get(fd)
            if sock is None:
                continue
            try:
                if sock.recv_into(buffer):
                    continue
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                unclean += 1
            del pending[fd]
            sock.close()
    unclean += len(pending)
    for sock in pending.values():
        sock.close()
    epoll.close()
    return unclean


def bulk(address, streams, warmup, seconds, probe, send_header=False):
    """Push bytes over ``streams`` connections as fast as they go; count bytes in the window."""
    header = _header_for(address, send_header)
    socks = {}
    epoll = select.epoll()
    for _ in range(streams):
        sock = _open_blocking(address, header)
        sock.setblocking(False)
        socks[sock.fileno()] = sock
        epoll.register(sock.fileno(), EPOLLOUT)
    payload = memoryview(bytearray(CHUNK))
    window = Window(warmup, seconds, probe)
    errors = 0
    try:
        while window.tick(time.monotonic()):
            for fd, _ in epoll.poll(0.2):
                try:
                    window.count += socks[fd].send(payload)
                except (BlockingIOError, InterruptedError):
                    pass
                except OSError:
                    errors += 1
                    epoll.unregister(fd)
            if errors == streams:
                raise RuntimeError("every bulk stream to %s:%d failed" % address)
    finally:
        epoll.close()
        unclean = _close_after_eof(list(socks.values()), time.monotonic() + 10)
    return window.result(errors=errors + unclean)


def _read_reply(sock, buffer, state):
    """Read what has arrived: True at EOF, None to wait for more, False on an error."""
    for _ in range(4):
        try:
            got = sock.recv_into(buffer)
        except (BlockingIOError, InterruptedError):
            return None
        except OSError:
            return False
        if not got:
            return True
        state[1] += got
    return False                    # far more than the 16-byte reply: not the backend we meant


def connection_rate(address, concurrency, warmup, seconds, probe, send_header=False):
    """Keep ``concurrency`` connections in flight: connect, read the 16-byte reply to EOF, close.

    Once the window closes no new connection starts and those in flight finish (``total`` then
    counts every connection the proxy saw through to the end).
    """
    header = _header_for(address, send_header)
    epoll = select.epoll()
    conns = {}                      # fd -> [socket, bytes received, header still to send]
    family, stream = socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK
    buffer = bytearray(256)
    errors = 0

    def open_one():
        sock = socket.socket(family, stream)
        sock.connect_ex(address)
        fd = sock.fileno()
        conns[fd] = [sock, 0, bool(header)]
        # With a header to send, wait until the connection is writable (established) first.
        epoll.register(fd, EPOLLOUT if header else EPOLLIN)

    for _ in range(concurrency):
        open_one()
    window = Window(warmup, seconds, probe)
    running = True
    drain_deadline = window.closes + 10
    try:
        while conns and time.monotonic() < drain_deadline:
            if running:
                running = window.tick(time.monotonic())
            for fd, _ in epoll.poll(0.2):
                state = conns[fd]
                sock = state[0]
                if state[2]:
                    state[2] = False
                    try:
                        sock.send(header)
                    except OSError:
                        ended = False
                    else:
                        epoll.modify(fd, EPOLLIN)
                        continue
                else:
                    ended = _read_reply(sock, buffer, state)
                    if ended is None:
                        continue
                if ended and state[1] == len(REPLY):
                    window.count += 1
                else:
                    errors += 1
                del conns[fd]
                sock.close()
                if running:
                    open_one()
    finally:
        for state in conns.values():
            state[0].close()
        epoll.close()
    if running:
        raise RuntimeError("the connection test to %s:%d never got past its window" % address)
    return window.result(errors=errors + len(conns))


def keepalive(address, connections, warmup, seconds, probe, send_header=False):
    """Ping-pong 16-byte requests over long-lived ``connections``, one in flight on each.

    Each request's latency, from the poll round that sent it to the one that saw its whole
    reply, is kept while the window is open: the result's ``p99`` (seconds)."""
    header = _header_for(address, send_header)
    epoll = select.epoll()
    socks = {}
    received = {}
    sent_at = {}
    latencies = []
    for _ in range(connections):
        sock = _open_blocking(address, header)
        sock.setblocking(False)
        fd = sock.fileno()
        socks[fd] = sock
        received[fd] = 0
        epoll.register(fd, EPOLLIN)
        sent_at[fd] = time.monotonic()
        sock.send(REQUEST)
    window = Window(warmup, seconds, probe)
    buffer = bytearray(4096)
    size = len(REQUEST)
    try:
        now = time.monotonic()
        while window.tick(now):
            measuring = window.start is not None
            ready = epoll.poll(0.2)
            now = time.monotonic()
            for fd, _ in ready:
                try:
                    got = socks[fd].recv_into(buffer)
                except (BlockingIOError, InterruptedError):
                    continue
                if not got:
                    raise RuntimeError("the keep-alive connection closed under load")
                got += received[fd]
                if got < size:
                    received[fd] = got
                    continue
                received[fd] = got - size
                window.count += 1
                if measuring:
                    latencies.append(now - sent_at[fd])
                sent_at[fd] = now
                socks[fd].send(REQUEST)
    finally:
        epoll.close()
        unclean = _close_after_eof(list(socks.values()), time.monotonic() + 10)
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99)] if latencies else None
    return window.result(errors=unclean, p99=p99)


def idle_connections(address, count, settle, send_header=False, deadline_seconds=120):
    """Open ``count`` connections and prove each one relays (one echoed byte), then call
    ``settle()`` while all of them sit idle (the caller reads the proxy's memory there), close
    them, and return what ``settle()`` returned."""
    header = _header_for(address, send_header)
    deadline = time.monotonic() + deadline_seconds
    socks = []
    try:
        for _ in range(count):
            if time.monotonic() > deadline:
                raise RuntimeError("opening %d connections took over %ds"
                                   % (count, deadline_seconds))
            sock = _open_blocking(address, header)
            socks.append(sock)
            sock.sendall(b"!")
            if sock.recv(1) != b"!":
                raise RuntimeError("an idle-test connection did not echo")
        return settle()
    finally:
        for sock in socks:
            sock.close()


def main(argv):
    if argv[:1] == ["backend"]:
        run_backend(float(argv[1]) if len(argv) > 1 else 3600.0)
        return 0
    sys.stderr.write("usage: loadgen.py backend [MAX_SECONDS]\n")
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
