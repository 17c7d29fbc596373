"""Service discovery on its own: the per-name state machine and the slots, from tables of
(time, lookup result) steps and the exact actions and log lines each one gives; then the same
machine fed by real lookups of names a DNS server of the test's own serves (tests/dnslab.py).
"""
import itertools
import logging
import signal
from concurrent.futures import ThreadPoolExecutor

import pytest

from simpleproxy.discovery import (NX, OTHER, TIMEOUT, AddressChange, EnterMaintenance,
                                   LeaveMaintenance, LookupResult, NameResolution,
                                   Notice, StartAddresses, assign_slots, initial_addresses,
                                   ip_address, lookup, preference_order, resolve_period)
from simpleproxy.config_values import INIT_ADDR_VALUE
from stats_support import ask
from support import (RESET, TIMING_MARGIN, RecordingServer, connect, enter_netns,
                     exchange_or_reset, finish, in_netns, wait_until)


def ok(*texts):
    return LookupResult(tuple(ip_address(text) for text in texts), None, "")


NO_NAME = LookupResult((), NX, "Name or service not known")
NO_ANSWER = LookupResult((), TIMEOUT, "Temporary failure in name resolution")
BROKEN = LookupResult((), OTHER, "Non-recoverable failure in name resolution")


def started(*texts, **kwargs):
    """init-addr's outcome: libc gave these addresses, unless ``method``/``failure`` say else."""
    return StartAddresses(kwargs.get("method", "libc"), ok(*texts).addresses,
                          kwargs.get("failure"))


def render(action):
    if isinstance(action, AddressChange):
        return "%s: %s -> %s" % (action.server, action.old and action.old.ip,
                                 action.new and action.new.ip)
    if isinstance(action, EnterMaintenance):
        return "%s: maintenance (%s)" % action
    if isinstance(action, LeaveMaintenance):
        return "%s: ready (%s)" % action
    assert isinstance(action, Notice), action
    return "%s: %s" % (logging.getLevelName(action.level).lower(), action.text)


def moved(server, old, new):
    """The action and the log line of one address change in backend "be"."""
    return ["%s: %s -> %s" % (server, old, new),
            "info: be/%s changed its IP from %s to %s by DNS" % (server, old or "none",
                                                                 new or "none")]


READY = ": ready (valid DNS answer)"
APP_NX = ("warning: be/s1: app.test does not resolve: nx (Name or service not known); "
          "its servers keep their addresses for at most 30s")
APP_BACK = "info: be/s1: app.test resolves again"
WEB_BACK = "info: be/web1..web3: web.test resolves again"

