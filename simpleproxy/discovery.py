"""Service discovery: servers named by a host name follow what the name resolves to.

Without it a host name is resolved once, at start. With it the name is looked up again every
``resolve-interval``, and what each lookup says becomes changes of server state. Only
``lookup()`` does I/O (it is what a health-check worker thread runs); everything else is a
state machine fed with (lookup result, time) that answers with actions for the event loop to
apply, so it is tested from tables.

The words and rules are HAProxy's (doc/configuration.txt: ``init-addr``, ``server-template``,
``resolve-prefer``, and the ``hold`` periods of a ``resolvers`` section):

init-addr        how a server gets its first address: each method in turn until one works.
                 ``last``: the address each server had before a reload, in its own slot
                 (none at a cold start);
                 ``libc``: the system resolver, now; ``none``: no address, so the server starts
                 in maintenance and comes out once its name resolves; or an IP address.
                 ``last,libc`` by default, which is today's behaviour: a name that does not
                 resolve stops the start.
slots            one per server the name feeds: one for a ``server`` line, COUNT for a
                 ``server-template`` (servers NAME1..NAMECOUNT). After each answer a slot keeps
                 its address while the name still returns it (live servers are never
                 reshuffled, so ``source`` hashing and leastconn stay put); an address no longer
                 returned leaves its slot, which goes to maintenance; new addresses fill the
                 free slots, lowest first, in a fixed order: the ``resolve-prefer`` family
                 (IPv6 unless told otherwise, as in HAProxy), then by address. Two instances
                 that saw the same answers therefore fill their slots the same way, whatever
                 order the resolver listed the addresses in.
changes          a new address is for new connections only (established ones keep their
                 socket); each change is logged.
failures         ``nx`` (no such name, or no address for it), ``timeout`` (no answer from the
                 DNS servers, ``EAI_AGAIN``) or ``other``. A failing name keeps its servers' last
                 addresses for the hold of that failure (``hold nx``, ``hold timeout``, ``hold
                 other``: 30s each, HAProxy's defaults), counted from the last good answer; then
                 its servers go to maintenance, still remembering their addresses, so that a
                 name coming back with the same addresses puts each server back as it was. A
                 failure is logged once when it starts (and again only if its kind changes),
                 not at every lookup. As in HAProxy the hold is looked at when a lookup ends,
                 so with an interval longer than the hold the servers leave at the first failed
                 lookup after it.
"""
import logging
import socket
from collections import namedtuple

from .proxyproto import packed_ip

# Lookup outcomes, by HAProxy's names for the ``hold`` statuses.
VALID = "valid"
NX = "nx"
TIMEOUT = "timeout"
OTHER = "other"

DEFAULT_RESOLVE_HOLDS = {NX: 30.0, TIMEOUT: 30.0, OTHER: 30.0}
# Between lookups of a server that asks for them (``resolve``, or a server-template) while
# ``resolve-interval`` is off: HAProxy's ``hold valid`` default, how long a good answer stands.
DEFAULT_RESOLVE_PERIOD = 10.0

RESOLVE_PREFER_FAMILIES = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}
DEFAULT_RESOLVE_PREFER = "ipv6"

# Why a server goes to maintenance, in HAProxy's words for it.
NO_ADDRESS_REASON = "No IP for server"
VALID_ANSWER_REASON = "valid DNS answer"
_DNS_HOLD_REASONS = {NX: "DNS NX status", TIMEOUT: "DNS timeout status",
                     OTHER: "unspecified DNS error"}

IpAddress = namedtuple("IpAddress", "family ip")
IpAddress.__doc__ = """One address a name resolved to: socket.AF_INET or AF_INET6, and the
address text as getaddrinfo gives it (canonical)."""

LookupResult = namedtuple("LookupResult", "addresses failure detail")
LookupResult.__doc__ = """What one lookup found: addresses (a tuple of IpAddress, empty on
failure), failure (None, NX, TIMEOUT or OTHER) and detail (the resolver's words for it)."""

StartAddresses = namedtuple("StartAddresses", "method addresses failure")
StartAddresses.__doc__ = """What init-addr gave a name at start: the method that worked
("last", "libc", "none" or "ip"; None when none did), its addresses (for "last", one per slot,
None for an empty one), and the failed libc LookupResult if libc was tried and failed (else
None)."""

# The actions update() answers with, for the loop to apply in order.
AddressChange = namedtuple("AddressChange", "server old new")
AddressChange.__doc__ = """Server ``server`` connects to ``new`` from now on (None: it has no
address); old and new are IpAddress or None."""
EnterMaintenance = namedtuple("EnterMaintenance", "server reason")
LeaveMaintenance = namedtuple("LeaveMaintenance", "server reason")
Notice = namedtuple("Notice", "level text")
Notice.__doc__ = """A line to log (level: a logging level); everything DNS-specific that
deserves a line comes as one, so the loop decides nothing about what is said or how often."""


