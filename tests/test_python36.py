"""What runs on a host stays within Python 3.6 (RHEL 8's platform-python): every module of the
package and the one-file build, read as source.

Two checks, because either alone lets things through:

* ``ast.parse(..., feature_version=(3, 6))`` refuses newer grammar, but only as well as the
  running interpreter implements it (3.8 lets ``:=`` through, 3.12 lets ``f"{x=}"`` through),
  so the newer grammar the package could plausibly use is also looked for in the tree.
* Calls that parse everywhere but do not exist on 3.6 (``time.monotonic_ns``,
  ``str.removeprefix``, ``os.splice`` ...) are looked up in NEWER_* below. Such a name is
  allowed behind a feature check: inside ``if hasattr(x, "name"):`` (or ``getattr(x, "name",
  None)``, which is no attribute access), or in the body of a ``try`` whose handler catches
  AttributeError, ImportError or NameError.

The end-to-end tests run the proxy itself on 3.6 and 3.7 in the tox envs proxy36 and proxy37.
"""
import ast
import glob
import os
import re

import pytest

from support import BUNDLE, REPO

OLDEST = (3, 6)

# module -> {attribute: the first Python that has it}
NEWER_ATTRIBUTES = {
    "time": {"monotonic_ns": "3.7", "time_ns": "3.7", "perf_counter_ns": "3.7",
             "process_time_ns": "3.7", "thread_time": "3.7", "pthread_getcpuclockid": "3.7"},
    "socket": {"create_server": "3.8", "has_dualstack_ipv6": "3.8", "send_fds": "3.9",
               "recv_fds": "3.9"},
    "functools": {"cached_property": "3.8", "singledispatchmethod": "3.8", "cache": "3.9"},
    "math": {"isqrt": "3.8", "prod": "3.8", "dist": "3.8", "comb": "3.8", "perm": "3.8",
             "lcm": "3.9", "nextafter": "3.9", "ulp": "3.9", "cbrt": "3.11", "exp2": "3.11"},
    "os": {"splice": "3.10", "eventfd": "3.10", "pidfd_open": "3.9", "memfd_create": "3.8",
           "copy_file_range": "3.8", "waitstatus_to_exitcode": "3.9",
           "process_cpu_count": "3.13"},
    "signal": {"raise_signal": "3.8", "strsignal": "3.8", "valid_signals": "3.8",
               "pidfd_send_signal": "3.9"},
    "threading": {"get_native_id": "3.8", "excepthook": "3.8"},
    "sys": {"audit": "3.8", "addaudithook": "3.8", "unraisablehook": "3.8",
            "orig_argv": "3.10", "stdlib_module_names": "3.10", "exception": "3.11"},
    "itertools": {"pairwise": "3.10", "batched": "3.12"},
    "shlex": {"join": "3.8"},
    "random": {"randbytes": "3.9"},
    "asyncio": {"run": "3.7", "create_task": "3.7", "get_running_loop": "3.7"},
    "importlib": {"resources": "3.7", "metadata": "3.8"},
    "contextlib": {"nullcontext": "3.7", "asynccontextmanager": "3.7", "chdir": "3.11"},
    "datetime": {"UTC": "3.11"},
    "hashlib": {"file_digest": "3.11"},
    "typing": {"Literal": "3.8", "Final": "3.8", "Protocol": "3.8", "TypedDict": "3.8",
               "Self": "3.11"},
}
NEWER_MODULES = {"dataclasses": "3.7", "contextvars": "3.7", "zoneinfo": "3.9",
                 "graphlib": "3.9", "tomllib": "3.11"}
# methods of built-in types, whatever object they are called on
NEWER_METHODS = {"removeprefix": "3.9", "removesuffix": "3.9", "isascii": "3.7",
                 "bit_count": "3.10", "add_note": "3.11", "toreadonly": "3.8",
                 "as_integer_ratio": "3.8", "is_integer": "3.12"}
NEWER_BUILTINS = {"breakpoint": "3.7", "aiter": "3.10", "anext": "3.10",
                  "ExceptionGroup": "3.11", "BaseExceptionGroup": "3.11"}
# (called name, keyword) -> version
NEWER_KEYWORDS = {("run", "capture_output"): "3.7", ("run", "text"): "3.7",
                  ("Popen", "text"): "3.7", ("check_output", "text"): "3.7",
                  ("zip", "strict"): "3.10", ("basicConfig", "force"): "3.8",
                  ("basicConfig", "encoding"): "3.9", ("hex", "sep"): "3.8"}
