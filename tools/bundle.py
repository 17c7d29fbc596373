#!/usr/bin/env python3
"""Build simpleproxy.py, the one file users copy to a host, from the simpleproxy/ package.

The package stays the source of truth; this script flattens it. Flattening works because
of two project rules, both checked here rather than trusted:

- every intra-package import is a top-level ``from .module import a, b``, so dropping
  those statements and placing each module after the modules it imports from leaves every
  name bound before it is used;
- top-level names are unique across modules, so concatenation shadows nothing.

Modules keep their own standard-library imports where they stand (repeats are harmless and
keep each section readable on its own). ``__init__.py`` lends its docstring (what it is, how
to run it) to the file; ``__main__.py`` comes last, so its ``if __name__ == "__main__"``
block ends the file.

The sections come in the order a reader wants them (``READING_ORDER``: from the protocol
core outward to the command line), as far as the imports allow: a module never comes before
one it imports from. A module the table does not name is read with the first module that
needs it. The file's docstring ends with a table of contents with line numbers, and each
section's banner names its concept and its path.

    python3 tools/bundle.py            write simpleproxy.py
    python3 tools/bundle.py --check    exit 1 with a diff if the committed file is stale
"""
import argparse
import ast
import difflib
import heapq
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BANNER_WIDTH = 79
MODULE_DUNDERS = ("__name__", "__file__", "__doc__", "__package__", "__spec__", "__loader__")


# The order a reader meets the sections in, and the concept each banner names.
READING_ORDER = (
    ("_version", "Version"),
    ("proxyproto", "The PROXY protocol core: parser, builders"),
    ("errors", "Errors"),
    ("timeouts", "The longest wait handed to the system"),
    ("samples", "Rules and TLVs: the fc_pp_* fetches"),
    ("rules", "Rules and TLVs: acl, use_backend, tcp-request"),
    ("tlvfmt", "Rules and TLVs: a server's v2 TLVs"),
    ("ini", "Configuration: reading the INI file"),
    ("config_values", "Configuration: durations, sizes, addresses"),
    ("statsconfig", "Configuration: stats and log settings"),
    ("settings", "Configuration: the frozen objects it reads into"),
    ("config", "Configuration: what each key means, checked"),
    ("balancer", "Balancing: choosing a server"),
    ("trust", "Trust: whose PROXY header to believe"),
    ("logformat", "Logging: JSON lines and syslog frames"),
    ("logs", "Logging: escaping, writes that never block"),
    ("endings", "How a connection ends: the end causes"),
    ("discovery", "Service discovery: following host names"),
    ("resolve", "Start-up: resolving host names"),
    ("health", "Health checks"),
    ("stats", "Stats: the counters"),
    ("statsviews", "Stats: show stat, info, sess, errors"),
    ("metrics", "Stats: Prometheus /metrics"),
    ("statspage", "Stats: the HTML page"),
    ("admin", "Stats: the runtime API's commands"),
    ("statshttp", "Stats: the HTTP listener's requests"),
    ("loop", "The event loop: selector, timers, hand-off"),
    ("relay", "The proxy: relaying bytes both ways"),
    ("sessionlog", "The proxy: a connection's log line"),
    ("session", "The proxy: a connection's life"),
    ("listeners", "The proxy: listening and accepting"),
    ("statslistener", "Stats: socket and listener on the loop"),
    ("proxy", "The proxy: frontends, pools, limits"),
    ("process", "Processes: worker count, privileges"),
    ("channel", "Processes: the master-worker channel"),
    ("masterview", "Processes: the master's view of the stats"),
    ("systemd", "Processes: systemd notify and socket activation"),
    ("worker", "Processes: a worker's end of the channel"),
    ("master", "Processes: the master, workers, reload"),
    ("cli", "The command line"),
    ("__main__", "Entry point"),
)
SECTION_TITLES = dict(READING_ORDER)


class BundleError(Exception):
    """The package breaks a rule the flattening relies on; the message lists every problem."""


