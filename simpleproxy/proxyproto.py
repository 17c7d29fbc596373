"""The PROXY protocol core: an incremental header parser, the v1/v2 builders, and --decode.

Pure functions only: no sockets, clocks or threads. The rules are those of the HAProxy spec
as read in docs/proxy-protocol.md (R-numbers), section 10.2. The choices made where it
leaves room:

* The stream must start with one of the two signatures; anything else is NOT_PROXY at
  once, and nothing is ever guessed. ``PROXY`` followed by anything but a space is a
  MALFORMED v1 line.
* v1 is strict: single spaces, CRLF within 107 bytes, strict IPv4 text (no leading zero,
  exactly four parts), IPv6 text as inet_pton reads it (no zone id, no plain IPv4),
  ``::ffff:a.b.c.d`` allowed, ports ``0|[1-9][0-9]{0,4}`` up to 65535. ``PROXY UNKNOWN``
  may be followed by a space and any bytes at all up to the first CRLF (within the 107
  bytes): the receiver must ignore them (R14), so they are never read, kept or shown.
* A partial v1 line is rejected as soon as no completion of it can be valid (R22): the
  parser completes it with the shortest plausible fields and checks the result.
* v2 with a version nibble other than 2, or a command other than LOCAL/PROXY, is
  UNSUPPORTED: the 12-byte signature cannot occur by accident, so the peer does speak
  PROXY, just not a version or command we may act on.
* v2 PROXY with a family above 3 or a transport above 2 is MALFORMED, decided from
  byte 14 alone. A length shorter than the family's address block is MALFORMED as soon
  as the 16 fixed bytes are in; a length beyond ``max_size`` is TOO_LONG then too.
* The TLV area is checked once the declared length has arrived, not on every partial
  read: re-walking a partial TLV area per read would make a slow sender's header cost
  quadratic time, and the declared length already bounds the wait.
* TLVs must tile the area exactly; an SSL TLV must hold its 5 fixed bytes and sub-TLVs
  that tile the rest. At most one CRC32C TLV, exactly 4 bytes, matching the header as
  received with its value zeroed (BAD_CHECKSUM otherwise); UNIQUE_ID at most 128 bytes.
* LOCAL (any byte 14) and PROXY with an UNSPEC nibble carry no usable address. Their
  TLVs are read best-effort after the family's address block: reported and enforced
  when they frame cleanly, ``tlvs=None`` when they do not (or the family is undefined).
* UNIX paths are the bytes up to the first NUL, decoded as UTF-8 with 'surrogateescape'
  (as os.fsdecode does on Linux), so any path round-trips through the builders.
* An empty stream at EOF is TRUNCATED, like any other prefix of a header.

A short path (one regular expression, or one unpack) takes whole the three headers nearly every
connection brings, v1 ``TCP4`` and v2 PROXY TCP4/TCP6 without TLVs, as the full parser would.
"""

import re
# Only for inet_pton/inet_ntop and their AF_ constants: no socket is ever opened here
# (tests/test_layout.py holds it to that). ipaddress would cost 10-20 times as much on every
# header parsed and built (Python 3.11: 0.7 us against 6.4 us to turn a v2 IPv4 address into
# text, 1.1 us against 23 us to check v1 IPv6 text); inet_pton is the strictness v1 asks.
import socket
import struct
from collections import namedtuple


class ProxyHeaderError(ValueError):
    """A PROXY header that cannot be accepted; ``kind`` says which way it failed.

    It lives here, not beside SimpleProxyError, so that the protocol core imports nothing of
    the project: callers catch it at their boundary (the session, --decode). The kinds are a
    closed set, ``HEADER_ERROR_KINDS``; each is an end cause of its own in the log
    (``bad-header:KIND``, endings.py).
    """

    def __init__(self, kind, reason):
        self.kind = kind
        self.reason = reason
        super().__init__("%s: %s" % (kind, reason))


NOT_PROXY = "not-proxy"          # neither signature: the peer does not speak PROXY
MALFORMED = "malformed"          # a PROXY header that breaks the grammar
TRUNCATED = "truncated"          # EOF (or the deadline) before the header was complete
TOO_LONG = "too-long"            # longer than the limit (107 bytes for v1, the cap for v2)
BAD_CHECKSUM = "bad-checksum"    # CRC32C TLV present and wrong
UNSUPPORTED = "unsupported"      # well-formed, but a version/command we must drop

