"""The balancer on its own: tables of picks, loads and states, with seeded random sources."""
import random

import pytest

from simpleproxy.balancer import (ADMIN_TRANSITIONS, DOWN, DRAIN, MAINT, READY, SERVER_STATES, UP,
                                  BackendPool)
from simpleproxy.config import parse_config

ALGORITHMS = ("roundrobin", "static-rr", "leastconn", "first", "source", "random")
CLIENT = ("203.0.113.7", 5555)


def make_pool(balance, servers, extra="", seed=1):
    """A BackendPool for servers s1, s2, ... with the given option strings, read as a user
    would write them."""
    lines = ["[frontend f]", "bind = :8000", "default_backend = b", "[backend b]",
             "balance = %s" % balance, extra]
    lines += ["server s%d = 127.0.0.1:%d %s" % (n, 9000 + n, options)
              for n, options in enumerate(servers, 1)]
    return BackendPool(parse_config("\n".join(lines)).backends["b"], random.Random(seed))


def server(pool, name):
    return next(state for state in pool.servers if state.config.name == name)


def names(picks):
    return " ".join(state.config.name if state is not None else "-" for state in picks)


def pick_names(pool, count, client=CLIENT, exclude=()):
    return names(pool.pick(client, exclude) for _ in range(count))


# -- the order of picks ---------------------------------------------------------------------------

SEQUENCES = [
    # (servers' options, the first picks); the same for roundrobin and static-rr
    (["", "", ""], "s1 s2 s3 s1 s2 s3"),
    (["weight 3", "weight 1"], "s1 s1 s2 s1 s1 s1 s2 s1"),
    (["weight 5", "weight 1", "weight 1"], "s1 s2 s1 s1 s1 s3 s1 s1 s2 s1 s1 s1 s3 s1"),
    (["weight 2", "weight 0", "weight 1"], "s1 s3 s1 s1 s3 s1"),      # weight 0: no connections
    (["", "disabled", ""], "s1 s3 s1 s3"),
    (["weight 3", "weight 2", "weight 1"], "s1 s2 s1 s3 s2 s1 s1 s2 s1 s3 s2 s1"),
]


@pytest.mark.parametrize("balance", ["roundrobin", "static-rr"])
@pytest.mark.parametrize("servers, expected", SEQUENCES)
def test_round_robin_order(balance, servers, expected):
    pool = make_pool(balance, servers)
    assert pick_names(pool, len(expected.split())) == expected


@pytest.mark.parametrize("balance", ["roundrobin", "static-rr"])
@pytest.mark.parametrize("seed", range(20))
def test_round_robin_is_smooth(balance, seed):
    """At every point of a run, every server is within about one connection of its weighted
    share (nginx's smooth round robin reaches 0.99 on such tables, this 1.02)."""
    rng = random.Random(seed)
    weights = [rng.randint(1, 20) for _ in range(rng.randint(2, 8))]
    pool = make_pool(balance, ["weight %d" % weight for weight in weights])
    total = sum(weights)
    counts = dict.fromkeys(pool.servers, 0)
    for picked in range(1, 3 * total + 1):
        counts[pool.pick(CLIENT)] += 1
        for state, weight in zip(pool.servers, weights):
            assert abs(counts[state] - picked * weight / total) < 1.25, (weights, picked)
    assert [counts[state] for state in pool.servers] == [3 * weight for weight in weights]


def test_roundrobin_server_coming_back_does_not_catch_up():
    pool = make_pool("roundrobin", ["", "", ""])
    s3 = server(pool, "s3")
    pool.set_health(s3, False)
    assert pick_names(pool, 10) == "s1 s2 s1 s2 s1 s2 s1 s2 s1 s2"
    pool.set_health(s3, True)
    picks = [pool.pick(CLIENT) for _ in range(30)]
    # Level with the others from the start: never more than one turn ahead or behind.
    for end in range(3, 31, 3):
        window = picks[:end]
        assert max(window.count(state) for state in pool.servers) - \
            min(window.count(state) for state in pool.servers) <= 1