# (what it shows, slots, start, holds, steps: (time, lookup result, the actions rendered))
ONE = ("s1",)
THREE = ("web1", "web2", "web3")
HOLDS = {NX: 30.0, TIMEOUT: 30.0, OTHER: 30.0}
SCENARIOS = [
    ("an unchanged answer does nothing", ONE, started("10.0.0.1"), HOLDS, [
        (10, ok("10.0.0.1"), []),
    ]),
    ("a moved address is logged and used from then on", ONE, started("10.0.0.1"), HOLDS, [
        (10, ok("10.0.0.2"), moved("s1", "10.0.0.1", "10.0.0.2")),
        (20, ok("10.0.0.2"), []),
    ]),
    ("an address is kept while the name returns it, whatever else comes with it", ONE,
     started("10.0.0.5"), HOLDS, [
        (10, ok("10.0.0.1", "10.0.0.5"), []),
        (20, ok("10.0.0.9", "10.0.0.1"), moved("s1", "10.0.0.5", "10.0.0.1")),
    ]),
    ("NX is logged once, the address held for hold nx, then maintenance", ONE,
     started("10.0.0.1"), HOLDS, [
        (10, NO_NAME, [APP_NX]),
        (20, NO_NAME, []),
        (29.9, NO_NAME, []),
        (30, NO_NAME, ["s1: maintenance (DNS NX status)"]),
        (40, NO_NAME, []),
        (50, ok("10.0.0.1"), [APP_BACK, "s1" + READY]),
    ]),
    ("back at another address after the hold", ONE, started("10.0.0.1"), HOLDS, [
        (10, NO_NAME, [APP_NX]),
        (30, NO_NAME, ["s1: maintenance (DNS NX status)"]),
        (40, ok("10.0.0.2"), [APP_BACK] + moved("s1", "10.0.0.1", "10.0.0.2") + ["s1" + READY]),
    ]),
    ("back within the hold: just the line saying so", ONE, started("10.0.0.1"), HOLDS, [
        (10, NO_NAME, [APP_NX]),
        (20, ok("10.0.0.1"), [APP_BACK]),
        (45, NO_NAME, [APP_NX]),         # a new failure is news again
    ]),
    ("the hold counts from the last good answer", ONE, started("10.0.0.1"), HOLDS, [
        (10, ok("10.0.0.1"), []),
        (20, NO_NAME, [APP_NX]),
        (39.9, NO_NAME, []),
        (40, NO_NAME, ["s1: maintenance (DNS NX status)"]),
    ]),
    ("each kind of failure has its hold, and a new kind is logged", ONE, started("10.0.0.1"),
     {NX: 30.0, TIMEOUT: 15.0, OTHER: 30.0}, [
        (10, NO_ANSWER, ["warning: be/s1: app.test does not resolve: timeout (Temporary failure "
                         "in name resolution); its servers keep their addresses for at most 15s"]),
        (14, NO_ANSWER, []),
        (15, NO_ANSWER, ["s1: maintenance (DNS timeout status)"]),
        (20, NO_NAME, ["warning: be/s1: app.test does not resolve: nx (Name or service not "
                       "known); its servers stay in maintenance until it does"]),
        (25, BROKEN, ["warning: be/s1: app.test does not resolve: other (Non-recoverable failure "
                      "in name resolution); its servers stay in maintenance until it does"]),
    ]),
    ("other failures go to maintenance after hold other", ONE, started("10.0.0.1"), HOLDS, [
        (10, BROKEN, ["warning: be/s1: app.test does not resolve: other (Non-recoverable failure "
                      "in name resolution); its servers keep their addresses for at most 30s"]),
        (30, BROKEN, ["s1: maintenance (unspecified DNS error)"]),
    ]),
    ("init-addr none: no address until the name resolves, and no second line", ONE,
     started(method="none", failure=NO_NAME), HOLDS, [
        (10, NO_NAME, []),
        (20, ok("10.0.0.1"), [APP_BACK] + moved("s1", None, "10.0.0.1") + ["s1" + READY]),
    ]),
    ("init-addr falling back to an IP: its hold runs from the start", ONE,
     started("192.0.2.1", method="ip", failure=NO_NAME), HOLDS, [
        (29, NO_NAME, []),
        (30, NO_NAME, ["s1: maintenance (DNS NX status)"]),
    ]),
    ("a third address fills the free slot, wherever it sorts", THREE,
     started("10.0.0.2", "10.0.0.1"), HOLDS, [
        (10, ok("10.0.0.2", "10.0.0.1", "10.0.0.0"),
         moved("web3", None, "10.0.0.0") + ["web3" + READY]),
    ]),
    ("an address gone: its slot goes to maintenance, the others are untouched", THREE,
     started("10.0.0.1", "10.0.0.2", "10.0.0.3"), HOLDS, [
        (10, ok("10.0.0.3", "10.0.0.1"),
         ["web2: maintenance (No IP for server)"] + moved("web2", "10.0.0.2", None)),
        (20, ok("10.0.0.3", "10.0.0.1", "10.0.0.2"),
         moved("web2", None, "10.0.0.2") + ["web2" + READY]),
    ]),
    ("one gone and one new at once: the new one takes the freed slot, no maintenance", THREE,
     started("10.0.0.1", "10.0.0.2", "10.0.0.3"), HOLDS, [
        (10, ok("10.0.0.1", "10.0.0.3", "10.0.0.9"), moved("web2", "10.0.0.2", "10.0.0.9")),
    ]),
    ("more addresses than slots: the first in order; a freed slot takes the next", THREE,
     started("10.0.0.5", "10.0.0.4", "10.0.0.3", "10.0.0.2", "10.0.0.1"), HOLDS, [
        (10, ok("10.0.0.5", "10.0.0.4", "10.0.0.3", "10.0.0.1"),
         moved("web2", "10.0.0.2", "10.0.0.4")),
    ]),
    ("the hold runs out for every slot; back with two old addresses and a new one", THREE,
     started("10.0.0.1", "10.0.0.2", "10.0.0.3"), HOLDS, [
        (10, NO_NAME, ["warning: be/web1..web3: web.test does not resolve: nx (Name or service "
                       "not known); its servers keep their addresses for at most 30s"]),
        (30, NO_NAME, ["web1: maintenance (DNS NX status)", "web2: maintenance (DNS NX status)",
                       "web3: maintenance (DNS NX status)"]),
        (40, ok("10.0.0.4", "10.0.0.3", "10.0.0.2"),
         [WEB_BACK] + moved("web1", "10.0.0.1", "10.0.0.4") +
         ["web1" + READY, "web2" + READY, "web3" + READY]),
    ]),
    ("slots left empty stay in maintenance through a failure", THREE,
     started("10.0.0.1"), HOLDS, [
        (10, NO_NAME, ["warning: be/web1..web3: web.test does not resolve: nx (Name or service "
                       "not known); its servers keep their addresses for at most 30s"]),
        (30, NO_NAME, ["web1: maintenance (DNS NX status)"]),
    ]),
]


