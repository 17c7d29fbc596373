"""Rules on who the client is and what its PROXY header said: acl, use_backend, tcp-request.

The words are HAProxy's, in the INI form of a [frontend] or [listen] section (a key is
unique in its section, so an acl's name goes into its key, and ordered rules are the lines
of one key, as bind's are)::

    acl tenant_a = fc_pp_aws_vpce vpce-0abc123
    acl site = fc_pp_authority -m end .example.com
    use_backend = be_a if tenant_a
                  be_site if site !tenant_a
                  be_lan if { src 10.0.0.0/8 } || { src 192.168.0.0/16 }
    tcp-request connection = reject if { src 203.0.113.0/24 }
    tcp-request content = reject if { fc_pp_authority -m str evil.example }

* ``acl NAME = CRITERION [-i] [-m METHOD] [--] VALUE...``: true when the criterion's value
  matches any VALUE. Criteria: ``src``, ``dst`` (IPv4/IPv6 addresses and CIDR networks; an
  IPv4-mapped IPv6 address is the IPv4 address it carries, on either side), ``src_port``,
  ``dst_port`` (numbers and ``LOW:HIGH`` ranges), and the header fetches of samples.py.
  Text criteria match with ``-m str`` (the default), ``beg``, ``end``, ``sub`` or ``reg``
  (a Python regular expression, searched), ``-i`` ignoring ASCII case; every criterion
  takes ``-m found`` (the value is there at all, no VALUE).
* A condition (after ``if`` or ``unless``) is HAProxy's: acl names, ``!`` to negate,
  juxtaposition for "and", ``||`` or ``or`` between alternatives, and anonymous
  ``{ CRITERION ... }`` acls, braces standing as words of their own.
* ``use_backend``: tried in order, the first whose condition holds names the backend;
  none: ``default_backend``. ``tcp-request connection`` is judged on the real peer as soon
  as the connection is accepted, before any header is read (so it cannot use header
  criteria); ``tcp-request content`` once the header is in. Their actions are ``accept``
  (stop judging, go on) and ``reject`` (close).

src and dst are the real peer and local address in ``tcp-request connection``; later they
are the client and destination the header named (the real ones when it named none), as in
HAProxy. A criterion whose value is missing (no header, no such TLV, a Unix-socket client
for ``src``) matches nothing, so its negation holds.

Everything is compiled at config time: ``compile_acl`` and ``compile_rule`` read the words
(already split by the config reader, quotes removed) into Acl and Rule objects holding plain
closures, and raise ValueError with a one-line reason that the config layer prefixes with
FILE:LINE. Per connection the session builds a RuleFacts at each stage and calls
``first_match``. There is no eval and no parsing per connection.
"""

import ipaddress
import re
from collections import namedtuple

from .proxyproto import packed_ip
from .samples import BYTES, INTEGER, PP_FETCH_NAMES, pp_fetch, split_sample_call

USE_BACKEND = "use_backend"
TCP_REQUEST_CONNECTION = "tcp-request connection"
TCP_REQUEST_CONTENT = "tcp-request content"
ACCEPT = "accept"
REJECT = "reject"

RuleFacts = namedtuple("RuleFacts", "src src_port dst dst_port header")
RuleFacts.__doc__ = """What rules judge, made once per stage of a connection by
``facts_at_accept`` or ``facts_after_header``: src and dst as (4 or 6, the address as an
integer) or None, their ports or None, and the parsed PROXY header or None."""

Acl = namedtuple("Acl", "name test reads_header")
Acl.__doc__ = """A compiled acl: ``test(facts)`` answers True or False; ``reads_header``
is True when it looks at the PROXY header (not allowed in tcp-request connection)."""

Rule = namedtuple("Rule", "name action test")
Rule.__doc__ = """One rule line: ``name`` as logs say it (``use_backend:2``,
``tcp-request-connection:1``, ``tcp-request-content:1``: the key, then the line's number
within it, from 1), ``action`` the backend name or ACCEPT/REJECT, ``test(facts)``."""

FrontendRules = namedtuple("FrontendRules", "connection content use_backend")
FrontendRules.__doc__ = """A frontend's rules, each a tuple of Rule in config order."""

NO_RULES = FrontendRules((), (), ())