HEADER_ERROR_KINDS = (NOT_PROXY, MALFORMED, TRUNCATED, TOO_LONG, BAD_CHECKSUM, UNSUPPORTED)

V1_SIGNATURE = b"PROXY"
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
DEFAULT_MAX_HEADER = 16384
V1_MAX_LINE = 107

PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_SUBTYPE_SSL_VERSION = 0x21
PP2_SUBTYPE_SSL_CN = 0x22
PP2_SUBTYPE_SSL_CIPHER = 0x23
PP2_SUBTYPE_SSL_SIG_ALG = 0x24
PP2_SUBTYPE_SSL_KEY_ALG = 0x25
PP2_SUBTYPE_SSL_GROUP = 0x26
PP2_SUBTYPE_SSL_SIG_SCHEME = 0x27
PP2_SUBTYPE_SSL_CLIENT_CERT = 0x28
PP2_TYPE_NETNS = 0x30
PP2_TYPE_GCP = 0xE0
PP2_TYPE_AWS = 0xEA
PP2_TYPE_AZURE = 0xEE
PP2_SUBTYPE_AWS_VPCE_ID = 0x01
PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID = 0x01
PP2_CLIENT_SSL = 0x01
PP2_CLIENT_CERT_CONN = 0x02
PP2_CLIENT_CERT_SESS = 0x04
UNIQUE_ID_MAX = 128


class ProxyHeader(namedtuple("ProxyHeader", "version command family transport src_addr src_port "
                                            "dst_addr dst_port header_len tlvs")):
    """One parsed PROXY header; ``header_len`` bytes of the stream belong to it.

    Addresses are inet_ntop text (UNIX: the path as str); the four address fields are
    None when the header carries no usable address (LOCAL, v1 UNKNOWN, PROXY with an
    UNSPEC nibble), and the ports are None for UNIX. ``tlvs`` is a tuple of
    ``(type, value_bytes)`` in wire order, or None when they were not interpreted.
    """

    __slots__ = ()

    @property
    def has_addresses(self):
        """True when src/dst should replace the real socket endpoints."""
        return self.command == "PROXY" and self.src_addr is not None


def _pp_malformed(reason):
    return ProxyHeaderError(MALFORMED, reason)


def _pp_need_more(eof, what):
    if eof:
        raise ProxyHeaderError(TRUNCATED, "the stream ended inside the %s" % what)
    return None


def _pp_agrees(start, signature):
    """True when start and signature are equal over their common length."""
    return start[:len(signature)] == signature[:len(start)]


def parse_header(data, eof=False, max_size=DEFAULT_MAX_HEADER):
    """Parse the PROXY header at the start of data (bytes-like, the stream from offset 0).

    Returns None while more bytes are needed, or a ProxyHeader whose ``header_len`` bytes
    are the header (everything after it is payload). Raises ProxyHeaderError as soon as
    no continuation can make a valid header, and TRUNCATED for an incomplete header
    when eof is true. ``max_size`` caps a v2 header (16 + length); v1 is capped at 107.
    """
    start = bytes(data[:16])
    return _pp_short_path(data, start, max_size) or _pp_parse_in_full(data, start, eof, max_size)


def _pp_parse_in_full(data, start, eof, max_size):
    """parse_header without the short path: every rule, for every header."""
    if _pp_agrees(start, V2_SIGNATURE):
        return _pp_parse_v2(data, start, eof, max_size)
    if _pp_agrees(start, V1_SIGNATURE):
        return _pp_parse_v1(data, eof)
    raise ProxyHeaderError(NOT_PROXY, "the stream starts with neither PROXY signature")


# ### v1: the text line