FEATURE_CHECK_ERRORS = {"AttributeError", "ImportError", "ModuleNotFoundError", "NameError"}


def sources():
    """(name, text) of every package module and of the one-file build."""
    paths = sorted(glob.glob(os.path.join(REPO, "simpleproxy", "*.py"))) + [BUNDLE]
    for path in paths:
        with open(path, encoding="utf-8") as f:
            yield os.path.relpath(path, REPO), f.read()


def _parents(tree):
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    return parents


def _feature_checked(node, name, parents):
    """True when node sits behind ``if hasattr(..., name)`` or in a try that catches the
    error a missing name raises."""
    child = node
    while child in parents:
        parent = parents[child]
        if isinstance(parent, ast.If) and child in parent.body:
            for call in ast.walk(parent.test):
                if (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                        and call.func.id == "hasattr" and len(call.args) == 2
                        and isinstance(call.args[1], ast.Constant) and call.args[1].value == name):
                    return True
        if isinstance(parent, ast.Try) and child in parent.body:
            for handler in parent.handlers:
                caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
                if any(isinstance(error, ast.Name) and error.id in FEATURE_CHECK_ERRORS
                       for error in caught):
                    return True
        child = parent
    return False


def _called_name(call):
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)


def _newer_grammar(node, text):
    """What newer grammar node is, or None: what feature_version misses on some Pythons."""
    if type(node).__name__ in ("NamedExpr",):
        return ":= (3.8)"
    if type(node).__name__ in ("Match", "TryStar", "TypeAlias"):
        return "%s statement (3.10+)" % type(node).__name__
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
        if getattr(node.args, "posonlyargs", None):
            return "positional-only parameters (3.8)"
        if getattr(node, "type_params", None):
            return "type parameters (3.12)"
    if isinstance(node, ast.JoinedStr):
        segment = ast.get_source_segment(text, node) or ""
        if re.search(r"\{[^{}!:]*[^=!<>]=\s*(![rsa])?(:[^{}]*)?\}", segment):
            return 'f"{expr=}" (3.8)'
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        for decorator in node.decorator_list:
            target = decorator.func if isinstance(decorator, ast.Call) else decorator
            while isinstance(target, ast.Attribute):
                target = target.value
            if not isinstance(target, ast.Name):
                return "a decorator that is not a dotted name or call (3.9)"
            if getattr(decorator, "attr", getattr(decorator, "id", None)) == "lru_cache":
                return "@lru_cache without parentheses (3.8)"
    if (isinstance(node, ast.ImportFrom) and node.module == "__future__"
            and any(alias.name == "annotations" for alias in node.names)):
        return "from __future__ import annotations (3.7)"
    return None


def newer_than_oldest(text, name="<source>", feature_version=OLDEST):
    """Every use of grammar or library newer than OLDEST in text, as 'name:line: what'."""
    try:
        tree = ast.parse(text, name, feature_version=feature_version)
    except SyntaxError as exc:
        return ["%s:%s: grammar newer than %d.%d: %s" % ((name, exc.lineno) + OLDEST + (exc.msg,))]
    parents = _parents(tree)
    found = []

    def report(node, what, checked_name=None):
        if checked_name is None or not _feature_checked(node, checked_name, parents):
            found.append("%s:%d: %s" % (name, node.lineno, what))

    for node in ast.walk(tree):
        grammar = _newer_grammar(node, text)
        if grammar:
            report(node, grammar)
        if isinstance(node, ast.Attribute):
            if isinstance(node.value, ast.Name):
                since = NEWER_ATTRIBUTES.get(node.value.id, {}).get(node.attr)
                if since:
                    report(node, "%s.%s (%s)" % (node.value.id, node.attr, since), node.attr)
            if node.attr in NEWER_METHODS and isinstance(parents.get(node), ast.Call):
                report(node, ".%s() (%s)" % (node.attr, NEWER_METHODS[node.attr]), node.attr)
        elif isinstance(node, ast.Name) and node.id in NEWER_BUILTINS:
            report(node, "%s (%s)" % (node.id, NEWER_BUILTINS[node.id]), node.id)
        elif isinstance(node, ast.Call):
            for keyword in node.keywords:
                since = NEWER_KEYWORDS.get((_called_name(node), keyword.arg))
                if since:
                    report(node, "%s(%s=) (%s)" % (_called_name(node), keyword.arg, since))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in NEWER_MODULES:
                    report(node, "import %s (%s)" % (alias.name, NEWER_MODULES[top]), top)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            top = node.module.split(".")[0]
            if top in NEWER_MODULES:
                report(node, "from %s import (%s)" % (node.module, NEWER_MODULES[top]), top)
            for alias in node.names:
                since = NEWER_ATTRIBUTES.get(node.module, {}).get(alias.name)
                if since:
                    report(node, "from %s import %s (%s)" % (node.module, alias.name, since),
                           alias.name)
    return sorted(set(found), key=found.index)      # a nested f-string is met twice


