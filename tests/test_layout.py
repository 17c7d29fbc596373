"""The rules the package's layout promises, read from the source (ast), not trusted.

Each rule is one row or one test, so that the one that breaks names itself:

- the protocol core (proxyproto.py) imports no other project module, and no selectors or
  threading: it does no I/O and is usable alone (socket only for address text);
- the balancer (and config, see below) imports no socket: they only decide, from data;
- the loop (loop.py) imports no module of the proxy: it knows nothing of proxying;
- health's worker threads reach the loop only through its hand-off, call_soon_threadsafe;
- nothing imports the CLI (only ``__main__.py``, the entry point);
- a socket is touched only by the modules that run on the loop, in the master or at start-up,
  and by health's worker threads (each named below with where it runs);
- a thread is started only where its docstring says "Why threads";
- no module is over about 700 lines;
- the end causes are one table (endings.py): no other module spells an end word, and the
  table agrees with the documented ``end=`` list.
"""
import ast
import glob
import logging
import os
import re

import pytest

from simpleproxy.endings import END_BAD_HEADER, END_CAUSES
from simpleproxy.proxyproto import HEADER_ERROR_KINDS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "simpleproxy")
MODULES = sorted(os.path.basename(path)[:-3] for path in glob.glob(os.path.join(PACKAGE, "*.py")))
# The modules that make up the proxy on top of the loop: the loop may import none of them.
PROXY_MODULES = {"balancer", "config", "config_values", "discovery", "endings", "health", "ini",
                 "listeners", "proxy", "proxyproto", "relay", "resolve", "rules", "samples",
                 "session", "sessionlog", "tlvfmt", "trust", "cli", "process", "channel", "systemd",
                 "master", "settings", "stats", "statsviews", "metrics", "admin", "statshttp",
                 "statspage", "logformat", "statsconfig", "statslistener", "masterview", "worker"}


def _tree(module):
    with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as f:
        return ast.parse(f.read(), module + ".py")


def imports_of(module):
    """(project modules, standard-library top-level modules) that ``module`` imports."""
    project, stdlib = set(), set()
    for node in ast.walk(_tree(module)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                project.add(node.module)
            else:
                stdlib.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            stdlib.update(alias.name.split(".")[0] for alias in node.names)
    return project, stdlib


def test_the_modules_are_the_ones_these_rules_know():
    """A new module must be placed in the layout (here) before the rules can cover it."""
    assert set(MODULES) == PROXY_MODULES | {"__init__", "__main__", "_version", "errors",
                                            "logs", "loop", "timeouts"}


def test_protocol_core_imports_no_project_module_and_no_io_machinery():
    project, stdlib = imports_of("proxyproto")
    assert project == set()
    assert stdlib & {"selectors", "threading", "select", "asyncio"} == set()


def test_protocol_core_uses_socket_only_for_address_text():
    """proxyproto imports socket for inet_pton/inet_ntop (faster than ipaddress, see there)."""
    used = {node.attr for node in ast.walk(_tree("proxyproto"))
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
            and node.value.id == "socket"}
    assert used <= {"inet_pton", "inet_ntop", "AF_INET", "AF_INET6"}


@pytest.mark.parametrize("module", ["ini", "config_values", "config", "settings",
                                    "statsconfig", "balancer", "rules", "samples",
                                    "tlvfmt"])
def test_config_and_balancer_import_no_socket(module):
    """Reading a configuration asks no name server: host names are resolved at start-up
    (resolve.py), and choosing a server does no I/O."""
    assert "socket" not in imports_of(module)[1]


def test_loop_imports_no_proxy_module():
    project, stdlib = imports_of("loop")
    assert project & PROXY_MODULES == set()


def test_nothing_imports_the_cli():
    importers = [module for module in MODULES if "cli" in imports_of(module)[0]]
    assert importers == ["__main__"]


# Every module that imports socket, and where what it does with one runs.
SOCKET_MODULES = {
    "proxyproto": "nowhere: inet_pton/inet_ntop for address text only (see below)",
    "loop": "the loop: its poller (epoll or selectors) and wake-up socketpair",
    "listeners": "the loop: listening sockets and accept",
    "session": "the loop: the server's socket",
    "relay": "the loop: reads and writes of a session's two sockets",
    "statslistener": "the loop: the stats socket and HTTP listener",
    "proxy": "the loop: start-up and the accounting around sessions",
    "logs": "the loop (and start-up): the syslog socket, written without blocking",
    "resolve": "start-up: the first addresses of host names, before the loop runs",
    "master": "the master: its wake-up socketpair and the shared listeners",
    "channel": "the master and the worker's loop: the master-worker socketpair",
    "systemd": "the master and start-up: sd_notify and socket activation",
    "health": "health's worker threads: a blocking probe per check (see CheckWorkers)",
    "discovery": "health's worker threads: lookup() (getaddrinfo)",
}


def test_only_the_modules_that_run_on_the_loop_or_in_the_master_touch_a_socket():
    touching = {module for module in MODULES if "socket" in imports_of(module)[1]}
    assert touching == set(SOCKET_MODULES)


def test_every_thread_has_its_reason_written_down():
    """STYLE: no new thread without a reason; a class or function around the start says why."""
    starts = []
    for module in MODULES:
        def visit(node, reasons):
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                reasons = reasons + [ast.get_docstring(node) or ""]
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "Thread":
                starts.append((module, node.lineno, any("Why threads:" in r for r in reasons)))
            for child in ast.iter_child_nodes(node):
                visit(child, reasons)
        visit(_tree(module), [])
    assert starts, "no thread found: the rule reads nothing"
    assert [start for start in starts if not start[2]] == []


MAX_MODULE_LINES = 700


@pytest.mark.parametrize("module", MODULES)
def test_no_module_is_over_about_700_lines(module):
    with open(os.path.join(PACKAGE, module + ".py"), encoding="utf-8") as f:
        assert len(f.read().splitlines()) <= MAX_MODULE_LINES


def _calls_outside_lambdas(node):
    """Names of what ``node`` calls itself; a lambda's body runs later, elsewhere."""
    names = []
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.Lambda):
            continue
        if isinstance(child, ast.Call):
            func = child.func
            names.append(func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "?"))
        names.extend(_calls_outside_lambdas(child))
    return names