def test_leastconn_follows_the_load():
    pool = make_pool("leastconn", ["", "", "weight 2"])
    s1, s2, s3 = pool.servers
    assert pick_names(pool, 3) == "s3 s3 s3"         # idle: (0 + 1) / 2 beats (0 + 1) / 1
    pool.connection_started(s3)
    assert pick_names(pool, 4) == "s1 s2 s3 s1"      # (1 + 1) / 2 ties with 1 / 1: in turns
    for state in (s1, s2, s3, s3, s3):
        pool.connection_started(state)
    # s1 and s2 have 1 connection, s3 4 for weight 2: (4 + 1) / 2 loses to (1 + 1) / 1.
    assert pick_names(pool, 2) == "s2 s1"
    pool.connection_ended(s3)
    pool.connection_ended(s3)
    assert pick_names(pool, 1) == "s3"


def test_first_fills_servers_in_order():
    pool = make_pool("first", ["maxconn 2", "maxconn 1", ""])
    taken = []
    for _ in range(4):
        state = pool.pick(CLIENT)
        pool.connection_started(state)
        taken.append(state)
    assert names(taken) == "s1 s1 s2 s3"
    pool.connection_ended(taken[0])
    assert pick_names(pool, 1) == "s1"


class ScriptedDraws(object):
    """A random source whose weighted draws come from a script, one pair per pick."""

    def __init__(self, pairs):
        self.pairs = list(pairs)

    def choices(self, population, weights=None, cum_weights=None, k=1):
        return [population[index] for index in self.pairs.pop(0)]


@pytest.mark.parametrize("draws, loads, expected", [
    ((0, 1), (0, 0, 0), "s1"),          # equal loads: the first draw
    ((0, 1), (3, 1, 0), "s2"),          # the less loaded of the two, not the least of all
    ((2, 2), (0, 0, 5), "s3"),          # both draws the same server: it is the choice
    ((0, 2), (1, 9, 1), "s1"),
])
def test_random_takes_the_less_loaded_of_two_draws(draws, loads, expected):
    backend = make_pool("random", ["", "", ""]).backend
    pool = BackendPool(backend, ScriptedDraws([draws]))
    for state, load in zip(pool.servers, loads):
        for _ in range(load):
            pool.connection_started(state)
    assert pick_names(pool, 1) == expected


def test_random_is_weighted_and_seeded():
    picks = pick_names(make_pool("random", ["weight 1", "weight 3"], seed=7), 400).split()
    assert 0 < picks.count("s1") < picks.count("s2")
    assert pick_names(make_pool("random", ["", "", ""], seed=3), 50) == \
        pick_names(make_pool("random", ["", "", ""], seed=3), 50)


# -- source: consistent hashing -------------------------------------------------------------------

