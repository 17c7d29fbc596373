"""nginx on either side of simpleproxy: behind it (``listen ... proxy_protocol``, http and
stream, logging ``$proxy_protocol_addr``/``$proxy_protocol_port``) and in front of it (stream
``proxy_protocol on;``, which sends v1)."""
import pytest

from peers import CLIENTS, free_port, round_trip, wait_for_lines
from support import (PAYLOAD, REPLY, RESET, RecordingServer, connect, exchange_or_reset, hostport,
                     read_to_eof, v1_line)

HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: interop\r\n\r\n"
BLOCKS = ("http", "stream")
SENDS = {"v1": "send-proxy", "v2": "send-proxy-v2"}


# -- nginx behind: simpleproxy send-proxy(-v2) -> nginx listen ... proxy_protocol -----------------

@pytest.fixture(scope="module")
def nginx_behind(module_lab):
    """nginx with a proxy_protocol listener in its http block and one in its stream block;
    for each (block, send mode), a simpleproxy listen on IPv4 and IPv6 whose server is it."""
    nginx_ports = {block: free_port() for block in BLOCKS}
    nginx = module_lab.nginx(
        list(nginx_ports.values()),
        http="server {\n listen 127.0.0.1:%d proxy_protocol;\n access_log {dir}/http.log pp;\n"
             " location / { return 200 \"nginx http\\n\"; }\n}\n" % nginx_ports["http"],
        stream="server {\n listen 127.0.0.1:%d proxy_protocol;\n"
               " access_log {dir}/stream.log pp;\n return \"nginx stream\\n\";\n}\n"
               % nginx_ports["stream"])
    proxy_ports, sections = {}, []
    for block in BLOCKS:
        for mode, send in SENDS.items():
            port = proxy_ports[block, mode] = free_port()
            sections.append("[listen %s_%s]\nbind = 127.0.0.1:%d\n       [::1]:%d\n"
                            "server nginx = 127.0.0.1:%d %s\n"
                            % (block, mode, port, port, nginx_ports[block], send))
    module_lab.simpleproxy("\n".join(sections))
    return nginx, proxy_ports


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("mode", sorted(SENDS))
@pytest.mark.parametrize("block", BLOCKS)
def test_nginx_behind_logs_the_original_client(nginx_behind, block, mode, client):
    nginx, proxy_ports = nginx_behind
    source, listen_host = CLIENTS[client]
    port = proxy_ports[block, mode]
    sock = connect((listen_host, port), source=source)
    client_port = sock.getsockname()[1]
    if block == "http":
        sock.sendall(HTTP_REQUEST)
    # The stream server answers and closes without reading: sending nothing keeps that a FIN.
    reply = read_to_eof(sock)
    sock.close()
    if block == "http":
        assert reply.startswith(b"HTTP/1.1 200 OK\r\n") and reply.endswith(b"\r\n\r\nnginx http\n")
    else:
        assert reply == b"nginx stream\n"
    logged = "%s %d " % (source, client_port)
    wait_for_lines(nginx.access_log(block + ".log"), 1, matching=logged)


# -- nginx in front: stream proxy_protocol on -> simpleproxy accept-proxy --------------------------

@pytest.fixture(scope="module")
def nginx_in_front(module_lab):
    """nginx stream servers with ``proxy_protocol on`` toward a simpleproxy accept-proxy bind
    (send-proxy to a recording backend), listening on IPv4, IPv6 and dual-stack [::]."""
    backend = RecordingServer(mode="record", reply=REPLY)
    proxy_port = free_port()
    proxy = module_lab.simpleproxy(
        "[listen from_nginx]\nbind = 127.0.0.1:%d accept-proxy\nserver app = %s send-proxy\n"
        % (proxy_port, backend.config_address))
    ports = {"ipv4": free_port(), "ipv6": free_port(), "dual-stack": free_port()}
    listens = {"ipv4": "127.0.0.1:%d" % ports["ipv4"], "ipv6": "[::1]:%d" % ports["ipv6"],
               "dual-stack": "[::]:%d ipv6only=off" % ports["dual-stack"]}
    # nginx ends the whole session when the client half-closes, unless proxy_half_close.
    module_lab.nginx(list(ports.values()), stream="".join(
        "server {\n listen %s;\n proxy_pass 127.0.0.1:%d;\n proxy_protocol on;\n"
        " proxy_half_close on;\n}\n" % (listen, proxy_port) for listen in listens.values()))
    yield proxy, backend, ports
    backend.close()


