"""simpleproxy.proxyproto from tables: the cases of docs/proxy-protocol.md's rules, the vectors
of tests/data, the builders, CRC32C and the --decode view."""

import glob
import json
import os
import random
import re

import pytest

from proxyproto_cases import (
    CASES, MAX_SIZE_CASES, NEED_MORE, SIGNATURE, assert_incremental, crc32c_bitwise, inet4,
    inet6, mutate, outcome, random_header, tlv, unix_block, v2)
from simpleproxy import proxyproto
from simpleproxy.proxyproto import (
    DEFAULT_MAX_HEADER, HEADER_ERROR_KINDS, TRUNCATED, V1_SIGNATURE, V2_SIGNATURE, ProxyHeader,
    ProxyHeaderError, aws_vpce_id, build_v1, build_v2, crc32c, header_as_dict, parse_header)
from support import REPO, load_vectors


def case_id(case):
    return "%s: %s" % (case.ref, case.name)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case(case):
    assert outcome(case.wire) == case.expect
    at_eof = outcome(case.wire, eof=True)
    assert at_eof == (TRUNCATED if case.expect == NEED_MORE else case.expect)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_case_fed_one_byte_at_a_time(case):
    assert_incremental(case.wire)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_bytearray_and_memoryview_read_like_bytes(case):
    assert outcome(bytearray(case.wire)) == outcome(memoryview(case.wire)) == case.expect


@pytest.mark.parametrize("name, wire, max_size, expect", MAX_SIZE_CASES,
                         ids=[case[0] for case in MAX_SIZE_CASES])
def test_max_size(name, wire, max_size, expect):
    result = outcome(wire, max_size=DEFAULT_MAX_HEADER if max_size is None else max_size)
    if isinstance(expect, int):
        assert result.header_len == expect
    else:
        assert result == expect


def test_the_rules_cited_are_in_docs_proxy_protocol():
    """Every R-number and 10.x/11.x item the code and the cases cite is in the notes."""
    with open(os.path.join(REPO, "docs", "proxy-protocol.md"), encoding="utf-8") as f:
        notes = f.read()
    cited = set()
    for path in glob.glob(os.path.join(REPO, "simpleproxy", "*.py")) + [
            os.path.join(REPO, "tests", "proxyproto_cases.py")]:
        with open(path, encoding="utf-8") as f:
            cited.update(re.findall(r"\bR\d+\b", f.read()))
    cited.update(re.findall(r"\bR\d+\b", " ".join(case.ref for case in CASES)))
    assert cited and {rule for rule in cited if "**%s**" % rule not in notes} == set()
    for section in ("### 10.1", "### 10.2", "### 11.1", "### 11.2", "### 11.3"):
        assert "\n%s " % section in notes


def test_tables_cover_every_receiving_item_of_the_checklist():
    referenced = {int(number) for case in CASES for number in re.findall(r"R(\d+)", case.ref)}
    # R24 (what senders put in the line) is the builders' part, tested below.
    assert set(range(12, 54)) - {24} <= referenced


def test_constants():
    assert V1_SIGNATURE == b"PROXY"
    assert V2_SIGNATURE == SIGNATURE
    assert DEFAULT_MAX_HEADER == 16384


# ### The vectors of tests/data (conventions in docs/proxy-protocol.md, "Test vectors")

VECTORS = load_vectors()


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_vector(vector):
    wire, expect = bytes.fromhex(vector["hex"]), vector["expect"]
    result = outcome(wire)
    if not vector["valid"]:
        if expect.get("incomplete"):
            assert result == NEED_MORE
            assert outcome(wire, eof=True) == TRUNCATED
        else:
            assert result in HEADER_ERROR_KINDS
        return
    assert isinstance(result, ProxyHeader), result
    view = header_as_dict(result)
    for key, value in expect.items():
        if key == "ssl":
            assert {name: view["ssl"][name] for name in value} == value
        else:
            assert view[key] == value, key
    assert_incremental(wire)


