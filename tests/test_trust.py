"""Trust rules, as tables: bind options and a real socket peer in, the decision out; first
bytes in, what they call for out."""
import pytest

from simpleproxy.config import parse_config
from simpleproxy.proxyproto import UNSUPPORTED, ProxyHeaderError
from simpleproxy.proxyproto import parse_header
from simpleproxy.trust import (START_BARE, START_PARSE, START_UNTRUSTED, START_WAIT, PeerTrust,
                               TrustPolicy, judge_start, signature_version)

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
UNIX_PEER = ""                  # an unnamed Unix-socket client, as accept() reports it
REFUSED = (None, None)


def policy(options):
    """The TrustPolicy of a bind line with these options, read as a user's config would be."""
    config = parse_config("[frontend f]\nbind = 127.0.0.1:1 %s\ndefault_backend = b\n"
                          "[backend b]\nserver s = 127.0.0.1:2\n" % options)
    return TrustPolicy(config.frontends[0].binds[0])


# (bind options, real peer host or UNIX_PEER, (header_rule, bare_rule))
DECISIONS = [
    # accept-proxy alone: everyone must send a header, and everyone's is believed.
    ("accept-proxy", "203.0.113.9", ("accept-proxy", None)),
    ("accept-proxy", "2001:db8::9", ("accept-proxy", None)),
    ("accept-proxy", UNIX_PEER, ("accept-proxy", None)),
    # accept-proxy-from: only these, and they must; the first entry that matches is named.
    ("accept-proxy-from 10.0.0.0/8", "10.1.2.3", ("accept-proxy-from:10.0.0.0/8", None)),
    ("accept-proxy-from 10.0.0.0/8", "11.0.0.1", REFUSED),
    ("accept-proxy-from 10.0.0.0/8", "9.255.255.255", REFUSED),
    ("accept-proxy-from 10.0.0.0/8", UNIX_PEER, REFUSED),
    ("accept-proxy-from 10.0.0.0/8", "::a00:1", REFUSED),        # IPv6, not v4-mapped
    ("accept-proxy-from 10.0.0.0/8", "::ffff:10.9.9.9", ("accept-proxy-from:10.0.0.0/8", None)),
    ("accept-proxy-from 10.0.0.0/8,10.1.0.0/16", "10.1.0.1", ("accept-proxy-from:10.0.0.0/8", None)),
    ("accept-proxy-from 10.1.0.0/16,10.0.0.0/8", "10.1.0.1", ("accept-proxy-from:10.1.0.0/16", None)),
    ("accept-proxy-from 192.0.2.7", "192.0.2.7", ("accept-proxy-from:192.0.2.7/32", None)),
    ("accept-proxy-from 192.0.2.7", "192.0.2.6", REFUSED),
    ("accept-proxy-from 0.0.0.0/0", "198.51.100.1", ("accept-proxy-from:0.0.0.0/0", None)),
    ("accept-proxy-from 0.0.0.0/0", "::1", REFUSED),
    ("accept-proxy-from 2001:db8::/32", "2001:db8:ffff::1", ("accept-proxy-from:2001:db8::/32", None)),
    ("accept-proxy-from 2001:db8::/32", "2001:db9::1", REFUSED),
    ("accept-proxy-from 2001:db8::/32", "32.1.13.184", REFUSED),  # the same top bits, IPv4
    ("accept-proxy-from ::1", "::1", ("accept-proxy-from:::1/128", None)),
    ("accept-proxy-from 10.0.0.0/8,unix", UNIX_PEER, ("accept-proxy-from:unix", None)),
    ("accept-proxy-from 10.0.0.0/8,unix", "/run/front.sock", ("accept-proxy-from:unix", None)),
    ("accept-proxy-from unix", "127.0.0.1", REFUSED),
    # proxy-optional-from: these may go without; their header counts only if trusted too.
    ("accept-proxy-from 10.0.0.0/8 proxy-optional-from 192.168.0.0/16", "192.168.1.1",
     (None, "optional:192.168.0.0/16")),
    ("accept-proxy-from 10.0.0.0/8 proxy-optional-from 192.168.0.0/16", "10.0.0.1",
     ("accept-proxy-from:10.0.0.0/8", None)),
    ("accept-proxy-from 10.0.0.0/8 proxy-optional-from 192.168.0.0/16", "172.16.0.1", REFUSED),
    ("accept-proxy-from 10.0.0.0/8 proxy-optional-from 10.5.0.0/16", "10.5.0.1",
     ("accept-proxy-from:10.0.0.0/8", "optional:10.5.0.0/16")),
    ("accept-proxy-from 10.0.0.0/8 proxy-optional-from unix", UNIX_PEER, (None, "optional:unix")),
    ("accept-proxy-from 10.0.0.0/8 proxy-optional-from ::1", "::1", (None, "optional:::1/128")),
    # ...and with no accept-proxy-from, every peer is trusted (the config warns about it).
    ("accept-proxy proxy-optional-from 10.5.0.0/16", "10.5.0.1",
     ("accept-proxy", "optional:10.5.0.0/16")),
    ("accept-proxy proxy-optional-from 10.5.0.0/16", "1.2.3.4", ("accept-proxy", None)),
    ("proxy-optional-from 10.5.0.0/16", "10.5.255.255", ("accept-proxy", "optional:10.5.0.0/16")),
    ("proxy-optional-from unix", UNIX_PEER, ("accept-proxy", "optional:unix")),
]


