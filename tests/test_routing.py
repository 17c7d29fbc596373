"""Routing and rejecting on what the PROXY header said (acl, use_backend, tcp-request), and
a server header too long to build, end to end: a real simpleproxy, real backends, real
clients on loopback.

One proxy serves the issue's example with four backends, each answering with its own name,
so a reply says which backend a connection reached and the log line says which rule sent it
there. A reject leaves its backend without a connection at all: every backend counts its
accepted connections, and the counts are compared exactly at the end of each test.
"""
import pytest

from proxyproto_cases import AWS_NLB
from simpleproxy.proxyproto import build_v2
from support import (PAYLOAD, RESET, RecordingServer, config, connect, finish, free_port,
                     v1_line, v2_header, wait_until)

NLB_VPCE = "vpce-08d2bf15fac5001c9"     # the VPC endpoint ID in the real NLB capture
BACKENDS = ("be_vpce", "be_site", "be_lan", "be_default")
RULES = """\
acl tenant_a = fc_pp_aws_vpce %s
acl site = fc_pp_authority -m end .example.com
use_backend = be_vpce if tenant_a
              be_site if site !tenant_a
              be_lan if { src 10.0.0.0/8 } || { src 192.168.0.0/16 }
tcp-request connection = reject if { src 127.0.0.3 }
tcp-request content = reject if { fc_pp_authority -m str evil.example }
""" % NLB_VPCE


def with_authority(src, authority):
    return build_v2((src, 40000), ("192.0.2.1", 443), [(0x02, authority)])


@pytest.fixture
def routed(launch):
    """(proxy, its address, {backend name: RecordingServer}) for RULES; be_site's one server
    takes one connection at a time, so a second one waits in be_site's own queue."""
    servers = {name: RecordingServer(reply=name.encode()) for name in BACKENDS}
    port = free_port()
    try:
        backends = [(name, ["server s1 = %s%s" % (server.config_address,
                                                   " maxconn 1" if name == "be_site" else "")],
                     "") for name, server in servers.items()]
        proxy = launch(config([("fe", ["127.0.0.1:%d accept-proxy-from 127.0.0.0/8" % port],
                                "be_default", RULES)], backends))
        yield proxy, ("127.0.0.1", port), servers
    finally:
        for server in servers.values():
            server.close()


def accepted(servers):
    return {name: len(server.accepted) for name, server in servers.items()}


@pytest.mark.parametrize("header, backend, rule", [
    (AWS_NLB, "be_vpce", "use_backend:1"),
    (with_authority("198.51.100.7", b"www.example.com"), "be_site", "use_backend:2"),
    (v1_line("10.1.2.3", "192.0.2.1", 5000, 80), "be_lan", "use_backend:3"),
    (v2_header("192.168.7.7", "192.0.2.1", 5000, 80), "be_lan", "use_backend:3"),
    # No VPC endpoint, no authority, a source outside the networks: default_backend.
    (v2_header("198.51.100.7", "192.0.2.1", 5000, 80), "be_default", None),
    (with_authority("198.51.100.7", b"www.example.org"), "be_default", None),
    # The header names the client the rules see: a 10/8 peer is not what counts.
    (with_authority("10.9.9.9", b"shop.example.com"), "be_site", "use_backend:2"),
], ids=["vpce", "authority-suffix", "v1-cidr", "v2-cidr", "no-tlv", "other-authority",
        "first-match"])
def test_the_first_matching_use_backend_routes(routed, header, backend, rule):
    proxy, address, servers = routed
    assert finish(connect(address), header + PAYLOAD) == backend.encode()
    assert bytes(servers[backend].next_connection().received) == PAYLOAD
    line = proxy.wait_for("end=normal")
    assert "be=%s/s1" % backend in line.split()
    assert [word for word in line.split() if word.startswith("rule=")] == (
        ["rule=" + rule] if rule else [])
    assert accepted(servers) == {name: int(name == backend) for name in BACKENDS}


