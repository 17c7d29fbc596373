"""The stats socket's views: show stat CSV (and typed), show info, show servers state,
show sess and show errors."""
import csv
import io

import pytest

from simpleproxy.admin import SessionView
from simpleproxy.balancer import DRAIN, MAINT, READY
from simpleproxy.discovery import NX, VALID, ip_address
from simpleproxy.resolve import resolved_address
from simpleproxy.stats import HEADER_ERRORS_KEPT
from simpleproxy.statsviews import (STAT_COLUMNS, csv_field, server_status, show_errors,
                                    show_info, show_servers_state, show_sess, show_stat,
                                    show_stat_typed)
from stats_support import START, WALL, ReferenceTarget

HATOP_MIN_COMMAS = 51          # hatop skips CSV rows with fewer commas than this


def rows(text):
    """CSV lines (header first) as lists of fields, without the closing empty field."""
    lines = text.split("\n")
    assert lines[-1] == "", "show stat ends with a line feed"
    return [line.split(",")[:-1] for line in lines[:-1]]


def test_csv_has_all_128_columns_and_every_row_is_hatop_readable():
    text = show_stat(ReferenceTarget().stats, START)
    table = rows(text)
    assert table[0][0] == "# pxname" and len(STAT_COLUMNS) == 128
    for row in table:
        assert len(row) == 128
    for line in text.split("\n")[1:-1]:
        assert line.count(",") >= HATOP_MIN_COMMAS
    assert [(row[0], row[1], row[32]) for row in table[1:]] == [
        ("web", "FRONTEND", "0"), ("app", "s1", "2"), ("app", "s2", "2"), ("app", "s3", "2"),
        ("app", "BACKEND", "1"), ("db", "FRONTEND", "0"), ("db", "d1", "2"),
        ("db", "BACKEND", "1")]


@pytest.mark.parametrize("filters, expected", [
    ((-1, -1, -1), "web/FRONTEND app/s1 app/s2 app/s3 app/BACKEND db/FRONTEND db/d1 db/BACKEND"),
    ((-1, 2, -1), "app/BACKEND db/BACKEND"),              # haproxyadmin's "show stat -1 2 -1"
    ((-1, 1, -1), "web/FRONTEND db/FRONTEND"),
    ((-1, 4, -1), "app/s1 app/s2 app/s3 db/d1"),
    ((2, 4, 2), "app/s2"),
    ((3, 7, -1), "db/FRONTEND db/d1 db/BACKEND"),
    ((9, -1, -1), ""),
])
def test_show_stat_filters(filters, expected):
    table = rows(show_stat(ReferenceTarget().stats, START, *filters))
    assert " ".join("%s/%s" % (row[0], row[1]) for row in table[1:]) == expected


def column(text, proxy, name, field):
    table = rows(text)
    row = next(row for row in table[1:] if row[0] == proxy and row[1] == name)
    return row[STAT_COLUMNS.index(field)]


def test_counters_reach_the_csv():
    target = ReferenceTarget()
    stats = target.stats
    fe = stats.frontends[0]
    be = stats.backend("app")
    s1 = be.servers[0]
    fe.stot += 3
    fe.scur = fe.smax = 2
    fe.bin += 100
    fe.bout += 2000
    fe.ends.update({"normal": 1, "bad-header:malformed": 2, "rejected:untrusted-peer": 1})
    be.econ += 1
    s1.econ += 1
    s1.ends["client-timeout"] += 1
    stats.tick(START + 1)
    text = show_stat(stats, START + 1)
    assert [column(text, "web", "FRONTEND", f) for f in ("scur", "smax", "stot", "bin", "bout",
                                                         "ereq", "dcon", "rate")] == \
        ["2", "2", "3", "100", "2000", "2", "1", "3"]
    assert column(text, "app", "BACKEND", "econ") == "1"
    assert column(text, "app", "s1", "cli_abrt") == "1"


@pytest.mark.parametrize("admin, healthy, health, expected", [
    (READY, True, 4, "UP"),
    (READY, True, 3, "UP 2/3"),
    (READY, False, 1, "DOWN 1/2"),
    (READY, False, 0, "DOWN"),
    (DRAIN, True, 4, "DRAIN"),
    (MAINT, True, 4, "MAINT"),
])
def test_server_status_words(admin, healthy, health, expected):
    target = ReferenceTarget()
    be = target.stats.backend("app")
    s1 = be.servers[0]
    be.pool.set_health(s1.state, healthy)
    if admin != READY:
        be.pool.set_admin(s1.state, admin)
    s1.check_health = health
    assert server_status(s1) == expected


def test_unchecked_server_says_no_check():
    assert server_status(ReferenceTarget().stats.backend("app").servers[1]) == "no check"


def test_a_comma_in_a_value_cannot_shift_columns():
    assert csv_field('refused, "again"') == '"refused, ""again"""'
    target = ReferenceTarget()
    target.stats.backend("app").servers[0].record_check(False, "connection error: a, b", 0, 0)
    text = show_stat(target.stats, START)
    parsed = list(csv.reader(io.StringIO(text)))
    assert all(len(row) == 129 for row in parsed if row)


