"""The TLVs of a server's v2 header from tables: set-proxy-v2-tlv-fmt and proxy-v2-options
in, the compiled format or its one-line error out; a client's header in, the exact bytes
sent out, with order, lengths and CRC32C checked against an independent CRC and our parser."""
import random
import struct

import pytest

from proxyproto_cases import (
    AWS_NLB, crc32c_bitwise, inet4, random_ipv4, random_ipv6, random_port, tlv)
from simpleproxy.proxyproto import V2_SIGNATURE, build_v2, parse_header
from simpleproxy.samples import parse_tlv_id
from simpleproxy.tlvfmt import (
    NO_TLVS, V2_MAX_LENGTH, HeaderTemplate, OutgoingHeaderError, TlvPlan, build_server_header,
    compile_tlv_fmt, compile_tlv_plan, max_header_length, outgoing_tlvs)

CLIENT = ("198.51.100.7", 40000)
FRONT = ("192.0.2.1", 443)
NEW_ID = b"new-unique-id"
SUPPORTED = ("(expected a literal string without '%', or one of %[fc_pp_tlv(ID)], "
             "%[fc_pp_authority], %[fc_pp_unique_id])")
OPTION = "set-proxy-v2-tlv-fmt"


def option(tlv_id):
    return "%s(%s)" % (OPTION, tlv_id)


def received(*tlvs, crc32c=False):
    """A client's parsed v2 header carrying these TLVs (and a CRC32C first)."""
    return parse_header(build_v2(CLIENT, FRONT, tlvs, crc32c=crc32c))


def plan(*formats, options=()):
    """A TlvPlan from (ID, FMT) pairs and proxy-v2-options words."""
    return compile_tlv_plan([compile_tlv_fmt(option(tlv_id), fmt) for tlv_id, fmt in formats],
                            frozenset(options))


def never_called():
    raise AssertionError("a unique ID was made up although none was needed")


# (ID, FMT, (type, literal or None, fetch name or None))
FORMATS = [
    ("0xE1", "tenant-7", (0xE1, b"tenant-7", None)),
    ("0XE1", "tenant-7", (0xE1, b"tenant-7", None)),
    ("225", "tenant-7", (0xE1, b"tenant-7", None)),
    ("0", "", (0x00, b"", None)),
    ("0xE1", "two words", (0xE1, b"two words", None)),          # a quoted FMT, unquoted
    ("0xE1", "\udcff\x00", (0xE1, b"\xff\x00", None)),       # \xff and \x00 as config decodes

    ("0xe2", "caf\u00e9", (0xE2, "caf\u00e9".encode(), None)),
    ("0xEA", "%[fc_pp_tlv(0xEA)]", (0xEA, None, "fc_pp_tlv(0xEA)")),
    ("0xE1", "%[fc_pp_tlv(234)]", (0xE1, None, "fc_pp_tlv(234)")),     # renumbered
    ("0x02", "%[fc_pp_authority]", (0x02, None, "fc_pp_authority")),
    ("0xE3", "%[fc_pp_unique_id]", (0xE3, None, "fc_pp_unique_id")),
    ("0x20", "%[fc_pp_tlv(0x20)]", (0x20, None, "fc_pp_tlv(0x20)")),  # HAProxy's own example
    ("0x05", "x" * 128, (0x05, b"x" * 128, None)),
]


@pytest.mark.parametrize("tlv_id, fmt, expected", FORMATS, ids=[case[1][:30] for case in FORMATS])
def test_formats_compile(tlv_id, fmt, expected):
    compiled = compile_tlv_fmt(option(tlv_id), fmt)
    assert (compiled.tlv_type, compiled.literal,
            compiled.fetch and compiled.fetch.name) == expected


