"""Real AWS NLB PROXY v2 headers (captures in tests/data/vectors.json) replayed at an
accept-proxy bind: CRC32C checked over the bytes as received, the 0xEA VPC endpoint TLV in the
log line, the client's address on the next hop."""
import pytest

from peers import free_port
from support import (PAYLOAD, REPLY, RESET, RecordingServer, exchange, exchange_or_reset,
                     load_vectors, v1_line)

PP2_TYPE_AWS = 0xEA
AWS_CAPTURES = [vector for vector in load_vectors()
                if vector["valid"] and any(tlv_type == PP2_TYPE_AWS
                                           for tlv_type, _ in vector["expect"]["tlvs"] or ())]


def test_the_captures_are_there():
    assert len(AWS_CAPTURES) >= 1


@pytest.fixture(params=AWS_CAPTURES, ids=[vector["name"] for vector in AWS_CAPTURES])
def capture(request):
    return request.param


@pytest.fixture
def nlb_target(lab):
    """simpleproxy as an NLB target: accept-proxy, then send-proxy to a recording backend."""
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    proxy = lab.simpleproxy("[listen behind_nlb]\nbind = 127.0.0.1:%d accept-proxy\n"
                            "server app = %s send-proxy\n" % (port, backend.config_address))
    yield proxy, backend, ("127.0.0.1", port)
    backend.close()


def vpce_id(vector):
    """The VPC endpoint ID in the capture's 0xEA TLV (subtype 0x01, then ASCII)."""
    value = bytes.fromhex(next(value for tlv_type, value in vector["expect"]["tlvs"]
                               if tlv_type == PP2_TYPE_AWS))
    assert value[0] == 0x01
    return value[1:].decode("ascii")


def test_nlb_capture_is_accepted_and_logs_the_vpc_endpoint(nlb_target, capture):
    proxy, backend, address = nlb_target
    expect = capture["expect"]
    header = bytes.fromhex(capture["hex"])[:expect["header_len"]]
    assert exchange(address, header + PAYLOAD) == REPLY
    assert bytes(backend.next_connection().received) == v1_line(
        expect["src_addr"], expect["dst_addr"], expect["src_port"], expect["dst_port"]) + PAYLOAD
    line = proxy.wait_for("%s:%d " % (expect["src_addr"], expect["src_port"]))
    assert "vpce=%s" % vpce_id(capture) in line.split()
    assert "pp=v2/%s" % expect["family"] in line.split()


def test_nlb_capture_with_an_altered_endpoint_id_fails_its_crc32c(nlb_target, capture):
    """One changed byte in the VPC endpoint ID: the CRC32C no longer matches, nothing goes on."""
    proxy, backend, address = nlb_target
    header = bytearray.fromhex(capture["hex"])[:capture["expect"]["header_len"]]
    position = header.index(vpce_id(capture).encode()) + len("vpce-")
    header[position] ^= 0x01
    assert exchange_or_reset(address, bytes(header) + PAYLOAD) in (b"", RESET)
    assert "end=bad-header:bad-checksum" in proxy.wait_for("fe=behind_nlb ").split()
    assert backend.accepted == []