def test_show_stat_typed_lines():
    lines = show_stat_typed(ReferenceTarget().stats, START, 2, 4, 2).split("\n")
    assert lines[:3] == ["S.2.2.0.pxname.1:KNS:str:app", "S.2.2.1.svname.1:KNS:str:s2",
                         "S.2.2.2.qcur.1:MGP:u32:0"]
    assert "S.2.2.6.slim.1:CLP:u32:10" in lines and "S.2.2.17.status.1:SGP:str:no check" in lines
    assert lines[-2:] == ["S.2.2.99.uweight.1:MaP:u32:3", ""]


def test_show_info_keys_and_name():
    text = show_info(ReferenceTarget().stats, START + 3725, WALL)
    lines = text.splitlines()
    assert lines[:3] == ["Name: simpleproxy", "Version: 0.1.0", "Release_date: -"]
    assert "Uptime: 0d 1h02m05s" in lines and "Maxconn: 1000" in lines and "node: vm" in lines
    assert "description" not in text
    described = show_info(ReferenceTarget(name="HAProxy", description="edge\nbox").stats,
                          START, WALL).splitlines()
    assert described[0] == "Name: HAProxy"
    assert described[described.index("node: vm") + 1] == "description: edge box"


def test_show_servers_state_format():
    target = ReferenceTarget()
    pool = target.stats.backend("app").pool
    pool.set_admin(pool.servers[1], DRAIN)
    lines = show_servers_state(target.stats, START + 7, "app").splitlines()
    assert lines[0] == "1" and lines[1].startswith("# be_id be_name srv_id srv_name srv_addr")
    assert lines[2:] == ["2 app 1 s1 127.0.0.1 2 0 1 1 7 1 3 2 6 0 0 0 - 9001 - 0 0 - - 0",
                         "2 app 2 s2 127.0.0.1 2 8 3 3 7 1 0 0 0 0 0 0 - 9002 - 0 0 - - 0",
                         "2 app 3 s3 127.0.0.1 2 0 1 1 7 1 0 0 0 0 0 0 - 9003 - 0 0 - - 0"]


def test_show_servers_state_says_where_dns_put_a_server_and_what_the_last_lookup_said():
    """srv_addr: the address in use ("-": none yet); srv_fqdn: the name; srv_admin_state 0x20
    (HAProxy's SRV_ADMF_RMAINT): in maintenance for want of an address; then the outcomes in
    comment lines, so that every server line keeps HAProxy's 25 fields."""
    target = ReferenceTarget("[listen app]\nbind = :8000\nserver web = web.test:8080 "
                             "init-addr none\nserver-template t = 2 t.test:80 init-addr none\n")
    pool = target.stats.backend("app").pool
    web, t1, t2 = pool.servers
    web.dns_status = NX
    t1.address = resolved_address(t1.config.address, ip_address("2001:db8::7"))
    pool.set_dns_maint(t1, False)
    t1.dns_status = t2.dns_status = VALID
    lines = show_servers_state(target.stats, START, "app").splitlines()
    rows = [line.split() for line in lines[2:5]]
    assert all(len(row) == 25 for row in rows)
    assert [row[3:7] + row[17:19] for row in rows] == [
        ["web", "-", "2", "32", "web.test", "8080"],
        ["t1", "2001:db8::7", "2", "0", "t.test", "80"],
        ["t2", "-", "2", "32", "t.test", "80"]]
    assert lines[5:] == ["# resolution app/web nx", "# resolution app/t1 valid",
                         "# resolution app/t2 valid"]


def test_show_sess_escapes_what_clients_control():
    view = SessionView(0x10, "203.0.113.7:5555", "127.0.0.1:4000", "web", "app", "s1", "RELAY",
                       START, 12, 34, "v2/TCP4", (("authority", "a b\r\nc"), ("alpn", b"h2")))
    assert show_sess([view], START + 3) == (
        "0x10: src=203.0.113.7:5555 peer=127.0.0.1:4000 fe=web be=app srv=s1 state=RELAY age=3s "
        "bytes_in=12 bytes_out=34 pp=v2/TCP4 authority=a\\x20b\\x0d\\x0ac alpn=h2\n")


def test_header_error_ring_is_fixed_size_and_escapes():
    stats = ReferenceTarget().stats
    for n in range(HEADER_ERRORS_KEPT + 5):
        stats.header_errors.record(WALL + n, "web", "10.0.0.%d:5" % n, "malformed",
                                   "bad \x1b[31m", b"PROXY \x00\xff" + b"x" * 200)
    text = show_errors(stats, WALL)
    assert text.startswith("Total events captured on [") and text.count("event #") == 32
    assert "event #6\n" in text and "event #5\n" not in text
    assert "\x1b" not in text and "bad\\x20\\x1b[31m" in text
    assert "  00000  50 52 4f 58 59 20 00 ff 78 78 78 78 78 78 78 78  PROXY ..xxxxxxxx\n" in text
    assert "208 bytes received, the first 64:" in text
