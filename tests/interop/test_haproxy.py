"""HAProxy on either side of simpleproxy: its PROXY v1 and v2 in, simpleproxy's out to it.

Clients connect from 127.0.0.2 (or ::1), so that the original client stands apart from the
proxies' own 127.0.0.1; every check is on the exact bytes or log fields that carry it.
"""
import pytest

from peers import CLIENTS, complete_lines, free_port, round_trip
from support import (PAYLOAD, REPLY, RESET, RecordingServer, exchange, exchange_or_reset, hostport,
                     v1_line, v2_header, wait_until)

HAPROXY_SENDS = {
    "v1": "send-proxy",
    "v2": "send-proxy-v2",
    "v2+crc32c,unique-id": "send-proxy-v2 proxy-v2-options crc32c,unique-id",
}
SIMPLEPROXY_SENDS = {"v1": "send-proxy", "v2": "send-proxy-v2"}
# Behind simpleproxy, HAProxy logs what it took from the header (and any unique-id TLV).
HAPROXY_LOG_FORMAT = 'log-format "client=%ci:%cp dst=%fi:%fp uid=%[fc_pp_unique_id]"'


def section_name(mode):
    """A mode such as "v2+crc32c,unique-id" as a proxy name: "v2_crc32c_unique-id"."""
    return mode.replace("+", "_").replace(",", "_")


def expected_header(version, src, dst, sport, dport):
    return v1_line(src, dst, sport, dport) if version == "v1" else v2_header(src, dst, sport, dport)


# -- HAProxy in front: server ... send-proxy(-v2) -> simpleproxy accept-proxy -> backend -----

@pytest.fixture(scope="module")
def haproxy_in_front(module_lab):
    """For each (HAProxy send mode, simpleproxy send mode): an HAProxy frontend on IPv4 and
    IPv6 whose server is a simpleproxy accept-proxy frontend, all ending at one backend."""
    backend = RecordingServer(mode="record", reply=REPLY)
    proxy_sections, haproxy_sections, haproxy_ports = [], [], {}
    for out, send in SIMPLEPROXY_SENDS.items():
        proxy_sections.append("[backend be_%s]\nserver s1 = %s %s\n"
                              % (out, backend.config_address, send))
    for mode, haproxy_send in HAPROXY_SENDS.items():
        for out in SIMPLEPROXY_SENDS:
            name = "%s_to_%s" % (section_name(mode), out)
            proxy_port, haproxy_port = free_port(), free_port()
            haproxy_ports[mode, out] = haproxy_port
            proxy_sections.append("[frontend %s]\nbind = 127.0.0.1:%d accept-proxy\n"
                                  "default_backend = be_%s\n" % (name, proxy_port, out))
            haproxy_sections.append(
                "listen %s\n    bind 127.0.0.1:%d\n    bind [::1]:%d\n"
                "    unique-id-format %%{+X}o%%ci-%%cp-%%rt\n"
                "    server sp 127.0.0.1:%d %s\n\n"
                % (name, haproxy_port, haproxy_port, proxy_port, haproxy_send))
    proxy = module_lab.simpleproxy("\n".join(proxy_sections))
    module_lab.haproxy("".join(haproxy_sections), list(haproxy_ports.values()))
    yield proxy, backend, haproxy_ports
    backend.close()


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("out", sorted(SIMPLEPROXY_SENDS))
@pytest.mark.parametrize("mode", sorted(HAPROXY_SENDS))
def test_haproxy_in_front_backend_sees_original_client(haproxy_in_front, mode, out, client):
    proxy, backend, haproxy_ports = haproxy_in_front
    source, listen_host = CLIENTS[client]
    port = haproxy_ports[mode, out]
    client_port = round_trip(source, (listen_host, port))
    got = backend.next_connection()
    assert bytes(got.received) == (expected_header(out, source, listen_host, client_port, port)
                                   + PAYLOAD)
    line = proxy.wait_for(hostport(source, client_port) + " ")
    fields = line.split()
    assert "pp=%s/%s" % (mode[:2], "TCP4" if client == "ipv4" else "TCP6") in fields
    assert "end=normal" in fields