# (option word, FMT, the one-line error)
FORMAT_ERRORS = [
    (OPTION, "x", "'set-proxy-v2-tlv-fmt' is not set-proxy-v2-tlv-fmt(ID) (expected a TLV type "
     "in parentheses, such as set-proxy-v2-tlv-fmt(0xE1))"),
    (OPTION + "(0xE1", "x", "'set-proxy-v2-tlv-fmt(0xE1' is not set-proxy-v2-tlv-fmt(ID) "
     "(expected a TLV type in parentheses, such as set-proxy-v2-tlv-fmt(0xE1))"),
    (option(""), "x", "'' is not a TLV type (expected 0 to 255, in decimal or 0x hex)"),
    (option("0x100"), "x", "'0x100' is not a TLV type (expected 0 to 255, in decimal or 0x hex)"),
    (option("256"), "x", "'256' is not a TLV type (expected 0 to 255, in decimal or 0x hex)"),
    (option("-1"), "x", "'-1' is not a TLV type (expected 0 to 255, in decimal or 0x hex)"),
    (option("0o17"), "x", "'0o17' is not a TLV type (expected 0 to 255, in decimal or 0x hex)"),
    (option("AUTHORITY"), "x", "'AUTHORITY' is not a TLV type (expected 0 to 255, in decimal "
     "or 0x hex)"),
    (option("3"), "x", "TLV 0x03 is the CRC32C, which is never copied "
     "(expected proxy-v2-options crc32c to compute a new one)"),
    (option("0xE1"), "%[fc_pp_tlv(0x03)]", "%[fc_pp_tlv(0x03)]: TLV 0x03 is the CRC32C, which "
     "is never copied (expected proxy-v2-options crc32c to compute a new one)"),
    (option("0xE1"), "%[src]", "unsupported fetch '%[src]' in a format " + SUPPORTED),
    (option("0xE1"), "%[fc_pp_aws_vpce]", "unsupported fetch '%[fc_pp_aws_vpce]' in a format "
     + SUPPORTED),
    (option("0xE1"), "%[str(foo)]", "unsupported fetch '%[str(foo)]' in a format " + SUPPORTED),
    (option("0xE1"), "%[fc_pp_authority,lower]", "'fc_pp_authority,lower' is not a fetch name "
     "with an optional (argument) (converters such as ',lower' are not supported)"),
    (option("0xE1"), "%[fc_pp_tlv]", "fc_pp_tlv needs a TLV type (expected fc_pp_tlv(ID), such "
     "as fc_pp_tlv(0xEA))"),
    (option("0xE1"), "tenant-%[fc_pp_authority]", "unsupported format "
     "'tenant-%[fc_pp_authority]' " + SUPPORTED),
    (option("0xE1"), "%ci", "unsupported format '%ci' " + SUPPORTED),
    (option("0xE1"), "100%", "unsupported format '100%' " + SUPPORTED),
    (option("0xE1"), "%[fc_pp_authority", "unsupported format '%[fc_pp_authority' " + SUPPORTED),
    (option("0x05"), "x" * 129, "the value cannot be sent as TLV 0x05: UNIQUE_ID is 129 bytes, "
     "more than 128"),
    (option("0x20"), "abc", "the value cannot be sent as TLV 0x20: malformed: SSL TLV shorter "
     "than its client and verify fields"),
    (option("0xE1"), "x" * 65536, "the value cannot be sent as TLV 0xe1: TLV 0xe1 of 65536 "
     "bytes cannot be encoded"),
    (option("0xE1"), "x" * 65521, "the value cannot be sent as TLV 0xe1: v2 header body of "
     "65536 bytes exceeds 65535"),
]


@pytest.mark.parametrize("word, fmt, message", FORMAT_ERRORS,
                         ids=[case[0] + " " + case[1][:30] for case in FORMAT_ERRORS])
def test_format_errors_are_one_line_reasons(word, fmt, message):
    with pytest.raises(ValueError) as caught:
        compile_tlv_fmt(word, fmt)
    assert str(caught.value) == message