def make_resolution(servers, holds=HOLDS, prefer="ipv6"):
    host = "app.test" if len(servers) == 1 else "web.test"
    return NameResolution("be", host, servers, prefer, holds)


@pytest.mark.parametrize("what, servers, start, holds, steps", SCENARIOS,
                         ids=[scenario[0] for scenario in SCENARIOS])
def test_name_resolution(what, servers, start, holds, steps):
    resolution = make_resolution(servers, holds)
    resolution.start(start, 0.0)
    for now, result, expected in steps:
        assert [render(action) for action in resolution.update(result, now)] == expected, now


def addresses_of(resolution):
    return [address and address.ip for address in map(resolution.address_of, resolution.servers)]


@pytest.mark.parametrize("start, servers, prefer, slots", [
    (started("10.0.0.2", "10.0.0.1"), THREE, "ipv6", ["10.0.0.1", "10.0.0.2", None]),
    (started("10.0.0.1", "2001:db8::2", "2001:db8::1"), THREE, "ipv6",
     ["2001:db8::1", "2001:db8::2", "10.0.0.1"]),
    (started("10.0.0.1", "2001:db8::2", "2001:db8::1"), THREE, "ipv4",
     ["10.0.0.1", "2001:db8::1", "2001:db8::2"]),
    (started("10.0.0.1", "2001:db8::1"), ONE, "ipv6", ["2001:db8::1"]),     # HAProxy's default
    (started("10.0.0.1", "2001:db8::1"), ONE, "ipv4", ["10.0.0.1"]),
    (started("10.0.0.10", "10.0.0.9", "10.0.0.100"), THREE, "ipv6",     # by value, not text
     ["10.0.0.9", "10.0.0.10", "10.0.0.100"]),
    (started(method="none"), ONE, "ipv6", [None]),
])
def test_start_fills_slots_in_a_fixed_order(start, servers, prefer, slots):
    resolution = make_resolution(servers, prefer=prefer)
    assert resolution.start(start, 0.0) == []
    assert addresses_of(resolution) == slots


@pytest.mark.parametrize("start, notice", [
    (started(method="none", failure=NO_NAME),
     "be/s1: app.test does not resolve: nx (Name or service not known); in maintenance until it "
     "does (init-addr none)"),
    (started("192.0.2.1", method="ip", failure=NO_ANSWER),
     "be/s1: app.test does not resolve: timeout (Temporary failure in name resolution); "
     "starting with 192.0.2.1 from init-addr ip"),
])
def test_a_name_that_does_not_resolve_at_start_is_logged_once(start, notice):
    resolution = make_resolution(ONE)
    assert resolution.start(start, 0.0) == [Notice(logging.WARNING, notice)]
    assert resolution.status == start.failure.failure
    assert resolution.update(start.failure, 5.0) == []


def test_init_addr_last_puts_each_server_back_in_its_own_slot():
    """After a reload, slots filled over time (not in sorted order) stay as they were."""
    resolution = make_resolution(THREE)
    last = (ip_address("10.0.0.9"), None, ip_address("10.0.0.1"))
    assert resolution.start(StartAddresses("last", last, None), 0.0) == []
    assert addresses_of(resolution) == ["10.0.0.9", None, "10.0.0.1"]
    actions = resolution.update(ok("10.0.0.1", "10.0.0.5", "10.0.0.9"), 10.0)
    assert [render(action) for action in actions] == (moved("web2", None, "10.0.0.5") +
                                                      ["web2" + READY])