def _through_nginx(nginx_in_front, listen, source, host):
    """One client through nginx and simpleproxy: (its port, the bytes the backend got)."""
    proxy, backend, ports = nginx_in_front
    client_port = round_trip(source, (host, ports[listen]))
    return client_port, bytes(backend.next_connection().received)


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_nginx_in_front_v1_is_accepted(nginx_in_front, client):
    proxy = nginx_in_front[0]
    source, host = CLIENTS[client]
    client_port, received = _through_nginx(nginx_in_front, client, source, host)
    nginx_port = nginx_in_front[2][client]
    assert received == v1_line(source, host, client_port, nginx_port) + PAYLOAD
    line = proxy.wait_for(hostport(source, client_port) + " ")
    assert "pp=v1/%s" % ("TCP4" if client == "ipv4" else "TCP6") in line.split()


def test_nginx_dual_stack_v4_mapped_line_goes_on_as_tcp4(nginx_in_front):
    """An IPv4 client of nginx's ``[::]:port ipv6only=off`` is sent as
    ``PROXY TCP6 ::ffff:127.0.0.2 ::ffff:127.0.0.1 ...``: valid (the IPv6 text form that
    inet_pton reads, which HAProxy sends too). simpleproxy takes it, and names the client
    by its IPv4 address on the next hop, as TCP4."""
    proxy = nginx_in_front[0]
    client_port, received = _through_nginx(nginx_in_front, "dual-stack", "127.0.0.2",
                                           "127.0.0.1")
    assert received == v1_line("127.0.0.2", "127.0.0.1", client_port,
                               nginx_in_front[2]["dual-stack"]) + PAYLOAD
    line = proxy.wait_for("[::ffff:127.0.0.2]:%d " % client_port)
    assert "pp=v1/TCP6" in line.split()


# -- nginx's mixed-family v1 lines ----------------------------------------------------------------

@pytest.mark.parametrize("listen_host, claimed_src, claimed_dst", [
    ("127.0.0.1", "2001:db8::7", "2001:db8::1"),
    ("::1", "203.0.113.7", "198.51.100.1"),
])
def test_nginx_mixed_family_line_is_refused(lab, listen_host, claimed_src, claimed_dst):
    """nginx (before 1.31.4) picks TCP4/TCP6 from the client address and prints its own local
    address as it is. Once the realip module has taken the client from an incoming PROXY
    header of the other family, the line it sends mixes families: ``PROXY TCP6 <IPv6>
    <IPv4> ...`` or ``PROXY TCP4 <IPv4> <IPv6> ...``. The spec ties both addresses to the
    announced family (R17), and HAProxy refuses such lines.

    Choice: simpleproxy refuses them too (kind malformed): nothing reaches the backend and
    the log says why. Accepting would mean guessing which of two contradicting fields is
    right; the fix belongs where the lie is told (one address family per nginx hop, or an
    nginx that sends UNKNOWN or maps to IPv6 for mixed families, as nginx 1.31.4 does).
    """
    backend = RecordingServer(mode="record", reply=REPLY)
    recorder = RecordingServer(mode="record", reply=REPLY)
    proxy_port, to_proxy, to_recorder = free_port(), free_port(), free_port()
    proxy = lab.simpleproxy("[listen from_nginx]\nbind = 127.0.0.1:%d accept-proxy\n"
                            "server app = %s send-proxy\n" % (proxy_port, backend.config_address))
    listen = "[::1]" if ":" in listen_host else listen_host
    realip = "".join(
        "server {\n listen %s:%d proxy_protocol;\n set_real_ip_from %s;\n proxy_pass %s;\n"
        " proxy_protocol on;\n}\n" % (listen, port, listen_host, upstream)
        for port, upstream in ((to_recorder, recorder.config_address),
                               (to_proxy, "127.0.0.1:%d" % proxy_port)))
    lab.nginx([to_proxy, to_recorder], stream=realip)
    claimed = v1_line(claimed_src, claimed_dst, 5555, 443)

    # What nginx sends, written down: the claimed client, then its own address as it is.
    exchange_or_reset((listen_host, to_recorder), claimed + PAYLOAD)
    word = b"TCP6" if ":" in claimed_src else b"TCP4"
    assert bytes(recorder.next_connection().received) == b"PROXY %s %s %s 5555 %d\r\n%s" % (
        word, claimed_src.encode(), listen_host.encode(), to_recorder, PAYLOAD)

    assert exchange_or_reset((listen_host, to_proxy), claimed + PAYLOAD) in (b"", RESET)
    line = proxy.wait_for("fe=from_nginx ")
    assert "end=bad-header:malformed" in line.split(), line
    assert backend.accepted == []
    backend.close()
    recorder.close()