def test_plan_errors():
    with pytest.raises(ValueError, match=r"^proxy-v2-options authority and "
                       r"set-proxy-v2-tlv-fmt\(0x02\) would both send TLV 0x02 \(expected one "
                       r"of them\)$"):
        plan(("2", "www.example.com"), options=["authority"])
    with pytest.raises(ValueError, match=r"^proxy-v2-options unique-id and "
                       r"set-proxy-v2-tlv-fmt\(0x05\) would both send TLV 0x05"):
        plan(("5", "%[fc_pp_unique_id]"), options=["unique-id", "crc32c"])
    with pytest.raises(ValueError, match=r"^the literal set-proxy-v2-tlv-fmt values take 65524 "
                       r"bytes, more than a v2 header holds beside IPv4 addresses \(expected at "
                       r"most 65523 in all\)$"):
        plan(("0xE1", "x" * 32759), ("0xE2", "x" * 32759))
    with pytest.raises(ValueError, match=r"^the literal set-proxy-v2-tlv-fmt values take 65520 "
                       r"bytes, more than a v2 header holds beside IPv4 addresses and a CRC32C "
                       r"\(expected at most 65516 in all\)$"):
        plan(("0xE1", "x" * 32757), ("0xE2", "x" * 32757), options=["crc32c"])
    fits = plan(("0xE1", "x" * 32758), ("0xE2", "x" * 32759))
    assert len(build_server_header(fits, CLIENT, FRONT, None, never_called)) == 16 + V2_MAX_LENGTH


# (formats, options, the client's TLVs or None for no header, the TLVs sent)
OUTGOING = [
    ((), (), None, []),
    ((), (), [(0x02, b"site"), (0x05, b"uid")], []),     # nothing is forwarded unless asked
    ((), ("authority",), [(0x02, b"site")], [(0x02, b"site")]),
    ((), ("authority",), [(0x02, b"")], [(0x02, b"")]),
    ((), ("authority",), [], []),                        # none received: no TLV
    ((), ("authority",), None, []),
    ((), ("unique-id",), [(0x05, b"uid")], [(0x05, b"uid")]),
    ((), ("unique-id",), [], [(0x05, NEW_ID)]),          # none received: made up, as before
    ((), ("unique-id",), [(0x05, b"")], [(0x05, NEW_ID)]),   # never an empty UNIQUE_ID
    ((), ("unique-id",), None, [(0x05, NEW_ID)]),
    ((), ("unique-id", "authority", "crc32c"), [(0x05, b"uid"), (0x02, b"site")],
     [(0x02, b"site"), (0x05, b"uid")]),                  # AUTHORITY, then UNIQUE_ID
    ((("0xE1", "lit"),), (), None, [(0xE1, b"lit")]),
    ((("0xE1", ""),), (), None, [(0xE1, b"")]),           # an empty literal is sent, as written
    ((("0xEA", "%[fc_pp_tlv(0xEA)]"),), (), [(0xEA, b"\x01vpce-1")], [(0xEA, b"\x01vpce-1")]),
    ((("0xEA", "%[fc_pp_tlv(0xEA)]"),), (), [(0xE1, b"other")], []),
    # binary values go on whole, NUL bytes included (HAProxy issue #3489 cuts at the first)
    ((("0xE1", "%[fc_pp_tlv(0xE1)]"),), (), [(0xE1, b" 0abc\x00\x00\x00de\x00\x00\x00\x01")],
     [(0xE1, b" 0abc\x00\x00\x00de\x00\x00\x00\x01")]),
    ((("0xEA", "%[fc_pp_tlv(0xEA)]"),), (), None, []),
    ((("0xEA", "%[fc_pp_tlv(0xEA)]"),), (), [(0xEA, b"\x01first"), (0xEA, b"\x02second")],
     [(0xEA, b"\x01first")]),                           # the first of a type, as HAProxy
    ((("0xE1", "%[fc_pp_authority]"), ("0xE2", "%[fc_pp_unique_id]")), (),
     [(0x05, b"uid"), (0x02, b"site")], [(0xE1, b"site"), (0xE2, b"uid")]),
    ((("0xE2", "b"), ("0xE1", "a"), ("0xE2", "c")), ("authority", "unique-id"),
     [(0x02, b"site")], [(0x02, b"site"), (0x05, NEW_ID), (0xE2, b"b"), (0xE1, b"a"),
                         (0xE2, b"c")]),                # options, then formats in config order
]


@pytest.mark.parametrize("formats, options, client_tlvs, sent", OUTGOING)
def test_outgoing_tlvs(formats, options, client_tlvs, sent):
    header = None if client_tlvs is None else received(*client_tlvs)
    make_id = (lambda: NEW_ID) if (0x05, NEW_ID) in sent else never_called
    assert outgoing_tlvs(plan(*formats, options=options), header, make_id) == sent


