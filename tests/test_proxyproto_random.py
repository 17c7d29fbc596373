"""simpleproxy.proxyproto against seeded random headers: round trips and a mutation fuzzer.

Every generator here is seeded, so a failure repeats; ``--fuzz-cases N`` runs the mutation
fuzzer longer (default 100,000 cases).
"""

import ipaddress
import json
import random
import socket
import time

from proxyproto_cases import (
    CASES, NEED_MORE, NO_ADDRESSES, assert_incremental, crc32c_bitwise, mutate, outcome,
    random_header, random_ipv4, random_ipv6, random_port, random_tlvs, random_unix_path,
    random_v1)
from simpleproxy.proxyproto import (
    HEADER_ERROR_KINDS, TRUNCATED, ProxyHeader, build_v1, build_v2, header_as_dict)

DEFAULT_FUZZ_CASES = 100000


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
