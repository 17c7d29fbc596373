"""The relay: bytes both ways between a client and its server, once both are connected.

A session has two directions. One word names them everywhere: ``upstream`` is True for the
client-to-server direction (its source is the client socket, its destination the server
socket, its pending bytes ``c2s``) and False for server-to-client (``s2c``). A socket is
named by the direction it is the source of: ``_want(True, mask)`` is the client's interest.

Why it looks the way it does (this is the hot path: no Python call is added per read):

* Reads go into one proxy-wide buffer (``recv_into``) and are sent on at once, so the common
  case allocates nothing. Only what the destination would not take is copied into that
  direction's pending bytes; while a direction has pending bytes its source is not read
  (backpressure), so a connection holds at most one read's worth per direction, and nothing
  while idle.
* The read size is the bulk lever: a read returns only what has arrived, so asking for
  ``tune.bufsize.large`` (4 MiB) costs a quiet connection nothing, and a streaming one makes
  a quarter of the syscalls and Python rounds of 256 KiB reads (bulk throughput 1.4-2x). Only
  a held remainder costs memory, so the proxy counts what all sessions hold
  (``Proxy.held_changed``, called when a direction starts or stops holding, never per read)
  and reads ``tune.bufsize`` at a time while one more large read would not fit under
  ``tune.buffers.limit``.
* EOF from one side becomes ``shutdown(SHUT_WR)`` on the other once its pending bytes are
  out (half-close); the other direction keeps flowing. When the poller says the source's FIN
  has come (``EVENT_HANGUP``) and a read returns less than it asked for, that read emptied the
  source: its bytes go out with ``MSG_MORE`` and the EOF is passed on at once, so that they
  leave as one segment and no read is spent learning what is known (HAProxy does the same; a
  server's last reply and its close cost one segment, one read and one loop round less).
  A reset on one side is passed on as a reset (SO_LINGER 0, in Session.close).
* Reads and writes only stamp ``last_activity`` with the loop's clock; the session's one
  timer works out from it, when it comes due, whether the connection really idled out.
* Selector interest is changed only when a direction blocks or unblocks, not per read.

``Relay`` is the part of ``Session`` (session.py) that does this; it is a base class rather
than an object of its own so that a read costs no extra call or attribute hop.
"""
import errno
import socket

from .endings import END_CLIENT_ABORT, END_NORMAL, END_SERVER_ABORT
from .loop import EVENT_FAILED, EVENT_HANGUP, EVENT_READ, EVENT_WRITE

MSG_MORE = getattr(socket, "MSG_MORE", 0)     # Linux: hold the bytes for the FIN that follows
_ORDERLY_END = EVENT_HANGUP | EVENT_FAILED    # masked: EVENT_HANGUP alone, a FIN and no reset

# Errors that mean "this peer is gone", as opposed to a bug of ours.
PEER_GONE_ERRNOS = frozenset((errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED, errno.ETIMEDOUT,
                              errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED))


