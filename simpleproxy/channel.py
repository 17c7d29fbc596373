"""The channel between the master and each worker: one message per SEQPACKET datagram.

A ``socketpair(AF_UNIX, SOCK_SEQPACKET)`` per worker keeps message boundaries without any
framing, and its EOF tells either side that the other is gone. A message is UTF-8 text, its
fields separated by tabs (config names never contain one), the first field its kind:

    ready                           worker -> master: listeners registered, serving
    soft-stop                       master -> worker: SIGUSR1 came, ``grace`` runs: go on
                                    accepting, but a health endpoint says 503 from now on
    stop                            master -> worker: stop accepting now, finish the
                                    connections, exit (bounded by hard-stop-after)
    server-state BACKEND SERVER UP|DOWN
                                    the checking worker -> master: a verdict that changed a
                                    server's status; master -> every other worker, and to each
                                    new worker once it is ready, all the verdicts it knows
                                    (so health carries over restarts and reloads, by name)
    server-addr BACKEND SERVER ADDRESS MAINT STATUS
                                    the checking worker, which also follows the host names
                                    (discovery.py) for all -> master: where a server that
                                    follows a name connects now (an IP address, or - for none
                                    yet), whether DNS keeps it in maintenance (1 or 0), and the
                                    name's last lookup outcome (valid, nx, timeout, other); sent
                                    once ready for every followed name, then on each change.
                                    master -> the other workers of the generation, and to each
                                    new one once it is ready, the latest of each: every worker
                                    uses the same addresses, and a reload's workers start from
                                    them (init-addr ``last``, handed over at the fork)
    server-failed BACKEND SERVER CAUSE SECONDS
                                    a worker that does not check -> master -> the checking
                                    worker: a client connection to the server failed (passive
                                    health, counted where the checks are)
    server-admin BACKEND SERVER FIELD=VALUE...
                                    master -> every worker: what an operator set on a server;
                                    FIELD is state (READY, DRAIN or MAINT), weight (0-256) or
                                    maxconn (this worker's share, 0: unlimited), one or more.
                                    The master keeps the latest of each field per server and
                                    sends them to each new worker once it is ready, so admin
                                    state carries over restarts and reloads, by name.
    counters ID                     master -> worker: send a snapshot of your counters
    counters ID JSON                worker -> master: the snapshot (counter_snapshot in
                                    worker.py: its pid and stats.stats_snapshot, by name)

The runtime API plugs in at the master, on the master's loop (masterview.MasterView):

    Master.set_server_admin(backend, server, state=None, weight=None, maxconn=None)
        checks the names and values, remembers them (carried over reloads and restarts) and
        sends ``server-admin`` to every worker; returns None, or a one-line error (unknown
        backend or server, a value out of range) to answer the operator with.
    Master.request_counters(callback)
        asks every serving worker for a snapshot; ``callback(snapshots)`` runs on the
        master's loop with the list of decoded JSON objects once all have answered, or after
        COUNTERS_TIMEOUT with those that did. ``masterview.aggregate_counters(snapshots)``
        sums them into one proxy's view.
"""
import socket

MSG_READY = "ready"
MSG_SOFT_STOP = "soft-stop"
MSG_STOP = "stop"
MSG_SERVER_STATE = "server-state"
MSG_SERVER_ADDR = "server-addr"
MSG_SERVER_FAILED = "server-failed"
MSG_SERVER_ADMIN = "server-admin"
MSG_COUNTERS = "counters"
STATE_UP = "UP"
STATE_DOWN = "DOWN"
ADMIN_FIELDS = ("state", "weight", "maxconn")
# A SEQPACKET message must fit the sender's buffer (net.core.wmem_default, 208 KiB): a
# counters snapshot of some thousand servers does; the other messages are short.
MESSAGE_MAX = 192 * 1024


def channel_pair():
    """(master's end, worker's end), both blocking; the worker makes its own non-blocking."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_message(sock, kind, *fields):
    """Send one message; False when the other side is gone (or not reading)."""
    try:
        sock.send("\t".join((kind,) + fields).encode("utf-8"))
    except OSError:
        return False
    return True


def receive_message(sock):
    """The next message as a list of fields, [] at EOF (the other side is gone), or None
    when nothing is waiting on a non-blocking socket."""
    try:
        data = sock.recv(MESSAGE_MAX)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError:
        return []
    if not data:
        return []
    return data.decode("utf-8", "replace").split("\t")


def admin_fields(settings):
    """``server-admin``'s FIELD=VALUE words for a dict of admin settings (None: not set)."""
    return tuple("%s=%s" % (field, settings[field]) for field in ADMIN_FIELDS
                 if settings.get(field) is not None)


def parse_admin_fields(words):
    """The dict admin_fields() was made from; ValueError for a word it cannot have made."""
    settings = {}
    for word in words:
        field, _, value = word.partition("=")
        if field not in ADMIN_FIELDS:
            raise ValueError("unknown server-admin field %r" % field)
        settings[field] = value if field == "state" else int(value)
    return settings
