"""What the docs promise a newcomer (issue 10), read from the files.

The README is the page read first, in five minutes: well under half of the 24 kB it once was,
and it links every page of docs/. No page names a path of the machine it was written on.
"""
import glob
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
README_MAX_BYTES = 12 * 1024
DOC_PAGES = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
READ_BY_NEWCOMERS = [README] + DOC_PAGES + sorted(glob.glob(os.path.join(ROOT, "conf", "*")))
# A home directory, an interpreter of pyenv's, a scratch file: true on one machine only.
MACHINE_LOCAL = re.compile(r"/root\b|/home/\w|\.pyenv/versions|/tmp/")


def _read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def test_the_readme_is_a_five_minute_read():
    assert len(_read(README).encode("utf-8")) <= README_MAX_BYTES


def test_the_readme_links_every_docs_page():
    linked = set(re.findall(r"\]\((docs/[^)#]+\.md)", _read(README)))
    assert DOC_PAGES, "no docs pages found"
    assert {os.path.relpath(page, ROOT) for page in DOC_PAGES} <= linked


def test_links_between_pages_lead_somewhere():
    for path in [README] + DOC_PAGES:
        for target in re.findall(r"\]\(([^)#:]+\.(?:md|png))", _read(path)):
            assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)


def test_the_architecture_page_names_every_module():
    text = _read(os.path.join(ROOT, "docs", "architecture.md"))
    modules = sorted(os.path.basename(path)
                     for path in glob.glob(os.path.join(ROOT, "simpleproxy", "*.py")))
    assert [module for module in modules
            if module != "__init__.py" and "`%s`" % module not in text] == []


@pytest.mark.parametrize("path", READ_BY_NEWCOMERS, ids=lambda p: os.path.relpath(p, ROOT))
def test_no_machine_local_paths(path):
    found = [line for line in _read(path).splitlines() if MACHINE_LOCAL.search(line)]
    assert found == []
