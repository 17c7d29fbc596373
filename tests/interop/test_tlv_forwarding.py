"""The v2 headers a running simpleproxy sends with forwarded TLVs, read by parsers that are
not ours.

* HAProxy 2.6 behind simpleproxy (an accept-proxy bind) checks the CRC32C over the bytes it
  received and logs the AUTHORITY and UNIQUE_ID it read (``fc_pp_authority``,
  ``fc_pp_unique_id``): the values the client's own header carried, forwarded by
  ``proxy-v2-options crc32c,authority,unique-id``. One flipped byte in a forwarded TLV makes
  it refuse the header (the control test builds that header directly), so the check is real.
* The ``proxy-protocol`` package (PyPI) reads the real AWS NLB capture's VPC endpoint TLV back
  from the header simpleproxy sent with ``set-proxy-v2-tlv-fmt(0xEA) %[fc_pp_tlv(0xEA)]``,
  and verifies the new CRC32C with the ``crc32c`` package.
"""
import pytest

from peers import PAYLOAD, REPLY, complete_lines, free_port
from proxyproto_cases import AWS_NLB
from simpleproxy.proxyproto import build_v2, parse_header
from simpleproxy.tlvfmt import build_server_header, compile_tlv_fmt, compile_tlv_plan
from support import (RESET, RecordingServer, exchange, exchange_or_reset, skip_or_fail,
                     wait_until)

FORWARDING_SERVER = ("send-proxy-v2 proxy-v2-options crc32c,authority,unique-id "
                     "set-proxy-v2-tlv-fmt(0xE1) %[fc_pp_tlv(0xE1)]")


def forwarding_proxy(lab, server_address, server_options):
    """simpleproxy taking PROXY headers on a free port, in front of one server; its address."""
    port = free_port()
    lab.simpleproxy("[frontend fe]\nbind = 127.0.0.1:%d accept-proxy-from 127.0.0.0/8\n"
                    "default_backend = be\n[backend be]\nserver s1 = %s %s\n"
                    % (port, server_address, server_options))
    return "127.0.0.1", port

CLIENT = ("203.0.113.7", 5555)
FRONT = ("198.51.100.1", 443)
NLB_VPCE = b"\x01vpce-08d2bf15fac5001c9"


def server_plan(formats, options):
    return compile_tlv_plan([compile_tlv_fmt("set-proxy-v2-tlv-fmt(%s)" % tlv_id, fmt)
                             for tlv_id, fmt in formats], frozenset(options))


def never_called():
    raise AssertionError("a unique ID was made up although the client sent one")


@pytest.fixture
def haproxy_reader(lab):
    """An HAProxy accept-proxy bind that logs what it read from each header."""
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    haproxy = lab.haproxy(
        "listen reader\n    bind 127.0.0.1:%d accept-proxy\n"
        "    log-format \"client=%%ci:%%cp auth=%%[fc_pp_authority] uid=%%[fc_pp_unique_id]\"\n"
        "    server app %s\n" % (port, backend.config_address), [port])
    yield haproxy, backend, ("127.0.0.1", port)
    backend.close()


# A client's header carrying an AUTHORITY, a UNIQUE_ID, a custom TLV, a NOOP and a CRC32C.
CLIENT_HEADER = build_v2(CLIENT, FRONT, [(0x02, b"site.example.com"), (0x05, b"uid-4242"),
                                         (0xE1, b"tenant-7"), (0x04, bytes(6))], crc32c=True)


def forwarded_header():
    """What FORWARDING_SERVER's options make of CLIENT_HEADER (built here, for the control
    test, which needs a header to spoil)."""
    plan = server_plan([("0xE1", "%[fc_pp_tlv(0xE1)]")], ["crc32c", "authority", "unique-id"])
    return build_server_header(plan, CLIENT, FRONT, parse_header(CLIENT_HEADER), never_called)