_RULE_ADDRESS = "address"
_RULE_FACT_FETCHES = {   # criterion -> (kind, field of RuleFacts)
    "src": (_RULE_ADDRESS, "src"),
    "dst": (_RULE_ADDRESS, "dst"),
    "src_port": (INTEGER, "src_port"),
    "dst_port": (INTEGER, "dst_port"),
}
_RULE_CRITERIA = ("src", "src_port", "dst", "dst_port") + PP_FETCH_NAMES
_RULE_METHODS = {
    BYTES: ("str", "beg", "end", "sub", "reg", "found"),
    INTEGER: ("int", "found"),
    _RULE_ADDRESS: ("ip", "found"),
}
_RULE_KIND_WORDS = {BYTES: "text", INTEGER: "a number", _RULE_ADDRESS: "an address"}
_RULE_ALL_METHODS = ("beg", "end", "found", "int", "ip", "reg", "str", "sub")
_RULE_ACL_NAME = re.compile(r"[A-Za-z0-9_.:-]+\Z")
_RULE_RANGE = re.compile(r"([0-9]*):([0-9]*)\Z")
_RULE_V4_MAPPED = ipaddress.ip_network("::ffff:0:0/96")


def facts_at_accept(peer, local):
    """The RuleFacts of tcp-request connection: the real peer and the local address it
    reached, (host, port, ...) as sockets give them or a str for a Unix socket."""
    return _rule_facts(peer, local, None)


def facts_after_header(peer, local, header):
    """The RuleFacts of tcp-request content and use_backend: the client and destination the
    header named, or the real peer and local address when it named none (no header, LOCAL,
    UNKNOWN); a UNIX header names paths, which no address criterion matches."""
    if header is None or not header.has_addresses:
        return _rule_facts(peer, local, header)
    if header.src_port is None:
        return _rule_facts(header.src_addr, header.dst_addr, header)
    return _rule_facts((header.src_addr, header.src_port), (header.dst_addr, header.dst_port),
                       header)


def _rule_facts(src, dst, header):
    src_ip, src_port = _rule_endpoint(src)
    dst_ip, dst_port = _rule_endpoint(dst)
    return RuleFacts(src_ip, src_port, dst_ip, dst_port, header)


def _rule_endpoint(endpoint):
    if not isinstance(endpoint, tuple):
        return None, None
    packed = packed_ip(endpoint[0])
    return (4 if len(packed) == 4 else 6, int.from_bytes(packed, "big")), endpoint[1]


def first_match(rules, facts):
    """The first Rule of ``rules`` whose condition holds for ``facts``, or None."""
    for rule in rules:
        if rule.test(facts):
            return rule
    return None


# -- acls ---------------------------------------------------------------------------------

def compile_acl(name, words):
    """The Acl ``acl NAME = WORDS``; ValueError with the reason."""
    if not _RULE_ACL_NAME.match(name):
        raise ValueError("'%s' is not an acl name (expected letters, digits, '.', ':', '-' "
                         "and '_')" % name)
    return _rule_acl(name, words)


def _rule_acl(name, words):
    if not words:
        raise ValueError("no criterion (expected CRITERION [-i] [-m METHOD] VALUE..., with a "
                         "criterion among: %s)" % ", ".join(_RULE_CRITERIA))
    criterion = words[0]
    kind, read, reads_header = _rule_criterion(criterion)
    method, ignore_case, values = _rule_flags(words[1:])
    method = method or _RULE_METHODS[kind][0]
    if method not in _RULE_METHODS[kind]:
        raise ValueError("-m %s does not apply to %s, which gives %s (expected %s)"
                         % (method, criterion, _RULE_KIND_WORDS[kind],
                            " or ".join("-m " + each for each in _RULE_METHODS[kind])))
    if ignore_case and kind != BYTES:
        raise ValueError("-i does not apply to %s, which gives %s (expected it on text "
                         "criteria only)" % (criterion, _RULE_KIND_WORDS[kind]))
    if method == "found":
        if values:
            raise ValueError("-m found takes no value, got '%s' (expected %s -m found alone)"
                             % (" ".join(values), criterion))
        return Acl(name, lambda facts: read(facts) is not None, reads_header)
    if not values:
        raise ValueError("%s needs at least one value to match (expected %s [-m METHOD] "
                         "VALUE..., or -m found)" % (criterion, criterion))
    match = _RULE_MATCHERS[method](values, ignore_case)

    def test(facts):
        value = read(facts)
        return value is not None and match(value)
    return Acl(name, test, reads_header)


def _rule_criterion(criterion):
    """(kind, read(facts), reads_header) of a criterion word."""
    if criterion in _RULE_FACT_FETCHES:
        kind, field = _RULE_FACT_FETCHES[criterion]
        index = RuleFacts._fields.index(field)
        return kind, lambda facts: facts[index], False
    name = split_sample_call(criterion)[0]
    fetch = pp_fetch(criterion)
    if fetch is None:
        raise ValueError("unknown criterion '%s' (expected one of: %s)"
                         % (name, ", ".join(_RULE_CRITERIA)))
    read_header = fetch.read
    return fetch.kind, lambda facts: read_header(facts.header), True


