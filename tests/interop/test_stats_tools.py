"""The tools HAProxy's users already run, pointed at simpleproxy unchanged.

- hatop (Debian) in tmux on the stats socket: its screen lists the proxy's servers, and a
  ``disable server`` typed into its CLI mode changes where connections go (and ``enable``
  brings it back);
- prometheus-haproxy-exporter (Debian) scraping ``/;csv`` and the Unix socket: its own
  /metrics shows the servers' states and the traffic this test sent, also with two workers
  (the master serves both, and the figures are the workers' added up);
- the stats page in headless Chromium (fresh profile): it renders, a server shown UP turns
  DOWN once its backend is killed, and a screenshot lands beside the test's temp dir.

Slow (a browser, a terminal, a daemon): marked ``tools``, run by tox's ``tools`` env.
"""
import os
import re
import shutil
import subprocess
import tempfile

import pytest

from peers import PeerProcess, find_program, free_port
from stats_support import metrics, stats_config
from support import DEFAULT_TIMEOUT, PAYLOAD, exchange, wait_until

pytestmark = pytest.mark.tools


def proxy_config(tmp_path, servers, server_options="", global_=""):
    """stats_config with the servers s1, s2 ... at ``servers`` and a 1 s page refresh."""
    return stats_config(tmp_path, [("s%d" % n, server.config_address + server_options)
                                   for n, server in enumerate(servers, 1)],
                        global_extra="stats refresh = 1s\n" + global_)


def served_by(servers, port, count):
    """Send ``count`` connections; how many each server took."""
    before = [len(server.accepted) for server in servers]
    for _ in range(count):
        assert exchange(("127.0.0.1", port), PAYLOAD) == PAYLOAD
    wait_until(lambda: sum(len(s.accepted) for s in servers) - sum(before) == count,
               what="every connection at a server")
    return [len(server.accepted) - old for server, old in zip(servers, before)]


# -- hatop ------------------------------------------------------------------------------------

