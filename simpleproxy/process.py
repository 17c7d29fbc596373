"""What the process model asks of the host: each worker's share of a limit, whom it runs as.

(The values of the [global] keys ``workers``, ``user`` and ``group`` are read in
config_values.py, with the other values.)

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
