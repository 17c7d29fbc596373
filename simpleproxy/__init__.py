"""simpleproxy: a TCP load balancer in pure Python built around the PROXY protocol."""
from ._version import __version__  # noqa: F401