class Tmux(object):
    """A tmux server of its own (-S socket in the test's folder) running one command."""

    def __init__(self, folder, command):
        self.tmux = find_program("tmux")
        self.socket = os.path.join(folder, "tmux.sock")
        self._run("new-session", "-d", "-s", "t", "-x", "220", "-y", "50", command)

    def _run(self, *args):
        return subprocess.run([self.tmux, "-S", self.socket] + list(args),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=DEFAULT_TIMEOUT, check=True).stdout

    def screen(self):
        return self._run("capture-pane", "-p", "-t", "t")

    def keys(self, *keys):
        self._run("send-keys", "-t", "t", *keys)

    def wait_for(self, pattern):
        return wait_until(lambda: re.search(pattern, self.screen(), re.M),
                          what="%r on the screen" % pattern)

    def close(self):
        subprocess.run([self.tmux, "-S", self.socket, "kill-server"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=DEFAULT_TIMEOUT)


def balanced(served, workers):
    """Four connections round-robin over two servers: two each in a single process; with two
    workers (a round-robin each) one worker took two or more, so both servers got some."""
    return served[0] == served[1] if not workers else min(served) > 0


@pytest.mark.parametrize("workers", ["", "workers = 2\n"], ids=["single", "two-workers"])
def test_hatop_shows_the_servers_and_its_disable_changes_routing(launch, tmp_path,
                                                                 echo_servers, workers):
    hatop = find_program("hatop")
    text, sock, _, port = proxy_config(tmp_path, echo_servers, global_=workers)
    launch(text)
    terminal = Tmux(str(tmp_path), "%s -s %s -i 1" % (hatop, sock))
    try:
        terminal.wait_for(r"^>>> app")
        terminal.wait_for(r"^s1 +1 - +none")
        terminal.wait_for(r"^s2 +1 - +none")
        terminal.wait_for(r"^BACKEND +2 UP")
        assert balanced(served_by(echo_servers, port, 4), workers)
        terminal.keys("5")                                   # hatop's CLI mode
        terminal.wait_for(r"Type `help' to get a command reference")
        terminal.keys("disable server app/s1", "Enter")
        terminal.keys("Escape", "1")                         # back to the status view
        terminal.wait_for(r"^s1 +1 MAINT")
        assert served_by(echo_servers, port, 4) == [0, 4]
        terminal.keys("5")
        terminal.keys("enable server app/s1", "Enter")
        terminal.keys("Escape", "1")
        terminal.wait_for(r"^s1 +1 - +none")
        assert balanced(served_by(echo_servers, port, 4), workers)
    finally:
        terminal.close()


# -- prometheus-haproxy-exporter ----------------------------------------------------------------

class Exporter(PeerProcess):
    name = "exporter"

    def __init__(self, workdir, scrape_uri):
        self.port = free_port()
        PeerProcess.__init__(self, [find_program("prometheus-haproxy-exporter"),
                                    "--haproxy.scrape-uri=" + scrape_uri,
                                    "--web.listen-address=127.0.0.1:%d" % self.port],
                             workdir, [self.port])

    def metrics(self):
        return metrics(self.port)


@pytest.mark.parametrize("via", ["csv", "unix"])
@pytest.mark.parametrize("workers", ["", "workers = 2\n"], ids=["single", "two-workers"])
def test_haproxy_exporter_reads_states_and_traffic(launch, tmp_path, echo_servers, via,
                                                   workers):
    text, sock, http, port = proxy_config(tmp_path, echo_servers, global_=workers)
    launch(text)
    # Each worker has a round-robin of its own: only a single process splits 6 as 3 and 3.
    served = served_by(echo_servers, port, 6)
    assert served == [3, 3] or (workers and sum(served) == 6)
    assert subprocess.run(["socat", "stdio", "unix-connect:" + sock], input=b"disable server "
                          b"app/s2\n", stdout=subprocess.PIPE, timeout=DEFAULT_TIMEOUT
                          ).stdout == b"\n"
    uri = "http://127.0.0.1:%d/;csv" % http if via == "csv" else "unix:" + sock
    exporter = Exporter(str(tmp_path), uri)
    try:
        # Under a master the figures are at most a second old: wait for all six sessions.
        values = wait_until(lambda: exporter.metrics().get(
            ("haproxy_frontend_sessions_total", (("frontend", "web"),))) == 6 and
            exporter.metrics(), what="the exporter's scrape of the six sessions")
        assert values[("haproxy_up", ())] == 1
        assert values[("haproxy_server_up", (("backend", "app"), ("server", "s1")))] == 1
        assert values[("haproxy_server_up", (("backend", "app"), ("server", "s2")))] == 0
        assert values[("haproxy_frontend_bytes_in_total", (("frontend", "web"),))] == \
            6 * len(PAYLOAD)
        assert values[("haproxy_frontend_sessions_total", (("frontend", "web"),))] == 6
        assert values[("haproxy_backend_sessions_total", (("backend", "app"),))] == 6
        assert values[("haproxy_server_bytes_out_total",
                       (("backend", "app"), ("server", "s1")))] == served[0] * len(PAYLOAD)
    finally:
        exporter.stop()


# -- the stats page in Chromium ----------------------------------------------------------------

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]


def chromium(args, profile):
    result = subprocess.run([find_program("chromium")] + CHROMIUM_FLAGS +
                            ["--user-data-dir=" + profile] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def state_shown(dom, server):
    match = re.search(r'<td class="name">%s</td><td class="(\w+)">' % server, dom)
    return match.group(1) if match else None


def test_the_page_in_chromium_shows_a_killed_server_go_down(launch, tmp_path, echo_servers):
    text, _, http, _ = proxy_config(tmp_path, echo_servers, " check inter 200ms")
    launch(text)
    url = "http://127.0.0.1:%d/" % http
    profile = tempfile.mkdtemp(prefix="chromium-", dir=str(tmp_path))
    try:
        dom = chromium(["--dump-dom", url], profile)
        assert "<title>simpleproxy statistics</title>" in dom and "<svg" in dom
        assert (state_shown(dom, "s1"), state_shown(dom, "s2")) == ("UP", "UP")
        echo_servers[1].close()                       # its port now refuses: checks fail
        wait_until(lambda: state_shown(chromium(["--dump-dom", url], profile), "s2") == "DOWN",
                   timeout=60, what="s2 DOWN on the page")
        screenshot = os.path.join(str(tmp_path.parent), tmp_path.name + "-stats-page.png")
        chromium(["--screenshot=" + screenshot, "--window-size=1280,800", url], profile)
        with open(screenshot, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    finally:
        shutil.rmtree(profile, ignore_errors=True)
