"""Choosing a server: the balancer only picks, it does no I/O.

Each backend gets a ``BackendPool``; each of its servers a ``ServerState`` that the event loop
updates (connection counts, health, administrative state). The loop asks ``pick()`` for a
server and reports back with ``connection_started`` / ``connection_ended``. Everything here is
arithmetic on plain data, so it is tested from tables with a seeded random source.

A server's state comes from two things kept apart: what the operator set (``admin``: READY,
DRAIN or MAINT) and what its health checks found (``healthy``). ``SERVER_STATES`` combines
them into its ``status``: UP, DOWN, DRAIN or MAINT; only UP takes new connections. Keeping
them apart means a draining server that fails its checks and recovers goes back to draining,
not to UP. A third input, ``dns_maint``, is set by service discovery (discovery.py) while a
server has no address to use: it keeps the server in MAINT whatever the operator sets, so that
setting READY cannot put a server without an address into service.

The candidates are the UP servers with a weight above 0 among the normal servers; when there
is none, among the backup servers: the first one in the config, or all of them with ``option
allbackups``, as in HAProxy. They are worked out again only when a state changes, never per
connection. A candidate that is full (its ``maxconn`` reached) is passed over; when every
candidate is full, ``pick()`` returns None while ``candidates`` is not empty: the caller queues.

The algorithms (``balance``):

roundrobin   weighted and smooth, by stride scheduling: each candidate has a pass, the lowest
             pass goes next and moves on by SPAN // weight. A heap keeps it O(log n) a pick. A
             server coming back starts level with the others instead of catching up.
static-rr    the same order worked out once for a whole turn (one slot per unit of weight),
             then walked: O(1) a pick. Rebuilt whenever the candidates change.
leastconn    the fewest connections per unit of weight, ``(active + 1) / weight`` as in
             HAProxy; equal loads take turns. One scan of the candidates a pick.
first        the first candidate in config order with a free slot: fills servers one by one.
source       the client's IP address (as the PROXY header gave it) hashed onto a ring of 64
             points per unit of weight (consistent hashing): a server leaving moves only its
             own clients, and every proxy with the same config picks the same server for a
             client. A client without an IP address (a Unix socket) gets no affinity.
random       the power of two choices: two draws weighted by weight, the less loaded wins.
"""
import binascii
import heapq
import random

from .proxyproto import packed_ip

UP = "UP"
DOWN = "DOWN"
DRAIN = "DRAIN"
MAINT = "MAINT"
READY = "READY"
MAX_WEIGHT = 256             # HAProxy's: a weight is 0 to 256 (the config checks its own)

# What an operator may set, and what each administrative state may become: ``disabled`` in
# the config, and at run time Proxy.set_server_admin (the runtime API's set server, or a
# master's server-admin message).
ADMIN_TRANSITIONS = {
    READY: (DRAIN, MAINT),
    DRAIN: (READY, MAINT),
    MAINT: (READY, DRAIN),
}

# A server's state from (admin, healthy). DRAIN: finishes its connections, takes no new ones.
# MAINT: out of service, and not checked (the health checker skips it).
SERVER_STATES = {
    (READY, True): UP,
    (READY, False): DOWN,
    (DRAIN, True): DRAIN,
    (DRAIN, False): DOWN,
    (MAINT, True): MAINT,
    (MAINT, False): MAINT,
}


