"""The stats socket and the stats listener, served by the event loop itself (no thread).

Both are the same thing on the wire: a listening socket whose clients send a request, get
an answer and are closed (the stats socket's ``prompt`` mode keeps them for more). What is
said is decided by a pure conversation object (admin.AdminConversation,
statshttp.StatsHttpExchange): ``feed(bytes)`` and ``eof()`` return the bytes to send, and
``closed`` says the connection ends once they are sent. This module does only the I/O:

* Accepting is non-blocking, a batch per event (as the proxy's listeners); beyond ``MAX_CLIENTS`` open clients a new
  one is closed at once, and EMFILE/ENFILE pause the accepts for a second instead of
  spinning. The proxy's own listeners are never affected.
* Backpressure: while an answer is being written, nothing more is read (the conversation
  only speaks when fed, so its output is bounded by one answer).
* A deadline of ``CLIENT_TIMEOUT`` seconds from the start of each request to its answer,
  and from one write's progress to the next: a slow or silent client is closed, as
  HAProxy's ``stats timeout`` does (10s by default). A stats socket client may ask for
  another with ``set timeout cli`` (the conversation's ``timeout``), as hatop does.
* An error in a conversation closes that client only (logged), never the loop.
* Once the last answer is written, the write side is shut and what the client still sends
  (the rest of a line too long, say) is read and dropped until its EOF or the deadline, so
  that closing with unread bytes does not reset the connection and lose the answer.

A Unix stats socket is created owner-only unless ``mode`` says otherwise (the umask is set
for the bind, so that it is never wider even for an instant); an old file at its path is
replaced only if it is a socket.
"""
import os
import socket
import stat
import traceback

from .admin import AdminConversation
from .errors import SimpleProxyError
from .listeners import ACCEPT_BATCH
from .logs import LOG
from .loop import EVENT_READ, EVENT_WRITE
from .session import DESCRIPTOR_EXHAUSTION_ERRNOS
from .statsconfig import StatsHttpSettings
from .statshttp import StatsHttpExchange

CLIENT_TIMEOUT = 10.0         # seconds for a request, and for each write's progress
MAX_CLIENTS = 32              # open clients per listener; more are closed on accept
ACCEPT_PAUSE = 1.0            # seconds without accepting after EMFILE/ENFILE
READ_CHUNK = 4096
LISTEN_BACKLOG = 128


def open_stats_listeners(loop, settings, target):
    """The stats socket and the stats listener on ``loop``, when [global] ``settings`` ask for
    them, both acting on ``target`` (admin.py); the list of ServiceListeners."""
    listeners = []
    if settings.stats_socket is not None:
        level = settings.stats_socket.level
        sock = open_service_socket(settings.stats_socket.address, "stats socket",
                                   settings.stats_socket.mode)
        listeners.append(ServiceListener(loop, sock, lambda: AdminConversation(target, level),
                                         "stats socket"))
    if settings.stats_http is not None:
        http = StatsHttpSettings(settings.stats_http, settings.stats_auth,
                                 settings.stats_refresh, settings.stats_name)
        sock = open_service_socket(settings.stats_http, "stats listener")
        listeners.append(ServiceListener(loop, sock, lambda: StatsHttpExchange(target, http),
                                         "stats listener"))
    return listeners


def open_service_socket(address, what, mode=None):
    """A listening, non-blocking socket at ``address`` (a resolved config Address); a Unix
    path gets permissions ``mode``. Raises SimpleProxyError naming ``what`` on failure."""
    family, sockaddr = address.family, address.sockaddr
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if family == socket.AF_UNIX:
            _sl_remove_stale_socket(sockaddr, what)
            old_umask = os.umask(0o777 & ~(mode if mode is not None else 0o600))
            try:
                sock.bind(sockaddr)
            finally:
                os.umask(old_umask)
            os.chmod(sockaddr, mode if mode is not None else 0o600)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(sockaddr)
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise SimpleProxyError("cannot listen for the %s on %s: %s"
                               % (what, address.text, exc.strerror or exc))
    return sock


