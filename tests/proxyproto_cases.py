"""PROXY header cases on the wire, by rule of docs/proxy-protocol.md, seeded random headers and
mutations, and helpers the proxyproto tests (and the proxy under fuzz) share.

The helpers here encode headers on their own (struct, socket, a bitwise CRC32C) so that a
bug in simpleproxy.proxyproto's builders cannot hide the same bug in its parser.

Every case is Case(name, ref, wire, expect): ``ref`` names the rules it checks (R12,
10.2.3 ...), ``expect`` is a ProxyHeader, an error kind from simpleproxy.proxyproto, or NEED_MORE
(the parser waits; at EOF it must say TRUNCATED). Cases whose vector in tests/data carries a
``disputed`` entry say which reading we follow, next to the case.
"""

import socket
import struct
from collections import namedtuple

from simpleproxy.proxyproto import (
    BAD_CHECKSUM, DEFAULT_MAX_HEADER, HEADER_ERROR_KINDS, MALFORMED, NOT_PROXY, TOO_LONG,
    UNSUPPORTED, ProxyHeader, ProxyHeaderError, parse_header)

NEED_MORE = "need-more"
SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
NO_ADDRESSES = (None, None, None, None)

Case = namedtuple("Case", "name ref wire expect")


# ### Asking the parser

def outcome(data, eof=False, max_size=DEFAULT_MAX_HEADER):
    """What parse_header answers: a ProxyHeader, NEED_MORE, or the error kind."""
    try:
        header = parse_header(data, eof=eof, max_size=max_size)
    except ProxyHeaderError as error:
        assert error.kind in HEADER_ERROR_KINDS
        return error.kind
    return NEED_MORE if header is None else header


def assert_incremental(wire):
    """Fed a growing prefix of wire, the parser waits, then decides exactly once and for good:
    a header when its last byte arrives, an error as soon as one is certain."""
    whole = outcome(wire)
    view = memoryview(wire)
    decided_at = None
    for size in range(len(wire) + 1):
        result = outcome(view[:size])
        if decided_at is None and result != NEED_MORE:
            decided_at = size
        if decided_at is None:
            continue
        assert result == whole, "prefix of %d bytes" % size
    if isinstance(whole, ProxyHeader):
        assert decided_at == whole.header_len
    elif whole == NEED_MORE:
        assert decided_at is None


# ### Wire helpers

