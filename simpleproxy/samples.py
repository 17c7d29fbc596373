"""HAProxy's sample fetches on what the client's PROXY header carried.

ACL criteria (rules.py) and ``set-proxy-v2-tlv-fmt`` formats (tlvfmt.py) name the same
fetches, in HAProxy's words: ``fc_pp_authority``, ``fc_pp_unique_id``, ``fc_pp_tlv(ID)``,
and the cloud values that HAProxy only offers as raw bytes, decoded here under names of
their own: ``fc_pp_aws_vpce`` (the VPC endpoint ID text), ``fc_pp_azure_linkid`` and
``fc_pp_gcp_psc`` (integers). A fetch name is read once, at config time, into a PpFetch
whose ``read(header)`` takes the parsed header (None when none came) and answers the value
or None when the header did not carry it: nothing is parsed per connection.
"""

import re
from collections import namedtuple

from .proxyproto import (
    PP2_TYPE_AUTHORITY, PP2_TYPE_AWS, PP2_TYPE_AZURE, PP2_TYPE_GCP, PP2_TYPE_UNIQUE_ID,
    decoded_tlv, tlv_value)

BYTES = "bytes"        # a fetch that gives the bytes of a TLV (text criteria match on them)
INTEGER = "integer"    # a fetch that gives a number

PpFetch = namedtuple("PpFetch", "name kind tlv_type read")
PpFetch.__doc__ = """One fetch on the received header: ``name`` as written (for messages),
``kind`` BYTES or INTEGER, ``tlv_type`` the TLV whose raw value it gives (None for the
decoded cloud values), ``read(header)`` the value or None."""

_SAMPLE_CALL = re.compile(r"(?P<name>[a-z0-9_.]+)(?:\((?P<arg>[^()]*)\))?\Z")
_SAMPLE_TLV_ID = re.compile(r"0[xX][0-9A-Fa-f]{1,2}\Z|[0-9]{1,3}\Z")


def parse_tlv_id(text):
    """A TLV type written in decimal or 0x hex, 0 to 255; ValueError otherwise."""
    if _SAMPLE_TLV_ID.match(text):
        tlv_type = int(text, 16 if text[:2] in ("0x", "0X") else 10)
        if tlv_type <= 0xFF:
            return tlv_type
    raise ValueError("'%s' is not a TLV type (expected 0 to 255, in decimal or 0x hex)" % text)


def _sample_aws_vpce(header):
    text = decoded_tlv(header, PP2_TYPE_AWS)
    return None if text is None else text.encode("ascii")


def _sample_tlv_reader(tlv_type):
    return lambda header: tlv_value(header, tlv_type)


# name -> (kind, raw TLV type or None, read(header)), for the fetches without an argument
_SAMPLE_PP_FETCHES = {
    "fc_pp_authority": (BYTES, PP2_TYPE_AUTHORITY, _sample_tlv_reader(PP2_TYPE_AUTHORITY)),
    "fc_pp_unique_id": (BYTES, PP2_TYPE_UNIQUE_ID, _sample_tlv_reader(PP2_TYPE_UNIQUE_ID)),
    "fc_pp_aws_vpce": (BYTES, None, _sample_aws_vpce),
    "fc_pp_azure_linkid": (INTEGER, None, lambda header: decoded_tlv(header, PP2_TYPE_AZURE)),
    "fc_pp_gcp_psc": (INTEGER, None, lambda header: decoded_tlv(header, PP2_TYPE_GCP)),
}
PP_FETCH_NAMES = ("fc_pp_authority", "fc_pp_unique_id", "fc_pp_tlv(ID)", "fc_pp_aws_vpce",
                  "fc_pp_azure_linkid", "fc_pp_gcp_psc")


def split_sample_call(text):
    """(name, argument text or None) of ``name`` or ``name(arg)``; ValueError for anything
    else (nested or unbalanced parentheses, converters after a comma)."""
    match = _SAMPLE_CALL.match(text)
    if match is None:
        raise ValueError("'%s' is not a fetch name with an optional (argument) (converters "
                         "such as ',lower' are not supported)" % text)
    return match.group("name"), match.group("arg")


def pp_fetch(text):
    """The PpFetch that ``text`` names, or None when it is not one of PP_FETCH_NAMES.
    ValueError for a known name with a wrong argument."""
    name, arg = split_sample_call(text)
    if name == "fc_pp_tlv":
        if arg is None:
            raise ValueError("fc_pp_tlv needs a TLV type (expected fc_pp_tlv(ID), such as "
                             "fc_pp_tlv(0xEA))")
        tlv_type = parse_tlv_id(arg)
        return PpFetch(text, BYTES, tlv_type, _sample_tlv_reader(tlv_type))
    if name not in _SAMPLE_PP_FETCHES:
        return None
    if arg is not None:
        raise ValueError("%s takes no argument (expected %s alone)" % (name, name))
    return PpFetch(text, *_SAMPLE_PP_FETCHES[name])