def test_the_header_sent_byte_by_byte():
    """CRC32C first (as build_v2 places it), then AUTHORITY, UNIQUE_ID, the formats; the
    CRC32C is computed over the whole header sent with its own value zeroed."""
    server_plan = plan(("0xE1", "lit"), ("0xEA", "%[fc_pp_tlv(0xEA)]"),
                       options=["crc32c", "authority", "unique-id"])
    client = received((0x02, b"site"), (0xEA, b"\x01vpce-9"), (0x05, b"uid"), crc32c=True)
    sent = build_server_header(server_plan, CLIENT, FRONT, client, never_called)
    body_tail = (tlv(0x02, b"site") + tlv(0x05, b"uid") + tlv(0xE1, b"lit")
                 + tlv(0xEA, b"\x01vpce-9"))
    block = inet4(CLIENT[0], FRONT[0], CLIENT[1], FRONT[1])
    zeroed = (V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", len(block) + 7 + len(body_tail))
              + block + tlv(0x03, bytes(4)) + body_tail)
    crc = struct.pack("!I", crc32c_bitwise(zeroed))
    assert sent == zeroed[:16 + len(block) + 3] + crc + zeroed[16 + len(block) + 7:]
    parsed = parse_header(sent)
    assert parsed.tlvs == ((0x03, crc), (0x02, b"site"), (0x05, b"uid"), (0xE1, b"lit"),
                           (0xEA, b"\x01vpce-9"))


def test_the_aws_nlb_capture_forwarded_with_a_new_crc32c():
    """The real capture's VPC endpoint TLV goes on as it came; its CRC32C never does."""
    nlb = parse_header(AWS_NLB)
    server_plan = plan(("0xEA", "%[fc_pp_tlv(0xEA)]"), options=["crc32c"])
    sent = build_server_header(server_plan, CLIENT, FRONT, nlb, never_called)
    parsed = parse_header(sent)          # raises BAD_CHECKSUM on a wrong CRC32C
    incoming_crc = dict(nlb.tlvs)[0x03]
    assert [tlv_type for tlv_type, _ in parsed.tlvs] == [0x03, 0xEA]
    assert dict(parsed.tlvs)[0xEA] == b"\x01vpce-08d2bf15fac5001c9"
    assert dict(parsed.tlvs)[0x03] != incoming_crc
    assert (parsed.src_addr, parsed.src_port, parsed.dst_addr, parsed.dst_port) == (
        CLIENT + FRONT)


def test_a_header_too_long_to_build_is_an_error_not_a_cut_header():
    """Forwarding one client's large TLV twice cannot fit in 65535 bytes: building raises,
    and max_header_length said so at config time for headers that large."""
    large = parse_header(build_v2(None, None, [(0xE1, b"x" * 40000)]), max_size=65551)
    server_plan = plan(("0xE1", "%[fc_pp_tlv(0xE1)]"), ("0xE2", "%[fc_pp_tlv(0xE1)]"))
    with pytest.raises(OutgoingHeaderError, match=r"^cannot build the v2 header: v2 header "
                       r"body of 80018 bytes exceeds 65535$"):
        build_server_header(server_plan, CLIENT, FRONT, large, never_called)
    assert max_header_length(server_plan, 65551) > 16 + V2_MAX_LENGTH
    once = plan(("0xE1", "%[fc_pp_tlv(0xE1)]"))
    assert len(build_server_header(once, CLIENT, FRONT, large, never_called)) == 16 + 12 + 40003


