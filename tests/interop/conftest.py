"""Fixtures of the interop suite: a ``lab`` of real peers that stops them all at the end."""
import pytest

from peers import Lab


@pytest.fixture
def lab(tmp_path, proxy_python):
    instances = Lab(tmp_path)
    yield instances
    instances.stop_all()


@pytest.fixture(scope="module")
def module_lab(tmp_path_factory, proxy_python):
    """One lab shared by a module's tests, for setups that serve many cases at once."""
    instances = Lab(tmp_path_factory.mktemp("lab"))
    yield instances
    instances.stop_all()
