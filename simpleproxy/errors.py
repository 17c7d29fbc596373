"""The one error base class, and the errors the rest of simpleproxy raises."""


class SimpleProxyError(Exception):
    """Base of every error simpleproxy raises on purpose."""


class ConfigError(SimpleProxyError):
    """A configuration that cannot be used; ``messages`` holds one line per problem."""

    def __init__(self, messages):
        if isinstance(messages, str):
            messages = [messages]
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))


class ProxyHeaderError(SimpleProxyError):
    """A PROXY header that cannot be accepted; ``kind`` says which way it failed.

    The kinds are counted apart in logs and metrics, so they are a closed set:
    see ``HEADER_ERROR_KINDS``.
    """

    def __init__(self, kind, reason):
        self.kind = kind
        self.reason = reason
        super().__init__("%s: %s" % (kind, reason))


NOT_PROXY = "not-proxy"          # neither signature: the peer does not speak PROXY
MALFORMED = "malformed"          # a PROXY header that breaks the grammar
TRUNCATED = "truncated"          # EOF (or the deadline) before the header was complete
TOO_LONG = "too-long"            # longer than the limit (107 bytes for v1, the cap for v2)
BAD_CHECKSUM = "bad-checksum"    # CRC32C TLV present and wrong
UNSUPPORTED = "unsupported"      # well-formed, but a version/command we must drop

HEADER_ERROR_KINDS = (NOT_PROXY, MALFORMED, TRUNCATED, TOO_LONG, BAD_CHECKSUM, UNSUPPORTED)
