"""The DNS lab (tests/dnslab.py) proves itself: a process in its namespace resolves, through
getaddrinfo and discovery.lookup(), exactly what the lab's dnsmasq is told, sees a record
change, and gets a missing name as NX and a silent server as a timeout."""
import json
import os
import subprocess
import sys

from dnslab import DnsLab, dns_lab  # noqa: F401 (dns_lab: a fixture)
from support import proxy_env

LOOKUP = """import json, sys
from simpleproxy.discovery import lookup
result = lookup(sys.argv[1])
print(json.dumps([sorted(a.ip for a in result.addresses), result.failure, result.detail]))
"""


def looked_up(lab, name):
    """discovery.lookup(name) in a process inside the lab's namespace: [addresses sorted,
    failure kind, detail]."""
    result = lab.run(sys.executable, "-c", LOOKUP, name, env=proxy_env())
    assert result.returncode == 0, result.stdout
    return json.loads(result.stdout)


def test_a_changed_record_is_seen_at_once(dns_lab):
    dns_lab.set_records({"web.test": ["127.0.0.2"], "other.test": ["127.0.0.9"]})
    assert looked_up(dns_lab, "web.test") == [["127.0.0.2"], None, ""]
    dns_lab.set_records({"web.test": ["127.0.0.4", "127.0.0.3", "fd00::3"]})
    assert looked_up(dns_lab, "web.test") == [["127.0.0.3", "127.0.0.4", "fd00::3"], None, ""]


def test_a_missing_name_is_nx_and_a_silent_server_a_timeout(dns_lab):
    dns_lab.set_records({"web.test": ["127.0.0.2"]})
    assert looked_up(dns_lab, "gone.test") == [[], "nx", "Name or service not known"]
    dns_lab.stop_dns()
    assert looked_up(dns_lab, "web.test") == [[], "timeout",
                                              "Temporary failure in name resolution"]
    dns_lab.start_dns()
    assert looked_up(dns_lab, "web.test") == [["127.0.0.2"], None, ""]


def test_close_leaves_nothing_behind(tmp_path, dns_lab):
    lab = DnsLab(str(tmp_path / "second"))
    os.makedirs(str(tmp_path / "second"))
    assert lab.name != dns_lab.name               # two labs at once do not collide
    try:
        assert lab.start({"web.test": ["127.0.0.2"]}) is None
        dnsmasq = lab.dnsmasq
        assert looked_up(lab, "web.test") == [["127.0.0.2"], None, ""]
    finally:
        lab.close()
    assert dnsmasq.poll() is not None
    assert not os.path.exists(lab.etc_dir)
    namespaces = subprocess.run(["ip", "netns", "list"], stdout=subprocess.PIPE,
                                universal_newlines=True).stdout.split()
    assert lab.name not in namespaces and dns_lab.name in namespaces
    lab.close()                                    # twice is harmless