def test_vectors_cover_both_outcomes():
    assert sum(vector["valid"] for vector in VECTORS) >= 30
    assert sum(not vector["valid"] for vector in VECTORS) >= 30


# ### CRC32C (RFC 4960 appendix B; the iSCSI values are RFC 3720 B.4)

@pytest.mark.parametrize("data, value", [
    (b"", 0),
    (b"123456789", 0xE3069283),
    (bytes(32), 0x8A9136AA),
    (b"\xff" * 32, 0x62A8AB43),
    (bytes(range(32)), 0x46DD794E),
    (bytes(range(31, -1, -1)), 0x113FDB5C),
])
def test_crc32c_known_values(data, value):
    assert crc32c(data) == value
    assert crc32c(bytearray(data)) == crc32c(memoryview(data)) == value


def test_crc32c_continues_and_matches_the_bitwise_definition():
    data = bytes((index * 151 + 7) % 256 for index in range(2000))
    assert crc32c(data) == crc32c_bitwise(data)
    for split in (0, 1, 999, 2000):
        assert crc32c(data[split:], crc32c(data[:split])) == crc32c(data)


# ### Builders

TLS_TLVS = [(0x01, b"h2"), (0x02, b"example.com")]
V4_BLOCK = inet4("192.0.2.1", "198.51.100.2", 1234, 443)


