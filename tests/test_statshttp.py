"""The stats listener's HTTP exchanges: routes, auth, bad and oversized requests."""
import base64

import pytest

from simpleproxy.statsconfig import StatsAuth, StatsHttpSettings
from simpleproxy.statshttp import MAX_REQUEST, StatsHttpExchange
from stats_support import ReferenceTarget

SETTINGS = StatsHttpSettings(None, None, 5, "simpleproxy")
AUTHED = SETTINGS._replace(auth=StatsAuth("admin", "s3cret"))


def request(head, settings=SETTINGS, target=None):
    exchange = StatsHttpExchange(target or ReferenceTarget(), settings)
    response = exchange.feed(head)
    assert exchange.closed
    status_line, _, rest = response.partition(b"\r\n")
    headers, _, body = rest.partition(b"\r\n\r\n")
    fields = dict(line.split(": ", 1) for line in headers.decode().split("\r\n"))
    assert fields["Connection"] == "close"
    assert int(fields["Content-Length"]) == len(body) or head.startswith(b"HEAD")
    return int(status_line.split()[1]), fields, body


def get(path, auth=None, settings=SETTINGS, target=None):
    head = "GET %s HTTP/1.1\r\nHost: x\r\n" % path
    if auth:
        head += "Authorization: Basic %s\r\n" % base64.b64encode(auth.encode()).decode()
    return request((head + "\r\n").encode(), settings, target)


@pytest.mark.parametrize("path, status, content_type", [
    ("/", 200, "text/html; charset=utf-8"),
    ("/;csv", 200, "text/plain"),
    ("/?stats;csv", 200, "text/plain"),
    ("/metrics", 200, "text/plain; version=0.0.4"),
    ("/health", 200, "text/plain"),
    ("/nothing", 404, "text/plain"),
])
def test_routes(path, status, content_type):
    got, fields, _ = get(path)
    assert (got, fields["Content-Type"]) == (status, content_type)


def test_csv_is_show_stat():
    _, _, body = get("/;csv")
    assert body.startswith(b"# pxname,svname,qcur,") and body.endswith(b",\n")
    assert body.count(b"\n") == 9     # the header and 8 rows, no empty line (as HAProxy's)


@pytest.mark.parametrize("path, auth, status", [
    ("/", None, 401), ("/", "admin:wrong", 401), ("/", "admin:s3cret", 200),
    ("/metrics", None, 401), ("/metrics", "admin:s3cret", 200), ("/;csv", None, 401),
    ("/health", None, 200),
])
def test_basic_auth_protects_all_but_health(path, auth, status):
    got, fields, _ = get(path, auth, AUTHED)
    assert got == status
    if status == 401:
        assert fields["WWW-Authenticate"] == 'Basic realm="simpleproxy"'


def test_realm_is_quoted():
    settings = AUTHED._replace(name='my "edge" \\ box')
    assert get("/", settings=settings)[1]["WWW-Authenticate"] == \
        'Basic realm="my \\"edge\\" \\\\ box"'


def test_health_says_503_once_stopping():
    target = ReferenceTarget()
    target.stats.stopping = True
    assert get("/health", target=target)[0] == 503


@pytest.mark.parametrize("head, status", [
    (b"POST / HTTP/1.1\r\n\r\n", 405),
    (b"GET / HTTP/2.0\r\n\r\n", 400),
    (b"GET /\r\n\r\n", 400),
    (b"GET / HTTP/1.1\r\nno colon here\r\n\r\n", 400),
    (b"GET nothing HTTP/1.1\r\n\r\n", 400),
    (b"HEAD / HTTP/1.0\r\n\r\n", 200),
])
def test_bad_requests(head, status):
    assert request(head)[0] == status


def test_head_has_no_body():
    _, fields, body = request(b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert body == b"" and int(fields["Content-Length"]) > 100


def test_request_size_is_bounded():
    exchange = StatsHttpExchange(ReferenceTarget(), SETTINGS)
    assert exchange.feed(b"GET / HTTP/1.1\r\nX: " + b"a" * (MAX_REQUEST - 20)) == b""
    response = exchange.feed(b"a" * 100)
    assert response.startswith(b"HTTP/1.1 413 ") and exchange.closed
    assert exchange.feed(b"more") == b""


def test_request_in_pieces_and_early_close():
    exchange = StatsHttpExchange(ReferenceTarget(), SETTINGS)
    assert exchange.feed(b"GET /hea") == b""
    assert exchange.feed(b"lth HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 200 OK\r\n")
    cut = StatsHttpExchange(ReferenceTarget(), SETTINGS)
    cut.feed(b"GET / HT")
    assert cut.eof().startswith(b"HTTP/1.1 400 ")
