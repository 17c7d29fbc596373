"""What a server's PROXY v2 header carries besides the addresses.

Two server options decide it, in HAProxy's words:

* ``proxy-v2-options crc32c,authority,unique-id``: a CRC32C computed over the header sent;
  the AUTHORITY the client's header carried (none: no TLV); the UNIQUE_ID the client's
  header carried, or else a new one (never an empty TLV).
* ``set-proxy-v2-tlv-fmt(ID) FMT``, any number of times: a TLV of type ID (decimal or 0x
  hex) whose value is FMT, either a literal string or exactly one of
  ``%[fc_pp_tlv(ID)]``, ``%[fc_pp_authority]``, ``%[fc_pp_unique_id]``: the value the
  client's header carried, the TLV left out when it carried none. HAProxy's log-format
  strings can do more; whatever else a format holds is a config error naming what is
  supported, never a value sent by guess.

Both are compiled once per server into a frozen TlvPlan. The order on the wire is fixed:
CRC32C first (build_v2 puts it there), then AUTHORITY, UNIQUE_ID, then the
set-proxy-v2-tlv-fmt TLVs in config order. A received CRC32C is never copied (it could not
match the new header): type 3 is refused in both places a format names a type.

A v2 header holds at most 65535 bytes after its 16 fixed ones. Literal values that do not
fit beside IPv4 addresses are a config error; forwarded values (and IPv6 or UNIX address
blocks) can make one header too long only when a client's header was large (see
max_header_length), and then building it raises OutgoingHeaderError for the caller to log:
a corrupt or cut header is never sent.
"""

import struct
from collections import namedtuple

from .errors import SimpleProxyError
from .proxyproto import (
    PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C, PP2_TYPE_UNIQUE_ID, UNIQUE_ID_MAX, ProxyHeaderError,
    build_v2, crc32c, packed_ip_pair, parse_header, tlv_value)
from .samples import BYTES, parse_tlv_id, pp_fetch

TLV_FMT_OPTION = "set-proxy-v2-tlv-fmt"
V2_OPTION_WORDS = ("authority", "crc32c", "unique-id")
V2_MAX_LENGTH = 0xFFFF             # the 16-bit length field: bytes after the fixed 16
_TLV_HEAD = 3                      # type and length before each value
_PORTS = struct.Struct("!HH")      # the ports after the two addresses of a v2 address block
_TLV_SMALLEST_ADDRESSES = 12       # the TCP4 address block
_TLV_LARGEST_ADDRESSES = 216       # the UNIX address block, the largest build_v2 writes
TLV_FMT_EXPECTED = ("a literal string without '%', or one of %[fc_pp_tlv(ID)], "
                     "%[fc_pp_authority], %[fc_pp_unique_id]")

TlvFormat = namedtuple("TlvFormat", "tlv_type literal fetch")
TlvFormat.__doc__ = """One set-proxy-v2-tlv-fmt: the TLV type, and either ``literal`` bytes
or a samples.PpFetch whose value (when the client's header had one) is sent."""


class TlvPlan(namedtuple("TlvPlan", "crc32c authority unique_id formats")):
    """The TLVs of one server's v2 header: three proxy-v2-options flags and the tuple of
    TlvFormat in config order.

    ``template``, made from them (and so left out of comparisons): a HeaderTemplate when the
    TLVs are the same on every connection (no AUTHORITY, UNIQUE_ID or forwarded value; the
    usual case), else None.
    """

    def __new__(cls, crc32c, authority, unique_id, formats):
        plan = super(TlvPlan, cls).__new__(cls, crc32c, authority, unique_id, formats)
        plan.template = None
        if not authority and not unique_id and all(tlv.fetch is None for tlv in formats):
            plan.template = HeaderTemplate([(tlv.tlv_type, tlv.literal) for tlv in formats],
                                           crc32c)
        return plan


