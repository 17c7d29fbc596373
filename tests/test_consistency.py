"""Several instances behave as one: two simpleproxy processes with the same backend section,
started one after the other (different pids, start times and check schedules), choose the
same server with ``balance source`` for each of 1,000 clients, and when a server goes down
both move only that server's clients, and move each of them to the same place. The same holds
when the servers come from a ``server-template`` whose name a DNS server of the test's own
answers (tests/dnslab.py): both instances fill the slots alike, and an address the name no
longer returns takes only its slot out.

The clients' addresses come in PROXY v1 headers (accept-proxy), IPv4 and IPv6; each backend
answers with its name, so the reply says who served.
"""
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from support import Launcher, RecordingServer, enter_netns, exchange, free_port, in_netns

SERVERS = ("s1", "s2", "s3", "s4")
CLIENT_COUNT = 1000


def instance_config(port, backends):
    """The config of one instance: its own bind port, the same backend section as the rest."""
    lines = ["[global]", "check-threads = 2",
             "[frontend web]", "bind = 127.0.0.1:%d accept-proxy-from 127.0.0.1" % port,
             "default_backend = app",
             "[backend app]", "balance = source", "retries = 0",
             "default-server = check inter 100ms rise 1 fall 1"]
    lines += ["server %s = %s" % (name, backends[name].config_address) for name in SERVERS]
    return "\n".join(lines) + "\n"


def clients():
    """1,000 distinct client addresses, nine in ten IPv4, as PROXY v1 headers."""
    rng = random.Random(15)
    ipv4 = set()
    while len(ipv4) < CLIENT_COUNT * 9 // 10:
        ipv4.add("%d.%d.%d.%d" % (rng.randrange(1, 224), rng.randrange(256), rng.randrange(256),
                                  rng.randrange(1, 255)))
    headers = [b"PROXY TCP4 %s 192.0.2.1 %d 443\r\n" % (ip.encode(), rng.randrange(1024, 65536))
               for ip in sorted(ipv4)]
    headers += [b"PROXY TCP6 2001:db8:%x::%x 2001:db8::1 %d 443\r\n"
                % (n, rng.randrange(1, 65536), rng.randrange(1024, 65536))
                for n in range(CLIENT_COUNT - len(headers))]
    return headers


def choices(port, headers, netns=None):
    """The server that answered each client, through the instance on ``port`` (in network
    namespace ``netns``, if given)."""
    def served_by(header):
        return exchange(("127.0.0.1", port), header + b"which server?").decode()
    if netns is None:
        pool = ThreadPoolExecutor(8)
    else:
        pool = ThreadPoolExecutor(8, initializer=enter_netns, initargs=(netns,))
    with pool:
        return list(pool.map(served_by, headers))


def assert_only_the_dead_servers_clients_moved(before, after, dead, others):
    """Every client kept its server unless it was ``dead``'s; those spread over ``others``."""
    kept = [(first, then) for first, then in zip(before, after) if first != dead]
    assert all(first == then for first, then in kept)
    moved_to = [then for first, then in zip(before, after) if first == dead]
    assert set(moved_to) == set(others)          # spread over the others, not piled on one


@pytest.fixture
def backends():
    servers = {name: RecordingServer(reply=name.encode()) for name in SERVERS}
    yield servers
    for server in servers.values():
        server.close()


@pytest.fixture
def instances(tmp_path, backends, proxy_python):
    """Two instances, one from the package and one from the one-file build."""
    with Launcher("module", tmp_path / "module") as module, \
            Launcher("bundle", tmp_path / "bundle") as bundle:
        started = []
        for launch in (module, bundle):
            port = free_port()
            started.append((port, launch(instance_config(port, backends))))
        yield started


def test_two_instances_choose_alike_and_move_only_the_dead_servers_clients(backends, instances):
    headers = clients()
    (port_a, proxy_a), (port_b, proxy_b) = instances
    before = choices(port_a, headers)
    assert set(before) == set(SERVERS)
    assert min(before.count(name) for name in SERVERS) > CLIENT_COUNT // 10   # spread
    assert choices(port_b, headers) == before

    starts = [len(proxy.lines) for _, proxy in instances]
    backends["s2"].close()
    for (_, proxy), start in zip(instances, starts):
        proxy.wait_for("server app/s2 is DOWN", start=start)
    after = choices(port_a, headers)
    assert choices(port_b, headers) == after
    assert_only_the_dead_servers_clients_moved(before, after, "s2", {"s1", "s3", "s4"})


TEMPLATE_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5")
BACKEND_PORT = 8080               # the lab's namespace is new and empty: any port is free


def template_config(port):
    return "\n".join([
        "[global]", "resolve-interval = 100ms",
        "[frontend web]", "bind = 127.0.0.1:%d accept-proxy-from 127.0.0.1" % port,
        "default_backend = app",
        "[backend app]", "balance = source", "retries = 0",
        "server-template web = %d web.test:%d" % (len(TEMPLATE_IPS), BACKEND_PORT)]) + "\n"


def test_two_instances_with_a_server_template_choose_alike(dns_lab, proxy_python, tmp_path):
    """The name answers in an order of its own; the slots (and so the ring) do not follow it.
    Each backend answers with its address, which says which slot served."""
    dns_lab.set_records({"web.test": list(reversed(TEMPLATE_IPS))})
    backends = []
    try:
        for ip in TEMPLATE_IPS:
            backends.append(in_netns(dns_lab.name, lambda ip=ip: RecordingServer(
                ip, reply=ip.encode(), port=BACKEND_PORT)))
        with Launcher("module", tmp_path / "module") as module, \
                Launcher("bundle", tmp_path / "bundle") as bundle:
            instances = [(port, launch(template_config(port), command_prefix=dns_lab.command()))
                         for port, launch in ((8443, module), (8444, bundle))]
            headers = clients()
            before = choices(8443, headers, dns_lab.name)
            assert set(before) == set(TEMPLATE_IPS)
            assert choices(8444, headers, dns_lab.name) == before

            dns_lab.set_records({"web.test": [ip for ip in TEMPLATE_IPS if ip != "127.0.0.3"]})
            for _, proxy in instances:
                proxy.wait_for("server app/web2 is MAINT, reason: No IP for server")
            after = choices(8443, headers, dns_lab.name)
            assert choices(8444, headers, dns_lab.name) == after
            assert_only_the_dead_servers_clients_moved(before, after, "127.0.0.3",
                                                       {"127.0.0.2", "127.0.0.4", "127.0.0.5"})
    finally:
        for backend in backends:
            backend.close()