def test_a_lapsed_server_remembers_its_address():
    resolution = make_resolution(ONE)
    resolution.start(started("10.0.0.1"), 0.0)
    resolution.update(NO_NAME, 30.0)
    assert addresses_of(resolution) == ["10.0.0.1"]
    assert resolution.status == NX


ANSWERS = [("10.0.0.1", "10.0.0.2"), ("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5"),
           ("10.0.0.5", "2001:db8::7"), ("10.0.0.1", "10.0.0.5", "10.0.0.6"), ("10.0.0.9",)]


@pytest.mark.parametrize("seed", range(5))
def test_instances_seeing_the_same_answers_fill_the_same_slots(seed):
    """Whatever order the resolver lists the addresses in, step after step."""
    reference, shuffled = make_resolution(THREE), make_resolution(THREE)
    for resolution in (reference, shuffled):
        resolution.start(started(), 0.0)
    for step, addresses in enumerate(ANSWERS, 1):
        permutations = list(itertools.permutations(addresses))
        reference.update(ok(*addresses), step)
        shuffled.update(ok(*permutations[(seed * 7 + step) % len(permutations)]), step)
        assert addresses_of(shuffled) == addresses_of(reference)


@pytest.mark.parametrize("slots, answer, assigned", [
    ([None, None], [], [None, None]),
    ([None, None], ["10.0.0.1"], ["10.0.0.1", None]),
    (["10.0.0.2", None], ["10.0.0.1", "10.0.0.2"], ["10.0.0.2", "10.0.0.1"]),
    (["10.0.0.2", "10.0.0.1"], ["10.0.0.3"], ["10.0.0.3", None]),
    ([None, "10.0.0.1", None], ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4"],
     ["10.0.0.2", "10.0.0.1", "10.0.0.3"]),
])
def test_assign_slots(slots, answer, assigned):
    current = [text and ip_address(text) for text in slots]
    ordered = preference_order(ok(*answer).addresses, "ipv4")
    assert [a and a.ip for a in assign_slots(current, ordered)] == assigned


# -- init-addr, which servers are followed, and the lookup itself ---------------------------------

A, B = ip_address("192.0.2.1"), ip_address("2001:db8::1")


@pytest.mark.parametrize("init_addr, last, libc, expected, looked_up", [
    (("last", "libc"), (A,), ok("192.0.2.9"), StartAddresses("last", (A,), None), False),
    (("last", "libc"), (None, B), ok("192.0.2.9"), StartAddresses("last", (None, B), None), False),
    (("last", "libc"), (), ok("192.0.2.1"), StartAddresses("libc", (A,), None), True),
    (("last", "libc"), (None, None), ok("192.0.2.1"), StartAddresses("libc", (A,), None), True),
    (("last", "libc"), (), NO_NAME, StartAddresses(None, (), NO_NAME), True),
    (("last", "libc", "none"), (), NO_NAME, StartAddresses("none", (), NO_NAME), True),
    (("libc", "2001:db8::1"), (), NO_ANSWER, StartAddresses("ip", (B,), NO_ANSWER), True),
    (("none", "libc"), (), ok("192.0.2.1"), StartAddresses("none", (), None), False),
    (("2001:db8::1", "libc"), (), ok("192.0.2.1"), StartAddresses("ip", (B,), None), False),
])
def test_initial_addresses(init_addr, last, libc, expected, looked_up):
    calls = []

    def resolve():
        calls.append(1)
        return libc
    assert initial_addresses(init_addr, last, resolve) == expected
    assert bool(calls) == looked_up


@pytest.mark.parametrize("interval, resolve, template, host_named, period", [
    (None, False, False, True, None),          # today: resolved once at start
    (5.0, False, False, True, 5.0),            # the interval follows every host name
    (5.0, True, True, False, None),            # an IP address or unix@ path: nothing to follow
    (None, True, False, True, 10.0),           # `resolve` alone: HAProxy's hold valid
    (None, False, True, True, 10.0),           # a template always follows its name
    (2.0, True, True, True, 2.0),
])
def test_resolve_period(interval, resolve, template, host_named, period):
    assert resolve_period(interval, resolve, template, host_named) == period


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", ok("127.0.0.1")),
    ("::1", ok("::1")),
])
def test_lookup_without_a_dns_server(host, expected):
    """Names that need no DNS server; NX and timeouts are in test_dnslab.py."""
    assert lookup(host) == expected