class HeaderTemplate(object):
    """build_v2 for one server whose TLVs are the same on every connection, prepared once.

    Per address size (4: TCP4, 16: TCP6) it keeps build_v2's header for placeholder
    addresses, split around the address block; a connection's header is its addresses and
    ports packed in between. A CRC32C (build_v2 puts it first among the TLVs) is computed
    anew, on from the checksum of the 16 fixed bytes. Any other pair (mixed families, UNIX,
    none) goes to build_v2 itself.
    """

    __slots__ = ("tlvs", "add_crc32c", "_parts")

    def __init__(self, tlvs, add_crc32c):
        self.tlvs = tuple(tlvs)
        self.add_crc32c = add_crc32c
        self._parts = {}
        for size, anywhere in ((4, ("0.0.0.0", 0)), (16, ("::", 0))):
            try:
                header = build_v2(anywhere, anywhere, self.tlvs, crc32c=add_crc32c)
            except ValueError:
                continue        # too long beside this block: build_v2 says so per connection
            head, tlv_area = header[:16], header[16 + 2 * size + _PORTS.size:]
            if add_crc32c:
                tlv_area = tlv_area[:_TLV_HEAD] + bytes(4) + tlv_area[_TLV_HEAD + 4:]
            self._parts[size] = (head, tlv_area, crc32c(head))

    def build(self, src, dst):
        """``build_v2(src, dst, tlvs, crc32c=add_crc32c)``, byte for byte, and its errors."""
        if (isinstance(src, tuple) and isinstance(dst, tuple) and 0 <= src[1] <= 0xFFFF
                and 0 <= dst[1] <= 0xFFFF):
            src_ip, dst_ip = packed_ip_pair(src[0], dst[0])
            parts = self._parts.get(len(src_ip)) if len(src_ip) == len(dst_ip) else None
            if parts is not None:
                head, tlv_area, head_checksum = parts
                block = src_ip + dst_ip + _PORTS.pack(src[1], dst[1])
                if not self.add_crc32c:
                    return head + block + tlv_area
                checksum = crc32c(block + tlv_area, head_checksum).to_bytes(4, "big")
                return head + block + tlv_area[:_TLV_HEAD] + checksum + tlv_area[_TLV_HEAD + 4:]
        return build_v2(src, dst, self.tlvs, crc32c=self.add_crc32c)


NO_TLVS = TlvPlan(False, False, False, ())


class OutgoingHeaderError(SimpleProxyError):
    """A v2 header for a server that cannot be built (too long with what it forwards)."""


def compile_tlv_fmt(option, fmt):
    """The TlvFormat of one ``set-proxy-v2-tlv-fmt(ID) FMT`` server option: ``option`` is
    the option word with its (ID), ``fmt`` the next word. ValueError with the reason."""
    prefix = TLV_FMT_OPTION + "("
    if not (option.startswith(prefix) and option.endswith(")")):
        raise ValueError("'%s' is not %s(ID) (expected a TLV type in parentheses, such as "
                         "%s(0xE1))" % (option, TLV_FMT_OPTION, TLV_FMT_OPTION))
    tlv_type = _tlv_sendable_type(parse_tlv_id(option[len(prefix):-1]))
    if fmt.startswith("%[") and fmt.endswith("]"):
        return TlvFormat(tlv_type, None, _tlv_forwarded_fetch(fmt))
    if "%" in fmt:
        raise ValueError("unsupported format '%s' (expected %s)" % (fmt, TLV_FMT_EXPECTED))
    literal = fmt.encode("utf-8", "surrogateescape")
    _tlv_check_literal(tlv_type, literal)
    return TlvFormat(tlv_type, literal, None)


def _tlv_sendable_type(tlv_type, fetch=None):
    """The type, unless it is the CRC32C's; ``fetch``: the %[...] that named it, if one did."""
    if tlv_type == PP2_TYPE_CRC32C:
        raise ValueError("%sTLV 0x03 is the CRC32C, which is never copied (expected "
                         "proxy-v2-options crc32c to compute a new one)"
                         % (fetch + ": " if fetch else ""))
    return tlv_type


def _tlv_forwarded_fetch(fmt):
    fetch = pp_fetch(fmt[2:-1])
    if fetch is None or fetch.kind != BYTES or fetch.tlv_type is None:
        raise ValueError("unsupported fetch '%s' in a format (expected %s)"
                         % (fmt, TLV_FMT_EXPECTED))
    _tlv_sendable_type(fetch.tlv_type, fmt)
    return fetch


def _tlv_check_literal(tlv_type, literal):
    """A literal value must make a header that simpleproxy itself would accept (an SSL TLV
    must frame as one, a UNIQUE_ID fit in 128 bytes), beside the smallest address block."""
    anywhere = ("0.0.0.0", 0)      # TCP4: its TLVs are checked strictly, unlike LOCAL's
    try:
        parse_header(build_v2(anywhere, anywhere, tlvs=[(tlv_type, literal)]),
                     max_size=16 + V2_MAX_LENGTH)
    except (ValueError, ProxyHeaderError) as exc:
        raise ValueError("the value cannot be sent as TLV 0x%02x: %s" % (tlv_type, exc))


