"""Two tiers, the way users scale past one machine, all on loopback:

    clients -> HAProxy (L4, balance roundrobin, send-proxy-v2)
            -> two simpleproxy (accept-proxy, balance roundrobin, send-proxy)
            -> two nginx (listen ... proxy_protocol, $proxy_protocol_addr:$proxy_protocol_port)

Every nginx log line must name the original client, address and port, and the load must split
over both instances of each tier.
"""
from concurrent.futures import ThreadPoolExecutor

from peers import complete_lines, free_port
from support import connect, read_to_eof, wait_until

CONNECTIONS = 200
CONCURRENCY = 16
SOURCES = ["127.0.0.%d" % n for n in range(2, 10)]
HTTP_REQUEST = b"GET / HTTP/1.0\r\nHost: two-tier\r\n\r\n"


def one_client(number, address):
    """One HTTP request from a rotating 127.0.0.x: (source address, source port, reply)."""
    sock = connect(address, source=SOURCES[number % len(SOURCES)])
    try:
        source = sock.getsockname()[:2]
        sock.sendall(HTTP_REQUEST)
        return source + (read_to_eof(sock),)
    finally:
        sock.close()


def test_two_tiers_keep_every_client_address(lab):
    nginx_ports = [free_port(), free_port()]
    nginxes = [lab.nginx([port], http="server {\n listen 127.0.0.1:%d proxy_protocol;\n"
                                      " access_log {dir}/http.log pp;\n"
                                      " location / { return 200 \"web%d\\n\"; }\n}\n"
                         % (port, number))
               for number, port in enumerate(nginx_ports, 1)]
    proxy_ports = [free_port(), free_port()]
    proxies = [lab.simpleproxy(
        "[listen tier2]\nbind = 127.0.0.1:%d accept-proxy accept-proxy-from 127.0.0.1/32\n"
        "balance = roundrobin\n%s"
        % (port, "".join("server web%d = 127.0.0.1:%d send-proxy\n" % (number, nginx_port)
                         for number, nginx_port in enumerate(nginx_ports, 1))))
        for port in proxy_ports]
    haproxy_port = free_port()
    lab.haproxy("listen tier1\n    bind 127.0.0.1:%d\n    balance roundrobin\n%s"
                % (haproxy_port, "".join("    server sp%d 127.0.0.1:%d send-proxy-v2\n"
                                         % (number, port)
                                         for number, port in enumerate(proxy_ports, 1))),
                [haproxy_port])

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one_client, range(CONNECTIONS),
                                [("127.0.0.1", haproxy_port)] * CONNECTIONS))
    assert all(reply.startswith(b"HTTP/1.1 200 OK\r\n") for _, _, reply in results)
    # Compared as lists: a source port freed by a finished connection may come round again.
    clients = sorted((host, port) for host, port, _ in results)

    def lines_of(instances, read):
        """Each instance's lines, once all connections are in them."""
        lines = [read(instance) for instance in instances]
        return lines if sum(map(len, lines)) >= CONNECTIONS else None
    nginx_lines = wait_until(
        lambda: lines_of(nginxes, lambda nginx: complete_lines(nginx.access_log("http.log"))),
        what="%d nginx log lines" % CONNECTIONS)
    logged = sorted((line.split()[0], int(line.split()[1]))
                    for lines in nginx_lines for line in lines)
    assert logged == clients
    proxy_lines = wait_until(lambda: lines_of(proxies, lambda proxy: proxy.log_lines("fe=tier2 ")),
                             what="%d simpleproxy log lines" % CONNECTIONS)

    shares = [len(lines) for lines in nginx_lines + proxy_lines]
    assert sum(shares) == 2 * CONNECTIONS
    assert min(shares) >= CONNECTIONS // 4, "nginx, nginx, simpleproxy, simpleproxy: %s" % shares