def crc32c_bitwise(data):
    """CRC32C one bit at a time: slow, and unlike the module's table-driven one."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


def v2(ver_cmd, family_transport, body=b""):
    """A v2 header: signature, bytes 13-14, the length of body, body."""
    return SIGNATURE + bytes((ver_cmd, family_transport)) + struct.pack("!H", len(body)) + body


def tlv(tlv_type, value):
    return struct.pack("!BH", tlv_type, len(value)) + value


def ssl_value(client, verify, *sub_tlvs):
    return struct.pack("!BI", client, verify) + b"".join(sub_tlvs)


def inet4(src, dst, sport, dport):
    return (socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
            + struct.pack("!HH", sport, dport))


def inet6(src, dst, sport, dport):
    return (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
            + struct.pack("!HH", sport, dport))


def unix_block(src, dst):
    return src.ljust(108, b"\0") + dst.ljust(108, b"\0")


def with_crc(header, value_offset):
    """header with a correct big-endian CRC32C in the 4 bytes at value_offset."""
    zeroed = header[:value_offset] + bytes(4) + header[value_offset + 4:]
    return (zeroed[:value_offset] + struct.pack("!I", crc32c_bitwise(zeroed))
            + zeroed[value_offset + 4:])


# ### Case constructors

def v1_ok(name, ref, line, family="UNKNOWN", src=None, sport=None, dst=None, dport=None,
          payload=b""):
    return Case(name, ref, line + payload,
                ProxyHeader(1, "PROXY", family, None, src, sport, dst, dport, len(line), ()))


def v2_ok(name, ref, header, command, family, transport, addresses=NO_ADDRESSES, tlvs=(),
          payload=b""):
    return Case(name, ref, header + payload,
                ProxyHeader(2, command, family, transport, *addresses, header_len=len(header),
                            tlvs=tlvs))


def bad(name, ref, wire, kind):
    return Case(name, ref, wire, kind)


def more(name, ref, wire):
    return Case(name, ref, wire, NEED_MORE)


TCP4_LINE = b"PROXY TCP4 192.0.2.10 198.51.100.20 40000 443\r\n"
TCP4_BLOCK = inet4("192.0.2.10", "198.51.100.20", 40000, 443)
TCP4_ADDRESSES = ("192.0.2.10", 40000, "198.51.100.20", 443)
HTTP = b"GET / HTTP/1.1\r\n\r\n"

# ### Version 1 (docs/proxy-protocol.md section 2)

V1_CASES = [
    # R12: the line layout
    v1_ok("tcp4", "R12", TCP4_LINE, "TCP4", "192.0.2.10", 40000, "198.51.100.20", 443),
    v1_ok("tcp4 then payload", "R12 R25", TCP4_LINE, "TCP4", "192.0.2.10", 40000,
          "198.51.100.20", 443, payload=HTTP),
    v1_ok("second header is payload", "R1 R25", TCP4_LINE, "TCP4", "192.0.2.10", 40000,
          "198.51.100.20", 443, payload=b"PROXY TCP4 1.1.1.1 2.2.2.2 1 2\r\n"),
    bad("double space after PROXY", "R12", b"PROXY  TCP4 1.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    bad("double space before dst", "R12", b"PROXY TCP4 1.2.3.4  5.6.7.8 80 443\r\n", MALFORMED),
    bad("double space before dport", "R12", b"PROXY TCP4 1.2.3.4 5.6.7.8 80  443\r\n", MALFORMED),
    # HAProxy reads the empty field as port 0 (disputed vector v1_empty_port_double_space);
    # we follow the grammar: one space, then a port.
    bad("empty source port", "R12 R18", b"PROXY TCP4 1.2.3.4 5.6.7.8  443\r\n", MALFORMED),
    bad("tab separator", "R12", b"PROXY TCP4\t1.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    bad("space before CRLF", "R12", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 \r\n", MALFORMED),
    bad("signature glued to protocol", "R12", b"PROXYTCP4 1.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    bad("lowercase signature", "R12 R37", b"proxy TCP4 1.2.3.4 5.6.7.8 80 443\r\n", NOT_PROXY),
    bad("lowercase protocol", "R12", b"PROXY tcp4 1.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    bad("non-ASCII in the line", "R12", b"PROXY TCP4 1.2.3.4 5.6.7.\xd9\xa8 80 443\r\n",
        MALFORMED),
    bad("only the signature", "R12", b"PROXY\r\n", MALFORMED),
    # R13: the protocol word
    bad("empty protocol", "R13", b"PROXY \r\n", MALFORMED),
    bad("protocol TCP5", "R13", b"PROXY TCP5 1.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    bad("protocol UDP4", "R13", b"PROXY UDP4 1.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    bad("protocol TCP without digit", "R13", b"PROXY TCP 1.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    # R14: UNKNOWN, short or with the rest of the line. Twisted rejects the short form and
    # HAProxy the long ones (disputed vectors v1_unknown_short, v1_unknown_free_text,
    # v1_unknown_trailing_spaces_icgood_sender); we accept both as R14 says (10.2.1).
    v1_ok("unknown short", "R14 R23", b"PROXY UNKNOWN\r\n"),
    v1_ok("unknown short then payload", "R14 R25", b"PROXY UNKNOWN\r\n", payload=HTTP),
    v1_ok("unknown with addresses", "R14",
          b"PROXY UNKNOWN 192.0.2.1 192.0.2.2 1 2\r\n"),
    v1_ok("unknown with trailing spaces", "R14", b"PROXY UNKNOWN    \r\n"),
    v1_ok("unknown with a lone space", "R14", b"PROXY UNKNOWN \r\n"),
    v1_ok("unknown with free text", "R14", b"PROXY UNKNOWN anything could go here\r\n"),
    bad("unknown glued to text", "R14", b"PROXY UNKNOWNX\r\n", MALFORMED),
    bad("unknown then tab", "R14", b"PROXY UNKNOWN\tx\r\n", MALFORMED),
    # The rest is ignored whatever it holds, up to the first CRLF within 107 bytes: control
    # bytes, NUL, non-ASCII, a lone CR or LF (R21 only forbids ending the line on them).
    v1_ok("unknown with a control byte", "R14", b"PROXY UNKNOWN a\x01b\r\n"),
    v1_ok("unknown with non-ASCII", "R14", b"PROXY UNKNOWN caf\xc3\xa9\r\n"),
    v1_ok("unknown with NUL, DEL and 0xff", "R14", b"PROXY UNKNOWN \x00\x7f\xff\r\n"),
    v1_ok("unknown with a lone LF", "R14 R21", b"PROXY UNKNOWN a\nb\r\n", payload=HTTP),
    v1_ok("unknown with 91 bytes of binary, 107 in all", "R14 R19",
          b"PROXY UNKNOWN " + bytes(range(14, 14 + 91)) + b"\r\n"),
    bad("unknown with binary bytes past 107", "R14 R20",
        b"PROXY UNKNOWN " + bytes(range(14, 14 + 92)) + b"\r\n", TOO_LONG),
    # R15: strict IPv4 text. HAProxy accepts most of these (disputed vectors
    # v1_tcp4_leading_zero_octet_01, v1_tcp4_octet_256, v1_tcp4_octet_0255,
    # v1_tcp4_three_octets, v1_ipv4_short_form); we follow R15 strictly (10.2.1).
    v1_ok("tcp4 all zero", "R15 R18", b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", "TCP4",
          "0.0.0.0", 0, "0.0.0.0", 0),
    v1_ok("tcp4 max 56 bytes", "R15 R18 R19",
          b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n", "TCP4",
          "255.255.255.255", 65535, "255.255.255.255", 65535),
    bad("ipv4 leading zero", "R15", b"PROXY TCP4 01.2.3.4 5.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 leading zero last part", "R15", b"PROXY TCP4 1.2.3.04 5.6.7.8 80 443\r\n",
        MALFORMED),
    bad("ipv4 part 256", "R15", b"PROXY TCP4 1.2.3.4 256.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 four digits", "R15", b"PROXY TCP4 1.2.3.4 5.0255.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 three parts", "R15", b"PROXY TCP4 1.2.3 5.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 five parts", "R15", b"PROXY TCP4 1.2.3.4.5 5.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 short form 127.1", "R15", b"PROXY TCP4 127.1 5.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 hex part", "R15", b"PROXY TCP4 0x7f.0.0.1 5.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 as one integer", "R15", b"PROXY TCP4 2130706433 5.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 trailing dot", "R15", b"PROXY TCP4 1.2.3.4. 5.6.7.8 80 443\r\n", MALFORMED),
    bad("ipv4 words", "R15", b"PROXY TCP4 abcd efgh 10 20\r\n", MALFORMED),
    # R16: IPv6 text
    v1_ok("tcp6 loopback", "R16", b"PROXY TCP6 ::1 ::1 65533 65533\r\n", "TCP6",
          "::1", 65533, "::1", 65533, payload=HTTP),
    v1_ok("tcp6 max 104 bytes", "R16 R19",
          b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
          b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n", "TCP6",
          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535,
          "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
    v1_ok("tcp6 uppercase comes out canonical", "R16",
          b"PROXY TCP6 2001:DB8::A 2001:0db8:0:0:0:0:0:000b 1 2\r\n", "TCP6",
          "2001:db8::a", 1, "2001:db8::b", 2),
    v1_ok("tcp6 v4-mapped dotted", "R16 R17",
          b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1 2\r\n", "TCP6",
          "::ffff:192.0.2.1", 1, "2001:db8::1", 2),
    v1_ok("tcp6 wildcard", "R16", b"PROXY TCP6 :: :: 0 0\r\n", "TCP6", "::", 0, "::", 0),
    bad("ipv6 five-digit group", "R16", b"PROXY TCP6 2001:db8::10000 ::1 1 2\r\n", MALFORMED),
    bad("ipv6 two double colons", "R16", b"PROXY TCP6 2001::db8::1 ::1 1 2\r\n", MALFORMED),
    bad("ipv6 nine groups", "R16", b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n", MALFORMED),
    bad("ipv6 seven groups", "R16", b"PROXY TCP6 1:2:3:4:5:6:7 ::1 1 2\r\n", MALFORMED),
    bad("ipv6 triple colon", "R16", b"PROXY TCP6 1:::2 ::1 1 2\r\n", MALFORMED),
    bad("ipv6 non-hex", "R16", b"PROXY TCP6 2001:db8::g ::1 1 2\r\n", MALFORMED),
    bad("ipv6 zone id", "R16", b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n", MALFORMED),
    bad("ipv6 in brackets", "R16", b"PROXY TCP6 [::1] ::1 1 2\r\n", MALFORMED),
    bad("ipv6 mapped with leading zero", "R15 R16", b"PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n",
        MALFORMED),
    bad("ipv6 mapped short ipv4", "R15 R16", b"PROXY TCP6 ::ffff:1.2.3 ::1 1 2\r\n", MALFORMED),
    # R17: the protocol names the family of both addresses. nginx emits plain IPv4 in TCP6
    # lines (disputed vectors v1_tcp6_with_plain_ipv4, v1_tcp6_v6_src_plain_v4_dst); we
    # refuse them (10.2.1).
    bad("tcp4 with ipv6", "R17", b"PROXY TCP4 ::1 ::1 1 2\r\n", MALFORMED),
    bad("tcp4 with v4-mapped", "R17", b"PROXY TCP4 ::ffff:1.2.3.4 1.2.3.4 1 2\r\n", MALFORMED),
    bad("tcp6 with plain ipv4", "R17", b"PROXY TCP6 192.0.2.1 192.0.2.2 1 2\r\n", MALFORMED),
    bad("tcp6 with plain ipv4 dst", "R17", b"PROXY TCP6 2001:db8::1 192.0.2.1 1 2\r\n", MALFORMED),
    # R18: ports. HAProxy and Twisted take 99999 (disputed vector v1_port_99999); Python's
    # int() takes +80, 8_0 and Unicode digits (docs/proxy-protocol.md 11.3): all refused here.
    bad("port 65536", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 443\r\n", MALFORMED),
    bad("port 99999", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 443\r\n", MALFORMED),
    bad("port 6 digits", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 443\r\n", MALFORMED),
    bad("port leading zero", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 080 443\r\n", MALFORMED),
    bad("port 00", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 00 443\r\n", MALFORMED),
    bad("port plus sign", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 443\r\n", MALFORMED),
    bad("port minus sign", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 443\r\n", MALFORMED),
    bad("port underscore", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 8_0 443\r\n", MALFORMED),
    bad("port arabic-indic digits", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 \xd9\xa8\xd9\xa0 443\r\n",
        MALFORMED),
    bad("port hex", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 443\r\n", MALFORMED),
    bad("port exponent", "R18", b"PROXY TCP4 1.2.3.4 5.6.7.8 1e3 443\r\n", MALFORMED),
    bad("destination port missing", "R12", b"PROXY TCP4 1.2.3.4 5.6.7.8 80\r\n", MALFORMED),
    # HAProxy ignores tokens after the 4th field in TCP6 lines (disputed vector
    # v1_tcp6_extra_token); the grammar has exactly four.
    bad("extra field", "R12", b"PROXY TCP6 ::1 ::1 1 2 3\r\n", MALFORMED),
    # R19, R20: the CRLF must end within 107 bytes. Twisted and icgood accept longer lines
    # that hold a CRLF (disputed vector v1_too_long_108_with_crlf); we do not.
    v1_ok("unknown worst case 107 bytes", "R14 R19",
          b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
          b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"),
    bad("unknown 108 bytes with CRLF", "R19 R20",
        b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
        b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535 \r\n", TOO_LONG),
    bad("107 bytes without CRLF", "R20", b"PROXY UNKNOWN " + b"x" * 93, TOO_LONG),
    bad("107 bytes ending in CR", "R20", b"PROXY UNKNOWN " + b"x" * 92 + b"\r", TOO_LONG),
    # A v4-mapped TCP6 line may be well-formed and still too long.
    bad("tcp6 long mapped forms over 107", "R16 R19",
        b"PROXY TCP6 0000:0000:0000:0000:0000:ffff:255.255.255.255 "
        b"0000:0000:0000:0000:0000:ffff:255.255.255.255 65535 65535\r\n", TOO_LONG),
    more("no CRLF yet", "R20", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443"),
    more("CR without its LF yet", "R20 R21", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r"),
    more("unknown without CRLF yet", "R14 R20", b"PROXY UNKNOWN 106 bytes are allowed"),
    # R21: a lone CR or LF ends nothing
    bad("lone LF", "R21", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n", MALFORMED),
    bad("LF CR", "R21", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\n\r", MALFORMED),
    bad("CR CR LF", "R21", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r\r\n", MALFORMED),
    bad("CR then tab", "R21", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\r\t", MALFORMED),
    bad("lone CR then a later CRLF", "R21",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443\rGET / HTTP/1.0\r\n", MALFORMED),
    v1_ok("unknown with lone CR", "R14 R21", b"PROXY UNKNOWN a\rb\r\n"),
    # R22: reject as soon as no continuation can be valid; wait while one can
    bad("GET", "R22 R37", b"GET ", NOT_PROXY),
    bad("PRAX", "R22 R37", b"PRAX", NOT_PROXY),
    bad("one wrong byte", "R22 R37", b"X", NOT_PROXY),
    bad("PROXY then junk", "R22", b"PROXYj", MALFORMED),
    bad("bad protocol prefix", "R22", b"PROXY TCP7", MALFORMED),
    bad("bad protocol prefix UNKNOWX", "R22", b"PROXY UNKNOWX", MALFORMED),
    bad("address cannot continue", "R22", b"PROXY TCP4 1.2.3.4x", MALFORMED),
    bad("address part 256 so far", "R22", b"PROXY TCP4 256", MALFORMED),
    bad("address leading zero so far", "R22", b"PROXY TCP4 1.02", MALFORMED),
    bad("address five parts so far", "R22", b"PROXY TCP4 1.2.3.4.", MALFORMED),
    bad("tcp6 plain ipv4 so far", "R17 R22", b"PROXY TCP6 192.0.", MALFORMED),
    bad("tcp6 nine groups so far", "R22", b"PROXY TCP6 1:2:3:4:5:6:7:8:", MALFORMED),
    bad("tcp6 second double colon so far", "R22", b"PROXY TCP6 1::2::", MALFORMED),
    bad("tcp6 zone so far", "R22", b"PROXY TCP6 fe80::1%", MALFORMED),
    bad("port too big so far", "R22", b"PROXY TCP4 1.2.3.4 5.6.7.8 65536", MALFORMED),
    more("port 0 so far", "R22", b"PROXY TCP4 1.2.3.4 5.6.7.8 0"),
    bad("port 01 so far", "R22", b"PROXY TCP4 1.2.3.4 5.6.7.8 01", MALFORMED),
    bad("extra field so far", "R22", b"PROXY TCP4 1.2.3.4 5.6.7.8 80 443 ", MALFORMED),
    bad("CR too early", "R21 R22", b"PROXY TCP4 1.2.3.4\r", MALFORMED),
    more("unknown control byte so far", "R14 R22", b"PROXY UNKNOWN \x00"),
    more("nothing yet", "R5", b""),
    more("P", "R5 R37", b"P"),
    more("PROXY", "R5 R37", b"PROXY"),
    more("PROXY space", "R5", b"PROXY "),
    more("protocol prefix", "R5", b"PROXY TC"),
    more("unknown prefix", "R5", b"PROXY UNKN"),
    more("tcp4 src so far", "R5", b"PROXY TCP4 192.0."),
    more("tcp6 groups so far", "R5", b"PROXY TCP6 1:2:3:4:5:6:7"),
    more("tcp6 mapped so far", "R5", b"PROXY TCP6 ::ffff:1.2."),
    more("tcp6 single colon so far", "R5", b"PROXY TCP6 :"),
    more("dport so far", "R5", b"PROXY TCP6 ::1 ::2 1 6553"),
    # R37: the v1 signature must be at offset 0
    bad("request before the header", "R1 R8 R37",
        b"GET / HTTP/1.1\r\nPROXY TCP4 1.2.3.4 5.6.7.8 80 443\r\n", NOT_PROXY),
]


# ### Version 2 (docs/proxy-protocol.md sections 3-5, 9 and 10.2)

def tcp4_with(*tlvs):
    """A PROXY TCP4 header carrying the given TLV bytes."""
    return v2(0x21, 0x11, TCP4_BLOCK + b"".join(tlvs))


AWS_NLB = bytes.fromhex(
    "0d0a0d0a000d0a515549540a21110054ac1f0771ac1f0a1fc8f20050030004e8d6892dea001701767063"
    "652d3038643262663135666163353030316339040024000000000000000000000000000000000000000000"
    "000000000000000000000000000000")
SSL_VALUE = ssl_value(0x07, 0, tlv(0x21, b"TLSv1.3"), tlv(0x22, b"client.example"),
                      tlv(0x23, b"TLS_AES_256_GCM_SHA384"), tlv(0x24, b"RSA-SHA256"),
                      tlv(0x25, b"RSA2048"), tlv(0x26, b"secp256r1"),
                      tlv(0x27, b"rsa_pss_rsae_sha256"), tlv(0x28, b"\x30\x82\x01\x0a"),
                      tlv(0x99, b"future"))
CRC_AT_FIRST_TLV = 16 + 12 + 3            # value offset of a CRC32C right after a TCP4 block
CRC_FIRST = with_crc(tcp4_with(tlv(0x03, bytes(4)), tlv(0x01, b"h2")), CRC_AT_FIRST_TLV)
CRC_LAST = with_crc(tcp4_with(tlv(0x01, b"h2"), tlv(0x03, bytes(4))), CRC_AT_FIRST_TLV + 5)
CRC_LOCAL = with_crc(v2(0x20, 0x00, tlv(0x03, bytes(4))), 19)


def crc_at(header, value_offset):
    return header[value_offset:value_offset + 4]


V2_CASES = [
    # R26, R37: the signature, at offset 0, never guessed
    bad("zero signature", "R26 R37", bytes(12) + b"\x21\x11\x00\x0c" + TCP4_BLOCK, NOT_PROXY),
    bad("last signature byte wrong", "R26", SIGNATURE[:11] + b"\r", NOT_PROXY),
    bad("signature after TLS bytes", "R1 R8", b"\x16\x03\x01" + tcp4_with(), NOT_PROXY),
    bad("CRLF then not the signature", "R26", b"\r\nGET", NOT_PROXY),
    more("first signature byte", "R5", SIGNATURE[:1]),
    more("half the signature", "R5", SIGNATURE[:6]),
    more("whole signature only", "R5", SIGNATURE),
    # R27: version and command, decided from byte 13 alone. HAProxy says "not a header"
    # for other versions; we say UNSUPPORTED (see the module docstring).
    bad("version 1", "R27", SIGNATURE + b"\x11", UNSUPPORTED),
    bad("version 3", "R27", v2(0x31, 0x11, TCP4_BLOCK), UNSUPPORTED),
    bad("version 0", "R27", v2(0x01, 0x11, TCP4_BLOCK), UNSUPPORTED),
    bad("version 15", "R27", SIGNATURE + b"\xf1", UNSUPPORTED),
    bad("command 2", "R27", SIGNATURE + b"\x22", UNSUPPORTED),
    bad("command 15", "R27", v2(0x2F, 0x11, TCP4_BLOCK), UNSUPPORTED),
    more("command byte only", "R5", SIGNATURE + b"\x21"),
    # R28: undefined family or transport under PROXY, decided from byte 14 alone
    bad("family 4", "R28", SIGNATURE + b"\x21\x41", MALFORMED),
    bad("family 15", "R28", v2(0x21, 0xF1, TCP4_BLOCK), MALFORMED),
    bad("transport 3 before its block", "R28", SIGNATURE + b"\x21\x13\x00\x0c", MALFORMED),
    bad("transport 15", "R28", v2(0x21, 0x1F, TCP4_BLOCK), MALFORMED),
    more("family byte only", "R5", SIGNATURE + b"\x21\x11"),
    more("length half there", "R5", SIGNATURE + b"\x21\x11\x00"),
    # R29, R31: every defined family and transport, addresses in network order.
    # HAProxy decodes only 0x11 and 0x21 (disputed vector v2_unix_crc32c_icgood); we
    # decode all six (R35, 10.2.2).
    v2_ok("tcp4", "R29 R31 R33", tcp4_with(), "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES,
          payload=HTTP),
    v2_ok("udp4", "R29 R31 R35", v2(0x21, 0x12, inet4("10.0.0.1", "10.0.0.2", 53, 5353)),
          "PROXY", "UDP4", "DGRAM", ("10.0.0.1", 53, "10.0.0.2", 5353)),
    v2_ok("tcp6", "R29 R31", v2(0x21, 0x21, inet6("2001:db8::1", "::1", 1, 65535)),
          "PROXY", "TCP6", "STREAM", ("2001:db8::1", 1, "::1", 65535)),
    v2_ok("udp6", "R29 R31", v2(0x21, 0x22, inet6("::ffff:192.0.2.1", "fe80::1", 0, 2)),
          "PROXY", "UDP6", "DGRAM", ("::ffff:192.0.2.1", 0, "fe80::1", 2)),
    v2_ok("unix stream", "R29 R31 R35", v2(0x21, 0x31, unix_block(b"/run/a.sock", b"/run/b"))
          , "PROXY", "UNIX", "STREAM", ("/run/a.sock", None, "/run/b", None)),
    v2_ok("unix datagram", "R29 R31", v2(0x21, 0x32, unix_block(b"", b"\0abstract")),
          "PROXY", "UNIX", "DGRAM", ("", None, "", None)),
    v2_ok("unix path of 108 bytes without NUL", "R31",
          v2(0x21, 0x31, unix_block(b"/" + b"p" * 107, b"x")), "PROXY", "UNIX", "STREAM",
          ("/" + "p" * 107, None, "x", None)),
    v2_ok("unix path not UTF-8", "R31", v2(0x21, 0x31, unix_block(b"/tmp/\xff", b"/q"))
          , "PROXY", "UNIX", "STREAM", ("/tmp/\udcff", None, "/q", None)),
    # R30: the length is big-endian, and exactly 16 + length bytes are the header
    v2_ok("length over 255", "R30", tcp4_with(tlv(0x04, bytes(300))), "PROXY", "TCP4",
          "STREAM", TCP4_ADDRESSES, ((0x04, bytes(300)),)),
    v2_ok("second header is payload", "R1 R30", tcp4_with(), "PROXY", "TCP4", "STREAM",
          TCP4_ADDRESSES, payload=tcp4_with()),
    more("address block half there", "R36", tcp4_with()[:22]),
    more("TLVs not all there", "R36", tcp4_with(tlv(0x02, b"example.com"))[:-1]),
    # R32, R55: LOCAL skips `length` bytes and never uses what it carries. HAProxy reads
    # TLVs from byte 16 and so rejects LOCAL with an address block (disputed vectors
    # v2_local_with_tcp6_block_twisted, v2_local_tcp4_block_go); we read them after the
    # family's block (10.2.3).
    v2_ok("local unspec", "R32 R59", v2(0x20, 0x00), "LOCAL", "UNKNOWN", "UNSPEC",
          payload=HTTP),
    v2_ok("local with a tcp4 block", "R32 R55", v2(0x20, 0x11, TCP4_BLOCK), "LOCAL", "TCP4",
          "STREAM"),
    v2_ok("local with a tcp6 block and TLVs", "R32 R55",
          v2(0x20, 0x21, inet6("::1", "::2", 1, 2) + tlv(0x02, b"h")), "LOCAL", "TCP6",
          "STREAM", tlvs=((0x02, b"h"),)),
    v2_ok("local with a unix block", "R32", v2(0x20, 0x31, unix_block(b"/a", b"/b")),
          "LOCAL", "UNIX", "STREAM"),
    v2_ok("local unspec with TLVs", "R32", v2(0x20, 0x00, tlv(0x05, b"id") + tlv(0xE1, b"")),
          "LOCAL", "UNKNOWN", "UNSPEC", tlvs=((0x05, b"id"), (0xE1, b""))),
    # Undefined family/transport under LOCAL: the family is ignored (disputed vectors
    # v2_local_bad_transport_0x17, v2_local_bad_family_0x41_len0: go-proxyproto and ppp
    # reject). Undefined family: no block size, so TLVs are not interpreted.
    v2_ok("local family 4", "R32 10.2.3", v2(0x20, 0x41), "LOCAL", "UNKNOWN", "STREAM",
          tlvs=None),
    v2_ok("local family 15 with bytes", "R32 10.2.3", v2(0x20, 0xF1, b"\x01\x02\x03"),
          "LOCAL", "UNKNOWN", "STREAM", tlvs=None),
    v2_ok("local transport 7", "R32 10.2.3", v2(0x20, 0x17, TCP4_BLOCK), "LOCAL", "UNKNOWN",
          "0x7"),
    v2_ok("local transport 15", "R32 10.2.3", v2(0x20, 0x0F), "LOCAL", "UNKNOWN", "0xf"),
    v2_ok("local dgram unspec", "R32", v2(0x20, 0x02), "LOCAL", "UNKNOWN", "DGRAM"),
    v2_ok("local block shorter than its family", "10.2.3", v2(0x20, 0x21, TCP4_BLOCK),
          "LOCAL", "TCP6", "STREAM", tlvs=None),
    v2_ok("local TLVs that do not frame", "10.2.3",
          v2(0x20, 0x00, TCP4_BLOCK), "LOCAL", "UNKNOWN", "UNSPEC", tlvs=None),
    v2_ok("local SSL TLV too short", "10.2.3", v2(0x20, 0x00, tlv(0x20, b"\x01")),
          "LOCAL", "UNKNOWN", "UNSPEC", tlvs=None),
    # Framed TLVs of a LOCAL header are enforced (10.2.3)
    bad("local with a bad checksum", "R52 10.2.3", v2(0x20, 0x00, tlv(0x03, b"\0\0\0\1")),
        BAD_CHECKSUM),
    v2_ok("local with a good checksum", "R52 10.2.3", CRC_LOCAL, "LOCAL", "UNKNOWN", "UNSPEC",
          tlvs=((0x03, crc_at(CRC_LOCAL, 19)),)),
    bad("local UNIQUE_ID too long", "R46 10.2.3", v2(0x20, 0x00, tlv(0x05, bytes(129))),
        MALFORMED),
    bad("local CRC32C of 3 bytes", "R53 10.2.3", v2(0x20, 0x00, tlv(0x03, bytes(3))),
        MALFORMED),
    # R34, R35: PROXY with an UNSPEC nibble carries no usable address. HAProxy and
    # go-proxyproto reject it (disputed vectors v2_proxy_unspec_len0,
    # v2_proxy_unspec_with_ipv4_block, v2_proxy_unspec_many_tlvs_icgood); the spec allows
    # either and we accept (10.2.3).
    v2_ok("proxy unspec", "R34", v2(0x21, 0x00), "PROXY", "UNKNOWN", "UNSPEC"),
    v2_ok("proxy unspec stream", "R34", v2(0x21, 0x01), "PROXY", "UNKNOWN", "STREAM"),
    v2_ok("proxy unspec dgram", "R34", v2(0x21, 0x02), "PROXY", "UNKNOWN", "DGRAM"),
    v2_ok("proxy inet unspec transport", "R34", v2(0x21, 0x10, TCP4_BLOCK + tlv(0x01, b"h2")),
          "PROXY", "UNKNOWN", "UNSPEC", tlvs=((0x01, b"h2"),)),
    v2_ok("proxy inet6 unspec transport", "R34", v2(0x21, 0x20), "PROXY", "UNKNOWN", "UNSPEC",
          tlvs=None),
    v2_ok("proxy unix unspec transport", "R34", v2(0x21, 0x30, unix_block(b"/a", b"/b")),
          "PROXY", "UNKNOWN", "UNSPEC"),
    v2_ok("proxy unspec with an ipv4 block", "R34 10.2.3", v2(0x21, 0x00, TCP4_BLOCK),
          "PROXY", "UNKNOWN", "UNSPEC", tlvs=None),
    # R36: the length must cover the address block, decided once the 16 bytes are in
    bad("tcp4 length 11", "R36 10.2.2", SIGNATURE + b"\x21\x11\x00\x0b", MALFORMED),
    bad("tcp6 length 12", "R36 10.2.2", v2(0x21, 0x21, TCP4_BLOCK), MALFORMED),
    bad("unix length 215", "R36", SIGNATURE + b"\x21\x31\x00\xd7", MALFORMED),
    bad("udp4 length 0", "R36", v2(0x21, 0x12), MALFORMED),
    # R38-R40: TLVs tile the rest of the header exactly; unknown types and duplicates kept
    v2_ok("zero-length TLVs", "R39", tcp4_with(tlv(0x00, b""), tlv(0x04, b"")),
          "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES, ((0x00, b""), (0x04, b""))),
    v2_ok("unknown and reserved types kept in order", "R40 R50",
          tcp4_with(tlv(0xF0, b"exp"), tlv(0xE1, b"\x01a"), tlv(0xE1, b"\x02b"),
                    tlv(0xFF, b"fut"), tlv(0x31, b"?")),
          "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES,
          ((0xF0, b"exp"), (0xE1, b"\x01a"), (0xE1, b"\x02b"), (0xFF, b"fut"), (0x31, b"?"))),
    v2_ok("a TLV of 16000 bytes", "R39 10.2.2", tcp4_with(tlv(0xE2, b"B" * 16000)),
          "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES, ((0xE2, b"B" * 16000),)),
    # The TLV area ends at the declared length, not at the end of what was read.
    bad("TLV overruns the header", "R38 10.2.2",
        tcp4_with(b"\x02\x00\x0a12345") + b"6789012345", MALFORMED),
    bad("one stray byte", "10.2.2", tcp4_with(tlv(0x02, b"1234"), b"\x00"), MALFORMED),
    bad("two stray bytes", "10.2.2", tcp4_with(b"\xe2\x00"), MALFORMED),
    bad("TLV length but no value", "10.2.2", tcp4_with(b"\xe3\x00\x01"), MALFORMED),
    # R41-R49: the registered types
    v2_ok("ALPN AUTHORITY NOOP NETNS", "R41 R42 R43 R45 R49",
          tcp4_with(tlv(0x01, b"h2"), tlv(0x02, b"example.com"), tlv(0x04, bytes(5)),
                    tlv(0x30, b"blue")),
          "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES,
          ((0x01, b"h2"), (0x02, b"example.com"), (0x04, bytes(5)), (0x30, b"blue"))),
    v2_ok("UNIQUE_ID of 128 bytes", "R46", tcp4_with(tlv(0x05, b"u" * 128)), "PROXY", "TCP4",
          "STREAM", TCP4_ADDRESSES, ((0x05, b"u" * 128),)),
    bad("UNIQUE_ID of 129 bytes", "R46 10.2.2", tcp4_with(tlv(0x05, b"u" * 129)), MALFORMED),
    # HAProxy caps AUTHORITY at 255 bytes (11.1 item 8); the spec sets no limit (10.2.2).
    v2_ok("AUTHORITY of 1000 bytes", "R43 10.2.2", tcp4_with(tlv(0x02, b"a" * 1000)),
          "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES, ((0x02, b"a" * 1000),)),
    v2_ok("SSL with every sub-type", "R47 R48", tcp4_with(tlv(0x20, SSL_VALUE)), "PROXY",
          "TCP4", "STREAM", TCP4_ADDRESSES, ((0x20, SSL_VALUE),)),
    v2_ok("SSL without sub-TLVs", "R47", tcp4_with(tlv(0x20, ssl_value(0, 1))), "PROXY",
          "TCP4", "STREAM", TCP4_ADDRESSES, ((0x20, ssl_value(0, 1)),)),
    # Sub-TLVs are not searched for further SSL TLVs (no recursion on nested data).
    v2_ok("SSL inside SSL kept raw", "R47",
          tcp4_with(tlv(0x20, ssl_value(1, 0, tlv(0x20, b"\x01")))), "PROXY", "TCP4",
          "STREAM", TCP4_ADDRESSES, ((0x20, ssl_value(1, 0, tlv(0x20, b"\x01"))),)),
    bad("SSL shorter than 5 bytes", "R47", tcp4_with(tlv(0x20, b"\x01\x00\x00\x00")),
        MALFORMED),
    bad("SSL sub-TLV overruns", "R47", tcp4_with(tlv(0x20, ssl_value(1, 0) + b"\x21\x00\x09ab")),
        MALFORMED),
    bad("SSL stray byte", "R47", tcp4_with(tlv(0x20, ssl_value(1, 0) + b"\x21")), MALFORMED),
    # R51-R53: CRC32C, big-endian, over the header as received with its value zeroed
    v2_ok("CRC32C first", "R44 R51 R52", CRC_FIRST, "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES,
          ((0x03, crc_at(CRC_FIRST, CRC_AT_FIRST_TLV)), (0x01, b"h2"))),
    v2_ok("CRC32C last, payload not covered", "R52 R53", CRC_LAST, "PROXY", "TCP4", "STREAM",
          TCP4_ADDRESSES, ((0x01, b"h2"), (0x03, crc_at(CRC_LAST, CRC_AT_FIRST_TLV + 5))),
          payload=b"anything"),
    v2_ok("AWS NLB capture (CRC32C, 0xEA, NOOP)", "R52 9", AWS_NLB, "PROXY", "TCP4", "STREAM",
          ("172.31.7.113", 51442, "172.31.10.31", 80),
          ((0x03, bytes.fromhex("e8d6892d")), (0xEA, b"\x01vpce-08d2bf15fac5001c9"),
           (0x04, bytes(36)))),
    bad("AWS NLB capture with one address bit flipped", "R52",
        AWS_NLB[:16] + b"\xad" + AWS_NLB[17:], BAD_CHECKSUM),
    bad("CRC32C zero", "R52", tcp4_with(tlv(0x03, bytes(4))), BAD_CHECKSUM),
    bad("CRC32C little-endian", "R53",
        tcp4_with(tlv(0x03, crc_at(with_crc(tcp4_with(tlv(0x03, bytes(4))), CRC_AT_FIRST_TLV),
                                   CRC_AT_FIRST_TLV)[::-1])),
        BAD_CHECKSUM),
    bad("CRC32C of 5 bytes", "R53 10.2.2", tcp4_with(tlv(0x03, bytes(5))), MALFORMED),
    bad("CRC32C of 0 bytes", "R53", tcp4_with(tlv(0x03, b"")), MALFORMED),
    bad("two CRC32C TLVs", "R52", with_crc(tcp4_with(tlv(0x03, bytes(4)), tlv(0x03, bytes(4))),
                                           CRC_AT_FIRST_TLV), MALFORMED),
    # 9: the cloud TLVs parse as any other (decoded only in header_as_dict)
    v2_ok("Azure and GCP", "9", tcp4_with(tlv(0xEE, b"\x01\xc1\x45\x00\x21"),
                                          tlv(0xE0, bytes.fromhex("0102030405060708"))),
          "PROXY", "TCP4", "STREAM", TCP4_ADDRESSES,
          ((0xEE, b"\x01\xc1\x45\x00\x21"), (0xE0, bytes.fromhex("0102030405060708")))),
]

CASES = V1_CASES + V2_CASES

# max_size (TOO_LONG as soon as the 16 fixed bytes say so): (wire, max_size, expect kind or
# header_len).
MAX_SIZE_CASES = [
    ("default fits 16384", tcp4_with(tlv(0xE2, bytes(16384 - 16 - 12 - 3))), None, 16384),
    ("default refuses 16385", SIGNATURE + b"\x21\x11" + struct.pack("!H", 16385 - 16), None,
     TOO_LONG),
    ("local too", SIGNATURE + b"\x20\x00\xff\xff", None, TOO_LONG),
    ("small limit fits", tcp4_with(), 28, 28),
    ("small limit refuses", tcp4_with(tlv(0x04, b"")), 30, TOO_LONG),
    ("largest length", tcp4_with(tlv(0xE2, bytes(65535 - 12 - 3))), 65551, 65551),
    # v1 is capped at 107 whatever max_size says
    ("v1 ignores max_size", TCP4_LINE, 20, len(TCP4_LINE)),
]


# ### Seeded random headers and mutations (the fuzzers and the proxy under fuzz share them)

FAMILY_NAMES = {0x11: "TCP4", 0x12: "UDP4", 0x21: "TCP6", 0x22: "UDP6", 0x31: "UNIX",
                0x32: "UNIX"}
TRANSPORT_NAMES = ("UNSPEC", "STREAM", "DGRAM")
BLOCK_SIZES = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}
UNSPEC_BYTES = (0x00, 0x01, 0x02, 0x10, 0x20, 0x30)
PRINTABLE = bytes(range(0x20, 0x7F))


# ### Random addresses, in every spelling a sender may use

def random_port(rng):
    return rng.choice((0, 1, 65535, rng.randrange(65536)))


def random_ipv4(rng):
    return socket.inet_ntop(socket.AF_INET, rng.getrandbits(32).to_bytes(4, "big"))


def random_ipv6_packed(rng):
    groups = [rng.choice((0, 0, 1, 0xFFFF, rng.getrandbits(16))) for _ in range(8)]
    shape = rng.randrange(4)
    if shape == 0:
        groups[:6] = [0, 0, 0, 0, 0, 0xFFFF]           # IPv4-mapped
    elif shape == 1:
        start = rng.randrange(8)
        groups[start:rng.randint(start, 8)] = [0] * 8   # a run of zeros
        groups = groups[:8]
    return struct.pack("!8H", *groups)


def spell_ipv6(rng, packed):
    """Any valid IPv6 text for packed: any case, leading zeros, any zero run compressed or
    none, the last 32 bits dotted or not."""
    groups = list(struct.unpack("!8H", packed))
    dotted = rng.random() < 0.25
    hex_groups = groups[:6] if dotted else groups
    text = ["%x", "%X", "%04x"]
    parts = [rng.choice(text) % group for group in hex_groups]
    zero_runs = [(start, end) for start in range(len(parts))
                 for end in range(start + 1, len(parts) + 1)
                 if all(group == 0 for group in hex_groups[start:end])]
    tail = ["%d.%d.%d.%d" % tuple(packed[12:])] if dotted else []
    if zero_runs and rng.random() < 0.7:
        start, end = rng.choice(zero_runs)
        head, rest = parts[:start], parts[end:] + tail
        return ":".join(head) + "::" + ":".join(rest)
    return ":".join(parts + tail)


def random_ipv6(rng):
    packed = random_ipv6_packed(rng)
    return spell_ipv6(rng, packed), socket.inet_ntop(socket.AF_INET6, packed)


# ### Random TLVs

def random_bytes_of(rng, size):
    return bytes(rng.getrandbits(8) for _ in range(size))


def random_bytes(rng, most):
    return random_bytes_of(rng, rng.choice((0, 1, rng.randint(0, most))))


def random_ssl(rng):
    sub_tlvs = [tlv(rng.choice((0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x20, 0x99)),
                    random_bytes(rng, 40)) for _ in range(rng.randint(0, 5))]
    return ssl_value(rng.randrange(8), rng.choice((0, rng.getrandbits(32))), *sub_tlvs)


TLV_MAKERS = (
    lambda rng: (0x01, rng.choice((b"h2", b"http/1.1", random_bytes(rng, 20)))),
    lambda rng: (0x02, rng.choice((b"example.com", random_bytes(rng, 300)))),
    lambda rng: (0x04, random_bytes(rng, 40)),
    lambda rng: (0x05, random_bytes(rng, 128)),
    lambda rng: (0x20, random_ssl(rng)),
    lambda rng: (0x30, b"netns-%d" % rng.randrange(10)),
    lambda rng: (0xEA, b"\x01vpce-%017x" % rng.getrandbits(68)),
    lambda rng: (0xEE, b"\x01" + random_bytes(rng, 4).ljust(4, b"\0")[:4]),
    lambda rng: (0xE0, rng.getrandbits(64).to_bytes(8, "big")),
    lambda rng: (rng.choice((0x00, 0x06, 0x21, 0x31, 0xE1, 0xF0, 0xFF)), random_bytes(rng, 60)),
)


def random_tlvs(rng):
    return [rng.choice(TLV_MAKERS)(rng) for _ in range(rng.choice((0, 0, 1, 3, 6)))]


def encode_v2(ver_cmd, family_transport, block, tlvs, crc_index):
    """Wire bytes and the expected tlvs, with a correct CRC32C inserted at crc_index."""
    if crc_index is not None:
        tlvs = tlvs[:crc_index] + [(0x03, bytes(4))] + tlvs[crc_index:]
    wire = v2(ver_cmd, family_transport, block + b"".join(tlv(t, value) for t, value in tlvs))
    if crc_index is None:
        return wire, tuple(tlvs)
    value_offset = 16 + len(block) + sum(3 + len(v) for _, v in tlvs[:crc_index]) + 3
    wire = with_crc(wire, value_offset)
    tlvs[crc_index] = (0x03, wire[value_offset:value_offset + 4])
    return wire, tuple(tlvs)


# ### Random headers of every kind, with the header the parser must return

def random_v1(rng):
    kind = rng.choice(("TCP4", "TCP6", "UNKNOWN", "UNKNOWN long"))
    if kind.startswith("UNKNOWN"):
        rest = b""
        if kind == "UNKNOWN long":
            # R14: any bytes at all, except the CRLF that ends the line
            rest = b" " + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 91)))
            rest = rest.replace(b"\r\n", b"\r ")
        line = b"PROXY UNKNOWN" + rest + b"\r\n"
        return line, ProxyHeader(1, "PROXY", "UNKNOWN", None, *NO_ADDRESSES, len(line), ())
    sport, dport = random_port(rng), random_port(rng)
    if kind == "TCP4":
        (src, src_text), (dst, dst_text) = [(text, text) for text in (random_ipv4(rng),
                                                                       random_ipv4(rng))]
    else:
        (src_text, src), (dst_text, dst) = random_ipv6(rng), random_ipv6(rng)
    line = ("PROXY %s %s %s %d %d\r\n" % (kind, src_text, dst_text, sport, dport)).encode()
    if len(line) > 107:              # long spellings: send the short ones
        line = ("PROXY %s %s %s %d %d\r\n" % (kind, src, dst, sport, dport)).encode()
    return line, ProxyHeader(1, "PROXY", kind, None, src, sport, dst, dport, len(line), ())


def random_unix_path(rng):
    return bytes(rng.choice(PRINTABLE + b"\x80\xff") for _ in range(rng.randint(0, 108)))


def random_addresses(rng, family_transport):
    """The address block for a PROXY header of that family, and what the parser reports."""
    family = family_transport >> 4
    if family == 0x3:
        src, dst = random_unix_path(rng), random_unix_path(rng)
        expected = [path.partition(b"\0")[0].decode("utf-8", "surrogateescape")
                    for path in (src, dst)]
        return unix_block(src, dst), (expected[0], None, expected[1], None)
    sport, dport = random_port(rng), random_port(rng)
    if family == 0x1:
        src, dst = random_ipv4(rng), random_ipv4(rng)
        return inet4(src, dst, sport, dport), (src, sport, dst, dport)
    src, dst = random_ipv6(rng)[1], random_ipv6(rng)[1]
    return inet6(src, dst, sport, dport), (src, sport, dst, dport)


def random_v2(rng):
    tlvs = random_tlvs(rng)
    crc_index = rng.randint(0, len(tlvs)) if rng.random() < 0.3 else None
    kind = rng.choice(("PROXY", "PROXY", "LOCAL", "UNSPEC"))
    addresses = NO_ADDRESSES
    if kind == "PROXY":
        ver_cmd, family_transport = 0x21, rng.choice(sorted(FAMILY_NAMES))
        block, addresses = random_addresses(rng, family_transport)
    elif kind == "LOCAL":
        ver_cmd = 0x20
        family_transport = (rng.getrandbits(8) if rng.random() < 0.3
                            else rng.randrange(4) << 4 | rng.randrange(16))
    else:
        ver_cmd, family_transport = 0x21, rng.choice(UNSPEC_BYTES)
    block_size = BLOCK_SIZES.get(family_transport >> 4)
    if kind == "PROXY":
        wire, tlvs = encode_v2(ver_cmd, family_transport, block, tlvs, crc_index)
    elif block_size is None:
        # No block size for the family: the receiver cannot tell where TLVs would start.
        wire, tlvs = v2(ver_cmd, family_transport, random_bytes(rng, 30)), None
    elif block_size and rng.random() < 0.05:
        # A body that ends inside the family's block: no TLVs to read either.
        wire = v2(ver_cmd, family_transport, random_bytes_of(rng, rng.randrange(block_size)))
        tlvs = None
    else:
        wire, tlvs = encode_v2(ver_cmd, family_transport, random_bytes_of(rng, block_size),
                               tlvs, crc_index)
    transport = family_transport & 0xF
    return wire, ProxyHeader(
        2, "PROXY" if ver_cmd == 0x21 else "LOCAL", FAMILY_NAMES.get(family_transport, "UNKNOWN"),
        TRANSPORT_NAMES[transport] if transport < 3 else hex(transport), *addresses,
        header_len=len(wire), tlvs=tlvs)


def random_header(rng):
    return random_v1(rng) if rng.random() < 0.35 else random_v2(rng)


# ### The mutation fuzzer

INTERESTING = b" \r\n\x00\xff:.09PX\x20\x21\x11\x03"


def mutate(rng, data, seeds):
    data = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        pos = rng.randrange(len(data) + 1)
        where = pos % len(data) if data else 0
        op = rng.randrange(8)
        if op == 0 and data:
            data[where] ^= 1 << rng.randrange(8)
        elif op == 1 and data:
            data[where] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.getrandbits(8)
        elif op == 2:
            data[pos:pos] = bytes((rng.choice(INTERESTING),)) * rng.randint(1, 3)
        elif op == 3:
            del data[pos:pos + rng.randint(1, 4)]
        elif op == 4:
            del data[pos:]
        elif op == 5:
            start = rng.randrange(len(data) + 1)
            data[pos:pos] = data[start:start + rng.randint(1, 16)]
        elif op == 6:
            other = rng.choice(seeds)
            data[pos:] = other[rng.randrange(len(other) + 1):]
        elif len(data) >= 16:
            # the v2 length field: near its value, or anything
            length = (data[14] << 8 | data[15]) + rng.randint(-4, 4)
            length = length if rng.random() < 0.8 else rng.getrandbits(16)
            data[14:16] = struct.pack("!H", length % 65536)
    return bytes(data)
