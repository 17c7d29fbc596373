"""What the process model asks of the host: how many workers, whom they run as.

The value parsers (``parse_workers``, ``parse_user``, ``parse_group``) are pure functions that
config.py calls for the [global] keys ``workers``, ``user`` and ``group``; each returns the
value or raises ValueError with the reason, as config.py's own parsers do.

Dropping privileges happens in each worker after the master has bound every listening
socket, so ``bind = :80`` works started as root. The master stays root: a reload may have to
bind a new privileged port. Whatever a worker imports lazily later must be imported before
the drop, because the new user may not be allowed to read the interpreter's directory (pyenv
under /root, mode 0700): the ``idna`` codec is the one seen failing (``getaddrinfo`` with a
str host name encodes it with idna).
"""
import grp
import os
import pwd
import re

from .ini import shown

WORKERS_AUTO = "auto"
MAX_WORKERS = 256
_ID_DIGITS = re.compile(r"[0-9]{1,10}\Z")     # ASCII digits only: "²".isdigit() is True


def usable_cpus():
    """The CPUs this process may run on (its affinity mask), or the machine's count."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def parse_workers(text):
    """``workers = N | auto``: a count from 1 to 256, or ``auto`` for the usable CPUs."""
    if text == WORKERS_AUTO:
        return usable_cpus()
    if not _ID_DIGITS.match(text) or not 1 <= int(text) <= MAX_WORKERS:
        raise ValueError("%s is not a worker count (expected a whole number from 1 to %d, "
                         "or auto)" % (shown(text), MAX_WORKERS))
    return int(text)


def parse_user(text):
    """``user = NAME | UID``: the user the workers run as; it must exist here."""
    return _host_name(text, pwd.getpwuid, pwd.getpwnam, "user", "/etc/passwd").pw_name


def parse_group(text):
    """``group = NAME | GID``: the group the workers run as; it must exist here."""
    return _host_name(text, grp.getgrgid, grp.getgrnam, "group", "/etc/group").gr_name


def _host_name(text, by_id, by_name, what, where):
    try:
        return by_id(int(text)) if _ID_DIGITS.match(text) else by_name(text)
    except (KeyError, OverflowError, ValueError):     # ValueError: a NUL in the name
        raise ValueError("no %s %s on this host (expected a %s name or id from %s)"
                         % (what, shown(text), what, where))


def split_limit(limit, workers):
    """One worker's share of a connection limit (None or 0: no limit, kept as it is).

    Rounded up, so that the workers together never allow fewer than ``limit`` and a small
    limit never becomes 0, which would mean "unlimited"."""
    if not limit:
        return limit
    return -(-limit // workers)


def preload_lazy_imports():
    """Import now what the proxy would otherwise import on first use (see the docstring)."""
    "x".encode("idna")


def drop_privileges(user, group):
    """Become ``user`` (and ``group``, or else the user's primary group), for good.

    setgroups, then setgid, then setuid: as root each sets the real, effective and saved id
    at once. Raises OSError when the process may not, and PermissionError if any uid is
    still 0 afterwards (a drop that half worked must not go unnoticed)."""
    if user is None and group is None:
        return
    preload_lazy_imports()
    gid = grp.getgrnam(group).gr_gid if group else pwd.getpwnam(user).pw_gid
    os.setgroups([gid])
    os.setgid(gid)
    if user is not None:
        os.setuid(pwd.getpwnam(user).pw_uid)
        if 0 in os.getresuid():
            raise PermissionError("still uid 0 after becoming %s" % user)