def build(package_dir, output_name):
    """Return the text of the one-file build of the package in ``package_dir``."""
    package = os.path.basename(os.path.normpath(package_dir))
    sources = _read_modules(package_dir)
    try:
        trees = {name: ast.parse(text, _display(package, name)) for name, text in sources.items()}
    except SyntaxError as error:
        raise BundleError("%s:%s: %s" % (error.filename, error.lineno, error.msg))
    problems = []
    imports = {name: _package_imports(package, name, tree, problems) for name, tree in trees.items()}
    bindings = {name: _top_level_bindings(tree) for name, tree in trees.items() if name != "__init__"}
    problems += _import_problems(package, imports, bindings)
    problems += _clash_problems(package, bindings)
    problems += _init_problems(package, trees["__init__"])
    problems += _module_dunder_problems(package, trees)
    if problems:
        raise BundleError("\n".join(sorted(problems, key=_natural_order)))
    order = _dependency_order(package, {name: imports[name] for name in bindings})
    sections = [_section(package, name, sources[name], imports[name]) for name in order]
    header = _header(package, trees, output_name, order, sections)
    text = header + "\n\n".join(sections) + "\n"
    try:
        compile(text, output_name, "exec")
    except SyntaxError as error:
        raise BundleError("the bundle does not compile: %s" % error)
    return text