@pytest.mark.parametrize("src, dst, line", [
    (("192.0.2.1", 1234), ("198.51.100.2", 443),
     b"PROXY TCP4 192.0.2.1 198.51.100.2 1234 443\r\n"),
    # two IPv4-mapped addresses go out as plain IPv4
    (("::ffff:192.0.2.1", 1234), ("::FFFF:198.51.100.2", 443),
     b"PROXY TCP4 192.0.2.1 198.51.100.2 1234 443\r\n"),
    # a mixed pair goes out as TCP6, the IPv4 side mapped
    (("192.0.2.1", 1), ("2001:db8::1", 2), b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1 2\r\n"),
    (("2001:DB8:0::1", 0, 0, 0), ("::ffff:10.0.0.1", 65535, 0, 0),
     b"PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n"),
    # getpeername()'s scope id names a local interface: the address goes, the zone does not
    (("fe80::1%eth0", 5, 0, 2), ("fe80::2", 6, 0, 2), b"PROXY TCP6 fe80::1 fe80::2 5 6\r\n"),
    ("/run/client.sock", "/run/server.sock", b"PROXY UNKNOWN\r\n"),
    (None, None, b"PROXY UNKNOWN\r\n"),
    (None, ("192.0.2.1", 1), b"PROXY UNKNOWN\r\n"),
    ("/run/a.sock", ("192.0.2.1", 1), b"PROXY UNKNOWN\r\n"),
])
def test_build_v1(src, dst, line):
    assert build_v1(src, dst) == line
    assert parse_header(line).header_len == len(line)


@pytest.mark.parametrize("src, dst, kwargs, header", [
    (("192.0.2.1", 1234), ("198.51.100.2", 443), {}, v2(0x21, 0x11, V4_BLOCK)),
    (("::ffff:192.0.2.1", 1234), ("::ffff:198.51.100.2", 443), {}, v2(0x21, 0x11, V4_BLOCK)),
    (("2001:db8::1", 1), ("192.0.2.9", 2), {},
     v2(0x21, 0x21, inet6("2001:db8::1", "::ffff:192.0.2.9", 1, 2))),
    ("/run/a.sock", b"/run/b.sock", {},
     v2(0x21, 0x31, unix_block(b"/run/a.sock", b"/run/b.sock"))),
    ("", "/tmp/\udcff", {}, v2(0x21, 0x31, unix_block(b"", b"/tmp/\xff"))),
    ("/" + "p" * 108, "/b", {}, v2(0x20, 0x00)),                # cannot be expressed
    (None, None, {}, v2(0x20, 0x00)),
    (("192.0.2.1", 1), None, {"tlvs": TLS_TLVS},
     v2(0x20, 0x00, tlv(0x01, b"h2") + tlv(0x02, b"example.com"))),
    ("/run/a.sock", ("192.0.2.1", 1), {}, v2(0x20, 0x00)),
    # health checks: LOCAL whatever the endpoints
    (("192.0.2.1", 1234), ("198.51.100.2", 443), {"local": True}, v2(0x20, 0x00)),
    (("192.0.2.1", 1234), ("198.51.100.2", 443), {"tlvs": TLS_TLVS},
     v2(0x21, 0x11, V4_BLOCK + tlv(0x01, b"h2") + tlv(0x02, b"example.com"))),
    # the transport the client announced is kept: UDP goes on as DGRAM
    (("192.0.2.1", 1234), ("198.51.100.2", 443), {"transport": "DGRAM"}, v2(0x21, 0x12, V4_BLOCK)),
    (("2001:db8::1", 1), ("2001:db8::2", 2), {"transport": "DGRAM"},
     v2(0x21, 0x22, inet6("2001:db8::1", "2001:db8::2", 1, 2))),
    ("/run/a.sock", "/run/b.sock", {"transport": "DGRAM"},
     v2(0x21, 0x32, unix_block(b"/run/a.sock", b"/run/b.sock"))),
    (None, None, {"transport": "DGRAM"}, v2(0x20, 0x00)),       # nothing to announce
    # a CRC32C in tlvs is never copied: it could not match the new header
    (("192.0.2.1", 1234), ("198.51.100.2", 443), {"tlvs": [(0x03, b"\1\2\3\4"), (0x04, b"")]},
     v2(0x21, 0x11, V4_BLOCK + tlv(0x04, b""))),
])
def test_build_v2(src, dst, kwargs, header):
    assert build_v2(src, dst, **kwargs) == header
    assert parse_header(header).header_len == len(header)


@pytest.mark.parametrize("received", [
    v2(0x21, 0x12, V4_BLOCK), v2(0x21, 0x22, inet6("2001:db8::1", "2001:db8::2", 1, 2)),
    v2(0x21, 0x11, V4_BLOCK), v2(0x21, 0x32, unix_block(b"/a", b"/b")),
], ids=["udp4", "udp6", "tcp4", "unix-dgram"])
def test_a_received_header_rebuilt_from_its_fields_is_the_same_header(received):
    header = parse_header(received)
    if header.family.startswith("UNIX"):
        src, dst = header.src_addr, header.dst_addr
    else:
        src, dst = (header.src_addr, header.src_port), (header.dst_addr, header.dst_port)
    assert build_v2(src, dst, transport=header.transport) == received


@pytest.mark.parametrize("kwargs", [
    {"src": ("192.0.2.1", 1234), "dst": ("198.51.100.2", 443), "tlvs": TLS_TLVS},
    {"src": ("192.0.2.1", 1234), "dst": ("198.51.100.2", 443),
     "tlvs": [(0x03, b"stale")] + TLS_TLVS},
    {"src": None, "dst": None, "local": True},
    {"src": "/a", "dst": "/b", "tlvs": [(0x05, b"id")]},
])
def test_build_v2_crc32c_goes_first_and_matches(kwargs):
    header = build_v2(crc32c=True, **kwargs)
    parsed = parse_header(header)
    assert parsed.header_len == len(header)
    assert parsed.tlvs[0][0] == 0x03
    assert [tlv_type for tlv_type, _ in parsed.tlvs].count(0x03) == 1
    assert parsed.tlvs[1:] == tuple((t, v) for t, v in kwargs.get("tlvs", ()) if t != 0x03)
    block_end = len(header) - sum(3 + len(v) for _, v in parsed.tlvs)
    zeroed = header[:block_end + 3] + bytes(4) + header[block_end + 7:]
    assert int.from_bytes(parsed.tlvs[0][1], "big") == crc32c_bitwise(zeroed)


@pytest.mark.parametrize("call", [
    lambda: build_v1(("192.0.2.1", 65536), ("192.0.2.2", 1)),
    lambda: build_v1(("192.0.2.1", -1), ("192.0.2.2", 1)),
    lambda: build_v1(("localhost", 1), ("192.0.2.2", 1)),
    lambda: build_v2(("192.0.2.1", 1), ("1.2.3", 1)),
    lambda: build_v2(None, None, tlvs=[(0x05, bytes(129))]),
    lambda: build_v2(None, None, tlvs=[(256, b"")]),
    lambda: build_v2(None, None, tlvs=[(0xE2, bytes(65536))]),
    lambda: build_v2(None, None, tlvs=[(0xE2, bytes(40000)), (0xE2, bytes(40000))]),
], ids=["port 65536", "port -1", "host name", "short ipv4", "UNIQUE_ID 129", "type 256",
        "value 65536", "body over 65535"])
def test_builders_refuse_what_cannot_be_sent(call):
    with pytest.raises(ValueError):
        call()


# ### The --decode view and the helpers built on it

def test_header_as_dict_of_a_v1_header():
    header = parse_header(b"PROXY TCP4 192.0.2.1 198.51.100.2 1234 443\r\n")
    assert header_as_dict(header) == {
        "version": 1, "command": "PROXY", "family": "TCP4", "transport": None,
        "src_addr": "192.0.2.1", "src_port": 1234, "dst_addr": "198.51.100.2", "dst_port": 443,
        "header_len": 44, "tlvs": []}


SSL = (b"\x07\x00\x00\x00\x02" + tlv(0x21, b"TLSv1.3") + tlv(0x22, b"CN=\xc3\xa9")
       + tlv(0x23, b"TLS_AES_128_GCM_SHA256") + tlv(0x24, b"RSA-SHA256") + tlv(0x25, b"EC256")
       + tlv(0x26, b"x25519") + tlv(0x27, b"ecdsa_secp256r1_sha256") + tlv(0x28, b"\x30\x03")
       + tlv(0x21, b"second"))
DECODED = v2(0x21, 0x11, V4_BLOCK + tlv(0x01, b"h2") + tlv(0x02, b"example.com")
             + tlv(0x05, b"\x00\xffid") + tlv(0x20, SSL) + tlv(0x30, b"blue")
             + tlv(0xEA, b"\x02other") + tlv(0xEA, b"\x01vpce-08d2bf15fac5001c9")
             + tlv(0xEE, b"\x01\xc1\x45\x00\x21") + tlv(0xE0, bytes.fromhex("0102030405060708"))
             + tlv(0x01, b"http/1.1"))


def test_header_as_dict_decodes_the_known_tlvs():
    view = header_as_dict(parse_header(DECODED))
    assert json.loads(json.dumps(view)) == view
    assert view["tlvs"][0] == [1, "6832"] and len(view["tlvs"]) == 10
    assert view["alpn"] == "h2"                      # the first of two
    assert view["authority"] == "example.com"
    assert view["unique_id"] == "00ff6964"
    assert view["netns"] == "blue"
    assert view["aws_vpce_id"] == "vpce-08d2bf15fac5001c9"
    assert view["azure_linkid"] == 0x210045C1         # little-endian
    assert view["gcp_psc_connection_id"] == 0x0102030405060708
    assert view["ssl"] == {
        "client": 7, "verify": 2, "client_ssl": True, "client_cert_conn": True,
        "client_cert_sess": True,
        "sub_tlvs": [[0x21, b"TLSv1.3".hex()], [0x22, b"CN=\xc3\xa9".hex()],
                     [0x23, b"TLS_AES_128_GCM_SHA256".hex()], [0x24, b"RSA-SHA256".hex()],
                     [0x25, b"EC256".hex()], [0x26, b"x25519".hex()],
                     [0x27, b"ecdsa_secp256r1_sha256".hex()], [0x28, "3003"],
                     [0x21, b"second".hex()]],
        "version": "TLSv1.3", "cn": "CN=\u00e9", "cipher": "TLS_AES_128_GCM_SHA256",
        "sig_alg": "RSA-SHA256", "key_alg": "EC256", "group": "x25519",
        "sig_scheme": "ecdsa_secp256r1_sha256", "client_cert": "3003"}


@pytest.mark.parametrize("tlvs, expect", [
    ([(0xEA, b"\x01vpce-0abc")], "vpce-0abc"),
    ([(0xEA, b"\x02vpce-0abc")], None),               # another subtype
    ([(0xEA, b"\x01")], None),
    ([(0xEA, b"")], None),
    ([(0xEA, b"\x01vpce-0abc\r\nforged log line")], None),
    ([(0xEA, b"\x01vpce-\xff")], None),
    ([(0x04, b"\x01vpce-0abc")], None),
    ([], None),
])
def test_aws_vpce_id(tlvs, expect):
    assert aws_vpce_id(parse_header(build_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs))) == expect


