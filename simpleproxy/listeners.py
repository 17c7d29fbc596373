"""Listening sockets: opening them, a stale Unix socket file, the accept loop, EMFILE back-off.

Out of descriptors, accept() fails at once again on the next readiness event, so an accept
loop that only logged would spin. Instead every listener stops being watched for a moment
(``ACCEPT_BACKOFF``), as asyncio's ``_accept_connection`` does, and is watched again when
that moment is over; a connection closing meanwhile frees a descriptor for the next try.

A worker of a master (master.py) does not open its listening sockets: it inherits them, and
shares each with its sibling workers. Every idle worker would then wake for each connection
and all but one find nothing to accept; EPOLLEXCLUSIVE (Linux 4.5) wakes one, and the loop's
epoll poller registers shared listeners with it. It works only on the epoll a thread sleeps
in: an epoll of its own inside the loop's (how the selectors poller would have to do it, and
how workers did it before) is woken like any other waiter, since the kernel counts an
exclusive wake-up as done only when it woke a thread sleeping on that very epoll. So on the
selectors poller every worker wakes (tests/test_listeners.py shows both).
"""
import errno
import os
import socket
import stat

from .errors import SimpleProxyError
from .logs import LOG
from .loop import EVENT_READ
from .relay import PEER_GONE_ERRNOS
from .session import DESCRIPTOR_EXHAUSTION_ERRNOS, Session, SessionSocket
from .trust import TrustPolicy

ACCEPT_BATCH = 64            # accepts per readiness event, so one busy listener cannot starve the rest
ACCEPT_BACKOFF = 0.1         # seconds to stop accepting after EMFILE/ENFILE


class Listener(object):
    """A listening socket of a frontend, and its accept loop."""

    def __init__(self, proxy, fe, bind, sock):
        self.proxy = proxy
        self.fe = fe
        self.frontend = fe.frontend
        self.bind = bind
        self.sock = sock
        self.family, self.kind = int(sock.family), int(sock.type)    # plain ints: see on_event
        self.is_unix = sock.family == socket.AF_UNIX
        self.paused = False
        self.trust = TrustPolicy(bind) if bind.accept_proxy else None
        # The socket file this listener created; at exit only that file is removed.
        self.unix_file = _file_identity(bind.address.sockaddr) if self.is_unix else None

    def on_event(self, mask):
        """Accept until the queue is empty (EAGAIN), at most ACCEPT_BATCH at a time.

        ``_accept()`` and a socket built from its descriptor are what ``socket.accept()``
        does, less the conversion of the listener's family and type to enums on every call
        (eight Python calls, about 2 µs a connection). The accepted descriptor is blocking
        whatever the listener is (Linux, accept(2)): one ioctl makes it non-blocking."""
        proxy = self.proxy
        backoff = proxy.accept_backoff
        family, kind = self.family, self.kind
        for _ in range(ACCEPT_BATCH):
            if self.paused:
                return           # a connection limit was reached by the previous accept
            try:
                fd, peer = self.sock._accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in DESCRIPTOR_EXHAUSTION_ERRNOS:
                    backoff.failed(exc)
                elif exc.errno not in PEER_GONE_ERRNOS:
                    LOG.warning("accept on %s failed: %s", self.bind.address.text, exc)
                return
            csock = SessionSocket(family, kind, 0, fd)
            csock.setblocking(False)
            if backoff.failing_since is not None:
                backoff.recovered()
            Session(proxy, self, csock, peer)

    def close(self):
        self.sock.close()
        path = self.bind.address.sockaddr
        if (self.is_unix and self.proxy.listening is None          # a master's socket stays
                and self.unix_file is not None and _file_identity(path) == self.unix_file):
            try:
                os.unlink(path)
            except OSError:
                pass


class AcceptBackoff(object):
    """Whether accepts are paused for want of descriptors, and the timer that ends the pause.

    ``on_change()`` (the proxy's) is called when the pause starts and when it ends; it decides
    which listeners to watch. Logged once when it starts and once when accepts succeed again,
    however long it lasts."""

    def __init__(self, loop, on_change):
        self.loop = loop
        self.on_change = on_change
        self.paused_until = None
        self.failing_since = None      # when accept() began to fail for want of descriptors
        self._timer = loop.timer(self._resume)

    def failed(self, exc):
        now = self.loop.now
        if self.failing_since is None:
            self.failing_since = now
            LOG.warning("accept failed (%s): pausing accepts for %dms at a time until descriptors "
                        "free up", exc, ACCEPT_BACKOFF * 1000)
        self.paused_until = now + ACCEPT_BACKOFF
        self.on_change()
        self._timer.arm(self.paused_until)

    def recovered(self):
        LOG.info("accepting again after %dms short of descriptors",
                 (self.loop.now - self.failing_since) * 1000)
        self.failing_since = None

    def _resume(self):
        self.paused_until = None
        self.on_change()


def accept_events(loop, shared):
    """The events a listener is watched for: EVENT_READ, with EPOLLEXCLUSIVE for a socket
    ``shared`` with other workers where the loop's poller passes it (see the module doc)."""
    return EVENT_READ | loop.exclusive if shared else EVENT_READ


def listen_key(family, sockaddr):
    """What identifies a listening socket across configurations and processes: the family
    and the address as getsockname() gives it (a config's canonical IP text matches it)."""
    if family == socket.AF_UNIX:
        return family, sockaddr
    return family, tuple(sockaddr[:2])


def open_listener(bind):
    """A non-blocking listening socket for a bind line; SimpleProxyError names what went wrong."""
    address = bind.address
    sock = socket.socket(address.family, socket.SOCK_STREAM)
    try:
        if address.family == socket.AF_UNIX:
            _remove_stale_unix_socket(address.sockaddr)
        else:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            # Accepted sockets inherit TCP_NODELAY from the listener: small replies are not
            # held back by Nagle, at no cost per connection.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if address.family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1 if bind.v6only else 0)
        sock.bind(address.sockaddr)
        sock.listen(socket.SOMAXCONN)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise SimpleProxyError("cannot listen on %s (line %d): %s"
                               % (address.text, bind.line, exc.strerror or exc))
    return sock


def _file_identity(path):
    """(device, inode) of the socket file at ``path``, or None if there is none."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_dev, info.st_ino) if stat.S_ISSOCK(info.st_mode) else None


def _file_kind(mode):
    if stat.S_ISREG(mode):
        return "a regular file"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    return "a file that is not a socket"


def _remove_stale_unix_socket(path):
    """Remove a socket file nobody listens on any more; never one that is in use, and never
    anything that is not a socket (a regular file, a directory, a symbolic link)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, "%s is in the way (only a stale socket is replaced)"
                      % _file_kind(mode))
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)
    except OSError:
        pass
    else:
        raise OSError(errno.EADDRINUSE, "address already in use")
    finally:
        probe.close()