def test_lookup_of_a_name_the_resolver_cannot_take_says_so():
    result = lookup("a" * 64 + ".example")        # a label longer than 63: IDNA refuses it
    assert result[:2] == ((), OTHER)
    assert "too long" in result.detail            # Python's words, which vary by version


# -- with a real resolver: lookups of names the lab's dnsmasq serves -------------------------------

def started_by_libc(lab, host, init_addr="last,libc,none"):
    return initial_addresses(INIT_ADDR_VALUE.parse(init_addr), (), lambda: lab.lookup(host))


def test_a_template_follows_its_name(dns_lab):
    """server-template web = 3 web.test:80: two addresses leave a slot in maintenance, a third
    fills it, and a name that disappears keeps them for hold nx, then takes them out."""
    dns_lab.set_records({"web.test": ["127.0.0.3", "127.0.0.2"]})
    resolution = make_resolution(THREE)
    assert resolution.start(started_by_libc(dns_lab, "web.test"), 0.0) == []
    assert addresses_of(resolution) == ["127.0.0.2", "127.0.0.3", None]

    dns_lab.set_records({"web.test": ["127.0.0.3", "127.0.0.4", "127.0.0.2"]})
    actions = resolution.update(dns_lab.lookup("web.test"), 10.0)
    assert [render(action) for action in actions] == (moved("web3", None, "127.0.0.4") +
                                                      ["web3" + READY])

    dns_lab.set_records({"other.test": ["127.0.0.9"]})
    actions = resolution.update(dns_lab.lookup("web.test"), 20.0)
    assert [render(action) for action in actions] == [
        "warning: be/web1..web3: web.test does not resolve: nx (Name or service not known); its "
        "servers keep their addresses for at most 30s"]
    actions = resolution.update(dns_lab.lookup("web.test"), 40.0)
    assert [render(action) for action in actions] == [
        "web1: maintenance (DNS NX status)", "web2: maintenance (DNS NX status)",
        "web3: maintenance (DNS NX status)"]


def test_init_addr_none_starts_before_the_name_exists(dns_lab):
    resolution = make_resolution(ONE)
    start = started_by_libc(dns_lab, "app.test")
    assert start.method == "none"
    assert [render(notice) for notice in resolution.start(start, 0.0)] == [
        "warning: be/s1: app.test does not resolve: nx (Name or service not known); in "
        "maintenance until it does (init-addr none)"]
    dns_lab.set_records({"app.test": ["127.0.0.5"]})
    actions = resolution.update(dns_lab.lookup("app.test"), 10.0)
    assert [render(action) for action in actions] == (
        [APP_BACK] + moved("s1", None, "127.0.0.5") + ["s1" + READY])


def test_without_none_a_name_that_does_not_resolve_stops_the_start(dns_lab):
    start = started_by_libc(dns_lab, "app.test", init_addr="last,libc")
    assert start == StartAddresses(None, (), LookupResult((), NX, "Name or service not known"))


# -- the proxy following names, end to end: proxy, backends and clients in the lab -------------

BACKEND_PORT = 8080        # the lab's namespace is new and empty: any port is free
PROXY_PORT = 8443


@pytest.fixture
def lab_backends(dns_lab):
    """``start(host, **kwargs)``: a RecordingServer on host:BACKEND_PORT inside the lab; all
    are closed when the test ends."""
    started = []

    def start(host, **kwargs):
        server = in_netns(dns_lab.name, lambda: RecordingServer(host, port=BACKEND_PORT,
                                                                **kwargs))
        started.append(server)
        return server
    yield start
    for server in started:
        server.close()


def lab_proxy(launch, lab, servers, global_lines=("resolve-interval = 100ms",),
              backend_lines=()):
    """A proxy started inside the lab (its resolver asks the lab's dnsmasq), listening on
    127.0.0.1:PROXY_PORT there, with one listen section ``app``."""
    text = "\n".join(["[global]"] + list(global_lines) +
                     ["[listen app]", "bind = 127.0.0.1:%d" % PROXY_PORT, "retries = 0"] +
                     list(backend_lines) + list(servers)) + "\n"
    return launch(text, command_prefix=lab.command())


def lab_exchange(lab, payload):
    """One connection through the proxy in the lab: what came back, or RESET."""
    return in_netns(lab.name, lambda: exchange_or_reset(("127.0.0.1", PROXY_PORT), payload))


