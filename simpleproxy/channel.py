"""The channel between the master and each worker: one message per SEQPACKET datagram.

A ``socketpair(AF_UNIX, SOCK_SEQPACKET)`` per worker keeps message boundaries without any
framing, and its EOF tells either side that the other is gone. A message is UTF-8 text, its
fields separated by tabs (config names never contain one), the first field its kind:

    ready                           worker -> master: listeners registered, serving
    stop                            master -> worker: stop accepting now, finish the
                                    connections, exit (bounded by hard-stop-after)
    server-state BACKEND SERVER UP|DOWN REASON
                                    the checking worker -> master: a verdict that changed a
                                    server's state; master -> every other worker, and to each
                                    new worker once it is ready, all the verdicts it knows
                                    (so health carries over restarts and reloads, by name)
    server-failed BACKEND SERVER CAUSE SECONDS
                                    a worker that does not check -> master -> the checking
                                    worker: a client connection to the server failed (passive
                                    health, counted where the checks are)

Planned on the same framing for the runtime API (not built yet, see docs/operations.md):

    server-admin BACKEND SERVER READY|DRAIN|MAINT   master -> every worker (set server)
    counters FIELD=VALUE ...                     worker -> master, for show stat / metrics
"""
import socket

MSG_READY = "ready"
MSG_STOP = "stop"
MSG_SERVER_STATE = "server-state"
MSG_SERVER_FAILED = "server-failed"
STATE_UP = "UP"
STATE_DOWN = "DOWN"
MESSAGE_MAX = 65536


def channel_pair():
    """(master's end, worker's end), both blocking; the worker makes its own non-blocking."""
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def send_message(sock, kind, *fields):
    """Send one message; False when the other side is gone."""
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