_PP_IPV4_PART = rb"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_PP_IPV4_TEXT = rb"(?:%s\.){3}%s" % (_PP_IPV4_PART, _PP_IPV4_PART)
_PP_V1_IPV4 = re.compile(_PP_IPV4_TEXT)
# Only the characters of IPv6 text, and a dotted tail only in strict IPv4 form, whatever
# the C library's inet_pton would let through; inet_pton then checks the structure.
_PP_V1_IPV6 = re.compile(rb"[0-9A-Fa-f:]{2,39}(?:(?<=:)%s)?" % _PP_IPV4_TEXT)
_PP_V1_PORT_TEXT = rb"0|[1-9][0-9]{0,4}"
_PP_V1_PORT = re.compile(_PP_V1_PORT_TEXT)
_PP_V1_UNKNOWN = re.compile(rb"UNKNOWN(?: .*)?", re.DOTALL)
_PP_V1_NO_ADDRESSES = ("UNKNOWN", None, None, None, None)
_PP_V1_TCP4_START = b"PROXY TCP4 "
_PP_V1_TCP4_LINE = re.compile(rb"PROXY TCP4 (%s) (%s) (%s) (%s)\r\n" % (
    (_PP_IPV4_TEXT,) * 2 + (_PP_V1_PORT_TEXT,) * 2))


def _pp_v1_ipv4(text, what):
    if _PP_V1_IPV4.fullmatch(text) is None:
        raise _pp_malformed("v1 %s is not strict IPv4 text" % what)
    return text.decode("ascii")


def _pp_v1_ipv6(text, what):
    if _PP_V1_IPV6.fullmatch(text) is not None:
        try:
            return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6,
                                                                      text.decode("ascii")))
        except OSError:
            pass
    raise _pp_malformed("v1 %s is not IPv6 text" % what)


def _pp_v1_port(text, what):
    if _PP_V1_PORT.fullmatch(text) is None or int(text) > 0xFFFF:
        raise _pp_malformed("v1 %s is not a decimal port in 0-65535" % what)
    return int(text)


def _pp_ipv4_completion(text):
    parts = text.split(b".")
    return (b"0" if not parts[-1] else b"") + b".0" * (4 - len(parts))


def _pp_ipv6_completion(text):
    if b"." in text:
        return _pp_ipv4_completion(text.rpartition(b":")[2])
    if text in (b"", b":"):
        return b"::"[len(text):]
    completion = b"0" if text.endswith(b":") and not text.endswith(b"::") else b""
    if b"::" in text:
        return completion
    return completion + b":0" * (7 - text.count(b":"))


def _pp_port_completion(text):
    return b"" if text else b"0"


# Per protocol word: how to read an address, and how to complete a partial one.
_PP_V1_PROTOCOLS = {
    b"TCP4": (_pp_v1_ipv4, _pp_ipv4_completion),
    b"TCP6": (_pp_v1_ipv6, _pp_ipv6_completion),
    b"UNKNOWN": None,
}


def _pp_v1_fields(body):
    """(family, src_addr, src_port, dst_addr, dst_port) of a line between "PROXY " and CRLF."""
    fields = body.split(b" ")
    grammar = _PP_V1_PROTOCOLS.get(fields[0])
    if grammar is None:
        if _PP_V1_UNKNOWN.fullmatch(body) is not None:
            return _PP_V1_NO_ADDRESSES
        if body.startswith(b"UNKNOWN"):
            raise _pp_malformed("v1 UNKNOWN may only be followed by a space")
        raise _pp_malformed("v1 protocol is not TCP4, TCP6 or UNKNOWN")
    if len(fields) != 5:
        raise _pp_malformed("v1 line needs exactly 4 single-spaced fields after the protocol")
    parse_address = grammar[0]
    return (fields[0].decode("ascii"),
            parse_address(fields[1], "source address"), _pp_v1_port(fields[3], "source port"),
            parse_address(fields[2], "destination address"),
            _pp_v1_port(fields[4], "destination port"))


def _pp_v1_completion(body):
    """Bytes that make body (a partial line after "PROXY ") valid, when any completion can."""
    fields = body.split(b" ")
    word = fields[0]
    if len(fields) == 1:
        word = next((known for known in _PP_V1_PROTOCOLS if known.startswith(body)), body)
    completion = word[len(fields[0]):]
    grammar = _PP_V1_PROTOCOLS.get(word)
    started = len(fields) - 1
    if grammar is None or started > 4:
        return completion
    complete_address = grammar[1]
    completers = (complete_address, complete_address, _pp_port_completion, _pp_port_completion)
    if started:
        completion += completers[started - 1](fields[-1])
    return completion + b"".join(b" " + complete(b"") for complete in completers[started:])