def test_health_threads_reach_the_loop_only_through_its_hand_off():
    tree = _tree("health")
    project, _ = imports_of("health")
    assert project & {"loop", "proxy", "session", "listeners", "relay"} == set()
    # What a worker thread runs: the CheckWorkers, run_check and the _hc_ helpers it calls.
    worker_side = [node for node in tree.body
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))
                   and (node.name in ("CheckWorkers", "run_check") or node.name.startswith("_hc_"))]
    assert {node.name for node in worker_side} >= {"CheckWorkers", "run_check", "_hc_probe"}
    for node in worker_side:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        names |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
        assert names & {"loop", "Timer", "checker", "pool", "call_soon_threadsafe"} == set(), \
            node.name
    # And the function handed to a worker with each job (a closure in a loop-side method)
    # calls nothing but the hand-off; what it hands over runs on the loop.
    handed = [inner for outer in ast.walk(tree) if isinstance(outer, ast.FunctionDef)
              for inner in outer.body if isinstance(inner, ast.FunctionDef)]
    assert handed, "the closure handed to the workers was not found"
    for inner in handed:
        assert set(_calls_outside_lambdas(inner)) == {"call_soon_threadsafe"}, inner.name


# -- the end causes ---------------------------------------------------------------------------

END_TABLE_PAGE = os.path.join(ROOT, "docs", "log-format.md")
END_TABLE_HEADING = "## `end=`: how a connection ended"


def documented_end_words():
    """{word: its note} from the end= table of docs/log-format.md, bad-header:KIND expanded."""
    with open(END_TABLE_PAGE, encoding="utf-8") as f:
        text = f.read()
    assert END_TABLE_HEADING in text, "docs/log-format.md lost its end= table"
    section = text.split(END_TABLE_HEADING, 1)[1].split("\n## ", 1)[0]
    words = {}
    for match in re.finditer(r"^\| `([^`]+)` \| (.*) \|$", section, re.M):
        word, note = match.groups()
        if word == "end=":
            continue                                # the table's own heading row
        if word == "bad-header:KIND":
            for kind in re.findall(r"`([^`]+)`", note):
                words["bad-header:" + kind] = ""
        else:
            words[word] = note
    return words


def test_the_end_cause_table_is_the_documented_list():
    documented = documented_end_words()
    assert sorted(documented) == sorted(END_CAUSES)
    debug_only = {word for word, note in documented.items() if "debug" in note}
    assert debug_only == {word for word, cause in END_CAUSES.items()
                          if cause.level == logging.DEBUG}


def test_every_header_error_kind_is_an_end_cause():
    assert sorted(END_BAD_HEADER) == sorted(HEADER_ERROR_KINDS)
    assert set(END_BAD_HEADER.values()) <= set(END_CAUSES)


@pytest.mark.parametrize("module", [m for m in MODULES if m != "endings"])
def test_no_module_but_endings_spells_an_end_word(module):
    spelled = sorted({node.value for node in ast.walk(_tree(module))
                      if isinstance(node, ast.Constant) and node.value in END_CAUSES})
    assert spelled == []