def compile_tlv_plan(formats, v2_options):
    """The TlvPlan of one server from its TlvFormats (config order) and its set of
    proxy-v2-options words (V2_OPTION_WORDS). ValueError when two options would send the
    same AUTHORITY or UNIQUE_ID, or the literal values alone cannot fit in a header."""
    plan = TlvPlan("crc32c" in v2_options, "authority" in v2_options,
                   "unique-id" in v2_options, tuple(formats))
    for flag, word, tlv_type in ((plan.authority, "authority", PP2_TYPE_AUTHORITY),
                                 (plan.unique_id, "unique-id", PP2_TYPE_UNIQUE_ID)):
        if flag and any(tlv.tlv_type == tlv_type for tlv in plan.formats):
            raise ValueError("proxy-v2-options %s and %s(0x%02x) would both send TLV 0x%02x "
                             "(expected one of them)" % (word, TLV_FMT_OPTION, tlv_type, tlv_type))
    literals = sum(_TLV_HEAD + len(tlv.literal) for tlv in plan.formats if tlv.fetch is None)
    room = V2_MAX_LENGTH - _TLV_SMALLEST_ADDRESSES - (_TLV_HEAD + 4 if plan.crc32c else 0)
    if literals > room:
        raise ValueError("the literal set-proxy-v2-tlv-fmt values take %d bytes, more than a "
                         "v2 header holds beside IPv4 addresses%s (expected at most %d in all)"
                         % (literals, " and a CRC32C" if plan.crc32c else "", room))
    return plan


def max_header_length(plan, max_received_header):
    """The longest v2 header (bytes) the plan can produce when client headers are at most
    ``max_received_header`` bytes: above 16 + V2_MAX_LENGTH, some client headers will make
    building fail (OutgoingHeaderError), which config can warn about."""
    received_tlv_area = max(0, max_received_header - 16)
    references = {}
    length = 16 + _TLV_LARGEST_ADDRESSES + (_TLV_HEAD + 4 if plan.crc32c else 0)
    if plan.authority:
        references[PP2_TYPE_AUTHORITY] = 1
    if plan.unique_id:
        length += _TLV_HEAD + UNIQUE_ID_MAX
    for tlv in plan.formats:
        length += _TLV_HEAD
        if tlv.fetch is None:
            length += len(tlv.literal)
        elif tlv.fetch.tlv_type == PP2_TYPE_UNIQUE_ID:
            length += UNIQUE_ID_MAX
        else:
            references[tlv.fetch.tlv_type] = references.get(tlv.fetch.tlv_type, 0) + 1
    # Values forwarded from one client header share its TLV area; the worst case puts all of
    # it into the type forwarded most often.
    return length + max(references.values(), default=0) * (received_tlv_area + _TLV_HEAD)


def outgoing_tlvs(plan, header, new_unique_id):
    """The (type, value) TLVs to send for a client whose parsed header is ``header`` (None
    when it sent none), in wire order after the CRC32C. ``new_unique_id()`` is called only
    when a UNIQUE_ID must be made up."""
    tlvs = []
    if plan.authority:
        authority = tlv_value(header, PP2_TYPE_AUTHORITY)
        if authority is not None:
            tlvs.append((PP2_TYPE_AUTHORITY, authority))
    if plan.unique_id:
        tlvs.append((PP2_TYPE_UNIQUE_ID, tlv_value(header, PP2_TYPE_UNIQUE_ID) or new_unique_id()))
    for tlv in plan.formats:
        value = tlv.literal if tlv.fetch is None else tlv.fetch.read(header)
        if value is not None:
            tlvs.append((tlv.tlv_type, value))
    return tlvs


def build_server_header(plan, src, dst, header, new_unique_id, transport="STREAM"):
    """The v2 header for a server (see proxyproto.build_v2 for src, dst and transport: a
    client's DGRAM stays DGRAM) carrying the plan's TLVs; OutgoingHeaderError when it cannot
    be built."""
    try:
        if plan.template is not None and transport == "STREAM":
            return plan.template.build(src, dst)
        return build_v2(src, dst, tlvs=outgoing_tlvs(plan, header, new_unique_id),
                        crc32c=plan.crc32c, transport=transport)
    except ValueError as exc:
        raise OutgoingHeaderError("cannot build the v2 header: %s" % exc)