@pytest.mark.parametrize("tlvs, absent", [
    ([(0xEE, b"\x01\x00\x00\x00")], "azure_linkid"),
    ([(0xEE, b"\x02\x00\x00\x00\x01")], "azure_linkid"),
    ([(0xE0, bytes(7))], "gcp_psc_connection_id"),
    ([(0xE0, bytes(9))], "gcp_psc_connection_id"),
])
def test_header_as_dict_skips_vendor_tlvs_of_another_shape(tlvs, absent):
    view = header_as_dict(parse_header(build_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs)))
    assert absent not in view


def test_header_as_dict_of_uninterpreted_tlvs():
    header = parse_header(v2(0x20, 0x00, inet4("1.1.1.1", "2.2.2.2", 1, 2)))
    view = header_as_dict(header)
    assert view["tlvs"] is None and view["command"] == "LOCAL" and view["src_addr"] is None
    assert aws_vpce_id(header) is None


def test_header_as_dict_of_a_unix_path_that_is_not_utf8():
    header = parse_header(v2(0x21, 0x31, unix_block(b"/tmp/\xff", b"/b")))
    assert json.loads(json.dumps(header_as_dict(header)))["src_addr"] == "/tmp/\udcff"


@pytest.mark.parametrize("wire, has_addresses", [
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n", True),
    (b"PROXY TCP6 ::1 ::2 1 2\r\n", True),
    (b"PROXY UNKNOWN 1.2.3.4 5.6.7.8 1 2\r\n", False),
    (v2(0x21, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2)), True),
    (v2(0x21, 0x31, unix_block(b"/a", b"/b")), True),
    (v2(0x20, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2)), False),      # LOCAL: never (R55)
    (v2(0x21, 0x10, inet4("1.1.1.1", "2.2.2.2", 1, 2)), False),
    (v2(0x21, 0x00), False),
])
def test_has_addresses(wire, has_addresses):
    assert parse_header(wire).has_addresses is has_addresses