# -- HAProxy behind: simpleproxy send-proxy(-v2) -> HAProxy bind ... accept-proxy --------------

@pytest.fixture(scope="module")
def haproxy_behind(module_lab):
    """simpleproxy frontends, one per send mode (and one that relays a received header),
    whose server is an HAProxy accept-proxy bind that logs the addresses it was given."""
    backend = RecordingServer(mode="record", reply=REPLY)
    haproxy_port = free_port()
    haproxy = module_lab.haproxy(
        "listen behind\n    bind 127.0.0.1:%d accept-proxy\n    %s\n    server app %s\n"
        % (haproxy_port, HAPROXY_LOG_FORMAT, backend.config_address), [haproxy_port])
    sends = dict(SIMPLEPROXY_SENDS, **{"v2+crc32c,unique-id":
                                       "send-proxy-v2 proxy-v2-options crc32c,unique-id"})
    ports, sections = {}, []
    for mode, send in sorted(sends.items()):
        for accept in ("", " accept-proxy"):
            port = ports[mode, bool(accept)] = free_port()
            name = section_name(mode) + accept.replace(" ", "_")
            sections.append("[listen %s]\nbind = 127.0.0.1:%d%s\n       [::1]:%d%s\n"
                            "server hap = 127.0.0.1:%d %s\n"
                            % (name, port, accept, port, accept, haproxy_port, send))
    proxy = module_lab.simpleproxy("\n".join(sections))
    yield proxy, haproxy, ports
    backend.close()


def haproxy_line_for(haproxy, client_prefix, since=0):
    """HAProxy's first log line (from index ``since``) whose client starts with
    ``client_prefix``; HAProxy writes it when the connection ends."""
    def found():
        return [line for line in complete_lines(haproxy.output_path)[since:]
                if line.startswith("client=" + client_prefix)]
    return wait_until(found, what="HAProxy's log line for %s" % client_prefix)[0]


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("mode", ["v1", "v2", "v2+crc32c,unique-id"])
def test_haproxy_behind_logs_the_client_simpleproxy_saw(haproxy_behind, mode, client):
    proxy, haproxy, ports = haproxy_behind
    source, listen_host = CLIENTS[client]
    port = ports[mode, False]
    client_port = round_trip(source, (listen_host, port))
    line = haproxy_line_for(haproxy, "%s:%d " % (source, client_port))
    assert " dst=%s:%d " % (listen_host, port) in line
    # HAProxy verifies a CRC32C TLV; the unique ID simpleproxy sent is readable there.
    has_unique_id = not line.endswith(" uid=-") and not line.endswith(" uid=")
    assert has_unique_id == (mode == "v2+crc32c,unique-id"), line


@pytest.mark.parametrize("mode", ["v1", "v2"])
@pytest.mark.parametrize("src, dst", [("203.0.113.7", "198.51.100.1"),
                                      ("2001:db8::7", "2001:db8::1")])
def test_haproxy_behind_gets_the_address_simpleproxy_was_given(haproxy_behind, mode, src, dst):
    """simpleproxy accept-proxy relays a header it received; HAProxy logs its addresses."""
    proxy, haproxy, ports = haproxy_behind
    since = len(complete_lines(haproxy.output_path))
    claimed = v1_line(src, dst, 5555, 443)
    assert exchange(("127.0.0.1", ports[mode, True]), claimed + PAYLOAD) == REPLY
    line = haproxy_line_for(haproxy, "%s:5555 " % src, since)
    assert " dst=%s:443 " % dst in line


