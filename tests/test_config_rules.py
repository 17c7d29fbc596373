"""The configuration of issue 14: acl, use_backend, tcp-request in [frontend]/[listen], and
set-proxy-v2-tlv-fmt / proxy-v2-options on servers. INI text in, the compiled rules and TLV
plans or the exact one-line FILE:LINE messages out; a few through ``-c`` as a real process."""
import os

import pytest

from proxyproto_cases import AWS_NLB
from simpleproxy.config import parse_config
from simpleproxy.errors import ConfigError
from simpleproxy.proxyproto import parse_header
from simpleproxy.rules import NO_RULES, facts_after_header, first_match
from simpleproxy.tlvfmt import NO_TLVS, TlvPlan

from support import SERVER_OPTIONS

PATH = "conf/bad.ini"
SECTION = "[frontend fe]\nbind = 127.0.0.1:8080\ndefault_backend = be\n"
BACKENDS = "[backend be]\nserver s1 = 127.0.0.1:8081\n[backend other]\nserver s1 = 127.0.0.1:8082\n"
FORMATS = ("(expected a literal string without '%', or one of %[fc_pp_tlv(ID)], "
           "%[fc_pp_authority], %[fc_pp_unique_id])")


def errors_of(text):
    with pytest.raises(ConfigError) as info:
        parse_config(text, PATH)
    return info.value.messages


def rules_of(lines):
    return parse_config(SECTION + lines + BACKENDS, PATH).frontends[0].rules


def test_acls_may_come_after_the_rules_that_name_them_and_lines_are_numbered_per_key():
    rules = rules_of("use_backend = other if site\n\n    be if !site\n"
                     "tcp-request content = accept if site\n"
                     "                      reject\n"
                     "acl site = fc_pp_authority -m end .example.com\n")
    assert [rule.name for rule in rules.use_backend] == ["use_backend:1", "use_backend:2"]
    assert [(rule.name, rule.action) for rule in rules.content] == [
        ("tcp-request-content:1", "accept"), ("tcp-request-content:2", "reject")]
    assert rules.connection == ()


def test_a_frontend_without_rules_has_no_rules_at_all():
    """So that a session can tell at once that there is nothing to judge."""
    assert rules_of("") is NO_RULES


def test_the_issue_example_compiles_and_routes():
    rules = parse_config("[frontend fe]\nbind = 127.0.0.1:8080\ndefault_backend = be\n"
                         "acl tenant_a = fc_pp_aws_vpce vpce-08d2bf15fac5001c9\n"
                         "acl site = fc_pp_authority -m end .example.com\n"
                         "use_backend = be_a if tenant_a\n"
                         "              be_site if site !tenant_a\n"
                         "              be_lan if { src 10.0.0.0/8 } || { src 192.168.0.0/16 }\n"
                         "tcp-request connection = reject if { src 203.0.113.0/24 }\n"
                         "tcp-request content = reject if { fc_pp_authority -m str evil }\n"
                         + "".join("[backend %s]\nserver s = 127.0.0.1:1\n" % name
                                   for name in ("be", "be_a", "be_site", "be_lan")),
                         PATH).frontends[0].rules
    nlb = parse_header(AWS_NLB)
    rule = first_match(rules.use_backend, facts_after_header(("127.0.0.1", 1), None, nlb))
    assert (rule.name, rule.action) == ("use_backend:1", "be_a")


def test_a_listen_section_takes_rules_too():
    config = parse_config("[listen l]\nbind = 127.0.0.1:8080\nserver s = 127.0.0.1:1\n"
                          "acl lan = src 10.0.0.0/8\ntcp-request connection = reject if !lan\n"
                          "use_backend = other if lan\n[backend other]\nserver s = 127.0.0.1:2\n",
                          PATH)
    assert [rule.name for rule in config.frontends[0].rules.connection] == [
        "tcp-request-connection:1"]