def _natural_order(text):
    """Sort key putting "x.py:9" before "x.py:10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _read_modules(package_dir):
    if not os.path.isfile(os.path.join(package_dir, "__init__.py")):
        raise BundleError("%s is not a package: it has no __init__.py" % package_dir)
    sources = {}
    for entry in sorted(os.listdir(package_dir)):
        path = os.path.join(package_dir, entry)
        if entry.endswith(".py"):
            with open(path, encoding="utf-8") as f:
                sources[entry[:-3]] = f.read()
        elif os.path.isdir(path) and any(n.endswith(".py") for n in os.listdir(path)):
            raise BundleError("%s: subpackages cannot be bundled; keep the package flat" % path)
    return sources


def _display(package, module):
    return "%s/%s.py" % (package, module)


def _package_imports(package, module, tree, problems):
    """Return {statement: source module} for the module's droppable intra-package imports.

    Any other way of reaching into the package cannot be flattened and goes to ``problems``.
    """
    where = _display(package, module)
    top_level = set(tree.body)
    droppable = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == package:
                    problems.append("%s:%d: `import %s`: use `from .module import name`"
                                    % (where, node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").split(".")[0] == package:
                problems.append("%s:%d: absolute `from %s import ...`: use `from .module import name`"
                                % (where, node.lineno, node.module))
            elif node.level > 0:
                problem = _relative_import_problem(node, node in top_level)
                if problem:
                    problems.append("%s:%d: %s" % (where, node.lineno, problem))
                else:
                    droppable[node] = node.module
    for node in droppable:
        if any(other is not node and other.lineno <= node.end_lineno and other.end_lineno >= node.lineno
               for other in tree.body):
            problems.append("%s:%d: the import shares its line with another statement"
                            % (where, node.lineno))
    return droppable


def _relative_import_problem(node, at_top_level):
    if node.level > 1 or node.module is None or "." in node.module:
        return "only `from .module import name` can be flattened (no `from . import x`, no subpackages)"
    if not at_top_level:
        return "`from .%s import ...` must be a top-level statement" % node.module
    if any(alias.name == "*" for alias in node.names):
        return "`from .%s import *` hides which names it needs; name them" % node.module
    aliased = [alias.name for alias in node.names if alias.asname]
    if aliased:
        return "`as` aliases cannot be flattened: %s" % ", ".join(aliased)
    return None


def _top_level_bindings(tree):
    """Return {name: origin} for every name the module binds in its global namespace.

    The origin tells a repeated stdlib import (harmless) from a definition: it is
    ("import", module, attribute) for imports and None for anything the module defines.
    Intra-package imports are left out: they rebind the very object they import.
    """
    bindings = {}

    def bind(name, origin):
        if bindings.get(name, origin) != origin:
            origin = None
        bindings[name] = origin

    def visit(node):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bind(node.name, None)
            for inner in ast.walk(node):
                if isinstance(inner, ast.Global):
                    for name in inner.names:
                        bind(name, None)
            return
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = alias.name if alias.asname else alias.name.split(".")[0]
                bind(alias.asname or target, ("import", target, None))
            return
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                for alias in node.names:
                    bind(alias.asname or alias.name, ("import", node.module, alias.name))
            return
        if isinstance(node, (ast.Lambda, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)):
            return
        if isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            bind(node.id, None)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            bind(node.name, None)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return bindings


def _import_problems(package, imports, bindings):
    problems = []
    for module, statements in imports.items():
        for node, source in statements.items():
            where = "%s:%d" % (_display(package, module), node.lineno)
            if source not in bindings:
                problems.append("%s: imports from .%s, which is not a module of the package"
                                % (where, source))
                continue
            missing = [alias.name for alias in node.names if alias.name not in bindings[source]]
            if missing:
                problems.append("%s: %s does not define %s"
                                % (where, _display(package, source), ", ".join(missing)))
    return problems


def _clash_problems(package, bindings):
    """Names that two modules bind differently: in one file the later one would shadow."""
    owners = {}
    for module, names in bindings.items():
        for name, origin in names.items():
            owners.setdefault(name, []).append((module, origin))
    problems = []
    for name, bound in sorted(owners.items()):
        origins = set(origin for _, origin in bound)
        if len(bound) > 1 and (len(origins) > 1 or None in origins):
            modules = ", ".join(_display(package, module) for module, _ in bound)
            problems.append("top-level name %r is bound in %s: rename all but one" % (name, modules))
    return problems


def _init_problems(package, tree):
    """__init__.py only re-exports: anything it ran or defined would be lost in the bundle."""
    extra = [node for node in tree.body[_docstring_length(tree):]
             if not (isinstance(node, ast.ImportFrom) and node.level == 1)]
    return ["%s:%d: __init__.py may hold only a docstring and `from .module import name` lines"
            % (_display(package, "__init__"), node.lineno) for node in extra]


def _module_dunder_problems(package, trees):
    """Names like __file__ would describe the one file, silently, instead of the module."""
    problems = []
    for module, tree in trees.items():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Name) and node.id in MODULE_DUNDERS
                    and not (module == "__main__" and node.id == "__name__")):
                problems.append("%s:%d: `%s` would be the one file's, not this module's, in the bundle%s"
                                % (_display(package, module), node.lineno, node.id,
                                   " (only __main__.py may test it)" if node.id == "__name__" else ""))
    return problems


def _docstring_length(tree):
    return 1 if ast.get_docstring(tree, clean=False) is not None else 0


def _dependency_order(package, imports):
    """Modules after the modules they import from, otherwise in READING_ORDER; __main__ last."""
    needs = {module: set(statements.values()) for module, statements in imports.items()}
    if any("__main__" in sources for sources in needs.values()):
        raise BundleError("no module may import from __main__")
    waiting = dict(needs)
    waiting.pop("__main__", None)
    rank = _reading_rank(waiting)
    order = []
    ready = [(rank[module], module) for module, sources in waiting.items() if not sources]
    heapq.heapify(ready)
    while ready:
        module = heapq.heappop(ready)[1]
        order.append(module)
        del waiting[module]
        for other, sources in waiting.items():
            if module in sources:
                sources.discard(module)
                if not sources:
                    heapq.heappush(ready, (rank[other], other))
    if waiting:
        raise BundleError("import cycle: %s" % " -> ".join(
            _display(package, module) for module in _find_cycle(waiting)))
    return order + (["__main__"] if "__main__" in needs else [])


def _reading_rank(needs):
    """{module: its place in READING_ORDER}; a module not there takes the earliest place of
    the modules that import it, directly or not (the last place when none does)."""
    places = {module: position for position, (module, _) in enumerate(READING_ORDER)}
    rank = {module: places.get(module, len(READING_ORDER)) for module in needs}
    changed = True
    while changed:
        changed = False
        for module, sources in needs.items():
            for source in sources:
                if source in rank and rank[module] < rank[source] and source not in places:
                    rank[source] = rank[module]
                    changed = True
    return rank


def _find_cycle(waiting):
    """Follow unresolved imports from any stuck module until one repeats."""
    path = [min(waiting)]
    while path.count(path[-1]) < 2:
        path.append(min(waiting[path[-1]]))
    return path[path.index(path[-1]):]


def _header(package, trees, output_name, order, sections):
    """The shebang and the file's docstring: what it is, how to run it, the contents."""
    about = ast.get_docstring(trees["__init__"]) or package
    version = _version(trees)
    lines = ('#!/usr/bin/env python3\n"""' + about).split("\n") + [""]
    lines += [
        "%sOne self-contained file: copy it to a host and run" % (
            "Version %s. " % version if version else ""),
        "``python3 %s conf.ini`` (``--help`` lists the options)." % output_name,
        "",
        "Generated by tools/bundle.py from the %s/ package, each module under a" % package,
        "banner naming its concept and its path: edit the package and rebuild instead of",
        "editing this file.",
        "",
        "Contents (line numbers in this file):",
        "",
    ]
    toc_at = len(lines)
    lines += [None] * len(order) + ['"""', "", "", ""]
    line = len(lines) + 1                    # the first section's title, under a ### line
    width = max(len(_title(package, module)) for module in order)
    for position, (module, section) in enumerate(zip(order, sections)):
        lines[toc_at + position] = "    %5d  %s" % (line, _title(package, module).ljust(width))
        line += section.count("\n") + 2     # and two blank lines between sections
    return "\n".join(line.rstrip() for line in lines)