def test_haproxy_refuses_a_v2_unix_family_and_takes_v1_unknown(lab, tmp_path):
    """A client on a Unix socket bind: simpleproxy names it as the spec says, family UNIX in
    v2 (0x31) and ``PROXY UNKNOWN`` in v1 (the line has no word for it).

    HAProxy 2.6 decodes only 0x11 and 0x21 in a v2 PROXY header and drops every other family
    (it parses the header's start as TLVs), where the spec (R35) asks a receiver to fall back
    to the real endpoints, as for UNSPEC. simpleproxy does not bend its v2 output to that: a
    Unix-socket frontend that talks to HAProxy should use ``send-proxy`` (v1), which HAProxy
    takes, logging its real peer (simpleproxy) as the client.
    """
    backend = RecordingServer(mode="record", reply=REPLY)
    haproxy_port = free_port()
    haproxy = lab.haproxy(
        "listen behind\n    bind 127.0.0.1:%d accept-proxy\n    %s\n    server app %s\n"
        % (haproxy_port, HAPROXY_LOG_FORMAT, backend.config_address), [haproxy_port])
    paths = {version: str(tmp_path / ("%s.sock" % version)) for version in SIMPLEPROXY_SENDS}
    proxy = lab.simpleproxy("\n".join(
        "[listen unix_%s]\nbind = unix@%s\nserver hap = 127.0.0.1:%d %s\n"
        % (version, paths[version], haproxy_port, send)
        for version, send in SIMPLEPROXY_SENDS.items()))

    # HAProxy resets the connection; simpleproxy passes the reset on, which on a Unix socket
    # reads as a reset or as a plain EOF, depending on what the client had left unread.
    assert exchange_or_reset(paths["v2"], PAYLOAD) in (b"", RESET)
    line = proxy.wait_for("fe=unix_v2 ")
    assert "end=server-abort" in line.split(), line
    assert backend.accepted == []

    assert exchange(paths["v1"], PAYLOAD) == REPLY
    line = haproxy_line_for(haproxy, "127.0.0.1:")
    assert " dst=127.0.0.1:%d " % haproxy_port in line
    assert len(backend.accepted) == 1
    backend.close()


# -- HAProxy's health checks: check-send-proxy, LOCAL ------------------------------------------

def test_haproxy_local_health_checks_are_accepted_and_stay_off_the_backend(lab):
    """HAProxy checks a send-proxy-v2 server with check-send-proxy by connecting, sending a
    v2 LOCAL header (``20 00 00 00``, since 2.2) and resetting the connection (SO_LINGER 0).

    Forcing the server's health down and waiting for ``rise 5`` makes sure that at least
    five checks reached simpleproxy and passed. Then one real client goes through: the
    backend must have seen that one connection and nothing before it.
    """
    backend = RecordingServer(mode="record", reply=REPLY)
    proxy_port, haproxy_port = free_port(), free_port()
    proxy = lab.simpleproxy("[frontend checked]\n"
                            "bind = 127.0.0.1:%d accept-proxy accept-proxy-from 127.0.0.1/32\n"
                            "default_backend = app\n[backend app]\nserver s1 = %s\n"
                            % (proxy_port, backend.config_address))
    haproxy = lab.haproxy(
        "listen checking\n    bind 127.0.0.1:%d\n"
        "    server sp 127.0.0.1:%d send-proxy-v2 check check-send-proxy inter 50ms rise 5\n"
        % (haproxy_port, proxy_port), [haproxy_port])

    def server_status():
        row = haproxy.show_stat()["checking", "sp"]
        return row["status"], row["check_status"], row["chkfail"]
    haproxy.stats_command("set server checking/sp health down")
    # "DOWN", then "DOWN 1/5" ... as checks pass, and "UP" after the fifth.
    wait_until(lambda: server_status()[0].startswith("DOWN"), what="simpleproxy marked down")
    wait_until(lambda: server_status()[0] == "UP", what="five passing checks of simpleproxy")
    assert server_status() == ("UP", "L4OK", "0")

    claimed = b"PROXY TCP4 203.0.113.7 198.51.100.1 5555 80\r\n"
    assert exchange(("127.0.0.1", proxy_port), claimed + PAYLOAD) == REPLY
    seen = [bytes(connection.received) for connection in backend.accepted]
    assert seen == [PAYLOAD], ("%d health checks reached the backend as client connections"
                               % (len(seen) - 1))

    proxy.wait_for("203.0.113.7:5555 ")
    assert not [line for line in proxy.lines if " WARNING " in line or " ERROR " in line]
    for line in proxy.log_lines("fe=checked "):
        if "pp=v2/LOCAL" in line.split():
            assert "end=normal" in line.split(), line
    backend.close()
