"""The stats listener (``stats http``): a tiny HTTP/1.1 server as a pure state machine.

A ``StatsHttpExchange`` is one connection. The loop feeds it the bytes it reads; once the
request head is complete (or can no longer be valid) it returns the whole response, and the
connection closes after it (``Connection: close``, no keep-alive). The request is bounded:
past ``MAX_REQUEST`` bytes without the end of the head the answer is 413.

Routes (GET, or HEAD for the same head without a body):

    /                 the HTML page (statspage.py), refreshed every ``stats refresh``
    /;csv, /?stats;csv  the ``show stat`` CSV, what haproxy_exporter and scrapers read
    /metrics          Prometheus text exposition 0.0.4 (metrics.py)
    /health           200 while serving, 503 once a soft stop has begun; never behind auth

With ``stats auth`` every other path needs HTTP basic authentication (401 otherwise).
Anything else: 404; another method: 405; a request that is not HTTP/1.x: 400.

The target is the admin socket's (see admin.py): ``stats_model()`` and ``clock()``; the
page also shows ``stats.stopping`` as /health does.
"""
import base64
import hmac

from .metrics import METRICS_CONTENT_TYPE, exposition
from .statspage import stats_page
from .statsviews import show_stat

MAX_REQUEST = 8192            # bytes of request line and headers
_SH_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
               405: "Method Not Allowed", 413: "Payload Too Large",
               503: "Service Unavailable"}
_SH_CSV_PATHS = ("/;csv", "/?stats;csv")
_SH_METHODS = ("GET", "HEAD")


class StatsHttpExchange(object):
    """One connection to the stats listener: request bytes in, one response out."""

    timeout = None                   # the listener's deadline (no "set timeout" over HTTP)

    def __init__(self, target, settings):
        """``settings``: a StatsHttpSettings (auth, refresh, name)."""
        self.target = target
        self.settings = settings
        self._buffer = b""
        self.closed = False

    def feed(self, data):
        """The response once it can be given (``closed`` then), else b"": read on."""
        if self.closed:
            return b""
        self._buffer += data
        head, separator, _ = self._buffer.partition(b"\r\n\r\n")
        if not separator:
            head, separator, _ = self._buffer.partition(b"\n\n")
        if not separator:
            if len(self._buffer) > MAX_REQUEST:
                return self._finish(_sh_response(413, "request too large\n"))
            return b""
        if len(head) > MAX_REQUEST:
            return self._finish(_sh_response(413, "request too large\n"))
        return self._finish(self._respond(head))

    def eof(self):
        """The client closed before a whole request head: a 400 if it sent anything, else b""."""
        if self.closed or not self._buffer:
            self.closed = True
            return b""
        return self._finish(_sh_response(400, "incomplete request\n"))

    def _finish(self, response):
        self.closed = True
        self._buffer = b""
        return response

    def _respond(self, head):
        try:
            lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
            method, target, version = lines[0].split(" ")
            headers = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if not colon or not name or name != name.strip():
                    raise ValueError(line)
                headers[name.lower()] = value.strip()
        except ValueError:
            return _sh_response(400, "bad request\n")
        if not version.startswith("HTTP/1.") or not target.startswith("/"):
            return _sh_response(400, "bad request\n")
        if method not in _SH_METHODS:
            return _sh_response(405, "method not allowed\n", head_only=False,
                                extra=(("Allow", ", ".join(_SH_METHODS)),))
        head_only = method == "HEAD"
        stats = self.target.stats_model()
        if target == "/health":
            if stats.stopping:
                return _sh_response(503, "stopping\n", head_only)
            return _sh_response(200, "ok\n", head_only)
        if not self._authorized(headers.get("authorization", "")):
            realm = self.settings.name.replace("\\", "\\\\").replace('"', '\\"')
            return _sh_response(401, "authentication required\n", head_only, extra=(
                ("WWW-Authenticate", 'Basic realm="%s"' % realm),))
        now, wall = self.target.clock()
        if target == "/":
            return _sh_response(200, stats_page(stats, now, wall, self.settings.refresh),
                                head_only, "text/html; charset=utf-8")
        if target in _SH_CSV_PATHS:
            return _sh_response(200, show_stat(stats, now), head_only, "text/plain")
        if target == "/metrics":
            return _sh_response(200, exposition(stats, now), head_only, METRICS_CONTENT_TYPE)
        return _sh_response(404, "not found\n", head_only)

    def _authorized(self, header):
        auth = self.settings.auth
        if auth is None:
            return True
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        expected = base64.b64encode(("%s:%s" % (auth.user, auth.password)).encode("utf-8"))
        return hmac.compare_digest(token.strip().encode("latin-1", "replace"), expected)


def _sh_response(status, body, head_only=False, content_type="text/plain", extra=()):
    payload = body.encode("utf-8")
    lines = ["HTTP/1.1 %d %s" % (status, _SH_REASONS[status]),
             "Content-Type: " + content_type,
             "Content-Length: %d" % len(payload),
             "Cache-Control: no-cache",
             "Connection: close"]
    lines += ["%s: %s" % pair for pair in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else payload)
