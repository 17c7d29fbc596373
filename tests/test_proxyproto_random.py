"""simpleproxy.proxyproto against seeded random headers: round trips and a mutation fuzzer.

Every generator here is seeded, so a failure repeats; ``--fuzz-cases N`` runs the mutation
fuzzer longer (default 100,000 cases).
"""

import ipaddress
import json
import random
import socket
import struct
import time

from proxyproto_cases import (
    CASES, NEED_MORE, NO_ADDRESSES, assert_incremental, crc32c_bitwise, inet4, inet6, outcome,
    ssl_value, tlv, unix_block, v2, with_crc)
from simpleproxy.proxyproto import (
    HEADER_ERROR_KINDS, TRUNCATED, ProxyHeader, build_v1, build_v2, header_as_dict)

DEFAULT_FUZZ_CASES = 100000
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
            rest = b" " + bytes(rng.choice(PRINTABLE) for _ in range(rng.randint(0, 91)))
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


def describe(header):
    if header.version == 1:
        return "v1 " + header.family
    return "v2 %s %s%s" % (header.command, header.family,
                           " crc" if header.tlvs and any(t == 3 for t, _ in header.tlvs) else "")


def test_parse_of_random_headers_of_every_kind():
    rng = random.Random(20260427)
    seen = set()
    for index in range(4000):
        wire, expected = random_header(rng)
        payload = rng.choice((b"", b"GET / HTTP/1.1\r\n", random_header(rng)[0]))
        header = outcome(wire + payload)
        assert header == expected, (index, wire)
        assert json.loads(json.dumps(header_as_dict(header)))["header_len"] == len(wire)
        if index % 40 == 0:
            assert_incremental(wire + payload[:3])
        seen.add(describe(header))
    for kind in ("v1 TCP4", "v1 TCP6", "v1 UNKNOWN", "v2 PROXY TCP4", "v2 PROXY UDP4",
                 "v2 PROXY TCP6", "v2 PROXY UDP6", "v2 PROXY UNIX", "v2 PROXY UNKNOWN",
                 "v2 LOCAL UNKNOWN", "v2 LOCAL TCP4", "v2 PROXY TCP4 crc", "v2 LOCAL UNKNOWN crc"):
        assert kind in seen


def test_every_prefix_of_random_v1_lines_waits():
    """No prefix of a valid line is rejected early: the IPv6 and port completions are sound."""
    rng = random.Random(7)
    for _ in range(400):
        line, expected = random_v1(rng)
        view = memoryview(line)
        assert [outcome(view[:size]) for size in range(len(line))] == [NEED_MORE] * len(line)
        assert outcome(line) == expected


# ### Builders: parse(build(x)) == x

def random_endpoint(rng):
    shape = rng.randrange(9)
    if shape == 0:
        return None
    if shape in (1, 2):
        return (random_ipv4(rng), random_port(rng))
    if shape in (3, 4):
        return (random_ipv6(rng)[0], random_port(rng), 0, 0)
    if shape == 5:
        return ("::ffff:" + random_ipv4(rng), random_port(rng))
    if shape == 6:
        return random_unix_path(rng).replace(b"\0", b"").decode("utf-8", "surrogateescape")
    if shape == 7:
        return b"\0abstract-%d" % rng.randrange(100)
    return ("fe80::%x%%eth0" % rng.getrandbits(16), random_port(rng), 0, 2)


def ip_of(endpoint):
    address = ipaddress.ip_address(endpoint[0].partition("%")[0])
    return getattr(address, "ipv4_mapped", None) or address