def a_server(options, default_server=""):
    config = parse_config(SECTION + "[backend be]\n%sserver s1 = 127.0.0.1:8081 %s\n"
                          % ("default-server = %s\n" % default_server if default_server else "",
                             options), PATH)
    return config.backends["be"].servers[0]


def test_tlv_formats_add_up_after_the_default_servers_as_in_haproxy():
    server = a_server("set-proxy-v2-tlv-fmt(0xE2) %[fc_pp_tlv(0xE2)] "
                      "set-proxy-v2-tlv-fmt(226) two",
                      default_server="send-proxy-v2 set-proxy-v2-tlv-fmt(0xE1) tenant "
                      "proxy-v2-options authority,crc32c")
    plan = server.proxy_v2_tlvs
    assert (plan.crc32c, plan.authority, plan.unique_id) == (True, True, False)
    assert [(tlv.tlv_type, tlv.literal) for tlv in plan.formats] == [
        (0xE1, b"tenant"), (0xE2, None), (0xE2, b"two")]


def test_a_server_without_options_sends_addresses_only():
    assert a_server("send-proxy-v2").proxy_v2_tlvs == NO_TLVS
    assert a_server("send-proxy-v2 proxy-v2-options unique-id").proxy_v2_tlvs == TlvPlan(
        False, False, True, ())


def test_a_header_that_may_grow_past_the_v2_maximum_is_warned_about():
    config = parse_config("[frontend fe]\nbind = 127.0.0.1:8080 accept-proxy-from 10.0.0.0/8 "
                          "proxy-max-header 60000\ndefault_backend = be\n[backend be]\n"
                          "server s1 = 127.0.0.1:1 send-proxy-v2 set-proxy-v2-tlv-fmt(0xE1) "
                          "%[fc_pp_tlv(0xE1)] set-proxy-v2-tlv-fmt(0xE2) %[fc_pp_tlv(0xE1)]\n",
                          PATH)
    assert config.warnings == (
        "conf/bad.ini:5: [backend be] server s1: its v2 header can reach 120212 bytes with a "
        "client header of 60000 (proxy-max-header), more than the 65551 a v2 header holds: "
        "such connections are closed (expected fewer forwarded TLVs, or a smaller "
        "proxy-max-header)",)