def _pp_parse_v1(data, eof):
    line = bytes(data[:V1_MAX_LINE])
    if len(line) > 5 and line[5:6] != b" ":
        raise _pp_malformed("v1 signature PROXY is not followed by a space")
    end = line.find(b"\r\n")
    if end >= 0:
        family, src_addr, src_port, dst_addr, dst_port = _pp_v1_fields(line[6:end])
        return ProxyHeader(1, "PROXY", family, None, src_addr, src_port, dst_addr, dst_port,
                           end + 2, ())
    if len(line) > 5:
        # Refuse now if no continuation can be valid; a trailing CR can only start the CRLF.
        body = line[6:]
        _pp_v1_fields(body[:-1] if body.endswith(b"\r") else body + _pp_v1_completion(body))
    if len(line) >= V1_MAX_LINE:
        raise ProxyHeaderError(TOO_LONG, "no CRLF in the first %d bytes of a v1 line"
                               % V1_MAX_LINE)
    return _pp_need_more(eof, "v1 line")


# ### The short path: the headers nearly every connection brings

def _pp_short_path(data, start, max_size):
    """A whole v2 PROXY TCP4/TCP6 header without TLVs or a whole valid v1 TCP4 line, as the
    full parser returns it (made as ProxyHeader.__new__ does, less its Python frame); None for
    anything else (the full parser then decides)."""
    if start.startswith(_PP_V2_PROXY_START):
        block, family, af, size = _PP_V2_SHORT_FORMS.get(start[13:16], _PP_V2_NOT_SHORT)
        if block is None or len(data) < size or size > max_size:
            return None
        src, dst, src_port, dst_port = block.unpack_from(data, 16)
        return tuple.__new__(ProxyHeader, (2, "PROXY", family, "STREAM", socket.inet_ntop(af, src),
                                           src_port, socket.inet_ntop(af, dst), dst_port, size, ()))
    if start.startswith(_PP_V1_TCP4_START):
        line = _PP_V1_TCP4_LINE.match(data)
        if line is None:
            return None
        src_addr, dst_addr, src_port, dst_port = line.groups()
        src_port, dst_port = int(src_port), int(dst_port)
        if src_port > 0xFFFF or dst_port > 0xFFFF:
            return None
        return tuple.__new__(ProxyHeader, (1, "PROXY", "TCP4", None, src_addr.decode("ascii"),
                                           src_port, dst_addr.decode("ascii"), dst_port,
                                           line.end(), ()))
    return None


# ### v2: the binary header

_PP_V2_LOCAL = 0x0
_PP_V2_PROXY = 0x1
_PP_INET, _PP_INET6, _PP_UNIX = 0x1, 0x2, 0x3
_PP_V2_PROXY_START = V2_SIGNATURE + bytes((0x20 | _PP_V2_PROXY,))
_PP_V2_FIXED = struct.Struct("!12sBBH")
_PP_V2_INET = struct.Struct("!4s4sHH")
_PP_V2_INET6 = struct.Struct("!16s16sHH")
_PP_V2_UNIX = struct.Struct("!108s108s")
_PP_V2_BLOCKS = {0x0: 0, _PP_INET: _PP_V2_INET.size, _PP_INET6: _PP_V2_INET6.size,
                 _PP_UNIX: _PP_V2_UNIX.size}
_PP_V2_FAMILIES = {0x11: "TCP4", 0x12: "UDP4", 0x21: "TCP6", 0x22: "UDP6",
                   0x31: "UNIX", 0x32: "UNIX"}
_PP_V2_TRANSPORTS = ("UNSPEC", "STREAM", "DGRAM")
_PP_TLV_HEAD = struct.Struct("!BH")
# Bytes 14-16 of a TCP4/TCP6 header without TLVs: its block, family, AF_ and whole length.
_PP_V2_SHORT_FORMS = {
    bytes((family << 4 | 1,)) + struct.pack("!H", block.size): (block, name, af, 16 + block.size)
    for family, block, name, af in ((_PP_INET, _PP_V2_INET, "TCP4", socket.AF_INET),
                                    (_PP_INET6, _PP_V2_INET6, "TCP6", socket.AF_INET6))}
_PP_V2_NOT_SHORT = (None, None, None, 0)
_PP_SSL_FIXED = 5                  # client flags (1 byte) and verify result (4 bytes)


def _pp_unix_path(raw):
    return raw.partition(b"\0")[0].decode("utf-8", "surrogateescape")


