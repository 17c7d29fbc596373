"""Rules from tables: acl words and a connection in, true or false out; rule lines in, the
rule that routes or rejects out; every unsupported piece of syntax in, its one-line error
out."""
import pytest

from proxyproto_cases import AWS_NLB
from simpleproxy.proxyproto import V2_SIGNATURE, build_v2, parse_header
from simpleproxy.rules import (
    ACCEPT, NO_RULES, REJECT, TCP_REQUEST_CONNECTION, TCP_REQUEST_CONTENT, USE_BACKEND,
    FrontendRules, compile_acl, compile_rule, facts_after_header, facts_at_accept, first_match)

CLIENT = ("198.51.100.7", 40000)
FRONT = ("192.0.2.1", 443)
NLB_VPCE = "vpce-08d2bf15fac5001c9"           # in the real AWS NLB capture
PROXY_PEER = ("192.0.2.254", 7000)            # the real peer that sent a header
PROXY_LOCAL = ("192.0.2.253", 8000)


def header(*tlvs, src=CLIENT, dst=FRONT):
    """A parsed v2 header from src to dst carrying these (type, value) TLVs."""
    return parse_header(build_v2(src, dst, tlvs))


def facts(src=CLIENT, dst=FRONT, tlvs=None):
    """RuleFacts after a v2 header from src to dst with these TLVs, sent by PROXY_PEER; or,
    with tlvs None, after no header from src to dst themselves."""
    if tlvs is None:
        return facts_after_header(src, dst, None)
    return facts_after_header(PROXY_PEER, PROXY_LOCAL, header(*tlvs, src=src, dst=dst))


AUTHORITY = (0x02, b"www.Example.com")
UNIQUE_ID = (0x05, b"\x00uid-1")
AWS = (0xEA, b"\x01vpce-0abc123")
AZURE = (0xEE, b"\x01\xc1\x45\x00\x21")        # LinkID 0x210045c1, little-endian
GCP = (0xE0, bytes.fromhex("0102030405060708"))
CUSTOM = (0xE1, b"tenant-7")

