"""How a connection can end: the closed set of words its log line ends with (``end=``).

One table, as HAProxy keeps its termination codes in one list: the session closes with one
of these words, the log takes its level from here, and passive health (health.py) asks here
whether a failed connect tells anything about the server. docs/log-format.md lists the same words;
tests/test_layout.py checks that the two agree.

Each ``EndCause`` has the word, the log level of the connection's line, and ``server_fault``:
None when the end says nothing about the server, or the reason a server state-change line
gives when it counts as a failed check (HAProxy's ``observe layer4``). Running out of local
ports or descriptors (``connect-error``) is the proxy's trouble, not the server's.
"""
import logging
from collections import namedtuple

from .proxyproto import HEADER_ERROR_KINDS, TRUNCATED

EndCause = namedtuple("EndCause", "word level server_fault")

END_NORMAL = "normal"                      # both sides sent EOF and every byte went through
END_CLIENT_ABORT = "client-abort"          # the client reset or vanished
END_SERVER_ABORT = "server-abort"
END_CLIENT_TIMEOUT = "client-timeout"
END_SERVER_TIMEOUT = "server-timeout"
END_HEADER_TIMEOUT = "header-timeout"      # no complete PROXY header by timeout proxy-header
END_CONNECT_TIMEOUT = "connect-timeout"
END_CONNECT_REFUSED = "connect-refused"
END_CONNECT_ERROR = "connect-error"        # any other failed connect (unreachable, no ports)
END_NO_SERVER = "no-server"                # the backend has no usable server
END_QUEUE_FULL = "queue-full"
END_QUEUE_TIMEOUT = "queue-timeout"
END_UNTRUSTED_PEER = "rejected:untrusted-peer"        # the peer is in neither trust list
END_UNTRUSTED_HEADER = "rejected:untrusted-header"    # a header from a peer not trusted to send one
END_SOURCE_LIMIT = "rejected:maxconn-per-source"
END_REJECTED_CONNECTION = "rejected:tcp-request-connection"   # a reject rule, on the real peer
END_REJECTED_CONTENT = "rejected:tcp-request-content"         # a reject rule, after the header
END_BAD_OUTGOING_HEADER = "bad-outgoing-header"   # the server's v2 header would be too long
END_HEADER_EVICTED = "evicted:maxconn-pending-header"
END_HEALTH_CHECK = "health-check"          # LOCAL, then EOF, reset or silence: a peer's check
END_NO_DESCRIPTORS = "rejected:no-descriptors"   # no socket for the server: maxconn too high
END_INTERNAL_ERROR = "internal-error"      # a bug of ours, contained to this connection
END_SHUTDOWN = "shutdown"                  # the proxy stopped
END_BAD_HEADER = {kind: "bad-header:" + kind for kind in HEADER_ERROR_KINDS}

END_CAUSES = {cause.word: cause for cause in [
    EndCause(END_NORMAL, logging.INFO, None),
    EndCause(END_CLIENT_ABORT, logging.INFO, None),
    EndCause(END_SERVER_ABORT, logging.INFO, None),
    EndCause(END_CLIENT_TIMEOUT, logging.INFO, None),
    EndCause(END_SERVER_TIMEOUT, logging.INFO, None),
    EndCause(END_HEADER_TIMEOUT, logging.INFO, None),
    EndCause(END_CONNECT_TIMEOUT, logging.INFO, "connection timeout"),
    EndCause(END_CONNECT_REFUSED, logging.INFO, "connection refused"),
    EndCause(END_CONNECT_ERROR, logging.INFO, None),
    EndCause(END_NO_SERVER, logging.INFO, None),
    EndCause(END_QUEUE_FULL, logging.INFO, None),
    EndCause(END_QUEUE_TIMEOUT, logging.INFO, None),
] + [EndCause(word, logging.INFO, None) for word in END_BAD_HEADER.values()] + [
    EndCause(END_UNTRUSTED_PEER, logging.INFO, None),
    EndCause(END_UNTRUSTED_HEADER, logging.INFO, None),
    EndCause(END_SOURCE_LIMIT, logging.INFO, None),
    EndCause(END_REJECTED_CONNECTION, logging.INFO, None),
    EndCause(END_REJECTED_CONTENT, logging.INFO, None),
    EndCause(END_BAD_OUTGOING_HEADER, logging.WARNING, None),    # what it forwards needs fixing
    EndCause(END_HEADER_EVICTED, logging.INFO, None),
    EndCause(END_HEALTH_CHECK, logging.DEBUG, None),      # a peer's probe is not traffic
    EndCause(END_NO_DESCRIPTORS, logging.INFO, None),
    EndCause(END_INTERNAL_ERROR, logging.INFO, None),     # its traceback is logged at error
    EndCause(END_SHUTDOWN, logging.INFO, None),
]}

# ``option dontlognull``: the ends of a connection that sent nothing, as HAProxy leaves them out.
END_NULL_QUIET = frozenset((END_NORMAL, END_CLIENT_ABORT, END_BAD_HEADER[TRUNCATED]))