def _rule_flags(words):
    """(method or None, ignore_case, values) from the words after the criterion."""
    method, ignore_case = None, False
    position = 0
    while position < len(words) and words[position].startswith("-"):
        flag = words[position]
        position += 1
        if flag == "--":
            break
        if flag == "-i":
            ignore_case = True
        elif flag == "-m":
            if position == len(words):
                raise ValueError("-m needs a method (expected -m followed by one of: %s)"
                                 % ", ".join(_RULE_ALL_METHODS))
            method = words[position]
            position += 1
            if method not in _RULE_ALL_METHODS:
                raise ValueError("unsupported match method '%s' (expected one of: %s)"
                                 % (method, ", ".join(_RULE_ALL_METHODS)))
        else:
            raise ValueError("unsupported flag '%s' (expected -i, -m METHOD, or -- before a "
                             "value that starts with '-')" % flag)
    return method, ignore_case, words[position:]


# -- matchers: values -> match(sample), built once ------------------------------------------

def _rule_text_values(values, ignore_case):
    patterns = [value.encode("utf-8", "surrogateescape") for value in values]
    return [pattern.lower() for pattern in patterns] if ignore_case else patterns


def _rule_text_matcher(compare):
    """A matcher factory for text methods: compare(sample, patterns) on prepared patterns."""
    def build(values, ignore_case):
        patterns = tuple(_rule_text_values(values, ignore_case))
        if ignore_case:
            return lambda sample: compare(sample.lower(), patterns)
        return lambda sample: compare(sample, patterns)
    return build


def _rule_str_matcher(values, ignore_case):
    patterns = frozenset(_rule_text_values(values, ignore_case))
    if ignore_case:
        return lambda sample: sample.lower() in patterns
    return lambda sample: sample in patterns


def _rule_reg_matcher(values, ignore_case):
    flags = re.IGNORECASE if ignore_case else 0
    regexes = []
    for value in values:
        try:
            regexes.append(re.compile(value.encode("utf-8", "surrogateescape"), flags))
        except re.error as exc:
            raise ValueError("'%s' is not a regular expression: %s (expected a Python "
                             "regular expression)" % (value, exc))
    return lambda sample: any(regex.search(sample) for regex in regexes)


def _rule_int_matcher(values, ignore_case):
    ranges = tuple(_rule_int_range(value) for value in values)
    return lambda sample: any(low <= sample <= high for low, high in ranges)


def _rule_int_range(text):
    """(low, high) of ``N``, ``LOW:HIGH``, ``LOW:`` or ``:HIGH``."""
    if text.isdigit():
        return int(text), int(text)
    match = _RULE_RANGE.match(text)
    if match is None or match.group(0) == ":":
        raise ValueError("'%s' is not a number or range (expected N, LOW:HIGH, LOW: or :HIGH)"
                         % text)
    low, high = match.groups()
    return int(low or 0), int(high) if high else float("inf")


def _rule_ip_matcher(values, ignore_case):
    networks = {4: [], 6: []}
    for value in values:
        network = parse_network(value)
        networks[network.version].append((int(network.network_address), int(network.netmask)))
    by_version = {version: tuple(entries) for version, entries in networks.items()}

    def match(sample):
        version, address = sample
        return any(address & mask == network for network, mask in by_version[version])
    return match


def parse_network(text, expected="an IPv4 or IPv6 address or CIDR, such as 10.0.0.0/8"):
    """An ipaddress network from an address or CIDR text (ValueError with the reason, and
    ``expected`` to say what to write instead); an IPv4-mapped IPv6 network is the IPv4
    network it maps, as IPv4-mapped addresses are compared as IPv4 (proxyproto.packed_ip).
    acl criteria and the trust lists of a bind (accept-proxy-from) both read networks here."""
    try:
        network = ipaddress.ip_network(text)
    except ValueError:
        try:
            network = ipaddress.ip_network(text, strict=False)
        except ValueError:
            raise ValueError("'%s' is not an address or network (expected %s)"
                             % (text, expected))
        raise ValueError("'%s' has host bits set (expected %s)" % (text, network))
    if network.prefixlen >= 96 and network.network_address in _RULE_V4_MAPPED:
        return ipaddress.ip_network((network.network_address.ipv4_mapped,
                                     network.prefixlen - 96))
    return network


_RULE_MATCHERS = {
    "str": _rule_str_matcher,
    "beg": _rule_text_matcher(lambda sample, patterns: sample.startswith(patterns)),
    "end": _rule_text_matcher(lambda sample, patterns: sample.endswith(patterns)),
    "sub": _rule_text_matcher(lambda sample, patterns: any(p in sample for p in patterns)),
    "reg": _rule_reg_matcher,
    "int": _rule_int_matcher,
    "ip": _rule_ip_matcher,
}


