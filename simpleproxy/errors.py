"""The one error base class, and the errors the rest of simpleproxy raises.

The protocol core keeps its own error, ``proxyproto.ProxyHeaderError``, so that it imports
nothing of the project; it never leaves a session or --decode.
"""


class SimpleProxyError(Exception):
    """Base of every error simpleproxy raises on purpose."""


class ConfigError(SimpleProxyError):
    """A configuration that cannot be used; ``messages`` holds one line per problem."""

    def __init__(self, messages):
        if isinstance(messages, str):
            messages = [messages]
        self.messages = list(messages)
        super().__init__("\n".join(self.messages))
