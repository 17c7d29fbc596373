"""The one-file build (tools/bundle.py, simpleproxy.py) and the ways to run simpleproxy."""
import ast
import importlib.util
import os
import re
import shutil
import subprocess
import sys

import pytest

from simpleproxy._version import __version__

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BUNDLER = os.path.join(ROOT, "tools", "bundle.py")
BUNDLE = os.path.join(ROOT, "simpleproxy.py")
RUN_TIMEOUT = 60


def _load_bundler():
    spec = importlib.util.spec_from_file_location("bundle", BUNDLER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bundle = _load_bundler()


def run(*args, cwd=ROOT):
    return subprocess.run(list(args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=RUN_TIMEOUT)


# ---------------------------------------------------------------------------------------------
# The real package and the committed simpleproxy.py

def test_committed_bundle_equals_a_fresh_build():
    result = run(sys.executable, BUNDLER, "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_bundle_imports_nothing_from_the_package():
    with open(BUNDLE, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    reaching_in = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("simpleproxy")):
            reaching_in.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "simpleproxy" for a in node.names):
            reaching_in.append(node.lineno)
    assert reaching_in == []


def test_bundle_copied_alone_prints_the_version(tmp_path):
    # In the repository root the package would shadow the file, so run a copy elsewhere.
    shutil.copy(BUNDLE, str(tmp_path))
    result = run(sys.executable, "simpleproxy.py", "--version", cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert __version__ in result.stdout.split()


def test_python_dash_m_runs_the_same_main_as_the_bundle(tmp_path):
    shutil.copy(BUNDLE, str(tmp_path))
    from_bundle = run(sys.executable, "simpleproxy.py", "--version", cwd=str(tmp_path))
    from_package = run(sys.executable, "-m", "simpleproxy", "--version")
    assert (from_package.returncode, from_package.stdout) == (0, from_bundle.stdout)


def test_console_script_runs_the_same_main():
    # The script exists where the package is installed, as in every tox env.
    script = os.path.join(os.path.dirname(sys.executable), "simpleproxy")
    if not os.path.exists(script):
        pytest.skip("simpleproxy is not installed beside %s (tox installs it)" % sys.executable)
    from_script = run(script, "--version")
    from_package = run(sys.executable, "-m", "simpleproxy", "--version")
    assert (from_script.returncode, from_script.stdout) == (0, from_package.stdout)


# ---------------------------------------------------------------------------------------------
# The README's two commands

def _readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return [block.strip() for block in re.findall(r"```sh\n(.*?)```", f.read(), re.S)][:2]


def test_ci_runs_the_readme_test_command_word_for_word():
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
        last_line = f.read().strip().splitlines()[-1]
    assert _readme_commands()[1] == last_line


def test_readme_run_command_names_a_valid_config():
    words = _readme_commands()[0].split()
    assert words[:3] == ["python3", "-m", "simpleproxy"]
    result = run(sys.executable, "-m", "simpleproxy", "--check", *words[3:])
    assert result.returncode == 0, result.stderr


# ---------------------------------------------------------------------------------------------
# The bundler on small packages of its own

GOOD_PACKAGE = {
    "__init__.py": '"""pkg: a package for the bundler tests."""\nfrom ._version import __version__\n',
    "_version.py": '__version__ = "9.8.7"\n',
    # apple sorts first but needs zebra: the order must follow the imports. The form feed
    # counts as a line break for str.splitlines() but not for Python.
    "apple.py": (
        '"""Needs zebra.\fReally."""\n'
        'import os\n'
        '\n'
        'from .zebra import (\n'
        '    ONE,\n'
        '    GAP,\n'
        ')\n'
        '\n'
        '\n'
        '\n'
        'GREETING = "one=%d gap=%d" % (ONE, GAP.count(os.linesep))\n'
    ),
    "zebra.py": (
        'import os\n'
        '\n'
        'ONE = 1\n'
        '# Blank lines inside a string are data, not layout.\n'
        'GAP = """\n\n\n\n"""\n'
    ),
    "cli.py": (
        'from ._version import __version__\n'
        'from .apple import GREETING\n'
        '\n'
        '\n'
        'def main():\n'
        '    print(__version__, GREETING)\n'
        '    return 3\n'
    ),
    "__main__.py": 'import sys\n\nfrom .cli import main\n\nif __name__ == "__main__":\n    sys.exit(main())\n',
}


def make_package(tmp_path, changes):
    """Write GOOD_PACKAGE with ``changes`` (file name to text) applied; return its folder."""
    package_dir = tmp_path / "pkg"
    package_dir.mkdir()
    for name, text in dict(GOOD_PACKAGE, **changes).items():
        (package_dir / name).write_text(text)
    return str(package_dir)


def test_good_package_bundles_in_import_order_and_runs(tmp_path):
    text = bundle.build(make_package(tmp_path, {}), "pkg.py")
    banners = re.findall(r"^# (?:.* \()?pkg/(\S+)\.py\)? #", text, re.M)
    assert banners == ["_version", "zebra", "apple", "cli", "__main__"]
    assert "from ." not in text
    assert text.startswith('#!/usr/bin/env python3\n"""pkg: a package for the bundler tests.\n')
    assert "Version 9.8.7." in text
    assert 'GAP = """\n\n\n\n"""' in text
    assert '"""Needs zebra.\fReally."""\nimport os\n' in text
    assert "\n\n\n\n" not in text.replace('GAP = """\n\n\n\n"""', "GAP")  # no 3 blank lines
    (tmp_path / "pkg.py").write_text(text)
    result = run(sys.executable, "pkg.py", cwd=str(tmp_path))
    assert (result.returncode, result.stdout) == (3, "9.8.7 one=1 gap=4\n")


def contents_of(text):
    """[(line number, title)] from the contents in a bundle's docstring."""
    return [(int(number), title) for number, title in
            re.findall(r"^ +(\d+)  (.+\S)$", text.split('"""', 2)[1], re.M)]


def test_contents_give_the_line_of_each_banner(tmp_path):
    text = bundle.build(make_package(tmp_path, {}), "pkg.py")
    lines = text.split("\n")
    contents = contents_of(text)
    assert [title for _, title in contents] == [
        "Version (pkg/_version.py)", "pkg/zebra.py", "pkg/apple.py", "The command line (pkg/cli.py)",
        "Entry point (pkg/__main__.py)"]
    for number, title in contents:
        assert lines[number - 1].startswith("# %s #" % title)


def test_committed_bundle_reads_from_the_protocol_core_out_to_the_command_line():
    with open(BUNDLE, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    contents = contents_of(text)
    modules = [re.search(r"simpleproxy/(\w+)\.py", title).group(1) for _, title in contents]
    assert modules == [module for module, _ in bundle.READING_ORDER]
    for number, title in contents:
        assert lines[number - 1].startswith("# %s " % title)


def test_a_module_the_reading_order_does_not_name_comes_with_its_first_user(tmp_path):
    """config.py needs a new helper module: it is read just before config, not at the end."""
    package = make_package(tmp_path, {
        "config.py": "from .inifile import LINES\nCONFIG = LINES\n",
        "inifile.py": "LINES = []\n",
        "loop.py": "LOOP = 1\n",
    })
    text = bundle.build(package, "pkg.py")
    banners = re.findall(r"^# (?:.* \()?pkg/(\S+)\.py\)? #", text, re.M)
    assert banners[:4] == ["_version", "inifile", "config", "loop"]


def test_build_does_not_depend_on_hash_seed(tmp_path):
    package_dir = make_package(tmp_path, {})
    outputs = []
    for seed in ("1", "2"):
        (tmp_path / seed).mkdir()
        output = str(tmp_path / seed / "pkg.py")
        env = dict(os.environ, PYTHONHASHSEED=seed)
        subprocess.run([sys.executable, BUNDLER, "--package", package_dir, "--output", output],
                       env=env, check=True, stdout=subprocess.DEVNULL, timeout=RUN_TIMEOUT)
        with open(output, "rb") as f:
            outputs.append(f.read())
    assert outputs[0] == outputs[1]


REJECTED = [
    ("same function name in two modules",
     {"extra.py": "def main():\n    pass\n"},
     "top-level name 'main' is bound in pkg/cli.py, pkg/extra.py"),
    ("an import and a definition of one name",
     {"extra.py": "from os import path\n", "other.py": "def path():\n    pass\n"},
     "top-level name 'path' is bound in pkg/extra.py, pkg/other.py"),
    ("a name bound by `global` in a function",
     {"extra.py": "def bump():\n    global ONE\n    ONE = 2\n"},
     "top-level name 'ONE' is bound in pkg/extra.py, pkg/zebra.py"),
    ("a name bound under a top-level try",
     {"extra.py": "try:\n    import json\nexcept ImportError:\n    json = None\n",
      "other.py": "import json\n"},
     "top-level name 'json' is bound in pkg/extra.py, pkg/other.py"),
    ("an import cycle",
     {"extra.py": "from .other import B\nA = 1\n", "other.py": "from .extra import A\nB = 2\n"},
     "import cycle: pkg/extra.py -> pkg/other.py -> pkg/extra.py"),
    ("an alias",
     {"extra.py": "from .zebra import ONE as UNO\n"},
     "pkg/extra.py:1: `as` aliases cannot be flattened: ONE"),
    ("a module import",
     {"extra.py": "from . import zebra\n"},
     "pkg/extra.py:1: only `from .module import name` can be flattened"),
    ("an absolute import",
     {"extra.py": "from pkg.zebra import ONE\n"},
     "pkg/extra.py:1: absolute `from pkg.zebra import ...`"),
    ("a plain import of the package",
     {"extra.py": "import pkg.zebra\n"},
     "pkg/extra.py:1: `import pkg.zebra`"),
    ("an import inside a function",
     {"extra.py": "def one():\n    from .zebra import ONE\n    return ONE\n"},
     "pkg/extra.py:2: `from .zebra import ...` must be a top-level statement"),
    ("a star import",
     {"extra.py": "from .zebra import *\n"},
     "pkg/extra.py:1: `from .zebra import *`"),
    ("a name the source module lacks",
     {"extra.py": "from .zebra import TWO\n"},
     "pkg/extra.py:1: pkg/zebra.py does not define TWO"),
    ("a module that does not exist",
     {"extra.py": "from .ghost import X\n"},
     "pkg/extra.py:1: imports from .ghost, which is not a module of the package"),
    ("an import sharing its line",
     {"extra.py": "from .zebra import ONE; TWO = ONE + 1\n"},
     "pkg/extra.py:1: the import shares its line with another statement"),
    ("code in __init__.py",
     {"__init__.py": '"""pkg."""\nfrom ._version import __version__\nREADY = True\n'},
     "pkg/__init__.py:3: __init__.py may hold only a docstring"),
    ("a __main__ guard outside __main__.py",
     {"extra.py": 'if __name__ == "__main__":\n    pass\n'},
     "pkg/extra.py:1: `__name__` would be the one file's, not this module's, in the bundle"
     " (only __main__.py may test it)"),
    ("a logger named after its module",
     {"extra.py": "import logging\n\n\ndef log():\n    return logging.getLogger(__name__)\n"},
     "pkg/extra.py:5: `__name__` would be the one file's"),
    ("a path next to the module",
     {"extra.py": "import os\nHERE = os.path.dirname(__file__)\n"},
     "pkg/extra.py:2: `__file__` would be the one file's"),
    ("a syntax error",
     {"extra.py": "def broken(:\n"},
     "pkg/extra.py:1: "),
    ("an import from __main__",
     {"extra.py": "from .__main__ import sys\n"},
     "no module may import from __main__"),
]


@pytest.mark.parametrize("changes, message", [case[1:] for case in REJECTED],
                         ids=[case[0] for case in REJECTED])
def test_bundler_refuses_what_it_cannot_flatten(tmp_path, changes, message):
    with pytest.raises(bundle.BundleError) as caught:
        bundle.build(make_package(tmp_path, changes), "pkg.py")
    assert message in str(caught.value)


def test_check_passes_when_fresh_and_fails_with_a_diff_when_stale(tmp_path):
    package_dir = make_package(tmp_path, {})
    output = str(tmp_path / "pkg.py")
    assert run(sys.executable, BUNDLER, "--package", package_dir, "--output", output).returncode == 0
    assert run(sys.executable, BUNDLER, "--check", "--package", package_dir, "--output", output).returncode == 0

    (tmp_path / "pkg" / "zebra.py").write_text(GOOD_PACKAGE["zebra.py"] + "TWO = 2\n")
    stale = run(sys.executable, BUNDLER, "--check", "--package", package_dir, "--output", output)
    assert stale.returncode == 1
    assert "+TWO = 2\n" in stale.stdout
    assert "pkg.py is out of date" in stale.stderr


def test_command_line_fails_on_a_clashing_module(tmp_path):
    package_dir = make_package(tmp_path, {"extra.py": "GREETING = 'hello'\n"})
    output = tmp_path / "pkg.py"
    result = run(sys.executable, BUNDLER, "--package", package_dir, "--output", str(output))
    assert result.returncode == 2
    assert "top-level name 'GREETING' is bound in pkg/apple.py, pkg/extra.py" in result.stderr
    assert not output.exists()