CLIENTS = [("198.51.%d.%d" % (n // 200, n % 200 + 1), 40000 + n) for n in range(600)]


def owners(pool, clients=CLIENTS):
    return {client[0]: pool.pick(client).config.name for client in clients}


def test_source_is_stable_for_a_client_and_across_proxies():
    first = owners(make_pool("source", ["", "", ""]))
    again = owners(make_pool("source", ["", "", ""], seed=99))
    assert first == again
    assert set(first.values()) == {"s1", "s2", "s3"}
    pool = make_pool("source", ["", "", ""])
    # Its port, and how the address is spelled, do not matter.
    picks = {pool.pick(client).config.name for client in [
        ("192.0.2.9", 1), ("192.0.2.9", 65535), ("::ffff:192.0.2.9", 80)]}
    assert len(picks) == 1
    assert pool.pick(("2001:db8::1", 1)) is pool.pick(("2001:db8:0:0::1", 2))


def test_source_moves_only_the_dead_servers_clients():
    pool = make_pool("source", ["", "", ""])
    before = owners(pool)
    pool.set_health(server(pool, "s2"), False)
    during = owners(pool)
    moved = {client for client in before if before[client] != during[client]}
    assert moved == {client for client, name in before.items() if name == "s2"}
    assert {during[client] for client in moved} == {"s1", "s3"}   # spread, not piled on one
    pool.set_health(server(pool, "s2"), True)
    assert owners(pool) == before


def test_source_shares_follow_weights():
    shares = list(owners(make_pool("source", ["weight 1", "weight 2", "weight 1"])).values())
    assert 0.4 < shares.count("s2") / len(shares) < 0.6
    assert 0.15 < shares.count("s1") / len(shares) < 0.35


def test_source_without_an_address_spreads():
    pool = make_pool("source", ["", "", ""])
    assert set(pick_names(pool, 30, client="").split()) == {"s1", "s2", "s3"}


# -- what every algorithm must respect ------------------------------------------------------------

@pytest.mark.parametrize("balance", ALGORITHMS)
def test_full_and_excluded_servers_are_passed_over(balance):
    pool = make_pool(balance, ["maxconn 1", "", ""])
    s1, s2, s3 = pool.servers
    pool.connection_started(s1)
    for client in CLIENTS[:60]:
        assert pool.pick(client, exclude=[s2]) is s3
    pool.connection_ended(s1)
    assert {pool.pick(client, exclude=[s2]) for client in CLIENTS[:60]} <= {s1, s3}


@pytest.mark.parametrize("balance", ALGORITHMS)
def test_all_full_means_queue_and_none_usable_means_no_server(balance):
    pool = make_pool(balance, ["maxconn 1", "maxconn 2"])
    s1, s2 = pool.servers
    for state in (s1, s2, s2):
        pool.connection_started(state)
    assert pool.pick(CLIENT) is None and pool.candidates         # full: the caller queues
    pool.connection_ended(s2)
    assert pool.pick(CLIENT) is s2
    pool.set_health(s1, False)
    pool.set_health(s2, False)
    assert pool.pick(CLIENT) is None and not pool.candidates     # nothing usable


@pytest.mark.parametrize("balance", ALGORITHMS)
def test_weight_zero_and_down_servers_get_nothing(balance):
    pool = make_pool(balance, ["weight 0", "", ""])
    pool.set_health(server(pool, "s3"), False)
    assert {pool.pick(client).config.name for client in CLIENTS[:60]} == {"s2"}


@pytest.mark.parametrize("balance", ALGORITHMS)
def test_weight_set_at_run_time(balance):
    pool = make_pool(balance, ["", "", ""])
    s1, s2, s3 = pool.servers
    pool.set_weight(s1, 0)
    pool.set_weight(s3, 0)
    assert pool.candidates == [s2]
    assert {pool.pick(client).config.name for client in CLIENTS[:30]} == {"s2"}
    pool.set_weight(s1, 5)
    assert pool.candidates == [s1, s2] and not s3.usable


@pytest.mark.parametrize("balance", ALGORITHMS)
def test_maxconn_set_at_run_time(balance):
    pool = make_pool(balance, ["", "maxconn 1"])
    s1, s2 = pool.servers
    pool.set_maxconn(s1, 1)
    pool.set_maxconn(s2, 0)                       # no limit any more
    pool.connection_started(s1)
    assert {pool.pick(client).config.name for client in CLIENTS[:20]} == {"s2"}
    pool.connection_started(s2)
    pool.connection_started(s2)
    pool.set_maxconn(s2, 2)
    assert pool.pick(CLIENT) is None and pool.candidates         # both full: the caller queues


# -- backups --------------------------------------------------------------------------------------

@pytest.mark.parametrize("down, allbackups, candidates", [
    ((), False, "n1 n2"),
    (("n1",), False, "n2"),
    (("n1", "n2"), False, "b1"),               # the first backup only
    (("n1", "n2"), True, "b1 b2"),             # option allbackups: every backup
    (("n1", "n2", "b1"), False, "b2"),         # the first backup that is up
    (("n1", "n2", "b1", "b2"), True, ""),
    (("b1",), True, "n1 n2"),
])
def test_backups_take_over_only_when_no_normal_server_is_up(down, allbackups, candidates):
    lines = ["[frontend f]", "bind = :8000", "default_backend = b", "[backend b]",
             "option allbackups" if allbackups else "",
             "server n1 = 127.0.0.1:1", "server b1 = 127.0.0.1:3 backup",
             "server n2 = 127.0.0.1:2", "server b2 = 127.0.0.1:4 backup"]
    pool = BackendPool(parse_config("\n".join(lines)).backends["b"])
    for name in down:
        pool.set_health(server(pool, name), False)
    assert names(pool.candidates) == candidates
    normal = len([name for name in ("n1", "n2") if name not in down])
    assert pool.usable_counts() == (normal, 2 - len([n for n in ("b1", "b2") if n in down]))


def test_backup_hands_back_when_a_normal_server_returns():
    pool = make_pool("roundrobin", ["", "backup"])
    s1, backup = pool.servers
    pool.set_health(s1, False)
    assert pick_names(pool, 2) == "s2 s2"
    pool.set_health(s1, True)
    assert pick_names(pool, 2) == "s1 s1"


# -- administrative states ------------------------------------------------------------------------

def test_server_states_table():
    assert SERVER_STATES == {
        (READY, True): UP, (READY, False): DOWN,
        (DRAIN, True): DRAIN, (DRAIN, False): DOWN,
        (MAINT, True): MAINT, (MAINT, False): MAINT,
    }


@pytest.mark.parametrize("start", sorted(ADMIN_TRANSITIONS))
@pytest.mark.parametrize("target", sorted(ADMIN_TRANSITIONS))
def test_admin_transitions(start, target):
    pool = make_pool("roundrobin", ["disabled" if start == MAINT else "", ""])
    s1 = pool.servers[0]
    if start == DRAIN:
        pool.set_admin(s1, DRAIN)
    if target == start:
        with pytest.raises(ValueError):
            pool.set_admin(s1, target)
        return
    assert pool.set_admin(s1, target) is True
    assert s1.status == SERVER_STATES[target, True]
    assert (s1 in pool.candidates) == (target == READY)


def test_drain_survives_a_failed_and_recovered_health_check():
    pool = make_pool("roundrobin", ["", ""])
    s1 = pool.servers[0]
    pool.set_admin(s1, DRAIN)
    assert pick_names(pool, 2) == "s2 s2"
    assert pool.set_health(s1, False) and s1.status == DOWN
    assert pool.set_health(s1, True) and s1.status == DRAIN     # still draining, not UP
    assert pool.set_health(s1, True) is False
    pool.set_admin(s1, READY)
    assert s1.status == UP and s1 in pool.candidates


def test_dns_maintenance_is_kept_apart_from_the_operators():
    """A server without an address (service discovery's maintenance) stays out whatever the
    operator sets, and comes back to what the operator set when it has one again."""
    pool = make_pool("roundrobin", ["", ""])
    s1 = pool.servers[0]
    assert pool.set_dns_maint(s1, True) and s1.status == MAINT
    assert pick_names(pool, 2) == "s2 s2"
    pool.set_admin(s1, MAINT)
    assert pool.set_admin(s1, READY) is False and s1.status == MAINT   # READY cannot bring it in
    pool.set_admin(s1, DRAIN)
    assert pool.set_dns_maint(s1, False) and s1.status == DRAIN
    pool.set_admin(s1, READY)
    assert s1.status == UP and s1 in pool.candidates


def test_a_host_named_server_without_an_address_starts_in_dns_maintenance():
    pool = BackendPool(parse_config("[listen l]\nbind = :8000\nserver s1 = web.test:80\n"
                                    "server s2 = 127.0.0.1:80\n").backends["l"])
    s1, s2 = pool.servers
    assert (s1.address, s1.dns_maint, s1.status) == (None, True, MAINT)
    assert (s2.dns_maint, s2.status, pool.candidates) == (False, UP, [s2])


def test_weight_set_at_run_time_reshapes_the_turn_and_zero_takes_a_server_out():
    pool = make_pool("roundrobin", ["", ""])
    s1, s2 = pool.servers
    assert pool.set_weight(s1, 1) is False                   # the config's weight already
    assert pool.set_weight(s1, 3) is True
    assert sorted(pick_names(pool, 8).split()) == ["s1"] * 6 + ["s2"] * 2
    assert pool.set_weight(s2, 0) is True
    assert s2 not in pool.candidates and pick_names(pool, 3) == "s1 s1 s1"


def test_maxconn_set_at_run_time_fills_a_server_sooner():
    pool = make_pool("first", ["", ""])
    s1 = pool.servers[0]
    assert pool.set_maxconn(s1, 0) is False                  # unlimited, as configured
    assert pool.set_maxconn(s1, 1) is True
    pool.connection_started(pool.pick(CLIENT))
    assert pick_names(pool, 2) == "s2 s2"                    # s1 is full
    pool.set_maxconn(s1, 0)
    assert pick_names(pool, 1) == "s1"


# -- the queue ------------------------------------------------------------------------------------

def test_queue_is_first_in_first_out_and_bounded():
    pool = make_pool("roundrobin", ["maxconn 1"], extra="maxqueue = 2")
    assert pool.first_waiting() is None and not pool.queue_full
    pool.enqueue("a")
    pool.enqueue("b")
    assert pool.queue_full
    pool.dequeue("a")
    pool.dequeue("a")                      # leaving twice (timed out, then closed) is harmless
    pool.enqueue("c")
    assert [pool.first_waiting(), list(pool.waiting)] == ["b", ["b", "c"]]
    unbounded = make_pool("roundrobin", ["maxconn 1"])
    for n in range(1000):
        unbounded.enqueue(n)
    assert not unbounded.queue_full
