"""Shared pytest options, fixtures and markers.

The fixtures every module uses (helpers in support.py):

* ``launch``: a support.Launcher. ``launch(config_text)`` starts simpleproxy as a real
  process and returns its ProxyProcess; ``launch.cli(args)`` runs the command line to the
  end. Every proxy it started is stopped when the test ends, pass or fail, and must exit 0.
  The launch form is ``python -m simpleproxy`` unless the test is parametrized with
  ``support.BOTH_FORMS`` (or ``indirect`` "module"/"bundle" params of its own);
  ``support.BOTH_POLLERS`` runs it also on the loop's portable poller ("selectors": the
  module form with SIMPLEPROXY_POLLER=selectors).
* ``proxy_python``: the interpreter that runs the proxy (support.proxy_python()).
* ``dns_lab``: a started dnslab.DnsLab (a name server in a network namespace) with no
  records yet.
* ``backend``: a support.RecordingServer that reads to EOF and answers support.REPLY;
  ``echo``: one that echoes; ``echo_servers``: two that echo. All are closed when the test
  ends.

Every test that starts the proxy depends on ``proxy_python`` (``launch`` does) and is marked
``proxy``: ``pytest -m proxy`` runs exactly those, which is how the proxy36/proxy37 tox envs
run them a second time with the proxy on Python 3.6 and 3.7 (SIMPLEPROXY_PYTHON).

The slow end-to-end tests are marked ``slow`` and run in one tox env (``tools``) rather than in
all six: the master-worker tests (reloads under load, restarts, soft stop), everything in the
DNS lab (``dns_lab``), the two-instance consistency tests, and those that wait out a timeout
that cannot be shortened from outside.
"""
import os
import shutil

import pytest

from dnslab import DnsLab
from support import (REPLY, Launcher, RecordingServer, proxy_python as find_proxy_python,
                     skip_or_fail)


def pytest_addoption(parser):
    parser.addoption(
        "--fuzz-cases", type=int, default=None,
        help="run the seeded fuzzers with this many cases instead of their default")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "proxy: starts simpleproxy as a process (on $SIMPLEPROXY_PYTHON if set); "
                   "added to every test that depends on the proxy_python fixture")
    config.addinivalue_line(
        "markers", "tools: drives a slow real tool (hatop in tmux, prometheus-haproxy-exporter, "
                   "headless Chromium) against the stats socket and listener")
    config.addinivalue_line(
        "markers", "slow: a slow end-to-end test (master and workers, the DNS lab, several "
                   "instances), run in one tox env")


def pytest_report_header(config):
    try:
        return "simpleproxy runs on: %s" % find_proxy_python()
    except LookupError as exc:
        return "simpleproxy runs on: nothing (%s)" % exc


SLOW_MODULES = ("test_master.py", "test_consistency.py", "test_dnslab.py")


def pytest_collection_modifyitems(items):
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "proxy_python" in fixtures:
            item.add_marker(pytest.mark.proxy)
        if "dns_lab" in fixtures or os.path.basename(str(item.fspath)) in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def proxy_python():
    """The proxy's interpreter; a test needing one that is missing skips, or fails where
    SIMPLEPROXY_REQUIRE_PEERS=1."""
    try:
        return find_proxy_python()
    except LookupError as exc:
        skip_or_fail(str(exc))


@pytest.fixture
def launch(request, tmp_path, proxy_python):
    """Start proxies; all of them are stopped at the end of the test (see the module doc)."""
    with Launcher(getattr(request, "param", "module"), tmp_path) as launcher:
        yield launcher


@pytest.fixture
def echo_servers():
    """Two support.RecordingServer echoing what they get; closed when the test ends."""
    servers = [RecordingServer(mode="echo"), RecordingServer(mode="echo")]
    yield servers
    for server in servers:
        server.close()


@pytest.fixture
def backend():
    server = RecordingServer(mode="record", reply=REPLY)
    yield server
    server.close()


@pytest.fixture
def echo():
    server = RecordingServer(mode="echo")
    yield server
    server.close()


@pytest.fixture
def dns_lab(tmp_path):
    """A started DnsLab with no records yet; skips (fails under CI) without root, ip or
    dnsmasq (Debian's dnsmasq-base)."""
    if os.geteuid() != 0:
        skip_or_fail("a network namespace needs root")
    for tool in ("ip", "dnsmasq"):
        if shutil.which(tool) is None:
            skip_or_fail("%s is not installed" % tool)
    lab = DnsLab(str(tmp_path))
    try:
        problem = lab.start({})
        if problem:
            skip_or_fail(problem)
        yield lab
    finally:
        lab.close()