@pytest.mark.parametrize("options,host,expected", DECISIONS,
                         ids=["%s|%s" % (o, h or "unix") for o, h, _ in DECISIONS])
def test_decision_on_the_real_peer(options, host, expected):
    peer = host if host == UNIX_PEER or host.startswith("/") else (host, 40000)
    trust = policy(options).decide(peer)
    assert (trust.header_rule, trust.bare_rule) == expected
    assert trust.refused == (expected == REFUSED)


@pytest.mark.parametrize("options,version", [("accept-proxy", 0),
                                             ("accept-proxy accept-proxy-version any", 0),
                                             ("accept-proxy accept-proxy-version v1", 1),
                                             ("accept-proxy-from ::1 accept-proxy-version v2", 2)])
def test_version_carried_to_every_peer(options, version):
    assert policy(options).decide(("::1", 1)).version == version


@pytest.mark.parametrize("options", ["accept-proxy", "accept-proxy accept-proxy-version v2"])
def test_a_bind_without_rules_answers_every_peer_with_one_decision(options):
    trust = policy(options)
    answers = [trust.decide(peer) for peer in (("203.0.113.9", 1), ("2001:db8::9", 2),
                                               ("::ffff:10.0.0.1", 3), UNIX_PEER, "/run/c")]
    assert answers[0] == PeerTrust("accept-proxy", None, trust.version)
    assert all(answer is answers[0] for answer in answers)


@pytest.mark.parametrize("options", ["accept-proxy-from 10.0.0.0/8",
                                     "accept-proxy proxy-optional-from 10.5.0.0/16"])
def test_a_bind_with_rules_judges_each_peer(options):
    trust = policy(options)
    assert trust.decide(("10.5.0.1", 1)) != trust.decide(("203.0.113.9", 1))


REQUIRED = PeerTrust("accept-proxy", None, 0)
OPTIONAL = PeerTrust(None, "optional:192.168.0.0/16", 0)
BOTH = PeerTrust("accept-proxy-from:10.0.0.0/8", "optional:10.5.0.0/16", 0)
V1_ONLY = PeerTrust("accept-proxy", None, 1)
V2_ONLY = PeerTrust("accept-proxy", None, 2)
OPTIONAL_V1_ONLY = PeerTrust(None, "optional:192.168.0.0/16", 1)
BOTH_V2_ONLY = BOTH._replace(version=2)
V1_LINE = b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n"


@pytest.mark.parametrize("trust,screens", [(REQUIRED, False), (OPTIONAL, True), (BOTH, True),
                                           (V1_ONLY, True), (V2_ONLY, True)])
def test_only_optional_or_one_version_binds_screen_the_start(trust, screens):
    assert trust.screens_start == screens