# (acl words, facts, expected)
MATCHES = [
    # src / dst: addresses and CIDR, IPv4 and IPv6; an IPv4-mapped sample is IPv4.
    ("src 198.51.100.0/24", facts(), True),
    ("src 198.51.100.7", facts(), True),
    ("src 198.51.100.8", facts(), False),
    ("src 10.0.0.0/8 198.51.100.0/24", facts(), True),
    ("src 10.0.0.0/8", facts(src=("::ffff:10.1.2.3", 5)), True),
    ("src ::ffff:10.0.0.0/104", facts(src=("10.1.2.3", 5)), True),
    ("src ::ffff:10.0.0.0/104", facts(src=("11.1.2.3", 5)), False),
    ("src 2001:db8::/32", facts(src=("2001:db8::7", 5), dst=("2001:db8::1", 443)), True),
    ("src 2001:db8::/32", facts(src=("2001:db9::7", 5), dst=("2001:db8::1", 443)), False),
    ("src 0.0.0.0/0", facts(src=("2001:db8::7", 5), dst=("2001:db8::1", 443)), False),
    ("src 32.1.13.184", facts(src=("2001:db8::", 5), dst=("2001:db8::1", 443)), False),
    ("src 0.0.0.0/0", facts(src="/run/client.sock", dst="/run/front.sock"), False),
    ("src -m found", facts(src="/run/client.sock", dst="/run/front.sock"), False),
    ("src -m found", facts(src="/run/client.sock", dst="/run/front.sock", tlvs=[]), False),
    ("dst_port -m found", facts(src="/run/client.sock", dst="/run/front.sock", tlvs=[]), False),
    ("src -m found", facts(), True),
    ("src -m ip 198.51.100.0/24", facts(), True),
    ("dst 192.0.2.1", facts(), True),
    ("dst 192.0.2.0/31", facts(), True),
    ("dst 192.0.2.2/31", facts(), False),
    # ports: numbers and ranges
    ("dst_port 443", facts(), True),
    ("dst_port 80 8080", facts(), False),
    ("src_port 1024:65535", facts(), True),
    ("src_port 40001:", facts(), False),
    ("src_port :40000", facts(), True),
    ("src_port -m int 40000", facts(), True),
    ("src_port 1", facts(src="/run/client.sock", dst="/run/front.sock"), False),
    # header text: str (default), beg, end, sub, reg, -i, found; missing values never match
    ("fc_pp_authority www.Example.com", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority www.example.com", facts(tlvs=[AUTHORITY]), False),
    ("fc_pp_authority -i www.EXAMPLE.com", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m str www.Example.com", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m beg www. api.", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m end .Example.com", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m end .example.com", facts(tlvs=[AUTHORITY]), False),
    ("fc_pp_authority -i -m end .example.COM", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m sub Exam", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m sub exam", facts(tlvs=[AUTHORITY]), False),
    ("fc_pp_authority -m reg ^www\\.[A-Z]", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m reg -i ^WWW\\.EX", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m reg com$", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m reg ^com", facts(tlvs=[AUTHORITY]), False),
    ("fc_pp_authority -m found", facts(tlvs=[AUTHORITY]), True),
    ("fc_pp_authority -m found", facts(tlvs=[]), False),
    ("fc_pp_authority -m found", facts(), False),
    ("fc_pp_authority -m end .com", facts(tlvs=[]), False),
    ("fc_pp_authority -m found", facts(tlvs=[(0x02, b"")]), True),
    ("fc_pp_authority -- -x", facts(tlvs=[(0x02, b"-x")]), True),
    ("fc_pp_unique_id -m beg \\x00", facts(tlvs=[UNIQUE_ID]), False),  # no escapes here
    ("fc_pp_unique_id -m end uid-1", facts(tlvs=[UNIQUE_ID]), True),
    ("fc_pp_tlv(0xE1) tenant-7", facts(tlvs=[CUSTOM]), True),
    ("fc_pp_tlv(225) tenant-7", facts(tlvs=[CUSTOM]), True),
    ("fc_pp_tlv(0xe1) -m beg tenant-", facts(tlvs=[AUTHORITY, CUSTOM]), True),
    ("fc_pp_tlv(0xE2) -m found", facts(tlvs=[CUSTOM]), False),
    # a LOCAL header whose TLV area does not frame: its TLVs were not interpreted (None)
    ("fc_pp_tlv(0x01) -m found", facts_after_header(PROXY_PEER, PROXY_LOCAL, parse_header(
        V2_SIGNATURE + b"\x20\x00\x00\x01\x01")), False),
    ("fc_pp_tlv(0xEA) -m end 0abc123", facts(tlvs=[AWS]), True),
    # the first TLV of a type counts, as in HAProxy
    ("fc_pp_tlv(0xE1) second", facts(tlvs=[(0xE1, b"first"), (0xE1, b"second")]), False),
    # decoded cloud values
    ("fc_pp_aws_vpce vpce-0abc123", facts(tlvs=[AWS]), True),
    ("fc_pp_aws_vpce -m beg vpce-", facts(tlvs=[(0xEA, b"\x02vpce-other"), AWS]), True),
    ("fc_pp_aws_vpce -m found", facts(tlvs=[(0xEA, b"\x02vpce-other")]), False),
    ("fc_pp_aws_vpce -m found", facts(tlvs=[(0xEA, b"\x01vpce-\r\nforged")]), False),
    ("fc_pp_aws_vpce " + NLB_VPCE, facts_after_header(PROXY_PEER, PROXY_LOCAL,
                                                      parse_header(AWS_NLB)), True),
    ("fc_pp_azure_linkid 553665985", facts(tlvs=[AZURE]), True),
    ("fc_pp_azure_linkid 1:553665984", facts(tlvs=[AZURE]), False),
    ("fc_pp_azure_linkid -m found", facts(tlvs=[(0xEE, b"\x02\x00\x00\x00\x01")]), False),
    ("fc_pp_gcp_psc 72623859790382856", facts(tlvs=[GCP]), True),
    ("fc_pp_gcp_psc 72623859790382857:", facts(tlvs=[GCP]), False),
    ("fc_pp_gcp_psc -m found", facts(tlvs=[(0xE0, b"short")]), False),
]


@pytest.mark.parametrize("words, connection, expected", MATCHES,
                         ids=["%s: %s" % (index, case[0]) for index, case in enumerate(MATCHES)])
def test_acl_matches(words, connection, expected):
    acl = compile_acl("a", words.split())
    assert acl.test(connection) is expected
    assert acl.reads_header == words.startswith("fc_pp_")


# (stage, the connection, acl words that hold there, or with "!" that do not)
STAGES = [
    ("at accept", facts_at_accept(PROXY_PEER, PROXY_LOCAL), ["src 192.0.2.254", "dst_port 8000"]),
    ("after a v2 header", facts_after_header(PROXY_PEER, PROXY_LOCAL, header(
        src=("203.0.113.9", 1234), dst=("198.51.100.99", 8443))),
     ["src 203.0.113.9", "src_port 1234", "dst 198.51.100.99", "dst_port 8443"]),
    ("after a v1 header", facts_after_header(PROXY_PEER, PROXY_LOCAL, parse_header(
        b"PROXY TCP6 2001:db8::9 2001:db8::1 1234 8443\r\n")),
     ["src 2001:db8::/32", "dst 2001:db8::1", "dst_port 8443"]),
    ("after LOCAL", facts_after_header(PROXY_PEER, PROXY_LOCAL, parse_header(
        build_v2(None, None, local=True))), ["src 192.0.2.254", "dst_port 8000"]),
    ("after PROXY UNKNOWN", facts_after_header(PROXY_PEER, PROXY_LOCAL, parse_header(
        b"PROXY UNKNOWN\r\n")), ["src 192.0.2.254", "dst_port 8000"]),
    ("after a v2 UNIX header", facts_after_header(PROXY_PEER, PROXY_LOCAL, header(
        src="/run/a.sock", dst="/run/b.sock")), ["!src -m found", "!dst_port -m found"]),
]


@pytest.mark.parametrize("stage, connection, holding", STAGES, ids=[case[0] for case in STAGES])
def test_src_and_dst_are_the_real_peer_at_accept_and_the_named_client_after_a_header(
        stage, connection, holding):
    """As in HAProxy: tcp-request connection sees the socket, the rest what the header said
    (the real endpoints again when it said nothing)."""
    for words in holding:
        negated = words.startswith("!")
        acl = compile_acl("a", words.lstrip("!").split())
        assert acl.test(connection) is not negated, words


ACLS = {
    "tenant_a": "fc_pp_aws_vpce vpce-0abc123",
    "site": "fc_pp_authority -m end .Example.com",
    "lan": "src 10.0.0.0/8",
    "https": "dst_port 443",
}


def acls():
    return {name: compile_acl(name, words.split()) for name, words in ACLS.items()}


# (condition words, facts, holds)
CONDITIONS = [
    ("if tenant_a", facts(tlvs=[AWS]), True),
    ("if !tenant_a", facts(tlvs=[AWS]), False),
    ("if ! tenant_a", facts(tlvs=[AWS]), False),
    ("if ! ! tenant_a", facts(tlvs=[AWS]), True),
    ("if !tenant_a", facts(), True),                      # no header: no match, negation holds
    ("unless tenant_a", facts(tlvs=[AWS]), False),
    ("unless tenant_a", facts(), True),
    ("if site https", facts(tlvs=[AUTHORITY]), True),     # juxtaposition: and
    ("if site !https", facts(tlvs=[AUTHORITY]), False),
    ("if tenant_a site", facts(tlvs=[AUTHORITY]), False),
    ("if tenant_a || site", facts(tlvs=[AUTHORITY]), True),
    ("if tenant_a or site", facts(tlvs=[AUTHORITY]), True),
    ("if tenant_a || lan", facts(tlvs=[AUTHORITY]), False),
    ("if lan || tenant_a https", facts(tlvs=[AWS]), True),  # and binds tighter than or
    ("if lan || tenant_a !https", facts(tlvs=[AWS]), False),
    ("if { src 198.51.100.0/24 }", facts(), True),
    ("if ! { src 198.51.100.0/24 }", facts(), False),
    ("if { src 10.0.0.0/8 } || { src 198.51.100.0/24 }", facts(), True),
    ("if { fc_pp_authority -m end .Example.com } https", facts(tlvs=[AUTHORITY]), True),
    ("unless { dst_port 443 } || tenant_a", facts(), False),
    ("unless { dst_port 80 } || tenant_a", facts(), True),
]


@pytest.mark.parametrize("condition, connection, holds", CONDITIONS,
                         ids=[case[0] for case in CONDITIONS])
def test_conditions(condition, connection, holds):
    rule = compile_rule(TCP_REQUEST_CONTENT, 1, ["reject"] + condition.split(), acls())
    assert rule.test(connection) is holds


BACKENDS = {"be_a", "be_site", "be_lan", "be_default"}
USE_BACKEND_LINES = ["be_a if tenant_a",
                     "be_site if site !tenant_a",
                     "be_lan if { src 10.0.0.0/8 } || { src 192.168.0.0/16 }"]


def frontend_rules():
    """The issue's example: three backends by VPC endpoint, authority suffix and source."""
    compiled = acls()
    return FrontendRules(
        connection=(compile_rule(TCP_REQUEST_CONNECTION, 1,
                                 "reject if { src 203.0.113.0/24 }".split(), compiled),),
        content=(compile_rule(TCP_REQUEST_CONTENT, 1,
                              "reject if { fc_pp_authority -m str evil.example }".split(),
                              compiled),),
        use_backend=tuple(compile_rule(USE_BACKEND, number, line.split(), compiled, BACKENDS)
                          for number, line in enumerate(USE_BACKEND_LINES, 1)))


# (facts, name of the use_backend rule that routes, or None for default_backend)
ROUTES = [
    (facts(tlvs=[AWS]), "use_backend:1", "be_a"),
    (facts(tlvs=[AWS, AUTHORITY]), "use_backend:1", "be_a"),       # first match wins
    (facts(tlvs=[AUTHORITY]), "use_backend:2", "be_site"),
    (facts(src=("10.9.8.7", 1), tlvs=[AUTHORITY]), "use_backend:2", "be_site"),
    (facts(src=("10.9.8.7", 1), tlvs=[]), "use_backend:3", "be_lan"),
    (facts(src=("::ffff:192.168.3.4", 1)), "use_backend:3", "be_lan"),
    (facts(tlvs=[]), None, None),            # a header without any such TLV: the default
    (facts(), None, None),                   # no header at all
    (facts(tlvs=[(0xEA, b"\x01vpce-0abc1234")]), None, None),
]


@pytest.mark.parametrize("connection, rule_name, backend", ROUTES)
def test_use_backend_routes_on_the_first_match(connection, rule_name, backend):
    rule = first_match(frontend_rules().use_backend, connection)
    assert (rule and rule.name, rule and rule.action) == (rule_name, backend)


def test_tcp_request_rules_reject_and_name_themselves():
    rules = frontend_rules()
    refused = first_match(rules.connection, facts_at_accept(("203.0.113.5", 9), FRONT))
    assert (refused.name, refused.action) == ("tcp-request-connection:1", REJECT)
    assert first_match(rules.connection, facts_at_accept(CLIENT, FRONT)) is None
    evil = first_match(rules.content, facts(tlvs=[(0x02, b"evil.example")]))
    assert (evil.name, evil.action) == ("tcp-request-content:1", REJECT)
    assert first_match(rules.content, facts(tlvs=[(0x02, b"evil.example.org")])) is None
    assert first_match(NO_RULES.content, facts()) is None


def test_accept_stops_the_rules_before_a_later_reject():
    compiled = acls()
    rules = [compile_rule(TCP_REQUEST_CONNECTION, 1, "accept if lan".split(), compiled),
             compile_rule(TCP_REQUEST_CONNECTION, 2, ["reject"], compiled)]
    assert first_match(rules, facts_at_accept(("10.0.0.1", 1), FRONT)).action == ACCEPT
    assert first_match(rules, facts_at_accept(CLIENT, FRONT)).name == "tcp-request-connection:2"


# (kind, words: "acl NAME = ..." for an acl, else the rule line, the one-line error)
ERRORS = [
    ("acl", "", "no criterion (expected CRITERION [-i] [-m METHOD] VALUE..., with a criterion "
     "among: src, src_port, dst, dst_port, fc_pp_authority, fc_pp_unique_id, fc_pp_tlv(ID), "
     "fc_pp_aws_vpce, fc_pp_azure_linkid, fc_pp_gcp_psc)"),
    ("acl", "hdr(host) www", "unknown criterion 'hdr' (expected one of: src, src_port, dst, "
     "dst_port, fc_pp_authority, fc_pp_unique_id, fc_pp_tlv(ID), fc_pp_aws_vpce, "
     "fc_pp_azure_linkid, fc_pp_gcp_psc)"),
    ("acl", "fc_pp_authority,lower www", "'fc_pp_authority,lower' is not a fetch name with an "
     "optional (argument) (converters such as ',lower' are not supported)"),
    ("acl", "fc_pp_authority(1) www", "fc_pp_authority takes no argument (expected "
     "fc_pp_authority alone)"),
    ("acl", "fc_pp_tlv x", "fc_pp_tlv needs a TLV type (expected fc_pp_tlv(ID), such as "
     "fc_pp_tlv(0xEA))"),
    ("acl", "fc_pp_tlv(AUTHORITY) x", "'AUTHORITY' is not a TLV type (expected 0 to 255, in "
     "decimal or 0x hex)"),
    ("acl", "fc_pp_tlv(256) x", "'256' is not a TLV type (expected 0 to 255, in decimal or 0x "
     "hex)"),
    ("acl", "fc_pp_authority -m dom example.com", "unsupported match method 'dom' (expected "
     "one of: beg, end, found, int, ip, reg, str, sub)"),
    ("acl", "fc_pp_authority -m", "-m needs a method (expected -m followed by one of: beg, "
     "end, found, int, ip, reg, str, sub)"),
    ("acl", "fc_pp_authority -f hosts.lst", "unsupported flag '-f' (expected -i, -m METHOD, or "
     "-- before a value that starts with '-')"),
    ("acl", "fc_pp_authority -m int 5", "-m int does not apply to fc_pp_authority, which "
     "gives text (expected -m str or -m beg or -m end or -m sub or -m reg or -m found)"),
    ("acl", "src -m beg 10.", "-m beg does not apply to src, which gives an address "
     "(expected -m ip or -m found)"),
    ("acl", "dst_port -m str 443", "-m str does not apply to dst_port, which gives a number "
     "(expected -m int or -m found)"),
    ("acl", "src -i 10.0.0.0/8", "-i does not apply to src, which gives an address (expected "
     "it on text criteria only)"),
    ("acl", "fc_pp_authority -m found www", "-m found takes no value, got 'www' (expected "
     "fc_pp_authority -m found alone)"),
    ("acl", "fc_pp_authority -m end", "fc_pp_authority needs at least one value to match "
     "(expected fc_pp_authority [-m METHOD] VALUE..., or -m found)"),
    ("acl", "fc_pp_authority -m reg (", "'(' is not a regular expression: missing ), "
     "unterminated subpattern at position 0 (expected a Python regular expression)"),
    ("acl", "src example.com", "'example.com' is not an address or network (expected an IPv4 "
     "or IPv6 address or CIDR, such as 10.0.0.0/8)"),
    ("acl", "src 10.0.0.1/8", "'10.0.0.1/8' has host bits set (expected 10.0.0.0/8)"),
    ("acl", "dst_port https", "'https' is not a number or range (expected N, LOW:HIGH, LOW: or "
     ":HIGH)"),
    ("acl", "dst_port :", "':' is not a number or range (expected N, LOW:HIGH, LOW: or :HIGH)"),
    ("acl", "dst_port gt 1024", "'gt' is not a number or range (expected N, LOW:HIGH, LOW: or "
     ":HIGH)"),
    ("acl bad name", "src 10.0.0.0/8", "'bad name' is not an acl name (expected letters, "
     "digits, '.', ':', '-' and '_')"),
    (USE_BACKEND, "", "an empty rule (expected BACKEND [if|unless CONDITION])"),
    (USE_BACKEND, "be_x if lan", "no backend named 'be_x' (backends: be_a, be_default, "
     "be_lan, be_site)"),
    (USE_BACKEND, "%[fc_pp_authority] if lan", "'%[fc_pp_authority]': backend names made "
     "from samples are not supported (expected a backend name)"),
    (USE_BACKEND, "be_a when lan", "'when' after the action (expected BACKEND [if|unless "
     "CONDITION])"),
    (USE_BACKEND, "be_a if", "'if' needs a condition (expected acl names, '!', '||' and "
     "{ CRITERION VALUE } blocks)"),
    (USE_BACKEND, "be_a if nope", "unknown acl 'nope' (acls in this section: https, lan, site, "
     "tenant_a)"),
    (USE_BACKEND, "be_a if lan ||", "the condition ends with '||' (expected an acl after it)"),
    (USE_BACKEND, "be_a if || lan", "'||' needs a condition on both sides"),
    (USE_BACKEND, "be_a if lan or or site", "'or' needs a condition on both sides"),
    (USE_BACKEND, "be_a if lan !", "the condition ends with '!' (expected an acl after it)"),
    (USE_BACKEND, "be_a if ! || lan", "'||' needs a condition on both sides"),
    (USE_BACKEND, "be_a if { src 10.0.0.0/8", "unbalanced braces: '{' without '}' (anonymous "
     "acls do not nest)"),
    (USE_BACKEND, "be_a if { src { 10.0.0.0/8 } }", "unbalanced braces: '{' without '}' "
     "(anonymous acls do not nest)"),
    (USE_BACKEND, "be_a if src 10.0.0.0/8 }", "unknown acl 'src' (acls in this section: https, "
     "lan, site, tenant_a)"),
    (USE_BACKEND, "be_a if lan }", "unbalanced braces: '}' without '{'"),
    (USE_BACKEND, "be_a if {src 10.0.0.0/8 }", "'{src': a brace must be a word of its own "
     "(expected spaces around '{' and '}')"),
    (USE_BACKEND, "be_a if !{ src 10.0.0.0/8 }", "'!{': a brace must be a word of its own "
     "(expected spaces around '{' and '}')"),
    (USE_BACKEND, "be_a if { }", "no criterion (expected CRITERION [-i] [-m METHOD] "
     "VALUE..., with a criterion among: src, src_port, dst, dst_port, fc_pp_authority, "
     "fc_pp_unique_id, fc_pp_tlv(ID), fc_pp_aws_vpce, fc_pp_azure_linkid, fc_pp_gcp_psc)"),
    (USE_BACKEND, "be_a if { src -m dom x }", "unsupported match method 'dom' (expected one "
     "of: beg, end, found, int, ip, reg, str, sub)"),
    (TCP_REQUEST_CONNECTION, "deny if lan", "unsupported action 'deny' (expected accept or "
     "reject [if|unless CONDITION])"),
    (TCP_REQUEST_CONNECTION, "expect-proxy layer4 if lan", "unsupported action "
     "'expect-proxy' (expected accept or reject [if|unless CONDITION])"),
    (TCP_REQUEST_CONNECTION, "reject if site", "tcp-request connection rules are judged "
     "before the PROXY header is read (expected src, dst, src_port or dst_port only; use "
     "tcp-request content for header criteria)"),
    (TCP_REQUEST_CONNECTION, "reject if lan || { fc_pp_tlv(0xE1) -m found }",
     "tcp-request connection rules are judged before the PROXY header is read (expected "
     "src, dst, src_port or dst_port only; use tcp-request content for header criteria)"),
    (TCP_REQUEST_CONTENT, "track-sc0 src", "unsupported action 'track-sc0' (expected accept "
     "or reject [if|unless CONDITION])"),
]


@pytest.mark.parametrize("kind, words, message", ERRORS,
                         ids=["%s: %s" % (case[0], case[1]) for case in ERRORS])
def test_errors_are_one_line_reasons(kind, words, message):
    with pytest.raises(ValueError) as caught:
        if kind.startswith("acl"):
            compile_acl(kind[4:] or "a", words.split())
        else:
            compile_rule(kind, 1, words.split(), acls(), BACKENDS)
    assert str(caught.value) == message
    assert "\n" not in message


def test_no_acl_defined_is_said_so():
    with pytest.raises(ValueError, match=r"^unknown acl 'lan' \(no acl is defined in this "
                                         r"section\)$"):
        compile_rule(USE_BACKEND, 1, "be_a if lan".split(), {}, BACKENDS)


def test_unconditional_rules_always_match():
    rule = compile_rule(USE_BACKEND, 4, ["be_lan"], {}, BACKENDS)
    assert (rule.name, rule.action, rule.test(facts())) == ("use_backend:4", "be_lan", True)