# ### The short path answers exactly as the full parser (proxyproto's docstring, issue 13)

def answer_of(parse, data, eof, max_size):
    """What one parser answers: a ProxyHeader, NEED_MORE, or (kind, reason) of its error."""
    try:
        header = parse(data, eof, max_size)
    except ProxyHeaderError as error:
        return error.kind, error.reason
    return NEED_MORE if header is None else header


def full_parser(data, eof, max_size):
    return proxyproto._pp_parse_in_full(data, bytes(data[:16]), eof, max_size)


def short_path(data, max_size=DEFAULT_MAX_HEADER):
    return proxyproto._pp_short_path(data, bytes(data[:16]), max_size)


def assert_both_paths_agree(wire):
    """parse_header (short path first) and the full parser give the same header or the same
    error, for the wire, its prefixes at the short path's edges, at EOF and under tight
    limits; the short path itself either passes or answers as the full parser."""
    for data in {wire, wire[:len(wire) - 1], wire[:16], wire[:28], wire[:52], wire[:56]}:
        for eof in (False, True):
            for max_size in (DEFAULT_MAX_HEADER, 28, 52, 27):
                full = answer_of(full_parser, data, eof, max_size)
                assert answer_of(parse_header, data, eof, max_size) == full, (data, eof, max_size)
                short = short_path(data, max_size)
                assert short is None or short == full, (data, max_size)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_short_path_agrees_with_the_full_parser_on_every_case(case):
    assert_both_paths_agree(case.wire)


