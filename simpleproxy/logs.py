"""Logging: one logger for the whole proxy, to stderr, plain lines."""
import logging
import os
import sys

LOG = logging.getLogger("simpleproxy")


class _LogSecondFormatter(logging.Formatter):
    """A Formatter that formats each second's timestamp once, not once per line."""

    _second = None
    _text = ""

    def formatTime(self, record, datefmt=None):
        second = int(record.created)
        if second != self._second:
            self._second, self._text = second, logging.Formatter.formatTime(self, record, datefmt)
        return self._text


def setup_logging(level="info", stream=None):
    """Send simpleproxy's log to ``stream`` (stderr by default) at ``level``.

    Timestamps carry milliseconds because connection timings are logged in ms.
    """
    # The logging HOWTO's "Optimization" switches: what the format does not print is not
    # gathered (the pid goes into the format once; caller, thread and process names never).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_LogSecondFormatter(
        "%%(asctime)s.%%(msecs)03d simpleproxy[%d] %%(levelname)s %%(message)s" % os.getpid(),
        "%Y-%m-%dT%H:%M:%S"))
    LOG.handlers[:] = [handler]
    LOG.setLevel(level.upper())
    LOG.propagate = False