# -- conditions and rules ---------------------------------------------------------------------

def compile_rule(kind, number, words, acls, backends=()):
    """The Rule of line ``number`` (from 1) of a ``kind`` key (USE_BACKEND,
    TCP_REQUEST_CONNECTION, TCP_REQUEST_CONTENT): ``ACTION [if|unless CONDITION]``, where
    ACTION is a backend name (one of ``backends``) or accept/reject. ``acls``: {name: Acl}
    of the section. ValueError with the reason."""
    if not words:
        raise ValueError("an empty rule (expected %s)" % _rule_shape(kind))
    action = words[0]
    if kind == USE_BACKEND:
        if "%[" in action:
            raise ValueError("'%s': backend names made from samples are not supported "
                             "(expected a backend name)" % action)
        if action not in backends:
            raise ValueError("no backend named '%s' (backends: %s)"
                             % (action, ", ".join(sorted(backends)) or "none"))
    elif action not in (ACCEPT, REJECT):
        raise ValueError("unsupported action '%s' (expected %s)" % (action, _rule_shape(kind)))
    test, reads_header = _rule_condition(words[1:], acls, kind)
    if reads_header and kind == TCP_REQUEST_CONNECTION:
        raise ValueError("tcp-request connection rules are judged before the PROXY header is "
                         "read (expected src, dst, src_port or dst_port only; use "
                         "tcp-request content for header criteria)")
    return Rule("%s:%d" % (kind.replace(" ", "-"), number), action, test)


def _rule_shape(kind):
    action = "BACKEND" if kind == USE_BACKEND else "accept or reject"
    return "%s [if|unless CONDITION]" % action


def _rule_condition(words, acls, kind):
    """(test(facts), reads_header) for ``[if|unless CONDITION]``; no words: always true."""
    if not words:
        return (lambda facts: True), False
    keyword = words[0]
    if keyword not in ("if", "unless"):
        raise ValueError("'%s' after the action (expected %s)" % (keyword, _rule_shape(kind)))
    if len(words) == 1:
        raise ValueError("'%s' needs a condition (expected acl names, '!', '||' and "
                         "{ CRITERION VALUE } blocks)" % keyword)
    alternatives = _rule_alternatives(words[1:], acls)
    reads_header = any(acl.reads_header for terms in alternatives for acl, _ in terms)
    tests = tuple(tuple((acl.test, negated) for acl, negated in terms) for terms in alternatives)
    holds_if = keyword == "if"

    def test(facts):
        for terms in tests:
            for acl_test, negated in terms:
                if acl_test(facts) == negated:
                    break
            else:
                return holds_if
        return not holds_if
    return test, reads_header


def _rule_alternatives(words, acls):
    """The condition as alternatives ("or") of terms ("and"), each (Acl, negated)."""
    alternatives = [[]]
    position, negated = 0, False
    while position < len(words):
        word = words[position]
        position += 1
        if word in ("||", "or"):
            if negated or not alternatives[-1]:
                raise ValueError("'%s' needs a condition on both sides" % word)
            alternatives.append([])
            continue
        if word == "!":
            negated = not negated
            continue
        if word.startswith("!") and word != "!{":
            negated, word = not negated, word[1:]
        if word == "{":
            end = _rule_block_end(words, position)
            acl = _rule_acl("{ %s }" % " ".join(words[position:end]), words[position:end])
            position = end + 1
        elif word == "}":
            raise ValueError("unbalanced braces: '}' without '{'")
        elif "{" in word or "}" in word:
            raise ValueError("'%s': a brace must be a word of its own (expected spaces "
                             "around '{' and '}')" % word)
        else:
            acl = _rule_known_acl(word, acls)
        alternatives[-1].append((acl, negated))
        negated = False
    if negated or not alternatives[-1]:
        raise ValueError("the condition ends with '%s' (expected an acl after it)" % words[-1])
    return alternatives


def _rule_block_end(words, start):
    """The position of the '}' that closes the block opened just before ``start``."""
    for position in range(start, len(words)):
        if words[position] == "}":
            return position
        if words[position] == "{":
            break
    raise ValueError("unbalanced braces: '{' without '}' (anonymous acls do not nest)")


def _rule_known_acl(name, acls):
    if name in acls:
        return acls[name]
    known = ", ".join(sorted(acls))
    raise ValueError("unknown acl '%s' (%s)" % (
        name, "acls in this section: %s" % known if known else "no acl is defined in this section"))