@pytest.mark.parametrize("vector", VECTORS, ids=[vector["name"] for vector in VECTORS])
def test_short_path_agrees_with_the_full_parser_on_every_vector(vector):
    assert_both_paths_agree(bytes.fromhex(vector["hex"]))


def test_short_path_agrees_with_the_full_parser_on_random_and_mutated_headers():
    rng = random.Random(1313)
    seeds = [case.wire for case in CASES if len(case.wire) < 2048]
    taken = 0
    for index in range(6000):
        wire = random_header(rng)[0] + rng.choice((b"", b"GET / HTTP/1.1\r\n"))
        if index % 2:
            wire = mutate(rng, wire, seeds)
        assert_both_paths_agree(wire)
        taken += short_path(wire) is not None
    assert taken > 300           # the random headers do reach the short path


COMMON = [
    b"PROXY TCP4 192.0.2.10 198.51.100.20 40000 443\r\nGET /",
    b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
    v2(0x21, 0x11, inet4("192.0.2.10", "198.51.100.20", 40000, 443)) + b"GET /",
    v2(0x21, 0x21, inet6("2001:db8::1", "::ffff:192.0.2.1", 1, 65535)),
]


@pytest.mark.parametrize("wire", COMMON)
def test_the_common_headers_take_the_short_path(wire):
    header = short_path(wire)
    assert header is not None and header == full_parser(wire, False, DEFAULT_MAX_HEADER)


ELSEWHERE = [
    ("v2 with a TLV", v2(0x21, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2) + tlv(0x04, b""))),
    ("v2 with a CRC32C", build_v2(("1.1.1.1", 1), ("2.2.2.2", 2), crc32c=True)),
    ("v2 LOCAL", v2(0x20, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2))),
    ("v2 UDP4", v2(0x21, 0x12, inet4("1.1.1.1", "2.2.2.2", 1, 2))),
    ("v2 UNIX", v2(0x21, 0x31, unix_block(b"/a", b"/b"))),
    ("v2 UNSPEC", v2(0x21, 0x00)),
    ("v2 length short of the block", SIGNATURE + b"\x21\x11\x00\x0b" + bytes(11)),
    ("v2 truncated", v2(0x21, 0x11, inet4("1.1.1.1", "2.2.2.2", 1, 2))[:27]),
    ("v2 version 3", SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12)),
    ("v1 TCP6", b"PROXY TCP6 ::1 ::2 1 2\r\n"),
    ("v1 UNKNOWN", b"PROXY UNKNOWN\r\n"),
    ("v1 truncated", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"),
    ("v1 port above 65535", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n"),
    ("v1 leading zero", b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n"),
    ("v1 double space", b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n"),
    ("v1 LF only", b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
    ("not PROXY", b"GET / HTTP/1.1\r\n\r\n"),
]


@pytest.mark.parametrize("name, wire", ELSEWHERE, ids=[name for name, _ in ELSEWHERE])
def test_everything_else_goes_the_full_way(name, wire):
    assert short_path(wire) is None
    assert_both_paths_agree(wire)


def test_a_header_over_max_size_goes_the_full_way():
    wire = v2(0x21, 0x21, inet6("::1", "::2", 1, 2))
    assert short_path(wire, max_size=len(wire) - 1) is None
    assert answer_of(parse_header, wire, False, len(wire) - 1)[0] == "too-long"