# Every unsupported piece of syntax: (the lines, the one message). Lines 1-3 are SECTION's.
RULE_ERRORS = [
    ("acl = src 10.0.0.0/8\n", "conf/bad.ini:4: [frontend fe] acl: needs a name (expected acl "
     "NAME = CRITERION [-m METHOD] VALUE...)"),
    ("acl a b = src 10.0.0.0/8\n", "conf/bad.ini:4: [frontend fe] acl a b: 'a b' is not an acl "
     "name (expected letters, digits, '.', ':', '-' and '_')"),
    ("acl a =\n", "conf/bad.ini:4: [frontend fe] acl a: no criterion (expected CRITERION [-i] "
     "[-m METHOD] VALUE..., with a criterion among: src, src_port, dst, dst_port, "
     "fc_pp_authority, fc_pp_unique_id, fc_pp_tlv(ID), fc_pp_aws_vpce, fc_pp_azure_linkid, "
     "fc_pp_gcp_psc)"),
    ("acl a = req.ssl_sni -m end .example.com\n", "conf/bad.ini:4: [frontend fe] acl a: unknown "
     "criterion 'req.ssl_sni' (expected one of: src, src_port, dst, dst_port, fc_pp_authority, "
     "fc_pp_unique_id, fc_pp_tlv(ID), fc_pp_aws_vpce, fc_pp_azure_linkid, fc_pp_gcp_psc)"),
    ("acl a = fc_pp_authority,lower x\n", "conf/bad.ini:4: [frontend fe] acl a: "
     "'fc_pp_authority,lower' is not a fetch name with an optional (argument) (converters such "
     "as ',lower' are not supported)"),
    ("acl a = fc_pp_authority -m dom x\n", "conf/bad.ini:4: [frontend fe] acl a: unsupported "
     "match method 'dom' (expected one of: beg, end, found, int, ip, reg, str, sub)"),
    ("acl a = src -m beg 10.\n", "conf/bad.ini:4: [frontend fe] acl a: -m beg does not apply to "
     "src, which gives an address (expected -m ip or -m found)"),
    ("acl a = fc_pp_authority -f /etc/list\n", "conf/bad.ini:4: [frontend fe] acl a: "
     "unsupported flag '-f' (expected -i, -m METHOD, or -- before a value that starts with '-')"),
    ("acl a = src 10.0.0.1/8\n", "conf/bad.ini:4: [frontend fe] acl a: '10.0.0.1/8' has host "
     "bits set (expected 10.0.0.0/8)"),
    ("acl a = fc_pp_authority -m reg (\n", "conf/bad.ini:4: [frontend fe] acl a: '(' is not a "
     "regular expression: missing ), unterminated subpattern at position 0 (expected a Python "
     "regular expression)"),
    ("use_backend = nowhere\n", "conf/bad.ini:4: [frontend fe] use_backend: no backend named "
     "'nowhere' (backends: be, other)"),
    ("use_backend = be_%[fc_pp_authority]\n", "conf/bad.ini:4: [frontend fe] use_backend: "
     "'be_%[fc_pp_authority]': backend names made from samples are not supported (expected a "
     "backend name)"),
    ("use_backend = other\n              other when x\n", "conf/bad.ini:5: [frontend fe] "
     "use_backend: 'when' after the action (expected BACKEND [if|unless CONDITION])"),
    ("use_backend = other if nosuch\n", "conf/bad.ini:4: [frontend fe] use_backend: unknown acl "
     "'nosuch' (no acl is defined in this section)"),
    ("use_backend = other if { src 10.0.0.0/8\n", "conf/bad.ini:4: [frontend fe] use_backend: "
     "unbalanced braces: '{' without '}' (anonymous acls do not nest)"),
    ("use_backend = other if {src 10.0.0.0/8}\n", "conf/bad.ini:4: [frontend fe] use_backend: "
     "'{src': a brace must be a word of its own (expected spaces around '{' and '}')"),
    ("use_backend = other if\n", "conf/bad.ini:4: [frontend fe] use_backend: 'if' needs a "
     "condition (expected acl names, '!', '||' and { CRITERION VALUE } blocks)"),
    ("use_backend =\n", "conf/bad.ini:4: [frontend fe] use_backend: missing value (expected "
     "use_backend = RULE, one per line)"),
    ("tcp-request connection = reject if { fc_pp_authority x }\n", "conf/bad.ini:4: [frontend "
     "fe] tcp-request connection: tcp-request connection rules are judged before the PROXY "
     "header is read (expected src, dst, src_port or dst_port only; use tcp-request content "
     "for header criteria)"),
    ("tcp-request content = deny\n", "conf/bad.ini:4: [frontend fe] tcp-request content: "
     "unsupported action 'deny' (expected accept or reject [if|unless CONDITION])"),
    ("tcp-request inspect-delay = 5s\n", "conf/bad.ini:4: [frontend fe] tcp-request "
     "inspect-delay: unknown key 'tcp-request inspect-delay' (expected one of: acl NAME,"),
]


@pytest.mark.parametrize("lines, message", RULE_ERRORS, ids=[case[0][:40] for case in RULE_ERRORS])
def test_every_unsupported_rule_is_one_line_with_its_file_and_line(lines, message):
    errors = errors_of(SECTION + lines + BACKENDS)
    assert len(errors) == 1 and errors[0].startswith(message), errors
    assert "\n" not in errors[0]


