"""A DNS server of the test's own, for what follows host names (simpleproxy/discovery.py).

``DnsLab`` creates a network namespace with only a loopback, runs Debian's dnsmasq on
127.0.0.1:53 inside it, and writes /etc/netns/NAME/resolv.conf pointing at it. Every command
started with ``command()``/``run()`` goes through ``ip netns exec NAME``, which bind-mounts
that file over /etc/resolv.conf for it, so its system resolver (getaddrinfo) asks our
dnsmasq and nothing else; the host's resolver is untouched. dnsmasq answers names under
``.test`` from a hosts file the test rewrites with ``set_records()`` (SIGHUP makes dnsmasq
read it again; the wait is on its own "read ..." log line). A name not in the file is NX
(``--local=/test/``: never forwarded), and a stopped dnsmasq means no answer at all.

Names are unique per process and lab, so parallel runs do not collide; ``close()`` kills
dnsmasq and deletes the namespace and /etc/netns/NAME whatever happened before.
"""
import itertools
import json
import os
import shutil
import subprocess
import sys

from simpleproxy.discovery import IpAddress, LookupResult
from support import DEFAULT_TIMEOUT, proxy_env, wait_until

_lab_ids = itertools.count()
# The resolver gives up on a silent server after one second, instead of glibc's 5s x 2.
RESOLV_CONF = "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"
LOOKUP_SCRIPT = """import json, sys
from simpleproxy.discovery import lookup
result = lookup(sys.argv[1])
print(json.dumps([[list(address) for address in result.addresses], result.failure, result.detail]))
"""


def _run(args, **kwargs):
    return subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          universal_newlines=True, timeout=DEFAULT_TIMEOUT, **kwargs)


class DnsLab(object):
    """A network namespace whose system resolver asks a dnsmasq the test controls."""

    def __init__(self, workdir):
        self.name = "sp-dns-%d-%d" % (os.getpid(), next(_lab_ids))
        self.etc_dir = os.path.join("/etc/netns", self.name)
        self.hosts_path = os.path.join(workdir, "dns-hosts")
        self.log_path = os.path.join(workdir, "dnsmasq.log")
        self.dnsmasq = None
        self._namespace_added = False

    def command(self, *args):
        """``args`` as a command run inside the namespace, with its resolv.conf."""
        return ["ip", "netns", "exec", self.name] + list(args)

    def run(self, *args, **kwargs):
        """Run a command inside the namespace to completion (text output, stderr included)."""
        return _run(self.command(*args), **kwargs)

    def lookup(self, name):
        """discovery.lookup(name) run in a process inside the namespace, as a LookupResult."""
        result = self.run(sys.executable, "-c", LOOKUP_SCRIPT, name, env=proxy_env())
        assert result.returncode == 0, result.stdout
        addresses, failure, detail = json.loads(result.stdout)
        return LookupResult(tuple(IpAddress(*address) for address in addresses), failure, detail)

    def start(self, records):
        """Create the namespace and start dnsmasq answering ``records``; a reason if the
        namespace cannot be made here (the caller skips), None once dnsmasq answers."""
        for step in (("ip", "netns", "add", self.name),
                     ("ip", "-n", self.name, "link", "set", "lo", "up")):
            result = _run(step)
            if result.returncode != 0:
                return "%s failed: %s" % (" ".join(step), result.stdout.strip())
            self._namespace_added = True
        os.makedirs(self.etc_dir)
        with open(os.path.join(self.etc_dir, "resolv.conf"), "w") as f:
            f.write(RESOLV_CONF)
        self._write_hosts(records)
        self.start_dns()
        return None

    def start_dns(self):
        """Start dnsmasq (again, after stop_dns()) and wait until it has read the hosts file.

        It stays root: as nobody it could not read the hosts file again in the test's private
        temporary folder on SIGHUP."""
        assert self.dnsmasq is None, "dnsmasq is running already"
        reads = self._reads()
        with open(self.log_path, "a") as log:
            self.dnsmasq = subprocess.Popen(self.command(
                "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--log-facility=-",
                "--pid-file=", "--user=root", "--port=53", "--listen-address=127.0.0.1",
                "--bind-interfaces", "--no-resolv", "--no-hosts", "--local=/test/",
                "--cache-size=0", "--addn-hosts=" + self.hosts_path),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        self._wait_for_read(reads)

    def stop_dns(self):
        """Stop dnsmasq: lookups in the namespace then get no answer at all."""
        if self.dnsmasq is not None and self.dnsmasq.poll() is None:
            self.dnsmasq.kill()
        if self.dnsmasq is not None:
            self.dnsmasq.wait(DEFAULT_TIMEOUT)
        self.dnsmasq = None

    def set_records(self, records):
        """Answer ``records`` ({name: [IPv4 or IPv6 text, ...]}) from now on; a name left out
        is NX."""
        reads = self._reads()
        self._write_hosts(records)
        self.dnsmasq.send_signal(1)          # SIGHUP: read the hosts file again
        self._wait_for_read(reads)

    def _write_hosts(self, records):
        lines = ["%s %s\n" % (ip, name) for name, ips in sorted(records.items()) for ip in ips]
        with open(self.hosts_path + ".new", "w") as f:
            f.writelines(lines)
        os.replace(self.hosts_path + ".new", self.hosts_path)    # never read half-written

    def _log(self):
        try:
            with open(self.log_path) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def _reads(self):
        """How many times dnsmasq has said it read the hosts file."""
        return self._log().count("read %s - " % self.hosts_path)

    def _wait_for_read(self, before):
        def read_again():
            if self.dnsmasq.poll() is not None:
                raise AssertionError("dnsmasq exited with %s:\n%s"
                                     % (self.dnsmasq.returncode, self._log()))
            return self._reads() > before
        wait_until(read_again, what="dnsmasq to read %s" % self.hosts_path)

    def close(self):
        """Undo everything start() did, as far as it got."""
        try:
            self.stop_dns()
        finally:
            if self._namespace_added:
                _run(("ip", "netns", "del", self.name))
            shutil.rmtree(self.etc_dir, ignore_errors=True)