def _pp_v2_addresses(head, family):
    """(src_addr, src_port, dst_addr, dst_port) from the address block of a PROXY header."""
    if family == _PP_UNIX:
        src, dst = _PP_V2_UNIX.unpack_from(head, 16)
        return _pp_unix_path(src), None, _pp_unix_path(dst), None
    if family == _PP_INET:
        af, block = socket.AF_INET, _PP_V2_INET
    else:
        af, block = socket.AF_INET6, _PP_V2_INET6
    src, dst, src_port, dst_port = block.unpack_from(head, 16)
    return socket.inet_ntop(af, src), src_port, socket.inet_ntop(af, dst), dst_port


def _pp_split_tlvs(head, pos, end, nested=False):
    """(type, value_start, value_end) of the TLVs that must tile head[pos:end] exactly."""
    where = "SSL sub-TLV" if nested else "TLV"
    spans = []
    while pos < end:
        if end - pos < _PP_TLV_HEAD.size:
            raise _pp_malformed("%d stray bytes after the last %s" % (end - pos, where))
        tlv_type, size = _PP_TLV_HEAD.unpack_from(head, pos)
        value_start = pos + _PP_TLV_HEAD.size
        pos = value_start + size
        if pos > end:
            raise _pp_malformed("%s 0x%02x runs %d bytes past its end"
                                % (where, tlv_type, pos - end))
        if tlv_type == PP2_TYPE_SSL and not nested:
            if size < _PP_SSL_FIXED:
                raise _pp_malformed("SSL TLV shorter than its client and verify fields")
            _pp_split_tlvs(head, value_start + _PP_SSL_FIXED, pos, nested=True)
        spans.append((tlv_type, value_start, pos))
    return spans


def _pp_check_tlvs(head, spans):
    """Enforce the TLV rules beyond framing: CRC32C and the UNIQUE_ID limit."""
    checksums = []
    for tlv_type, start, end in spans:
        if tlv_type == PP2_TYPE_CRC32C:
            if end - start != 4:
                raise _pp_malformed("CRC32C TLV is %d bytes, not 4" % (end - start))
            checksums.append(start)
        elif tlv_type == PP2_TYPE_UNIQUE_ID and end - start > UNIQUE_ID_MAX:
            raise _pp_malformed("UNIQUE_ID TLV is %d bytes, more than %d"
                                % (end - start, UNIQUE_ID_MAX))
    if len(checksums) > 1:
        # Each checksum would have to cover the other: no sender can produce that.
        raise _pp_malformed("more than one CRC32C TLV")
    for start in checksums:
        received = int.from_bytes(head[start:start + 4], "big")
        if crc32c(head[:start] + b"\0\0\0\0" + head[start + 4:]) != received:
            raise ProxyHeaderError(BAD_CHECKSUM, "CRC32C TLV does not match the header")


def _pp_best_effort_tlvs(head, family):
    """TLV spans after the family's address block, or None when they do not frame cleanly."""
    block = _PP_V2_BLOCKS.get(family)
    if block is None or 16 + block > len(head):
        return None
    try:
        return _pp_split_tlvs(head, 16 + block, len(head))
    except ProxyHeaderError:
        return None


def _pp_parse_v2(data, start, eof, max_size):
    if len(start) > 12:
        version, command = start[12] >> 4, start[12] & 0xF
        if version != 2:
            raise ProxyHeaderError(UNSUPPORTED, "v2 signature with version %d" % version)
        if command > _PP_V2_PROXY:
            raise ProxyHeaderError(UNSUPPORTED, "v2 command 0x%x is undefined" % command)
        if len(start) > 13 and command == _PP_V2_PROXY and (start[13] >> 4 > 3
                                                              or start[13] & 0xF > 2):
            raise _pp_malformed("v2 PROXY with undefined family/transport 0x%02x" % start[13])
    if len(start) < 16:
        return _pp_need_more(eof, "v2 header")
    _, ver_cmd, family_transport, length = _PP_V2_FIXED.unpack(start)
    total = 16 + length
    if total > max_size:
        raise ProxyHeaderError(TOO_LONG, "v2 header of %d bytes exceeds the limit of %d"
                               % (total, max_size))
    family, transport = family_transport >> 4, family_transport & 0xF
    carries_addresses = ver_cmd & 0xF == _PP_V2_PROXY and family_transport in _PP_V2_FAMILIES
    if carries_addresses and length < _PP_V2_BLOCKS[family]:
        raise _pp_malformed("v2 length %d is shorter than the %s address block"
                            % (length, _PP_V2_FAMILIES[family_transport]))
    if len(data) < total:
        return _pp_need_more(eof, "v2 header")
    head = bytes(data[:total])
    if carries_addresses:
        addresses = _pp_v2_addresses(head, family)
        spans = _pp_split_tlvs(head, 16 + _PP_V2_BLOCKS[family], total)
    else:
        addresses = (None, None, None, None)
        spans = _pp_best_effort_tlvs(head, family)
    tlvs = None
    if spans is not None:
        _pp_check_tlvs(head, spans)
        tlvs = tuple((tlv_type, head[value_start:value_end])
                     for tlv_type, value_start, value_end in spans)
    return ProxyHeader(
        2, "PROXY" if ver_cmd & 0xF == _PP_V2_PROXY else "LOCAL",
        _PP_V2_FAMILIES.get(family_transport, "UNKNOWN"),
        _PP_V2_TRANSPORTS[transport] if transport < 3 else hex(transport),
        *addresses, header_len=total, tlvs=tlvs)