# (formats, options, largest client header, the longest header the plan can produce)
MAX_LENGTHS = [
    ((), (), 16384, 16 + 216),                                  # a UNIX address block
    ((), ("crc32c", "unique-id"), 16384, 16 + 216 + 7 + 3 + 128),
    ((("0xE1", "abc"),), (), 16384, 16 + 216 + 6),
    ((("0xE1", "%[fc_pp_tlv(0xE1)]"),), (), 16384, 16 + 216 + 3 + 16368 + 3),
    ((("0xE1", "%[fc_pp_tlv(0xE1)]"), ("0xE2", "%[fc_pp_tlv(0xE1)]")), (), 16384,
     16 + 216 + 2 * (3 + 16368 + 3)),
    ((("0xE1", "%[fc_pp_tlv(0xE1)]"), ("0xE2", "%[fc_pp_tlv(0xE2)]")), (), 16384,
     16 + 216 + 6 + 16368 + 3),                                 # two types share the area
    ((("0xE1", "%[fc_pp_unique_id]"),), ("authority",), 16384,
     16 + 216 + 3 + 128 + 16368 + 3),
]


@pytest.mark.parametrize("formats, options, largest, expected", MAX_LENGTHS)
def test_max_header_length(formats, options, largest, expected):
    assert max_header_length(plan(*formats, options=options), largest) == expected


def test_the_empty_plan_sends_what_was_sent_before():
    assert NO_TLVS == TlvPlan(False, False, False, ())
    assert build_server_header(NO_TLVS, CLIENT, FRONT, received((0x02, b"x")), never_called) == (
        build_v2(CLIENT, FRONT))


@pytest.mark.parametrize("text, expected", [("0", 0), ("255", 255), ("0xff", 255),
                                            ("0XEA", 0xEA), ("007", 7)])
def test_tlv_ids(text, expected):
    assert parse_tlv_id(text) == expected


def test_a_udp_client_header_is_forwarded_as_udp():
    """The transport a client's header announced goes on (DGRAM stays DGRAM: byte 13 is
    0x12, IPv4 over UDP), with the TLVs the plan forwards."""
    udp = parse_header(build_v2(CLIENT, FRONT, [(0x02, b"site")], transport="DGRAM"))
    sent = build_server_header(plan(options=["authority"]), CLIENT, FRONT, udp, never_called,
                               transport=udp.transport)
    assert sent[13] == 0x12
    assert parse_header(sent).tlvs == ((0x02, b"site"),)


# Plans whose TLVs are the same on every connection get a HeaderTemplate;
# the others build each header from the client's.
TEMPLATED = [((), ()), ((), ("crc32c",)), ((("0xE1", "tenant-7"), ("0xE2", "")), ()),
             ((("0xE1", "tenant-7"),), ("crc32c",))]
PER_CONNECTION = [((), ("authority",)), ((), ("unique-id",)), ((), ("crc32c", "unique-id")),
                  ((("0xE1", "lit"), ("0xEA", "%[fc_pp_tlv(0xEA)]")), ("crc32c",))]
ENDPOINTS = [(CLIENT, FRONT), (("2001:db8::7", 40000), ("2001:db8::1", 443)),
             (CLIENT, ("2001:db8::1", 443)), (("::ffff:198.51.100.7", 1), FRONT),
             ("/run/client.sock", "/run/front.sock"), (None, FRONT)]


@pytest.mark.parametrize("formats, options", TEMPLATED)
@pytest.mark.parametrize("src, dst", ENDPOINTS)
def test_a_plan_with_fixed_tlvs_sends_from_its_template_what_build_v2_sends(formats, options,
                                                                          src, dst):
    server_plan = plan(*formats, options=options)
    assert server_plan.template is not None
    literals = [(tlv.tlv_type, tlv.literal) for tlv in server_plan.formats]
    client = received((0x02, b"site"), (0xE1, b"client's"))       # never forwarded here
    sent = build_server_header(server_plan, src, dst, client, never_called)
    assert sent == build_v2(src, dst, literals, crc32c=server_plan.crc32c)
    assert parse_header(sent).header_len == len(sent)


@pytest.mark.parametrize("formats, options", PER_CONNECTION)
def test_a_plan_with_per_connection_tlvs_has_no_template(formats, options):
    assert plan(*formats, options=options).template is None