def lookup(host):
    """The addresses of ``host`` from the system resolver (getaddrinfo: /etc/hosts, then DNS
    as /etc/resolv.conf says), blocking: a worker thread's job. Never raises; a failure is a
    LookupResult with its kind."""
    try:
        infos = socket.getaddrinfo(host, None, 0, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return LookupResult((), _DNS_FAILURE_KINDS.get(exc.errno, OTHER), exc.strerror or str(exc))
    except (OSError, ValueError, LookupError) as exc:
        # ValueError includes UnicodeError: a label too long for IDNA.
        return LookupResult((), OTHER, str(exc))
    addresses = []
    for family, _, _, _, sockaddr in infos:
        address = IpAddress(family, sockaddr[0])
        if family in RESOLVE_PREFER_FAMILIES.values() and address not in addresses:
            addresses.append(address)
    if not addresses:
        return LookupResult((), NX, "no IPv4 or IPv6 address")
    return LookupResult(tuple(addresses), None, "")


# glibc's codes: EAI_NODATA and EAI_ADDRFAMILY say the name exists but has no address.
_DNS_FAILURE_KINDS = dict(
    [(socket.EAI_NONAME, NX), (socket.EAI_AGAIN, TIMEOUT)] +
    [(getattr(socket, code), NX) for code in ("EAI_NODATA", "EAI_ADDRFAMILY")
     if hasattr(socket, code)])


def ip_address(text):
    """An IpAddress from IPv4 or IPv6 text, canonical; ValueError for anything else."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            return IpAddress(family, socket.inet_ntop(family, socket.inet_pton(family, text)))
        except (OSError, ValueError):
            continue
    raise ValueError("'%s' is not an IP address" % text)


def address_text(address):
    """An IpAddress for a log line; "none" for no address."""
    return "none" if address is None else address.ip


# -- which servers are looked up, and how they start ----------------------------------------------

def resolve_period(interval, resolve_option, template, host_named):
    """Seconds between lookups of a server's name, or None: resolved once at start (an IP
    address, a Unix socket, or a host name nobody asked to follow).

    ``resolve-interval`` (``interval``) set: every server named by a host name is followed, at
    that interval. Off: only servers with the ``resolve`` option and server-templates are, at
    DEFAULT_RESOLVE_PERIOD."""
    if not host_named:
        return None
    if interval is not None:
        return interval
    if resolve_option or template:
        return DEFAULT_RESOLVE_PERIOD
    return None


def initial_addresses(init_addr, last, resolve):
    """A name's first addresses by init-addr: each method in turn until one works.

    ``last``: what each of the name's servers had before a reload, one per slot (None for no
    address; empty at a cold start); ``resolve``: a function doing the libc lookup (a
    LookupResult), called only if reached. ``init_addr`` as the configuration reads it: the
    words last, libc, none and IP address texts."""
    failure = None
    for method in init_addr:
        if method == "last":
            if any(last):
                return StartAddresses("last", tuple(last), None)
        elif method == "libc":
            result = resolve()
            if result.failure is None:
                return StartAddresses("libc", result.addresses, None)
            failure = result
        elif method == "none":
            return StartAddresses("none", (), failure)
        else:
            return StartAddresses("ip", (ip_address(method),), failure)
    return StartAddresses(None, (), failure)


# -- slots ----------------------------------------------------------------------------------------

def preference_order(addresses, prefer):
    """The addresses, once each, in the order free slots take them: the preferred family
    first (``prefer``: "ipv4" or "ipv6"), then by address, never by the resolver's order."""
    preferred = RESOLVE_PREFER_FAMILIES[prefer]
    return sorted(set(addresses),
                  key=lambda address: (address.family != preferred, address.family,
                                       packed_ip(address.ip)))


def assign_slots(slots, ordered):
    """The slots after an answer: each keeps its address while ``ordered`` (from
    preference_order) still has it, the others are emptied, and addresses not yet in a slot
    fill the empty ones, lowest slot first. An address is never in two slots; addresses beyond
    the last slot wait for one to free up."""
    returned = set(ordered)
    assigned = [address if address in returned else None for address in slots]
    placed = set(assigned)
    free = (position for position, address in enumerate(assigned) if address is None)
    for address in ordered:
        if address in placed:
            continue
        position = next(free, None)
        if position is None:
            break
        assigned[position] = address
    return assigned