SERVER_ERRORS = [
    ("set-proxy-v2-tlv-fmt(0xE1) x", "'set-proxy-v2-tlv-fmt' needs send-proxy-v2 (expected "
     "send-proxy-v2 too)"),
    ("send-proxy-v2 set-proxy-v2-tlv-fmt(0xE1)", "'set-proxy-v2-tlv-fmt(0xE1)' needs a value "
     "(expected set-proxy-v2-tlv-fmt(0xE1) followed by FMT, a literal string without '%', or "
     "one of %[fc_pp_tlv(ID)], %[fc_pp_authority], %[fc_pp_unique_id])"),
    ("send-proxy-v2 set-proxy-v2-tlv-fmt(0x100) x", "set-proxy-v2-tlv-fmt(0x100): '0x100' is not "
     "a TLV type (expected 0 to 255, in decimal or 0x hex)"),
    ("send-proxy-v2 set-proxy-v2-tlv-fmt 0xE1 x", "unknown server option 'set-proxy-v2-tlv-fmt' "
     "(expected one of: %s)" % SERVER_OPTIONS),
    ("send-proxy-v2 set-proxy-v2-tlv-fmt(3) x", "set-proxy-v2-tlv-fmt(3): TLV 0x03 is the CRC32C, "
     "which is never copied (expected proxy-v2-options crc32c to compute a new one)"),
    ("send-proxy-v2 set-proxy-v2-tlv-fmt(0xE1) %[ssl_c_s_dn]", "set-proxy-v2-tlv-fmt(0xE1): "
     "unsupported fetch '%[ssl_c_s_dn]' in a format " + FORMATS),
    ("send-proxy-v2 set-proxy-v2-tlv-fmt(0xE1) id-%[fc_pp_unique_id]",
     "set-proxy-v2-tlv-fmt(0xE1): unsupported format 'id-%[fc_pp_unique_id]' " + FORMATS),
    ("send-proxy-v2 proxy-v2-options authority set-proxy-v2-tlv-fmt(2) %[fc_pp_authority]",
     "proxy-v2-options authority and set-proxy-v2-tlv-fmt(0x02) would both send TLV 0x02 "
     "(expected one of them)"),
    ("send-proxy-v2 proxy-v2-options ssl", "proxy-v2-options: unknown proxy-v2-options value "
     "'ssl' (expected one of: authority, crc32c, unique-id)"),
]


@pytest.mark.parametrize("options, message", SERVER_ERRORS,
                         ids=[case[0][14:50] for case in SERVER_ERRORS])
def test_every_unsupported_server_tlv_option_is_one_line(options, message):
    errors = errors_of(SECTION + "[backend be]\nserver s1 = 127.0.0.1:8081 %s\n" % options)
    assert errors == ["conf/bad.ini:5: [backend be] server s1: " + message]


def test_control_characters_in_rule_words_are_escaped():
    errors = errors_of(SECTION + "use_backend = \"be\\x1b[2J\"\n" + BACKENDS)
    assert errors == ["conf/bad.ini:4: [frontend fe] use_backend: no backend named "
                      "'be\\x1b[2J' (backends: be, other)"]


@pytest.mark.parametrize("lines, message", [
    ("use_backend = other\n              nowhere if { src 10.0.0.0/8 }\n",
     "{f}:5: [frontend fe] use_backend: no backend named 'nowhere' (backends: be, other)"),
    ("acl a = fc_pp_tlv(0x1FF) x\n", "{f}:4: [frontend fe] acl a: '0x1FF' is not a TLV type "
     "(expected 0 to 255, in decimal or 0x hex)"),
])
def test_check_names_the_file_and_line_of_a_bad_rule(launch, tmp_path, lines, message):
    path = str(tmp_path / "bad.ini")
    with open(path, "w") as f:
        f.write(SECTION + lines + BACKENDS)
    result = launch.cli(["-c", path])
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [message.format(f=path)]


def test_the_routing_example_passes_check(launch):
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf",
                        "routing.ini")
    result = launch.cli(["-c", path])
    assert (result.returncode, result.stderr) == (0, "")
