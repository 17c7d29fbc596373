"""The DNS lab (tests/dnslab.py) proves itself: a process in its namespace resolves, through
getaddrinfo and discovery.lookup(), exactly what the lab's dnsmasq is told, sees a record
change, and gets a missing name as NX and a silent server as a timeout."""
import os
import socket
import subprocess

from dnslab import DnsLab
from simpleproxy.discovery import IpAddress, LookupResult


def found(*addresses):
    return LookupResult(tuple(IpAddress(socket.AF_INET6 if ":" in ip else socket.AF_INET, ip)
                              for ip in addresses), None, "")


def test_a_changed_record_is_seen_at_once(dns_lab):
    dns_lab.set_records({"web.test": ["127.0.0.2"], "other.test": ["127.0.0.9"]})
    assert dns_lab.lookup("web.test") == found("127.0.0.2")
    dns_lab.set_records({"web.test": ["127.0.0.4", "127.0.0.3", "fd00::3"]})
    result = dns_lab.lookup("web.test")
    assert sorted(result.addresses) == sorted(found("127.0.0.3", "127.0.0.4", "fd00::3").addresses)


def test_a_missing_name_is_nx_and_a_silent_server_a_timeout(dns_lab):
    dns_lab.set_records({"web.test": ["127.0.0.2"]})
    assert dns_lab.lookup("gone.test") == LookupResult((), "nx", "Name or service not known")
    dns_lab.stop_dns()
    assert dns_lab.lookup("web.test") == LookupResult((), "timeout",
                                                      "Temporary failure in name resolution")
    dns_lab.start_dns()
    assert dns_lab.lookup("web.test") == found("127.0.0.2")


def test_close_leaves_nothing_behind(tmp_path, dns_lab):
    lab = DnsLab(str(tmp_path / "second"))
    os.makedirs(str(tmp_path / "second"))
    assert lab.name != dns_lab.name               # two labs at once do not collide
    try:
        assert lab.start({"web.test": ["127.0.0.2"]}) is None
        dnsmasq = lab.dnsmasq
        assert lab.lookup("web.test") == found("127.0.0.2")
    finally:
        lab.close()
    assert dnsmasq.poll() is not None
    assert not os.path.exists(lab.etc_dir)
    namespaces = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                                universal_newlines=True).stdout.split()
    assert lab.name not in namespaces and dns_lab.name in namespaces
    lab.close()                                    # twice is harmless
