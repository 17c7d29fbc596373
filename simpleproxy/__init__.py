"""simpleproxy: a TCP load balancer in pure Python built around the PROXY protocol.

It listens on the frontends of an INI configuration (HAProxy's words for its keys), takes
or leaves PROXY headers (v1 and v2) from the peers it trusts, balances over the servers of
a backend with health checks, and sends them a PROXY header of their own if asked:

    simpleproxy conf.ini                serve until SIGTERM or SIGINT
    simpleproxy -c conf.ini             check the configuration (exit 0 when valid)
    simpleproxy --decode 'HEX'          decode one PROXY header, print it as JSON

(``python3 -m simpleproxy`` from the package, ``python3 simpleproxy.py`` from the one file.)
"""
from ._version import __version__  # noqa: F401
