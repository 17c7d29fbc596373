"""Whom to believe: a bind's PROXY header rules, decided on the real socket peer.

A PROXY header is a claim about who the client is, and whoever may send one may claim to be
anyone. So each connection on a bind with header handling is judged once, when it is
accepted, on the address of the socket peer itself: never on an address that came in a
header, in a chain of proxies too.

* ``accept-proxy`` alone: every peer must send a header (the spec's rule and HAProxy's; the
  configuration warns that any peer can then claim any address).
* ``accept-proxy-from CIDR[,...]``: these peers must send a header, and only theirs are
  believed. A peer in neither list is refused at once.
* ``proxy-optional-from CIDR[,...]``: these peers may also connect without a header (health
  probes, in-cluster clients). A header from one of them is believed only when it is trusted
  too (in accept-proxy-from, or accept-proxy-from is empty); otherwise it is refused, so a
  client behind an optional peer cannot slip its own header in.
* ``unix`` in a list stands for Unix-socket peers. An IPv4-mapped IPv6 peer (a dual-stack
  bind) is judged as the IPv4 address it is.
* ``accept-proxy-version v1|v2`` refuses a header of the other version as ``unsupported``.

Header or not, for a peer that may do either, is never guessed: only the first bytes
against the two signatures decide. While the bytes so far are a prefix of a signature,
more are awaited; bytes that cannot start one are the client's own data. A peer that
stops (EOF) or stays silent until ``timeout proxy-header`` before completing a signature
has sent no header, so server-speaks-first protocols still work for it, after that delay.
"""
from collections import namedtuple

from .proxyproto import UNSUPPORTED, V1_SIGNATURE, V2_SIGNATURE, ProxyHeaderError, packed_ip

ANY_PEER_RULE = "accept-proxy"        # the rule's name in the log when every peer is trusted
NO_RULE = "none"
UNIX_PEERS = "unix"


# What the first bytes of a connection call for (judge_start).
START_WAIT = "wait"            # a prefix of a signature so far: read on
START_PARSE = "parse"          # hand the bytes to the header parser; it also says why they are bad
START_BARE = "bare"            # no header: the bytes are the client's own, relay them
START_UNTRUSTED = "untrusted"  # a signature from a peer whose headers are not believed

_TRUST_VERSIONS = {"any": 0, "v1": 1, "v2": 2}
_TRUST_SIGNATURES = ((1, V1_SIGNATURE), (2, V2_SIGNATURE))


class PeerTrust(namedtuple("PeerTrust", "header_rule bare_rule version")):
    """What one peer may do on one bind.

    header_rule: the rule (as the log names it) under which this peer's header is believed,
    or None when a header from it is refused. bare_rule: the rule under which it may connect
    without a header, or None when it must send one. Neither: the peer is refused. version:
    1 or 2 when the bind takes only that header version, 0 for either.
    """

    __slots__ = ()

    @property
    def refused(self):
        return self.header_rule is None and self.bare_rule is None

    @property
    def screens_start(self):
        """True when the first bytes must be judged before any parsing (judge_start)."""
        return self.bare_rule is not None or self.version != 0

    def rule_for(self, header):
        """The rule to name in the log, given the header the connection brought (or None)."""
        if header is not None and self.header_rule is not None:
            return self.header_rule
        return self.bare_rule or self.header_rule or NO_RULE


class TrustPolicy(object):
    """The trust rules of one bind, prepared once so that judging a peer is a few integer tests."""

    __slots__ = ("version", "_header_rules", "_bare_rules", "_same_for_every_peer")

    def __init__(self, bind):
        self.version = _TRUST_VERSIONS[bind.accept_proxy_version]
        # None: every peer is trusted to send a header.
        self._header_rules = (_trust_rules("accept-proxy-from", bind.accept_proxy_from)
                              if bind.accept_proxy_from else None)
        self._bare_rules = _trust_rules("optional", bind.proxy_optional_from)
        # A bind without rules (accept-proxy alone, the usual one) judges every peer alike:
        # its answer is made once, not per connection.
        self._same_for_every_peer = None
        if self._header_rules is None and not any(self._bare_rules.values()):
            self._same_for_every_peer = PeerTrust(ANY_PEER_RULE, None, self.version)

    def decide(self, peer):
        """The PeerTrust of a socket peer: (host, port) as accept() gave it, or a str (Unix)."""
        if self._same_for_every_peer is not None:
            return self._same_for_every_peer
        if isinstance(peer, str):
            family, value = UNIX_PEERS, 0
        else:
            family, value = _trust_peer_address(peer[0])
        if self._header_rules is None:
            header_rule = ANY_PEER_RULE
        else:
            header_rule = _trust_match(self._header_rules[family], value)
        return PeerTrust(header_rule, _trust_match(self._bare_rules[family], value), self.version)


def _trust_rules(name, sources):
    """Per peer family (4, 6, "unix"): (network, mask, log text) tuples, in the order given."""
    rules = {4: [], 6: [], UNIX_PEERS: []}
    for source in sources:
        if source == UNIX_PEERS:
            rules[UNIX_PEERS].append((0, 0, "%s:%s" % (name, UNIX_PEERS)))
        else:
            rules[source.version].append((int(source.network_address), int(source.netmask),
                                          "%s:%s" % (name, source)))
    return rules


def _trust_match(rules, value):
    for network, mask, text in rules:
        if value & mask == network:
            return text
    return None


def _trust_peer_address(host):
    """(4 or 6, the address as an integer) of a peer's host text."""
    packed = packed_ip(host)
    return (4 if len(packed) == 4 else 6), int.from_bytes(packed, "big")


def signature_version(data):
    """1 or 2 when data starts with that version's signature, 0 when it cannot start either,
    None while it is empty or a proper prefix of one."""
    for version, signature in _TRUST_SIGNATURES:
        head = data[:len(signature)]
        if head == signature:
            return version
        if signature.startswith(head):
            return None
    return 0


def judge_start(trust, data, ended):
    """What the first bytes ``data`` of a connection from a peer with PeerTrust ``trust`` call
    for: START_WAIT, START_PARSE, START_BARE or START_UNTRUSTED. ``ended``: the peer sent EOF,
    or the header deadline passed. Raises ProxyHeaderError(UNSUPPORTED) for a signature of the
    version the bind does not take."""
    version = signature_version(data)
    if not version:
        if version is None and not ended:
            return START_WAIT
        # No header is coming: fine for a peer that may go without, the parser's to refuse if not.
        return START_BARE if trust.bare_rule is not None else START_PARSE
    if trust.header_rule is None:
        return START_UNTRUSTED
    if trust.version and version != trust.version:
        raise ProxyHeaderError(UNSUPPORTED, "a v%d header on a bind that takes v%d only"
                               % (version, trust.version))
    return START_PARSE