@pytest.mark.parametrize("name, text", list(sources()), ids=lambda value: value
                         if value.endswith(".py") else "")
def test_runs_on_python_3_6(name, text):
    assert newer_than_oldest(text, name) == []


# Each of these must be caught; they are what a new feature is most likely to bring in.
PLANTED = [
    ("x = time.monotonic_ns()\n", "time.monotonic_ns (3.7)"),
    ("import dataclasses\n", "import dataclasses (3.7)"),
    ("from dataclasses import dataclass\n", "from dataclasses import (3.7)"),
    ("s = socket.create_server(('', 0))\n", "socket.create_server (3.8)"),
    ("from socket import create_server\n", "from socket import create_server (3.8)"),
    ("class A:\n    @functools.cached_property\n    def b(self):\n        pass\n",
     "functools.cached_property (3.8)"),
    ("name = text.removeprefix('x')\n", ".removeprefix() (3.9)"),
    ("name = text.removesuffix('x')\n", ".removesuffix() (3.9)"),
    ("os.splice(a, b, 1)\n", "os.splice (3.10)"),
    ("n = math.isqrt(10)\n", "math.isqrt (3.8)"),
    ("@functools.lru_cache\ndef f():\n    pass\n", "@lru_cache without parentheses (3.8)"),
    ("for a, b in zip(x, y, strict=True):\n    pass\n", "zip(strict=) (3.10)"),
    ("subprocess.run(['x'], capture_output=True)\n", "run(capture_output=) (3.7)"),
    ("from __future__ import annotations\n", "from __future__ import annotations (3.7)"),
    ("breakpoint()\n", "breakpoint (3.7)"),
    ("t = 'a'.isascii()\n", ".isascii() (3.7)"),
]


@pytest.mark.parametrize("text, what", PLANTED, ids=[what for _, what in PLANTED])
def test_a_planted_newer_call_is_caught(text, what):
    found = newer_than_oldest(text)
    assert len(found) == 1 and what in found[0], found


# Newer grammar: refused by ast.parse(feature_version=(3, 6)) where the running Python
# implements that, and by the tree walk whatever the Python (checked without feature_version).
PLANTED_GRAMMAR = [
    ("if (n := 10):\n    pass\n", ":= (3.8)"),
    ("def f(a, /):\n    pass\n", "positional-only parameters (3.8)"),
    ("text = f'{x=}'\n", 'f"{expr=}" (3.8)'),
    ("text = f'{x = !r:>10}'\n", 'f"{expr=}" (3.8)'),
    ("@buttons[0].clicked.connect\ndef f():\n    pass\n", "a decorator that is not a dotted"),
]


@pytest.mark.parametrize("text, what", PLANTED_GRAMMAR, ids=[what for _, what in PLANTED_GRAMMAR])
def test_planted_newer_grammar_is_caught(text, what):
    assert len(newer_than_oldest(text)) == 1
    try:
        ast.parse(text)
    except SyntaxError:         # older than the grammar (3.8 and a 3.9 decorator): refused above
        return
    found = newer_than_oldest(text, feature_version=None)
    assert len(found) == 1 and what in found[0], found


FEATURE_CHECKED = [
    "if hasattr(os, 'splice'):\n    os.splice(a, b, 1)\nelse:\n    copy(a, b)\n",
    "splice = getattr(os, 'splice', None)\n",
    "try:\n    now = time.monotonic_ns\nexcept AttributeError:\n    now = None\n",
    "try:\n    import dataclasses\nexcept ImportError:\n    dataclasses = None\n",
    "name = text[len(prefix):] if text.startswith(prefix) else text\n",
    "line = f'{x!r} = {y:>4}'\n",
]


@pytest.mark.parametrize("text", FEATURE_CHECKED)
def test_newer_calls_behind_a_feature_check_and_look_alikes_pass(text):
    assert newer_than_oldest(text) == []


def test_the_else_branch_of_a_feature_check_is_not_covered():
    text = "if hasattr(os, 'splice'):\n    pass\nelse:\n    os.splice(a, b, 1)\n"
    assert newer_than_oldest(text) == ["<source>:4: os.splice (3.10)"]
