"""systemd, spoken without libsystemd: readiness notification and socket activation.

Notification (sd_notify(3)): newline-separated ``KEY=VALUE`` lines in one datagram to the
Unix socket named by ``$NOTIFY_SOCKET``, a path or, starting with ``@``, an abstract name
(the ``@`` stands for a NUL byte). The master sends ``READY=1`` once its workers accept,
``RELOADING=1`` with ``MONOTONIC_USEC=`` (what ``Type=notify-reload``, systemd 253+,
requires) then ``READY=1`` around a reload, ``STOPPING=1``, ``STATUS=`` a short line, and
``WATCHDOG=1`` every half of ``$WATCHDOG_USEC`` when that is set for this pid
(``$WATCHDOG_PID``, when present, must be ours).

Socket activation (sd_listen_fds(3)): ``$LISTEN_FDS`` descriptors from 3 on, meant for this
process when ``$LISTEN_PID`` is our pid. They are matched to bind lines by the address the
socket is bound to (getsockname), whatever ``$LISTEN_FDNAMES`` says, and the variables are
removed so that no child takes them for its own.

Without these variables nothing here does anything.
"""
import os
import socket
import time

from .listeners import listen_key
from .logs import LOG

LISTEN_FDS_START = 3


class Notifier(object):
    """Messages to systemd's notification socket; every method is a no-op without one."""

    def __init__(self, environ=os.environ):
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address.startswith("@"):
            address = "\0" + address[1:]
        self.address = address
        self.watchdog_interval = None      # seconds between WATCHDOG=1, or None
        usec = environ.get("WATCHDOG_USEC", "")
        pid = environ.get("WATCHDOG_PID", "")
        if address and usec.isdigit() and int(usec) > 0 and pid in ("", str(os.getpid())):
            self.watchdog_interval = int(usec) / 2e6

    def send(self, *lines):
        if self.address is None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.sendto("\n".join(lines).encode("utf-8"), self.address)
        except OSError as exc:
            LOG.warning("cannot notify systemd at %s: %s", self.address.replace("\0", "@"), exc)
        finally:
            sock.close()

    def ready(self, status):
        self.send("READY=1", "STATUS=" + status)

    def reloading(self):
        monotonic_usec = int(time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6)
        self.send("RELOADING=1", "MONOTONIC_USEC=%d" % monotonic_usec,
                  "STATUS=reloading the configuration")

    def stopping(self):
        self.send("STOPPING=1", "STATUS=stopping")

    def watchdog(self):
        self.send("WATCHDOG=1")


def activated_sockets(environ=os.environ):
    """The listening sockets systemd passed us, by listen_key; {} without socket activation.

    Consumes LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES from ``environ``."""
    pid = environ.pop("LISTEN_PID", "")
    count = environ.pop("LISTEN_FDS", "")
    environ.pop("LISTEN_FDNAMES", None)
    if pid != str(os.getpid()) or not count.isdigit():
        return {}
    sockets = {}
    for fd in range(LISTEN_FDS_START, LISTEN_FDS_START + int(count)):
        # Wrap the descriptor as it is (no dup); its family comes from the kernel, since
        # Python before 3.7 cannot detect it from a descriptor by itself.
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 0, fd)
        family = probe.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN)
        probe.detach()
        sock = socket.socket(family, socket.SOCK_STREAM, 0, fd)
        sock.setblocking(False)
        sockaddr = sock.getsockname()
        if isinstance(sockaddr, bytes):                   # an abstract Unix name
            sockaddr = os.fsdecode(sockaddr)
        sockets[listen_key(family, sockaddr)] = sock
    return sockets