def _sl_remove_stale_socket(path, what):
    """A socket left by an earlier run is replaced; any other file is an error."""
    try:
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise SimpleProxyError("cannot listen for the %s on %s: the path exists and is not "
                                   "a socket (expected a free path)" % (what, path))
    except FileNotFoundError:
        return
    os.unlink(path)


class ServiceListener(object):
    """One listening socket on the loop; ``start_conversation()`` makes each client's."""

    def __init__(self, loop, sock, start_conversation, what):
        self.loop = loop
        self.sock = sock
        self.start_conversation = start_conversation
        self.what = what
        self.clients = set()
        self.unix_path = sock.getsockname() if sock.family == socket.AF_UNIX else None
        self._resume = loop.timer(self._listen)
        self._listen()

    def _listen(self):
        self.loop.register(self.sock, EVENT_READ, self._on_accept)

    def _on_accept(self, mask):
        for _ in range(ACCEPT_BATCH):
            try:
                csock, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in DESCRIPTOR_EXHAUSTION_ERRNOS:
                    LOG.warning("%s: cannot accept (%s), pausing for %ds", self.what,
                                exc.strerror, ACCEPT_PAUSE)
                    self.loop.unregister(self.sock)
                    self._resume.arm(self.loop.now + ACCEPT_PAUSE)
                return                       # ECONNABORTED and the like: that client is gone
            if len(self.clients) >= MAX_CLIENTS:
                csock.close()
                continue
            self.clients.add(ServiceClient(self, csock, self.start_conversation()))

    def close(self):
        """Stop listening and drop every client; a Unix socket's file goes too."""
        if self._resume.when is None:
            self.loop.unregister(self.sock)
        self._resume.cancel()
        self.sock.close()
        for client in list(self.clients):
            client.close()
        if self.unix_path:
            try:
                os.unlink(self.unix_path)
            except OSError:
                pass


class ServiceClient(object):
    """One client: read a request, feed the conversation, write its answer, maybe close."""

    def __init__(self, listener, sock, conversation):
        self.listener = listener
        self.loop = listener.loop
        self.sock = sock
        self.conversation = conversation
        self.pending = b""
        self.mask = EVENT_READ
        sock.setblocking(False)
        self.timer = self.loop.timer(self.close)
        self.timer.arm(self.loop.now + CLIENT_TIMEOUT)
        self.loop.register(sock, EVENT_READ, self._on_event)

    def _on_event(self, mask):
        try:
            if self.conversation.closed and not self.pending:
                self._drop_the_rest()
            elif mask & EVENT_READ and not self.pending:
                self._read()
            elif mask & EVENT_WRITE:
                self._write()
        except Exception:
            LOG.error("internal error in the %s:\n%s", self.listener.what,
                      traceback.format_exc().rstrip())
            self.close()

    def _read(self):
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.close()
            return
        conversation = self.conversation
        answer = conversation.feed(data) if data else conversation.eof()
        if answer or conversation.closed:
            self.pending = answer
            self._write()

    def _write(self):
        if self.pending:
            try:
                sent = self.sock.send(self.pending)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self.close()
                return
            self.pending = self.pending[sent:]
            if sent:
                self.timer.arm(self.loop.now + self._timeout())
        if self.pending:
            self._want(EVENT_WRITE)
        elif self.conversation.closed:
            try:
                self.sock.shutdown(socket.SHUT_WR)
            except OSError:
                self.close()
                return
            self._want(EVENT_READ)
        else:
            self._want(EVENT_READ)           # the next request (prompt mode) gets its own time
            self.timer.arm(self.loop.now + self._timeout())

    def _timeout(self):
        """The conversation's own deadline (``set timeout cli``), else CLIENT_TIMEOUT."""
        return self.conversation.timeout or CLIENT_TIMEOUT

    def _drop_the_rest(self):
        try:
            data = self.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()

    def _want(self, mask):
        if mask != self.mask:
            self.loop.modify(self.sock, mask, self._on_event)
            self.mask = mask

    def close(self):
        if self.sock is None:
            return
        self.timer.release()
        self.loop.unregister(self.sock)
        self.sock.close()
        self.sock = None
        self.listener.clients.discard(self)