class ServerState(object):
    """The run-time state of one configured server."""

    __slots__ = ("config", "backend", "label", "admin", "healthy", "dns_maint", "address",
                 "dns_status", "weight", "maxconn", "active", "status", "usable")

    def __init__(self, server, backend):
        self.config = server          # the configured Server
        self.backend = backend
        self.label = "%s/%s" % (backend.name, server.name)    # backend/server, as logs say
        self.admin = MAINT if server.disabled else READY
        self.healthy = True           # until checks say otherwise (unchecked servers: always)
        # Where new connections go: the configured Address, resolved at start-up; service
        # discovery changes it. None: a host name that gave no address yet (init-addr none).
        self.address = server.address if server.address.family is not None else None
        self.dns_maint = self.address is None
        # The last lookup's outcome of the name it follows (discovery.VALID, NX, TIMEOUT or
        # OTHER, for the runtime API), None for a server that follows no name.
        self.dns_status = None
        self.weight = server.weight   # weight and maxconn: the config's until an operator's
        self.maxconn = server.maxconn
        self.active = 0               # connections connecting or relaying
        self.status = self.usable = None
        self._settle()

    def _settle(self):
        self.status = MAINT if self.dns_maint else SERVER_STATES[self.admin, self.healthy]
        self.usable = self.status == UP and self.weight > 0


class BackendPool(object):
    """The servers of one backend, the algorithm choosing among them, and its queue."""

    def __init__(self, backend, rng=None):
        self.backend = backend
        self.servers = [ServerState(s, backend) for s in backend.servers]
        self.candidates = []
        self.waiting = {}             # queued sessions, oldest first (dicts keep insertion order)
        self._picker = _LB_PICKERS[backend.balance](rng or random.Random())
        self._refresh()

    def pick(self, client_key=None, exclude=()):
        """The server for a new connection from ``client_key`` (a (host, port) tuple, or a
        Unix path), never one in ``exclude``; None when no candidate has a free slot."""
        if not self.candidates:
            return None
        return self._picker.pick(client_key, exclude)

    def connection_started(self, state):
        state.active += 1

    def connection_ended(self, state):
        state.active -= 1

    # -- state changes --------------------------------------------------------------------------

    def set_health(self, state, healthy):
        """Record what the checks now say; True if the server's state changed."""
        return self._change(state, state.admin, healthy)

    def set_admin(self, state, admin):
        """Set the administrative state; True if the server's status changed (called by
        Proxy.set_server_admin, with HealthChecker.restart when a server leaves
        maintenance)."""
        if admin not in ADMIN_TRANSITIONS[state.admin]:
            raise ValueError("server %s cannot go from %s to %s"
                             % (state.label, state.admin, admin))
        return self._change(state, admin, state.healthy)

    def set_dns_maint(self, state, dns_maint):
        """Service discovery puts a server in maintenance (no address to use) or takes it
        out; True if the server's status changed."""
        return self._change(state, state.admin, state.healthy, dns_maint)

    def set_weight(self, state, weight):
        """An operator's weight (0 to 256, checked by the caller); True if it changed."""
        if weight == state.weight:
            return False
        state.weight = weight
        state._settle()
        self._refresh()
        return True

    def set_maxconn(self, state, maxconn):
        """An operator's maxconn (0: unlimited); True if it changed. Nothing to rebuild: a
        full server is passed over at pick time."""
        if maxconn == state.maxconn:
            return False
        state.maxconn = maxconn
        return True

    def _change(self, state, admin, healthy, dns_maint=None):
        before = state.status
        state.admin, state.healthy = admin, healthy
        if dns_maint is not None:
            state.dns_maint = dns_maint
        state._settle()
        if state.status == before:
            return False
        self._refresh()
        return True

    def _refresh(self):
        usable = [state for state in self.servers if state.usable]
        normal = [state for state in usable if not state.config.backup]
        if normal or self.backend.allbackups:
            self.candidates = normal or usable
        else:
            self.candidates = usable[:1]
        self._picker.rebuild(self.candidates)

    def usable_counts(self):
        """(normal, backup): how many servers of each kind could take a connection now."""
        backup = sum(1 for state in self.servers if state.usable and state.config.backup)
        return sum(1 for state in self.servers if state.usable) - backup, backup

    # -- the queue (servers at maxconn) ---------------------------------------------------------

    @property
    def queue_full(self):
        maxqueue = self.backend.maxqueue
        return bool(maxqueue) and len(self.waiting) >= maxqueue

    def enqueue(self, waiter):
        self.waiting[waiter] = None

    def dequeue(self, waiter):
        self.waiting.pop(waiter, None)

    def first_waiting(self):
        """The waiter queued longest ago, or None."""
        return next(iter(self.waiting), None)