def test_new_connections_follow_a_changed_record_while_an_established_one_keeps_flowing(
        dns_lab, lab_backends, launch):
    dns_lab.set_records({"web.test": ["127.0.0.2"]})
    old, new = lab_backends("127.0.0.2", mode="echo"), lab_backends("127.0.0.3", mode="echo")
    proxy = lab_proxy(launch, dns_lab, ["server web = web.test:%d" % BACKEND_PORT])
    established = in_netns(dns_lab.name, lambda: connect(("127.0.0.1", PROXY_PORT)))
    try:
        established.sendall(b"before ")
        assert established.recv(100) == b"before "

        start = len(proxy.lines)
        dns_lab.set_records({"web.test": ["127.0.0.3"]})
        proxy.wait_for("app/web changed its IP from 127.0.0.2 to 127.0.0.3 by DNS", start=start)
        assert lab_exchange(dns_lab, b"new connection") == b"new connection"
        assert new.next_connection().received == b"new connection"

        established.sendall(b"after\x00\xff")
        assert finish(established) == b"after\x00\xff"
    finally:
        established.close()
    assert old.next_connection().received == b"before after\x00\xff"
    assert len(old.accepted) == 1


def test_a_name_that_disappears_keeps_its_address_for_hold_nx_then_goes_to_maintenance(
        dns_lab, lab_backends, launch):
    dns_lab.set_records({"web.test": ["127.0.0.2"]})
    lab_backends("127.0.0.2", reply=b"served")
    proxy = lab_proxy(launch, dns_lab, ["server web = web.test:%d" % BACKEND_PORT],
                      ["resolve-interval = 100ms", "resolve-hold-nx = 3s"])
    dns_lab.set_records({})
    failed = proxy.wait_for("web.test does not resolve")
    assert failed.endswith("app/web: web.test does not resolve: nx (Name or service not known); "
                           "its servers keep their addresses for at most 3s")
    assert lab_exchange(dns_lab, b"still there?") == b"served"       # within hold nx

    proxy.wait_for("server app/web is MAINT, reason: DNS NX status, 0 active and 0 backup "
                   "servers left")
    assert lab_exchange(dns_lab, b"anyone?") in (b"", RESET)          # no server: closed
    dns_lab.set_records({"web.test": ["127.0.0.2"]})
    proxy.wait_for("server app/web is UP, reason: valid DNS answer")
    assert lab_exchange(dns_lab, b"back?") == b"served"
    # About thirty failed lookups, one line: the failure is logged when it starts.
    assert len(proxy.log_lines("does not resolve")) == 1
    assert len(proxy.log_lines("web.test resolves again")) == 1