def test_a_template_keeps_the_udp_transport_and_the_errors():
    udp = parse_header(build_v2(CLIENT, FRONT, transport="DGRAM"))
    assert build_server_header(NO_TLVS, CLIENT, FRONT, udp, never_called,
                               transport="DGRAM")[13] == 0x12
    with pytest.raises(OutgoingHeaderError, match=r"port 70000 is outside 0-65535"):
        build_server_header(NO_TLVS, CLIENT, ("192.0.2.1", 70000), None, never_called)
    fits_ipv4_only = plan(("0xE1", "x" * (V2_MAX_LENGTH - 12 - 3)))
    assert len(build_server_header(fits_ipv4_only, CLIENT, FRONT, None, never_called)) == 65551
    with pytest.raises(OutgoingHeaderError, match=r"exceeds 65535"):
        build_server_header(fits_ipv4_only, ("::1", 1), ("::2", 2), None, never_called)


def test_equal_plans_compare_equal_whatever_their_templates():
    assert plan(options=["crc32c"]) == TlvPlan(True, False, False, ())
    assert plan(options=["crc32c"]) != NO_TLVS


# ### HeaderTemplate: build_v2 prepared once for a server's fixed TLVs

TEMPLATE_TLVS = [
    ((), False),
    ((), True),
    (((0xE1, b"tenant-7"),), False),
    (((0xE1, b"tenant-7"), (0x03, b"old!"), (0x04, b"")), True),     # a CRC32C never copied
    (((0xE1, b"x" * (65535 - 12 - 3)),), False),                      # fits beside IPv4 only
]
TEMPLATE_PAIRS = [
    (("192.0.2.1", 40000), ("198.51.100.2", 443)),
    (("0.0.0.0", 0), ("255.255.255.255", 65535)),
    (("2001:db8::1", 40000), ("2001:db8::2", 443)),
    (("2001:db8::1", 40000, 0, 0), ("::1", 443, 0, 0)),              # 4-tuples, as accept() gives
    (("192.0.2.1", 40000), ("2001:db8::2", 443)),                     # mixed: v4-mapped
    (("::ffff:192.0.2.1", 1), ("192.0.2.2", 2)),                      # mapped on one side only
    (("fe80::1%eth0", 1), ("fe80::2", 2)),                            # a zone id is dropped
    ("/run/client.sock", "/run/front.sock"),
    (None, ("192.0.2.1", 1)),
    ("/run/client.sock", ("192.0.2.1", 1)),
]


@pytest.mark.parametrize("tlvs, crc", TEMPLATE_TLVS)
@pytest.mark.parametrize("src, dst", TEMPLATE_PAIRS)
def test_a_template_builds_what_build_v2_builds(tlvs, crc, src, dst):
    assert answer_of_build(HeaderTemplate(tlvs, crc).build, src, dst) == answer_of_build(
        lambda src, dst: build_v2(src, dst, tlvs, crc32c=crc), src, dst)


@pytest.mark.parametrize("src, dst", [
    (("192.0.2.1", 65536), ("192.0.2.2", 1)),
    (("192.0.2.1", 1), ("192.0.2.2", -1)),
    (("192.0.2.300", 1), ("192.0.2.2", 1)),
    (("192.0.2.1", 1), ("2001:db8::g", 1)),
])
def test_a_template_refuses_what_build_v2_refuses(src, dst):
    answer = answer_of_build(HeaderTemplate((), False).build, src, dst)
    assert answer[0] == "ValueError"
    assert answer == answer_of_build(build_v2, src, dst)


def test_a_template_builds_what_build_v2_builds_for_random_addresses():
    rng = random.Random(13)
    templates = [(HeaderTemplate(tlvs, crc), tlvs, crc) for tlvs, crc in TEMPLATE_TLVS[:4]]
    for _ in range(2000):
        src, dst = ((random_ipv4(rng) if rng.random() < 0.6 else random_ipv6(rng)[0],
                     random_port(rng)) for _ in range(2))
        template, tlvs, crc = rng.choice(templates)
        sent = template.build(src, dst)
        assert sent == build_v2(src, dst, tlvs, crc32c=crc), (src, dst)
        assert parse_header(sent).header_len == len(sent)       # a wrong CRC32C would raise


def answer_of_build(build, src, dst):
    """The bytes a builder returns, or the type and text of what it raises."""
    try:
        return build(src, dst)
    except Exception as exc:
        return type(exc).__name__, str(exc)