def test_haproxy_behind_simpleproxy_reads_forwarded_authority_and_unique_id(lab, haproxy_reader):
    haproxy, backend, reader_address = haproxy_reader
    address = forwarding_proxy(lab, "%s:%d" % reader_address, FORWARDING_SERVER)
    assert exchange(address, CLIENT_HEADER + PAYLOAD) == REPLY
    assert bytes(backend.next_connection().received) == PAYLOAD
    lines = wait_until(lambda: complete_lines(haproxy.output_path), what="HAProxy's log line")
    assert lines == ["client=203.0.113.7:5555 auth=site.example.com uid=uid-4242"]


def test_haproxy_reads_the_unique_id_simpleproxy_makes_when_the_client_sent_none(
        lab, haproxy_reader):
    haproxy, backend, reader_address = haproxy_reader
    address = forwarding_proxy(lab, "%s:%d" % reader_address, FORWARDING_SERVER)
    assert exchange(address, build_v2(CLIENT, FRONT, crc32c=True) + PAYLOAD) == REPLY
    backend.next_connection()
    line, = wait_until(lambda: complete_lines(haproxy.output_path), what="HAProxy's log line")
    client, auth, uid = line.split()
    assert (client, auth) == ("client=203.0.113.7:5555", "auth=-")
    assert len(uid) > len("uid=") and uid != "uid=-"


def test_haproxy_refuses_the_header_when_a_forwarded_byte_changes(haproxy_reader):
    """The control for the test above: HAProxy does verify the CRC32C simpleproxy wrote."""
    haproxy, backend, address = haproxy_reader
    header = bytearray(forwarded_header())
    header[header.index(b"tenant-7")] ^= 0x01
    assert exchange_or_reset(address, bytes(header) + PAYLOAD) in (b"", RESET)
    # HAProxy logs nothing for a refused header; a good one after it goes through alone.
    assert exchange(address, forwarded_header() + PAYLOAD) == REPLY
    wait_until(lambda: complete_lines(haproxy.output_path), what="HAProxy's log line")
    assert len(backend.accepted) == 1


def test_a_third_party_parser_reads_the_vpc_endpoint_simpleproxy_forwarded(lab):
    """The proxy-protocol package checks a CRC32C over its own re-encoding of the TLVs, in
    ascending type order and one per type, so it misjudges headers whose TLVs come in
    another order (the NLB capture itself: CRC32C, 0xEA, NOOP). The forwarded header here
    is CRC32C then 0xEA, which it can judge."""
    try:
        from proxyprotocol import ProxyProtocolChecksumError
        from proxyprotocol.checksum import crc32c as third_party_crc32c
        from proxyprotocol.v2 import ProxyProtocolV2
    except ImportError:
        skip_or_fail("the proxy-protocol package (pip install proxy-protocol crc32c) is missing")
    if third_party_crc32c is None:
        skip_or_fail("the crc32c package, which proxy-protocol needs to check a CRC32C, is "
                     "missing")
    backend = RecordingServer(reply=REPLY)
    try:
        address = forwarding_proxy(lab, backend.config_address, "send-proxy-v2 proxy-v2-options "
                                   "crc32c set-proxy-v2-tlv-fmt(0xEA) %[fc_pp_tlv(0xEA)]")
        assert exchange(address, AWS_NLB + PAYLOAD) == REPLY
        received = bytes(backend.next_connection().received)
    finally:
        backend.close()
    header_length = 16 + int.from_bytes(received[14:16], "big")
    header, payload = received[:header_length], received[header_length:]
    assert payload == PAYLOAD
    result = ProxyProtocolV2().unpack(header)
    # The NLB capture's client and destination, as the NLB's header named them.
    assert (str(result.source[0]), result.source[1]) == ("172.31.7.113", 51442)
    assert (str(result.dest[0]), result.dest[1]) == ("172.31.10.31", 80)
    assert result.tlv[0xEA] == NLB_VPCE
    assert result.tlv.crc32c == int.from_bytes(header[31:35], "big")
    tampered = bytearray(header)
    tampered[tampered.index(b"vpce-") + 5] ^= 0x01
    with pytest.raises(ProxyProtocolChecksumError):
        ProxyProtocolV2().unpack(bytes(tampered))