def _lb_acceptable(state, exclude):
    """Whether a candidate may take this connection: not excluded, and below its maxconn."""
    maxconn = state.maxconn
    return (not maxconn or state.active < maxconn) and state not in exclude


# -- roundrobin and static-rr: stride scheduling -------------------------------------------------

_LB_STRIDE_SPAN = 1 << 32     # passes are integers: SPAN // weight is exact to 2**-24, never drifts


def _lb_stride_heap(servers, passes, base):
    """Heap entries [pass, position, stride, state]; the position breaks ties, so states are
    never compared. A server keeps its pass from ``passes``; any other starts at ``base`` plus
    a phase: half a stride, staggered among the servers of one weight so that they take turns
    through the round instead of coming in a clump (this keeps every server within about one
    connection of its share at any point, as nginx's smooth round robin does)."""
    of_weight = {}
    for state in servers:
        of_weight[state.weight] = of_weight.get(state.weight, 0) + 1
    rank = {}
    heap = []
    for position, state in enumerate(servers):
        stride = _LB_STRIDE_SPAN // state.weight
        nth = rank[state.weight] = rank.get(state.weight, -1) + 1
        phase = stride * (2 * nth + 1) // (2 * of_weight[state.weight])
        heap.append([passes.get(state, base + phase), position, stride, state])
    heapq.heapify(heap)
    return heap


class _LbRoundRobinPicker(object):
    """roundrobin: the acceptable entry with the lowest pass, which then moves on."""

    def __init__(self, rng):
        self._heap = []

    def rebuild(self, servers):
        heap = self._heap
        passes = {entry[3]: entry[0] for entry in heap}
        self._heap = _lb_stride_heap(servers, passes, heap[0][0] if heap else 0)

    def pick(self, client_key, exclude):
        heap = self._heap
        passed_over = []
        chosen = None
        while heap:
            entry = heap[0]
            if _lb_acceptable(entry[3], exclude):
                chosen = entry
                entry[0] += entry[2]
                heapq.heapreplace(heap, entry)     # moved on: one sift instead of a pop and a push
                break
            passed_over.append(heapq.heappop(heap))
        for entry in passed_over:
            heapq.heappush(heap, entry)
        return chosen[3] if chosen is not None else None


class _LbStaticRoundRobinPicker(object):
    """static-rr: roundrobin's order for one whole turn, worked out at rebuild, then walked."""

    def __init__(self, rng):
        self._slots = []
        self._next = 0

    def rebuild(self, servers):
        heap = _lb_stride_heap(servers, {}, 0)
        slots = []
        for _ in range(sum(state.weight for state in servers)):
            entry = heap[0]
            slots.append(entry[3])
            entry[0] += entry[2]
            heapq.heapreplace(heap, entry)
        self._slots = slots
        self._next = 0

    def pick(self, client_key, exclude):
        slots = self._slots
        count = len(slots)
        for step in range(count):
            state = slots[(self._next + step) % count]
            if _lb_acceptable(state, exclude):
                self._next = (self._next + step + 1) % count
                return state
        return None


# -- leastconn, first, random ----------------------------------------------------------------------

def _lb_least_loaded(servers, start, exclude):
    """The acceptable server with the lowest (active + 1) / weight, looking from ``start`` on so
    that equal loads take turns; None if none is acceptable."""
    best = None
    count = len(servers)
    for step in range(count):
        state = servers[(start + step) % count]
        if not _lb_acceptable(state, exclude):
            continue
        if best is None or (state.active + 1) * best.weight < (best.active + 1) * state.weight:
            best = state
    return best