# (data, signature_version)
SIGNATURES = [
    (b"", None),
    (b"P", None),
    (b"PROX", None),
    (b"PROXY", 1),
    (V1_LINE, 1),
    (b"PROXYZ", 1),                 # the signature is there: the parser calls the rest malformed
    (b"PROXZ", 0),
    (b"proxy ", 0),
    (b"\r", None),
    (b"\r\n\r\n", None),
    (V2_SIGNATURE[:11], None),
    (V2_SIGNATURE, 2),
    (V2_SIGNATURE + b"\x21", 2),
    (V2_SIGNATURE[:11] + b"\r", 0),
    (b"\r\n\r\nX", 0),
    (b"\x16\x03\x01", 0),          # a TLS ClientHello
    (b"GET / HTTP/1.1\r\n", 0),
    (b"\x00", 0),
]


@pytest.mark.parametrize("data,version", SIGNATURES)
def test_signature_version(data, version):
    assert signature_version(data) == version
    assert signature_version(bytearray(data)) == version


# (trust, first bytes, ended, what they call for)
STARTS = [
    # A peer that may go without a header: decided from the signatures alone, never guessed.
    (OPTIONAL, b"", False, START_WAIT),
    (OPTIONAL, b"", True, START_BARE),                 # silent until the deadline, or EOF
    (OPTIONAL, b"PRO", False, START_WAIT),
    (OPTIONAL, b"PRO", True, START_BARE),
    (OPTIONAL, b"\r\n\r\n", False, START_WAIT),
    (OPTIONAL, b"\r\n\r\n", True, START_BARE),
    (OPTIONAL, b"GET / HTTP/1.1\r\n", False, START_BARE),
    (OPTIONAL, b"POST", False, START_BARE),
    (OPTIONAL, b"\r\n\r\nX", False, START_BARE),
    (OPTIONAL, b"PROXY", False, START_UNTRUSTED),      # a whole signature is a header attempt
    (OPTIONAL, V1_LINE, False, START_UNTRUSTED),
    (OPTIONAL, V2_SIGNATURE, False, START_UNTRUSTED),
    (OPTIONAL_V1_ONLY, V2_SIGNATURE, False, START_UNTRUSTED),  # trust is judged before version
    # Trusted and optional: a header is parsed, anything else relayed.
    (BOTH, V1_LINE, False, START_PARSE),
    (BOTH, V2_SIGNATURE + b"\x21\x11", False, START_PARSE),
    (BOTH, b"GET", False, START_BARE),
    (BOTH, b"PROX", True, START_BARE),
    (BOTH, b"PROX", False, START_WAIT),
    # Required: whatever is not a prefix is the parser's to accept or refuse.
    (REQUIRED, b"GET", False, START_PARSE),
    (REQUIRED, b"", True, START_PARSE),
    (REQUIRED, b"PR", False, START_WAIT),
    (REQUIRED, b"PR", True, START_PARSE),
    # One version only: the other one's signature is refused as soon as it is whole.
    (V1_ONLY, b"PROXY ", False, START_PARSE),
    (V1_ONLY, V2_SIGNATURE[:4], False, START_WAIT),
    (V1_ONLY, V2_SIGNATURE, False, UNSUPPORTED),
    (V1_ONLY, b"GET", False, START_PARSE),
    (V2_ONLY, V1_LINE, False, UNSUPPORTED),
    (V2_ONLY, V2_SIGNATURE, False, START_PARSE),
    (BOTH_V2_ONLY, V1_LINE, False, UNSUPPORTED),
    (BOTH_V2_ONLY, b"GET", False, START_BARE),
]


@pytest.mark.parametrize("trust,data,ended,expected", STARTS)
def test_judge_start(trust, data, ended, expected):
    if expected == UNSUPPORTED:
        with pytest.raises(ProxyHeaderError) as info:
            judge_start(trust, bytearray(data), ended)
        assert info.value.kind == UNSUPPORTED
    else:
        assert judge_start(trust, bytearray(data), ended) is expected


HEADER = parse_header(V1_LINE)


@pytest.mark.parametrize("trust,header,rule", [
    (BOTH, HEADER, "accept-proxy-from:10.0.0.0/8"),
    (BOTH, None, "optional:10.5.0.0/16"),
    (OPTIONAL, None, "optional:192.168.0.0/16"),
    (OPTIONAL, HEADER, "optional:192.168.0.0/16"),
    (REQUIRED, HEADER, "accept-proxy"),
    (REQUIRED, None, "accept-proxy"),
    (PeerTrust(None, None, 0), None, "none"),
])
def test_rule_named_in_the_log(trust, header, rule):
    assert trust.rule_for(header) == rule
