"""Choosing a server: the balancer only picks, it does no I/O.

Each backend gets a ``BackendPool``; each of its servers a ``ServerState`` that the event loop
updates (connection counts, health). The loop asks ``pick()`` for a server and reports back with
``connection_started`` / ``connection_ended``.
"""


class ServerState(object):
    """The run-time state of one configured server."""

    __slots__ = ("server", "backend", "up", "active")

    def __init__(self, server, backend):
        self.server = server
        self.backend = backend
        self.up = not server.disabled
        self.active = 0

    @property
    def usable(self):
        return self.up and self.server.weight > 0

    @property
    def label(self):
        return "%s/%s" % (self.backend.name, self.server.name)


class BackendPool(object):
    """The servers of one backend and the rotation over them."""

    def __init__(self, backend):
        self.backend = backend
        self.servers = [ServerState(s, backend) for s in backend.servers]
        self._next = 0

    def pick(self, client_key=None, exclude=()):
        """The server for a new connection, or None when no server is usable."""
        count = len(self.servers)
        for step in range(count):
            state = self.servers[(self._next + step) % count]
            if state.usable and state not in exclude:
                self._next = (self._next + step + 1) % count
                return state
        return None

    def connection_started(self, state):
        state.active += 1

    def connection_ended(self, state):
        state.active -= 1