class Relay(object):
    """Pump, flush, hold and half-close for a Session; see the module docstring."""

    __slots__ = ("loop", "proxy", "state", "csock", "ssock", "c2s", "s2c", "c2s_eof", "s2c_eof",
                 "c2s_done", "s2c_done", "cmask", "smask", "bytes_in", "bytes_out",
                 "last_activity")

    def _want(self, upstream, mask):
        """Set the loop's interest in the socket the ``upstream`` direction is read from
        (True: the client, False: the server), touching the poller only on a change."""
        if upstream:
            old = self.cmask
            if old == mask:
                return
            self.cmask = mask
            sock, callback = self.csock, self.on_client_event
        else:
            old = self.smask
            if old == mask:
                return
            self.smask = mask
            sock, callback = self.ssock, self.on_server_event
        if not old:
            self.loop.register(sock, mask, callback)
        elif not mask:
            self.loop.unregister(sock)
        else:
            self.loop.modify(sock, mask, callback)

    def _relay_event(self, upstream, mask):
        """An event on the source socket of the ``upstream`` direction (True: the client)."""
        if mask & EVENT_WRITE:
            # The socket that has room is the destination of the other direction.
            self._flush(not upstream)
            if self.state.closed:
                return
        if mask & EVENT_READ:
            self._pump(upstream, mask & _ORDERLY_END == EVENT_HANGUP)

    def _pump(self, upstream, fin_arrived):
        """Read once from the direction's source and pass it straight to its destination;
        ``fin_arrived``: the source's FIN is in (see the module docstring)."""
        proxy = self.proxy
        size = proxy.read_size
        src, dst = (self.csock, self.ssock) if upstream else (self.ssock, self.csock)
        try:
            n = src.recv_into(proxy.view, size)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._peer_gone(exc, END_CLIENT_ABORT if upstream else END_SERVER_ABORT)
            return
        self.last_activity = self.loop.now
        if not n:
            self._source_ended(upstream)
            return
        if upstream:
            self.bytes_in += n
        else:
            self.bytes_out += n
        data = proxy.view[:n]
        ended = fin_arrived and n < size
        try:
            sent = dst.send(data, MSG_MORE if ended else 0)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._peer_gone(exc, END_SERVER_ABORT if upstream else END_CLIENT_ABORT)
            return
        if sent < n:
            self._hold(upstream, bytes(data[sent:]))   # the proxy's buffer is reused next read
        if ended:
            self._source_ended(upstream)

    def _hold(self, upstream, pending):
        """The destination is full: keep ``pending`` for it, watch it for room, and do not read
        the source until the bytes are out (the client may still be registered from its header
        when the first flush is short)."""
        if upstream:
            self.c2s = pending
            self._want(True, self.cmask & ~EVENT_READ)
            self._want(False, self.smask | EVENT_WRITE)
        else:
            self.s2c = pending
            self._want(False, self.smask & ~EVENT_READ)
            self._want(True, self.cmask | EVENT_WRITE)
        self.proxy.held_changed(self)

    def _flush(self, upstream):
        """Send a direction's pending bytes; once empty, read its source again."""
        pending = self.c2s if upstream else self.s2c
        dst = self.ssock if upstream else self.csock
        try:
            sent = dst.send(pending)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError as exc:
            self._peer_gone(exc, END_SERVER_ABORT if upstream else END_CLIENT_ABORT)
            return
        if sent:
            self.last_activity = self.loop.now
            pending = memoryview(pending)[sent:]      # a view: a slow reader costs no copies
        if pending:
            self._hold(upstream, pending)
            return
        # Drained: stop watching the destination for room, resume the source.
        if upstream:
            self.c2s = b""
            self._want(False, self.smask & ~EVENT_WRITE)
            eof, done = self.c2s_eof, self.c2s_done
            if not eof:
                self._want(True, self.cmask | EVENT_READ)
        else:
            self.s2c = b""
            self._want(True, self.cmask & ~EVENT_WRITE)
            eof, done = self.s2c_eof, self.s2c_done
            if not eof:
                self._want(False, self.smask | EVENT_READ)
        if self.proxy.held:
            self.proxy.held_changed(self)
        if eof and not done:
            self._pass_eof(upstream)

    def _source_ended(self, upstream):
        """EOF read from a direction's source: pass the EOF on once its bytes are out, stop
        reading it. The second EOF usually closes the session: its socket is then closed
        while still watched, which costs no poller call at all (loop.forget)."""
        if upstream:
            self.c2s_eof = True
            if not self.c2s:
                self._pass_eof(True)
            if not self.state.closed:
                self._want(True, self.cmask & ~EVENT_READ)
        else:
            self.s2c_eof = True
            if not self.s2c:
                self._pass_eof(False)
            if not self.state.closed:
                self._want(False, self.smask & ~EVENT_READ)

    def _pass_eof(self, upstream):
        """Half-close: the direction's destination gets our FIN; both done is the normal end."""
        if upstream:
            self.c2s_done = True
        else:
            self.s2c_done = True
        if self.c2s_done and self.s2c_done:
            # Both EOFs were read, so nothing is left unread and close() sends the last FIN.
            self.close(END_NORMAL)
            return
        dst = self.ssock if upstream else self.csock
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass            # the destination is gone; its own read will say how

    def _peer_gone(self, exc, cause):
        """A peer reset or vanished: pass a reset on. Any other error is a bug: raise it."""
        if exc.errno not in PEER_GONE_ERRNOS:
            raise exc
        self.close(cause, abort=True)

