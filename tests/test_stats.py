"""The counters model: check statuses, state changes, downtime, rates and sparklines."""
import pytest

from simpleproxy.balancer import DOWN
from simpleproxy.stats import SPARK_EVERY, SPARK_SAMPLES, check_status
from stats_support import START, ReferenceTarget


@pytest.mark.parametrize("reason, status", [
    ("layer4 check passed", "L4OK"), ("layer7 check passed", "L7OK"),
    ("connection refused", "L4CON"), ("connection timeout", "L4TOUT"),
    ("connection error: No route to host", "L4CON"), ("response timeout", "L7TOUT"),
    ("response did not match", "L7RSP"), ("no check made: Too many open files", "SOCKERR"),
])
def test_check_status_codes(reason, status):
    assert check_status(reason) == status


@pytest.mark.parametrize("ok, reason, chkfail, status", [
    (True, "layer4 check passed", 0, "L4OK"),
    (False, "connection refused", 1, "L4CON"),
    (None, "no check made: Too many open files", 0, "SOCKERR"),
])
def test_record_check(ok, reason, chkfail, status):
    srv = ReferenceTarget().stats.backend("app").servers[0]
    srv.record_check(ok, reason, 0.0125, 3)
    assert (srv.chkfail, srv.check_status, srv.check_duration, srv.check_health,
            srv.last_check) == (chkfail, status, 12, 3, reason)


def test_state_changes_count_downtime_and_chkdown():
    be = ReferenceTarget().stats.backend("app")
    s1 = be.servers[0]
    s1.record_check(False, "connection refused", 0.003, 0)
    be.pool.set_health(s1.state, False)
    s1.state_changed(START + 10, "UP", by_check=True)
    assert (s1.down_since, s1.chkdown, s1.lastchg) == (START + 10, 1, START + 10)
    be.pool.set_health(s1.state, True)
    s1.state_changed(START + 25, DOWN, by_check=True)
    assert (s1.chkfail, s1.chkdown, s1.total_downtime(START + 30), s1.lastchg) == \
        (1, 1, 15.0, START + 25)


def test_rates_and_sparklines_are_bounded():
    stats = ReferenceTarget().stats
    fe = stats.frontends[0]
    for second in range(1, SPARK_EVERY * (SPARK_SAMPLES + 10) + 1):
        fe.stot += second % 7
        fe.bin += 10
        stats.cum_conns += 2
        stats.tick(START + second)
    assert fe.rate_max == 6 and stats.conn_rate == 2
    assert len(fe.spark_sessions) == len(fe.spark_bytes) == SPARK_SAMPLES
    assert set(fe.spark_bytes) == {10 * SPARK_EVERY}


def test_backend_downtime_follows_its_candidates():
    target = ReferenceTarget()
    be = target.stats.backend("db")
    target.now = START + 10
    target.set_server("db", "d1", weight=0)
    assert not be.up and be.lastchg == START + 10
    target.now = START + 40
    target.set_server("db", "d1", weight=1)
    assert be.up and be.lastchg == START + 40 and be.total_downtime(START + 50) == 30.0
