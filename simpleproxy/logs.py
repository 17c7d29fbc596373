"""Logging: one logger for the whole proxy, to stderr, plain lines."""
import logging
import sys

LOG = logging.getLogger("simpleproxy")


def setup_logging(level="info", stream=None):
    """Send simpleproxy's log to ``stream`` (stderr by default) at ``level``.

    Timestamps carry milliseconds because connection timings are logged in ms.
    """
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d simpleproxy[%(process)d] %(levelname)s %(message)s",
        "%Y-%m-%dT%H:%M:%S"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(level.upper())
    LOG.propagate = False