class _LbLeastConnPicker(object):

    def __init__(self, rng):
        self._servers = []
        self._next = 0

    def rebuild(self, servers):
        self._servers = servers
        self._next = 0

    def pick(self, client_key, exclude):
        start = self._next
        self._next = (start + 1) % len(self._servers)
        return _lb_least_loaded(self._servers, start, exclude)


class _LbFirstPicker(object):

    def __init__(self, rng):
        self._servers = []

    def rebuild(self, servers):
        self._servers = servers

    def pick(self, client_key, exclude):
        for state in self._servers:
            if _lb_acceptable(state, exclude):
                return state
        return None


class _LbRandomPicker(object):
    """Two draws weighted by weight; the less loaded acceptable one. When neither draw is
    acceptable (full, or excluded by a retry), the least loaded of all."""

    def __init__(self, rng):
        self._rng = rng
        self._servers = []
        self._cumulative = []

    def rebuild(self, servers):
        total = 0
        cumulative = []
        for state in servers:
            total += state.weight
            cumulative.append(total)
        self._servers, self._cumulative = servers, cumulative

    def pick(self, client_key, exclude):
        draws = self._rng.choices(self._servers, cum_weights=self._cumulative, k=2)
        return (_lb_least_loaded(draws, 0, exclude) or
                _lb_least_loaded(self._servers, 0, exclude))


# -- source: consistent hashing --------------------------------------------------------------------

_LB_RING_POINTS = 64          # ring points per unit of weight


def _lb_mix32(value):
    """MurmurHash3's finaliser: spreads a 32-bit value over all 32 bits."""
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & 0xFFFFFFFF
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & 0xFFFFFFFF
    return value ^ (value >> 16)


def _lb_client_hash(client_key):
    """The ring position of a client's IP address, or None when it has none.

    Hashed from the packed address, so every spelling of an address and an IPv4 client seen
    v4-mapped on an IPv6 socket land on the same point. CRC32 is only the first step (it is
    stable across runs, unlike hash()); the finaliser does the spreading.
    """
    if not isinstance(client_key, tuple):
        return None
    try:
        packed = packed_ip(client_key[0])
    except ValueError:
        return None
    return _lb_mix32(binascii.crc32(packed))


def _lb_ring_index(hashes, key):
    """The index of the first point at or after ``key`` on the ring, wrapping to 0."""
    low, high = 0, len(hashes)
    while low < high:
        middle = (low + high) // 2
        if hashes[middle] < key:
            low = middle + 1
        else:
            high = middle
    return low % len(hashes)


class _LbSourceHashPicker(object):
    """source: the owner of the first ring point at or after the client's hash. Points are
    named after the server, so they do not move when other servers come and go."""

    def __init__(self, rng):
        self._hashes = []
        self._owners = []
        self._unhashed = 0

    def rebuild(self, servers):
        points = sorted(
            (_lb_mix32(binascii.crc32(("%s#%d" % (state.config.name, number)).encode())),
             position)
            for position, state in enumerate(servers)
            for number in range(state.weight * _LB_RING_POINTS))
        self._hashes = [point for point, _ in points]
        self._owners = [servers[position] for _, position in points]

    def pick(self, client_key, exclude):
        key = _lb_client_hash(client_key)
        if key is None:
            # No address to keep affinity for: step round the ring instead.
            self._unhashed = (self._unhashed + 1) & 0xFFFFFFFF
            key = _lb_mix32(self._unhashed)
        owners = self._owners
        count = len(owners)
        start = _lb_ring_index(self._hashes, key)
        for step in range(count):
            state = owners[(start + step) % count]
            if _lb_acceptable(state, exclude):
                return state
        return None


_LB_PICKERS = {
    "roundrobin": _LbRoundRobinPicker,
    "static-rr": _LbStaticRoundRobinPicker,
    "leastconn": _LbLeastConnPicker,
    "first": _LbFirstPicker,
    "source": _LbSourceHashPicker,
    "random": _LbRandomPicker,
}