def test_tcp_request_connection_rejects_before_reading_and_connects_nothing(routed):
    proxy, address, servers = routed
    sock = connect(address, source="127.0.0.3")
    assert finish(sock, AWS_NLB + PAYLOAD) in (b"", RESET)
    line = proxy.wait_for("end=rejected:tcp-request-connection")
    assert "rule=tcp-request-connection:1" in line.split()
    assert "be=-" in line.split()
    # The next client, from another source, goes through: the reject was only that one.
    assert finish(connect(address), AWS_NLB + PAYLOAD) == b"be_vpce"
    servers["be_vpce"].next_connection()
    assert accepted(servers) == {"be_vpce": 1, "be_site": 0, "be_lan": 0, "be_default": 0}


def test_tcp_request_content_rejects_on_the_header_and_connects_nothing(routed):
    proxy, address, servers = routed
    reply = finish(connect(address), with_authority("10.1.2.3", b"evil.example") + PAYLOAD)
    assert reply in (b"", RESET)
    line = proxy.wait_for("end=rejected:tcp-request-content")
    assert "rule=tcp-request-content:1" in line.split()
    assert "be=-" in line.split()
    # -m str is the whole value: a longer authority is not rejected (and routes on its suffix
    # no more: evil.example does not end in .example.com).
    assert finish(connect(address), with_authority("10.1.2.3", b"evil.example.net")
                  + PAYLOAD) == b"be_lan"
    servers["be_lan"].next_connection()
    assert accepted(servers) == {"be_vpce": 0, "be_site": 0, "be_lan": 1, "be_default": 0}


def test_a_routed_session_queues_on_its_own_backend(routed):
    """be_site's server takes one connection at a time: a second client routed there waits in
    be_site's queue (not default_backend's) and is served once the first one ends."""
    proxy, address, servers = routed
    first = connect(address)
    first.sendall(with_authority("198.51.100.7", b"a.example.com") + b"first")
    wait_until(lambda: servers["be_site"].accepted, what="be_site to take the first client")
    second = connect(address)
    second.sendall(with_authority("198.51.100.8", b"b.example.com") + b"second")
    assert finish(first) == b"be_site"
    assert finish(second) == b"be_site", proxy.lines
    assert [bytes(servers["be_site"].next_connection().received) for _ in range(2)] == [
        b"first", b"second"]
    lines = wait_until(lambda: len(proxy.log_lines("end=normal")) == 2
                       and proxy.log_lines("end=normal"), what="two log lines")
    assert all("be=be_site/s1" in line.split() and "rule=use_backend:2" in line.split()
               for line in lines)
    assert accepted(servers) == {"be_vpce": 0, "be_site": 2, "be_lan": 0, "be_default": 0}


def test_a_server_header_too_long_to_build_is_logged_and_never_sent(launch):
    """Forwarding a client's 40,000-byte TLV twice cannot fit in one v2 header: the session
    closes with bad-outgoing-header (a warning naming why) before connecting, so the server
    sees no connection at all, and the next client, with a small TLV, goes through."""
    backend = RecordingServer(reply=b"served")
    port = free_port()
    try:
        proxy = launch(config(
            [("fe", ["127.0.0.1:%d accept-proxy-from 127.0.0.0/8 proxy-max-header 65551" % port],
              "be", "")],
            [("be", ["server s1 = %s send-proxy-v2 set-proxy-v2-tlv-fmt(0xE1) %%[fc_pp_tlv(0xE1)] "
                     "set-proxy-v2-tlv-fmt(0xE2) %%[fc_pp_tlv(0xE1)]" % backend.config_address],
              "")]))
        large = build_v2(("198.51.100.7", 40000), ("192.0.2.1", 443), [(0xE1, b"x" * 40000)])
        assert finish(connect(("127.0.0.1", port)), large + PAYLOAD) in (b"", RESET)
        line = proxy.wait_for("end=bad-outgoing-header")
        assert "be=be/s1" in line.split() and "Tc=-" in line.split()
        assert " WARNING " in line
        assert 'reason="cannot build the v2 header: v2 header body of 80018 bytes exceeds ' \
               '65535"' in line
        small = build_v2(("198.51.100.7", 40000), ("192.0.2.1", 443), [(0xE1, b"tenant")])
        assert finish(connect(("127.0.0.1", port)), small + PAYLOAD) == b"served"
        received = bytes(backend.next_connection().received)
        assert len(backend.accepted) == 1
        assert received == build_v2(("198.51.100.7", 40000), ("192.0.2.1", 443),
                                    [(0xE1, b"tenant"), (0xE2, b"tenant")]) + PAYLOAD
    finally:
        backend.close()