def expected_of(src, dst, version, local, tlvs):
    """The header a receiver must see for these endpoints, per the builders' rules."""
    if version == 1:
        tlvs = ()
    unknown = (1 if version == 1 else 2, "PROXY" if version == 1 else "LOCAL",
               "UNKNOWN", None if version == 1 else "UNSPEC") + NO_ADDRESSES
    if local or src is None or dst is None or isinstance(src, tuple) != isinstance(dst, tuple):
        return unknown, tlvs
    if not isinstance(src, tuple):
        if version == 1:
            return unknown, tlvs
        paths = [(path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape"))
                 .partition(b"\0")[0].decode("utf-8", "surrogateescape") for path in (src, dst)]
        return (2, "PROXY", "UNIX", "STREAM", paths[0], None, paths[1], None), tlvs
    src_ip, dst_ip = ip_of(src), ip_of(dst)
    if src_ip.version == dst_ip.version == 4:
        family, texts = "TCP4", (str(src_ip), str(dst_ip))
    else:
        family = "TCP6"
        texts = [socket.inet_ntop(socket.AF_INET6, ipaddress.IPv6Address(
            "::ffff:%s" % ip if ip.version == 4 else ip).packed) for ip in (src_ip, dst_ip)]
    return ((version, "PROXY", family, None if version == 1 else "STREAM",
             texts[0], src[1], texts[1], dst[1]), tlvs)


def test_parse_of_build_gives_back_the_endpoints():
    rng = random.Random(1994)
    for _ in range(3000):
        src, dst = random_endpoint(rng), random_endpoint(rng)
        local, crc = rng.random() < 0.1, rng.random() < 0.3
        tlvs = random_tlvs(rng) + ([(0x03, b"old!")] if rng.random() < 0.1 else [])
        for version in (1, 2):
            wire = (build_v1(src, dst) if version == 1
                    else build_v2(src, dst, tlvs, crc32c=crc, local=local))
            fields, expected_tlvs = expected_of(src, dst, version, local and version == 2,
                                                [(t, v) for t, v in tlvs if t != 0x03])
            header = outcome(wire + b"payload")
            assert header[:8] == fields, (src, dst, wire)
            assert header.header_len == len(wire)
            if version == 2 and crc:
                assert header.tlvs[0][0] == 0x03
                block_end = len(wire) - sum(3 + len(v) for _, v in header.tlvs)
                zeroed = wire[:block_end + 3] + bytes(4) + wire[block_end + 7:]
                assert int.from_bytes(header.tlvs[0][1], "big") == crc32c_bitwise(zeroed)
                assert header.tlvs[1:] == tuple(expected_tlvs)
            else:
                assert header.tlvs == tuple(expected_tlvs)


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


def check_answer(data, extra):
    """The parser's answer to data is one of its three, and consistent with EOF and more data."""
    answer = outcome(data)
    at_eof = outcome(data, eof=True)
    assert at_eof == (TRUNCATED if answer == NEED_MORE else answer)
    if isinstance(answer, ProxyHeader):
        assert 0 < answer.header_len <= len(data)
        assert outcome(data[:answer.header_len]) == answer
        json.dumps(header_as_dict(answer))
        if answer.has_addresses:
            assert None not in (answer.src_addr, answer.dst_addr)
    elif answer != NEED_MORE:
        assert answer in HEADER_ERROR_KINDS
        assert outcome(data + extra) == answer          # an error is final
    return answer


def test_mutation_fuzzer(request):
    cases = request.config.getoption("--fuzz-cases") or DEFAULT_FUZZ_CASES
    rng = random.Random(31337)
    seeds = [case.wire for case in CASES if len(case.wire) < 2048]
    seeds += [random_header(rng)[0] + b"GET / HTTP/1.0\r\n" for _ in range(300)]
    seeds = [seed for seed in seeds if len(seed) < 2048]
    tally = {}
    slowest = 0.0
    for _ in range(cases):
        data = mutate(rng, rng.choice(seeds), seeds)
        started = time.perf_counter()
        answer = check_answer(data, bytes((rng.getrandbits(8),)) * rng.randint(1, 3))
        slowest = max(slowest, time.perf_counter() - started)
        kind = "header" if isinstance(answer, ProxyHeader) else answer
        tally[kind] = tally.get(kind, 0) + 1
    assert slowest < 1.0, "one case took %.3f s" % slowest
    # The mutations reach every answer, not just the first byte's NOT_PROXY.
    for kind in ("header", NEED_MORE) + HEADER_ERROR_KINDS:
        if kind != TRUNCATED:
            assert tally.get(kind, 0) > cases // 1000, tally