# ### CRC32C (Castagnoli, RFC 4960 appendix B)

def _pp_crc32c_table():
    table = []
    for index in range(256):
        crc = index
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return tuple(table)


_PP_CRC32C_TABLE = _pp_crc32c_table()


def crc32c(data, crc=0):
    """CRC32C of data, continuing from crc (as zlib.crc32 does)."""
    table = _PP_CRC32C_TABLE
    crc ^= 0xFFFFFFFF
    for byte in bytes(data):
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# ### Builders

V4_MAPPED_PREFIX = b"\0" * 10 + b"\xff\xff"


def packed_ip(host):
    """The binary form of an IP address text: 16 bytes for IPv6, 4 for IPv4 and for
    IPv4-mapped IPv6 (how a dual-stack socket sees an IPv4 peer), so that every spelling of
    one address compares equal. A zone id (``%eth0``) names a local interface, not part of
    the address, and is dropped. ValueError for anything else."""
    host = host.partition("%")[0]
    try:
        packed = socket.inet_pton(socket.AF_INET6 if ":" in host else socket.AF_INET, host)
    except OSError:
        raise ValueError("%r is neither IPv4 nor IPv6 text" % (host,)) from None
    return packed[12:] if packed.startswith(V4_MAPPED_PREFIX) else packed


def packed_ip_pair(first, second):
    """packed_ip of both, in one call; IPv4 text (most connections' pair) needs no more."""
    try:
        return socket.inet_pton(socket.AF_INET, first), socket.inet_pton(socket.AF_INET, second)
    except OSError:
        return packed_ip(first), packed_ip(second)


def _pp_ip_endpoint(endpoint):
    """(packed address, port) of a (host, port, ...) tuple."""
    host, port = endpoint[0], endpoint[1]
    if not 0 <= port <= 0xFFFF:
        raise ValueError("port %r is outside 0-65535" % (port,))
    return packed_ip(host), port


def _pp_unix_path_bytes(path):
    return path if isinstance(path, bytes) else path.encode("utf-8", "surrogateescape")


def _pp_address_pair(src, dst):
    """(family, src, src_port, dst, dst_port) packed for the wire, or None when the pair
    cannot be expressed (either side missing, or unix and inet mixed)."""
    if isinstance(src, tuple) and isinstance(dst, tuple):
        (src_ip, src_port), (dst_ip, dst_port) = _pp_ip_endpoint(src), _pp_ip_endpoint(dst)
        if len(src_ip) == len(dst_ip) == 4:
            return _PP_INET, src_ip, src_port, dst_ip, dst_port
        return (_PP_INET6, src_ip if len(src_ip) == 16 else V4_MAPPED_PREFIX + src_ip, src_port,
                dst_ip if len(dst_ip) == 16 else V4_MAPPED_PREFIX + dst_ip, dst_port)
    if isinstance(src, (str, bytes)) and isinstance(dst, (str, bytes)):
        src_path, dst_path = _pp_unix_path_bytes(src), _pp_unix_path_bytes(dst)
        if max(len(src_path), len(dst_path)) <= 108:
            return _PP_UNIX, src_path, None, dst_path, None
    return None