class NameResolution(object):
    """One host name and the servers it feeds (its slots, in order): what they resolve to
    now, and what the lookups have said. Lives on the loop; fed by start() once, then by
    update() with each lookup's result."""

    def __init__(self, backend, host, servers, prefer=DEFAULT_RESOLVE_PREFER,
                 holds=DEFAULT_RESOLVE_HOLDS):
        self.backend = backend             # its name, for log lines
        self.host = host
        self.servers = tuple(servers)      # server names, one per slot
        self.label = "%s/%s" % (backend, servers[0] if len(servers) == 1 else
                                "%s..%s" % (servers[0], servers[-1]))
        self.prefer = prefer
        self.holds = holds
        self.slots = [None] * len(self.servers)
        self.lapsed = False                # a hold ran out: servers in maintenance, addresses kept
        self.last_valid = None             # when the name last resolved (loop time)
        self.failure = None                # the kind of the current failure, None while resolving
        self.detail = ""                   # the resolver's words for it

    @property
    def status(self):
        """The last lookup's outcome: VALID, NX, TIMEOUT or OTHER (for the runtime API)."""
        return self.failure or VALID

    def address_of(self, server):
        """The address of ``server``'s slot, or None. At start a server without one starts in
        maintenance; afterwards the actions say when servers enter and leave it (a server
        whose hold ran out keeps its address here, in maintenance)."""
        return self.slots[self.servers.index(server)]

    def start(self, start, now):
        """Take init-addr's outcome (a StartAddresses); servers are created with address_of()
        afterwards. ``last`` puts each server back in its own slot, as before the reload, so
        that nothing moves; other addresses fill the slots in order. Returns the Notices: a
        name that did not resolve at start is logged here, once."""
        if start.method == "last":
            self.slots = list(start.addresses)
        else:
            self.slots = assign_slots(self.slots, preference_order(start.addresses, self.prefer))
        if any(self.slots):
            self.last_valid = now
        if start.failure is None:
            return []
        self.failure, self.detail = start.failure.failure, start.failure.detail
        if any(self.slots):
            outcome = "starting with %s from init-addr %s" % (
                ", ".join(address_text(a) for a in self.slots if a), start.method)
        else:
            outcome = "in maintenance until it does (init-addr none)"
        return [Notice(logging.WARNING, "%s: %s does not resolve: %s; %s"
                       % (self.label, self.host, self._failure_text(), outcome))]

    def update(self, result, now):
        """Take one lookup's result at loop time ``now``; returns the actions, in order."""
        if result.failure is None:
            return self._resolved(result.addresses, now)
        return self._failed(result, now)

    def _resolved(self, addresses, now):
        actions = []
        if self.failure is not None:
            actions.append(Notice(logging.INFO, "%s: %s resolves again" % (self.label, self.host)))
        self.failure, self.detail = None, ""
        self.last_valid = now
        slots = assign_slots(self.slots, preference_order(addresses, self.prefer))
        return actions + self._move_to(slots, False, NO_ADDRESS_REASON)

    def _failed(self, result, now):
        actions = []
        kind = result.failure
        if kind != self.failure:
            self.failure, self.detail = kind, result.detail
            if self.lapsed or not any(self.slots):
                outcome = "its servers stay in maintenance until it does"
            else:
                outcome = "its servers keep their addresses for at most %gs" % self.holds[kind]
            actions.append(Notice(logging.WARNING, "%s: %s does not resolve: %s; %s"
                                  % (self.label, self.host, self._failure_text(), outcome)))
        if (not self.lapsed and self.last_valid is not None
                and now >= self.last_valid + self.holds[kind]):
            actions += self._move_to(self.slots, True, _DNS_HOLD_REASONS[kind])
        return actions

    def _failure_text(self):
        return "%s (%s)" % (self.failure, self.detail) if self.detail else self.failure

    def _move_to(self, slots, lapsed, reason):
        """The actions taking every server from its slot now to ``slots``; then adopt them.
        Per server: out of service first, then the new address, then back in service."""
        actions = []
        for server, old, new in zip(self.servers, self.slots, slots):
            was_serving = old is not None and not self.lapsed
            serving = new is not None and not lapsed
            if was_serving and not serving:
                actions.append(EnterMaintenance(server, reason))
            if old != new:
                actions.append(AddressChange(server, old, new))
                actions.append(Notice(logging.INFO, "%s/%s changed its IP from %s to %s by DNS"
                                      % (self.backend, server,
                                         address_text(old), address_text(new))))
            if serving and not was_serving:
                actions.append(LeaveMaintenance(server, VALID_ANSWER_REASON))
        self.slots, self.lapsed = slots, lapsed
        return actions
