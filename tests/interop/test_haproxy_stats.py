"""simpleproxy's stats views against a real HAProxy 2.6: the CSV header, the show info keys and
the servers state header must be HAProxy's own, and each row type may fill only columns that
HAProxy fills for the same kind of row."""
import socket

import pytest
from prometheus_client.parser import text_string_to_metric_families

from peers import free_port
from simpleproxy.metrics import exposition
from support import read_to_eof
from simpleproxy.statsviews import show_info, show_servers_state, show_stat, show_stat_typed
from stats_support import START, WALL, ReferenceTarget


@pytest.fixture(scope="module")
def haproxy(module_lab):
    port, backend_port, metrics_port = free_port(), free_port(), free_port()
    sections = """
frontend web
    bind 127.0.0.1:{port}
    default_backend app

frontend metrics
    mode http
    bind 127.0.0.1:{metrics_port}
    http-request use-service prometheus-exporter

backend app
    server s1 127.0.0.1:{backend_port} check
    server s2 127.0.0.1:{backend_port} maxconn 10
""".format(port=port, backend_port=backend_port, metrics_port=metrics_port)
    instance = module_lab.haproxy(sections, [port, metrics_port])
    instance.metrics_port = metrics_port
    return instance


def filled_columns(csv_text):
    """{row type: set of the column names that have a value} of a show stat answer."""
    lines = csv_text.split("\n")
    header = lines[0][2:].split(",")
    filled = {}
    for line in lines[1:]:
        if line:
            row = line.split(",")
            kind = row[header.index("type")]
            filled.setdefault(kind, set()).update(name for name, value in zip(header, row)
                                                  if value)
    return filled


def test_show_stat_header_is_haproxys(haproxy):
    theirs = haproxy.stats_command("show stat")
    ours = show_stat(ReferenceTarget().stats, START)
    assert ours.split("\n")[0] == theirs.split("\n")[0]
    assert theirs.endswith(",\n\n") and ours.endswith(",\n")      # the CLI adds "\n"


def test_rows_fill_only_what_haproxy_fills(haproxy):
    theirs = filled_columns(haproxy.stats_command("show stat"))
    ours = filled_columns(show_stat(ReferenceTarget().stats, START))
    for kind in ("0", "1", "2"):
        assert ours[kind] - theirs[kind] == set(), "row type %s" % kind


def test_show_info_keys_are_haproxys(haproxy):
    def keys(text):
        return [line.split(":", 1)[0] for line in text.splitlines() if line]
    assert keys(show_info(ReferenceTarget().stats, START, WALL)) == \
        keys(haproxy.stats_command("show info"))


def test_servers_state_header_is_haproxys(haproxy):
    theirs = haproxy.stats_command("show servers state").split("\n")
    ours = show_servers_state(ReferenceTarget().stats, START).split("\n")
    assert ours[:2] == theirs[:2]
    assert len(ours[2].split()) == len(theirs[2].split())


def typed_tags(text):
    """{(object letter, field name): "ORIGIN NATURE SCOPE:type"} of show stat typed."""
    tags = {}
    for line in text.splitlines():
        if line:
            head, tag, kind, _ = line.split(":", 3)
            fields = head.split(".")
            tags[fields[0], fields[4]] = "%s:%s" % (tag, kind)
    return tags


def test_show_stat_typed_tags_are_haproxys(haproxy):
    target = ReferenceTarget()
    target.stats.backend("app").servers[0].record_check(False, "connection refused", 0.001, 0)
    ours = show_stat_typed(target.stats, START)
    theirs = typed_tags(haproxy.stats_command("show stat typed"))
    assert ours.endswith("B.3.0.99.uweight.1:MaP:u32:1\n")
    mine = typed_tags(ours)
    assert {key: tag for key, tag in mine.items() if theirs.get(key) != tag} == {}
    assert len(mine) > 100


def dechunk(body):
    """The payload of a chunked HTTP body (HAProxy's exporter streams its answer)."""
    payload = []
    while True:
        size, _, rest = body.partition("\r\n")
        length = int(size.split(";")[0], 16)
        if not length:
            return "".join(payload)
        payload.append(rest[:length])
        body = rest[length + 2:]


def help_and_type(text):
    """{family name: (help, type)} of a text exposition."""
    families = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name, _, help_text = line[7:].partition(" ")
            families[name] = [help_text, None]
        elif line.startswith("# TYPE "):
            name, _, kind = line[7:].partition(" ")
            families[name][1] = kind
    return {name: tuple(pair) for name, pair in families.items()}


def test_metric_names_help_and_types_are_haproxys(haproxy):
    """Every haproxy_* family we emit exists in HAProxy's exporter with the same help text
    and type, and the label names of its series are the same."""
    with socket.create_connection(("127.0.0.1", haproxy.metrics_port), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
        response = read_to_eof(sock).decode()
    head, _, body = response.partition("\r\n\r\n")
    theirs_text = dechunk(body) if "transfer-encoding: chunked" in head.lower() else body
    ours_text = exposition(ReferenceTarget().stats, START)
    theirs, ours = help_and_type(theirs_text), help_and_type(ours_text)
    mine = {name: pair for name, pair in ours.items() if name.startswith("haproxy_")}
    assert len(mine) > 50
    assert {name: pair for name, pair in mine.items() if theirs.get(name) != pair} == {}

    def label_names(text):
        return {family.name: {tuple(sorted(sample.labels)) for sample in family.samples}
                for family in text_string_to_metric_families(text)}
    their_labels, our_labels = label_names(theirs_text), label_names(ours_text)
    assert {name: labels for name, labels in our_labels.items()
            if name.startswith("haproxy_") and labels != their_labels[name]} == {}