def build_v1(src, dst):
    """A v1 line for the pair: TCP4, TCP6 (IPv4 side mapped), or ``PROXY UNKNOWN``."""
    pair = _pp_address_pair(src, dst)
    if pair is None or pair[0] == _PP_UNIX:
        return b"PROXY UNKNOWN\r\n"
    family, src_ip, src_port, dst_ip, dst_port = pair
    af, word = (socket.AF_INET, "TCP4") if family == _PP_INET else (socket.AF_INET6, "TCP6")
    return ("PROXY %s %s %s %d %d\r\n" % (word, socket.inet_ntop(af, src_ip),
                                         socket.inet_ntop(af, dst_ip), src_port, dst_port)
            ).encode("ascii")


def _pp_tlv_bytes(tlv_type, value):
    if not 0 <= tlv_type <= 0xFF or len(value) > 0xFFFF:
        raise ValueError("TLV 0x%x of %d bytes cannot be encoded" % (tlv_type, len(value)))
    if tlv_type == PP2_TYPE_UNIQUE_ID and len(value) > UNIQUE_ID_MAX:
        raise ValueError("UNIQUE_ID is %d bytes, more than %d" % (len(value), UNIQUE_ID_MAX))
    return _PP_TLV_HEAD.pack(tlv_type, len(value)) + bytes(value)


def _pp_with_crc32c(header, value_start):
    """header with the CRC32C value at value_start computed over the zero placeholder."""
    return (header[:value_start] + crc32c(header).to_bytes(4, "big")
            + header[value_start + 4:])


def build_v2(src, dst, tlvs=(), crc32c=False, local=False, transport="STREAM"):
    """A v2 header for the pair (see build_v1), or LOCAL/UNSPEC when local is true or the
    pair cannot be expressed. transport is the one announced: STREAM for a TCP client, or
    what a received header said (DGRAM for UDP), kept as the client sent it. tlvs go out in
    the given order, except that any CRC32C in them is dropped (it could not match the new
    header); crc32c=True puts a correct one first, as HAProxy does."""
    pair = None if local else _pp_address_pair(src, dst)
    if pair is None:
        ver_cmd, family_transport, block = 0x20 | _PP_V2_LOCAL, 0x00, b""
    else:
        family, src_addr, src_port, dst_addr, dst_port = pair
        ver_cmd = 0x20 | _PP_V2_PROXY
        family_transport = family << 4 | _PP_V2_TRANSPORTS.index(transport)
        if family == _PP_UNIX:
            block = _PP_V2_UNIX.pack(src_addr, dst_addr)
        else:
            block = (_PP_V2_INET if family == _PP_INET else _PP_V2_INET6).pack(
                src_addr, dst_addr, src_port, dst_port)
    body = [block]
    if crc32c:
        body.append(_pp_tlv_bytes(PP2_TYPE_CRC32C, b"\0\0\0\0"))
    body.extend(_pp_tlv_bytes(tlv_type, value) for tlv_type, value in tlvs
                if tlv_type != PP2_TYPE_CRC32C)
    body = b"".join(body)
    if len(body) > 0xFFFF:
        raise ValueError("v2 header body of %d bytes exceeds 65535" % len(body))
    header = _PP_V2_FIXED.pack(V2_SIGNATURE, ver_cmd, family_transport, len(body)) + body
    if crc32c:
        return _pp_with_crc32c(header, 16 + len(block) + _PP_TLV_HEAD.size)
    return header


# ### The --decode view

_PP_VPCE_ID = re.compile(r"[A-Za-z0-9-]+")


def _pp_text(value):
    return value.decode("utf-8", "backslashreplace")


def _pp_aws_vpce_id(value):
    if value[:1] and value[0] == PP2_SUBTYPE_AWS_VPCE_ID:
        text = _pp_text(value[1:])
        if _PP_VPCE_ID.fullmatch(text):    # it goes into log lines: nothing else passes
            return text
    return None


def _pp_azure_linkid(value):
    if len(value) == 5 and value[0] == PP2_SUBTYPE_AZURE_PRIVATEENDPOINT_LINKID:
        return int.from_bytes(value[1:], "little")
    return None


def _pp_gcp_psc_id(value):
    return int.from_bytes(value, "big") if len(value) == 8 else None


def _pp_named_views(pairs, decoders):
    """{name: decoded value} for the first decodable occurrence of each known type."""
    views = {}
    for tlv_type, value in pairs:
        name, decode = decoders.get(tlv_type, (None, None))
        if name is not None and name not in views:
            decoded = decode(value)
            if decoded is not None:
                views[name] = decoded
    return views