def _title(package, module):
    """A section's name in its banner and in the contents: the concept, then the path."""
    concept = SECTION_TITLES.get(module)
    path = _display(package, module)
    return "%s (%s)" % (concept, path) if concept else path


def _version(trees):
    for tree in trees.values():
        for node in tree.body:
            if (isinstance(node, ast.Assign) and len(node.targets) == 1
                    and isinstance(node.targets[0], ast.Name) and node.targets[0].id == "__version__"
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                return node.value.value
    return None


def _section(package, module, source, package_imports):
    """The module's text under a banner, its intra-package imports cut out."""
    cut = set()
    for node in package_imports:
        cut.update(range(node.lineno, node.end_lineno + 1))
    lines = []
    after_cut = False
    # Split on "\n" only, as the tokenizer does: splitlines() would also break at form
    # feeds and U+2028 inside string literals and shift every line number after them.
    for number, line in enumerate(source.split("\n"), 1):
        if number in cut:
            after_cut = True
        elif line.strip():
            lines.append(line)
            after_cut = False
        elif not (after_cut and _ends_blank(lines, 2)):
            # Blank lines touching a cut sit between top-level statements, never inside a
            # string, so trimming them to two cannot change what the code means.
            lines.append(line)
    while _ends_blank(lines, 1):
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    title = ("# %s " % _title(package, module)).ljust(BANNER_WIDTH, "#").rstrip()
    banner = ["#" * BANNER_WIDTH, title, "#" * BANNER_WIDTH, ""]
    return "\n".join(banner + lines) + "\n"


def _ends_blank(lines, count):
    return len(lines) >= count and not any(line.strip() for line in lines[-count:])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 with a unified diff if OUTPUT differs from a fresh build")
    parser.add_argument("--package", default=os.path.join(ROOT, "simpleproxy"),
                        help="the package directory (default: simpleproxy/ beside tools/)")
    parser.add_argument("--output", help="the file to write or check (default: PACKAGE.py beside PACKAGE)")
    args = parser.parse_args(argv)
    package_dir = os.path.normpath(args.package)
    output = args.output or package_dir + ".py"
    try:
        fresh = build(package_dir, os.path.basename(output))
    except BundleError as error:
        print("bundle.py: cannot build %s:\n%s" % (output, error), file=sys.stderr)
        return 2
    if args.check:
        return _check(output, fresh)
    with open(output, "w", encoding="utf-8", newline="\n") as f:
        f.write(fresh)
    print("wrote %s (%d lines)" % (output, fresh.count("\n")))
    return 0


def _check(output, fresh):
    try:
        with open(output, encoding="utf-8", newline="") as f:
            committed = f.read()
    except FileNotFoundError:
        committed = ""
    if committed == fresh:
        return 0
    name = os.path.basename(output)
    sys.stdout.writelines(difflib.unified_diff(
        committed.splitlines(True), fresh.splitlines(True),
        "%s (committed)" % name, "%s (fresh build)" % name))
    print("bundle.py: %s is out of date: run python3 tools/bundle.py and commit it" % output,
          file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