def test_a_template_leaves_a_slot_without_an_address_in_maintenance_until_one_comes(
        dns_lab, lab_backends, launch):
    dns_lab.set_records({"web.test": ["127.0.0.3", "127.0.0.2"]})
    backends = {ip: lab_backends(ip, reply=ip.encode())
                for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4")}
    proxy = lab_proxy(launch, dns_lab, ["server-template web = 3 web.test:%d" % BACKEND_PORT])
    served = [lab_exchange(dns_lab, b"which?") for _ in range(4)]
    assert sorted(served) == [b"127.0.0.2", b"127.0.0.2", b"127.0.0.3", b"127.0.0.3"]

    dns_lab.set_records({"web.test": ["127.0.0.3", "127.0.0.4", "127.0.0.2"]})
    proxy.wait_for("app/web3 changed its IP from none to 127.0.0.4 by DNS")
    proxy.wait_for("server app/web3 is UP, reason: valid DNS answer, 3 active and 0 backup "
                   "servers online")
    served = [lab_exchange(dns_lab, b"which?") for _ in range(3)]
    assert sorted(served) == [b"127.0.0.2", b"127.0.0.3", b"127.0.0.4"]
    assert len(backends["127.0.0.4"].accepted) == 1
    assert not proxy.log_lines("web1 changed") and not proxy.log_lines("web2 changed")


def test_init_addr_none_starts_without_the_name_and_serves_once_it_resolves(
        dns_lab, lab_backends, launch):
    lab_backends("127.0.0.5", reply=b"served")
    proxy = lab_proxy(launch, dns_lab, ["server s1 = app.test:%d init-addr libc,none resolve"
                                        % BACKEND_PORT], global_lines=())
    assert proxy.log_lines("app/s1: app.test does not resolve: nx (Name or service not known); "
                           "in maintenance until it does (init-addr none)")
    assert lab_exchange(dns_lab, b"anyone?") in (b"", RESET)
    dns_lab.set_records({"app.test": ["127.0.0.5"]})
    # `resolve` without resolve-interval: looked up every 10s (HAProxy's hold valid).
    proxy.wait_for("server app/s1 is UP, reason: valid DNS answer", timeout=10 + TIMING_MARGIN)
    assert lab_exchange(dns_lab, b"now?") == b"served"


# -- with workers: the checking worker resolves for all (master.py) -----------------------------

def lab_exchanges(lab, payload, count):
    """``count`` connections through the proxy in the lab at once, so that every worker gets
    some: the replies."""
    with ThreadPoolExecutor(count, initializer=enter_netns, initargs=(lab.name,)) as pool:
        return list(pool.map(lambda _: exchange_or_reset(("127.0.0.1", PROXY_PORT), payload),
                             range(count)))


def test_with_two_workers_both_follow_the_name_that_one_of_them_looks_up(
        dns_lab, lab_backends, launch):
    dns_lab.set_records({"web.test": ["127.0.0.2"]})
    lab_backends("127.0.0.2", reply=b"old")
    lab_backends("127.0.0.3", reply=b"new")
    proxy = lab_proxy(launch, dns_lab, ["server web = web.test:%d" % BACKEND_PORT],
                      ["workers = 2", "resolve-interval = 100ms"])
    proxy.wait_for("generation 1 serves with 2 worker(s)")
    start = len(proxy.lines)
    dns_lab.set_records({"web.test": ["127.0.0.3"]})
    proxy.wait_for("app/web changed its IP from 127.0.0.2 to 127.0.0.3 by DNS", start=start)

    def both_workers_send_every_client_to_the_new_address():
        """A batch of clients that both workers served, every one of them to 127.0.0.3. The
        worker that looked the name up logs the change before its sibling has it from the
        master, so the first batch may still meet the old address there."""
        served_before = len(proxy.log_lines("be=app/web"))
        replies = lab_exchanges(dns_lab, b"which?", 20)
        wait_until(lambda: len(proxy.log_lines("be=app/web")) >= served_before + 20,
                   what="the 20 connections' log lines")
        served_by = {line.split("[")[1].split("]")[0]
                     for line in proxy.log_lines("be=app/web")[served_before:]}
        return len(served_by) == 2 and replies == [b"new"] * 20
    wait_until(both_workers_send_every_client_to_the_new_address, timeout=20, interval=0.1,
               what="both workers to send every client to the new address")
    assert len(proxy.log_lines("changed its IP")) == 1           # one worker looked it up


def test_a_reload_starts_from_the_last_addresses_when_the_name_does_not_resolve(
        dns_lab, lab_backends, launch, tmp_path):
    """init-addr last (in the default last,libc): the master hands the new workers the
    addresses the old ones had, so a name that fails at that moment fails no reload; show
    servers state says where the server is and what the last lookup said."""
    dns_lab.set_records({"web.test": ["127.0.0.2"]})
    lab_backends("127.0.0.3", reply=b"moved")
    sock = str(tmp_path / "admin.sock")
    proxy = lab_proxy(launch, dns_lab, ["server web = web.test:%d" % BACKEND_PORT],
                      ["workers = 2", "resolve-interval = 100ms", "stats socket = %s" % sock])
    dns_lab.set_records({"web.test": ["127.0.0.3"]})
    proxy.wait_for("app/web changed its IP from 127.0.0.2 to 127.0.0.3 by DNS")
    dns_lab.set_records({})
    proxy.wait_for("web.test does not resolve: nx")

    def web_state():
        lines = ask(sock, "show servers state app\n").splitlines()
        row = [line.split() for line in lines if line.startswith("1 app ")][0]
        return (row[4], row[6], row[17], row[18],      # addr, admin state, fqdn, port
                [line for line in lines if line.startswith("# resolution ")])
    wait_until(lambda: web_state() == ("127.0.0.3", "0", "web.test", "8080",
                                       ["# resolution app/web nx"]),
               what="show servers state to say 127.0.0.3, nx")
    proxy.proc.send_signal(signal.SIGHUP)
    proxy.wait_for("generation 2 serves with 2 worker(s)")
    assert not proxy.log_lines("reload aborted")
    assert lab_exchanges(dns_lab, b"which?", 10) == [b"moved"] * 10
    assert web_state()[:4] == ("127.0.0.3", "0", "web.test", "8080")