_PP_SSL_SUB_DECODERS = {
    PP2_SUBTYPE_SSL_VERSION: ("version", _pp_text),
    PP2_SUBTYPE_SSL_CN: ("cn", _pp_text),
    PP2_SUBTYPE_SSL_CIPHER: ("cipher", _pp_text),
    PP2_SUBTYPE_SSL_SIG_ALG: ("sig_alg", _pp_text),
    PP2_SUBTYPE_SSL_KEY_ALG: ("key_alg", _pp_text),
    PP2_SUBTYPE_SSL_GROUP: ("group", _pp_text),
    PP2_SUBTYPE_SSL_SIG_SCHEME: ("sig_scheme", _pp_text),
    PP2_SUBTYPE_SSL_CLIENT_CERT: ("client_cert", bytes.hex),
}


def _pp_ssl_view(value):
    if len(value) < _PP_SSL_FIXED:
        return None
    try:
        spans = _pp_split_tlvs(value, _PP_SSL_FIXED, len(value), nested=True)
    except ProxyHeaderError:
        return None
    sub_tlvs = [(tlv_type, value[start:end]) for tlv_type, start, end in spans]
    view = {
        "client": value[0],
        "verify": int.from_bytes(value[1:_PP_SSL_FIXED], "big"),
        "client_ssl": bool(value[0] & PP2_CLIENT_SSL),
        "client_cert_conn": bool(value[0] & PP2_CLIENT_CERT_CONN),
        "client_cert_sess": bool(value[0] & PP2_CLIENT_CERT_SESS),
        "sub_tlvs": [[tlv_type, sub_value.hex()] for tlv_type, sub_value in sub_tlvs],
    }
    view.update(_pp_named_views(sub_tlvs, _PP_SSL_SUB_DECODERS))
    return view


_PP_TLV_DECODERS = {
    PP2_TYPE_ALPN: ("alpn", _pp_text),
    PP2_TYPE_AUTHORITY: ("authority", _pp_text),
    PP2_TYPE_UNIQUE_ID: ("unique_id", bytes.hex),
    PP2_TYPE_SSL: ("ssl", _pp_ssl_view),
    PP2_TYPE_NETNS: ("netns", _pp_text),
    PP2_TYPE_AWS: ("aws_vpce_id", _pp_aws_vpce_id),
    PP2_TYPE_AZURE: ("azure_linkid", _pp_azure_linkid),
    PP2_TYPE_GCP: ("gcp_psc_connection_id", _pp_gcp_psc_id),
}


def header_as_dict(header):
    """The JSON-ready view printed by --decode: the header's fields, TLVs as
    ``[type, hex]`` in wire order, and the known TLVs decoded by name (the first
    occurrence of each; text as UTF-8 with undecodable bytes backslash-escaped)."""
    view = dict(header._asdict())
    if header.tlvs is not None:
        view["tlvs"] = [[tlv_type, value.hex()] for tlv_type, value in header.tlvs]
        view.update(_pp_named_views(header.tlvs, _PP_TLV_DECODERS))
    return view


def aws_vpce_id(header):
    """The AWS VPC endpoint ID (TLV 0xEA, subtype 0x01) for log lines, or None."""
    aws_only = {PP2_TYPE_AWS: _PP_TLV_DECODERS[PP2_TYPE_AWS]}
    return _pp_named_views(header.tlvs or (), aws_only).get("aws_vpce_id")


def tlv_value(header, tlv_type):
    """The raw value of the first TLV of ``tlv_type`` in a parsed header, or None (also with
    no header, or TLVs that were not interpreted)."""
    if header is None or header.tlvs is None:
        return None
    for found_type, value in header.tlvs:
        if found_type == tlv_type:
            return value
    return None


def decoded_tlv(header, tlv_type):
    """The first decodable TLV of a type --decode knows (the cloud ones: PP2_TYPE_AWS gives
    the VPC endpoint ID text, PP2_TYPE_AZURE the LinkID and PP2_TYPE_GCP the PSC connection
    ID as integers), decoded, or None (also with no header)."""
    if header is None:
        return None
    name, decode = _PP_TLV_DECODERS[tlv_type]
    return _pp_named_views(header.tlvs or (), {tlv_type: (name, decode)}).get(name)
