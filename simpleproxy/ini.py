"""The INI reader: the file, its sections and keys with their line numbers, and its problems.

The file is configparser INI: ``key = value`` (``=`` is the only delimiter), keys keep
their case, ``#`` and ``;`` start a comment on a line of their own or after whitespace
(even inside quotes: write ``\\x23`` or ``\\x3b`` there), and indented lines continue the
value above them. A key without ``=`` is a flag (``option redispatch``).

Reading goes in two steps, both here:

1. A line scan. configparser keeps no line numbers, so the scan walks the lines by the
   same rules to learn which lines each section and key span. It also reports what
   configparser would stop at or choke on: duplicated sections and keys (a duplicated
   server name among them), and an indented line under a key that has no value.
2. configparser itself, which owns the INI syntax and the values.

What the keys mean is config.py's business. This module knows nothing of HAProxy's
words; it hands over sections of (key, value, line) entries and keeps the list of
problems, each one line, ``FILE:LINE: [SECTION] KEY: what is wrong (expected ...)``.
"""

import configparser
import os
import re
import stat
from collections import namedtuple

from .errors import ConfigError

MAX_CONFIG_BYTES = 16 * 1024 * 1024
"""A configuration is a few kilobytes; this stops ``-c /dev/zero`` or a log file given by
mistake from eating the memory before anything could be said about it."""

_INI_SHOWN_CHARACTERS = 60


def shown(text):
    """``text`` quoted for a message: control characters escaped, a long one cut short.

    Whatever a user wrote may be echoed back, so a token of a megabyte or an escape
    sequence must not reach the terminal as it is.
    """
    if len(text) <= _INI_SHOWN_CHARACTERS:
        return "'%s'" % _ini_printable(text)
    return "'%s...' (%d characters)" % (_ini_printable(text[:_INI_SHOWN_CHARACTERS]), len(text))


def _ini_printable(text):
    return "".join(char if char.isprintable() else _ini_escaped(char) for char in text)


def _ini_escaped(char):
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:
        code -= 0xDC00          # a lone surrogate stands for the byte of a \\xHH escape
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code


def _ini_short(text):
    """A section title or key for the start of a message: as ``shown``, without quotes."""
    return shown(text)[1:-1] if len(text) <= _INI_SHOWN_CHARACTERS else shown(text)


def read_config_file(path):
    """The text of the configuration file at ``path``; ConfigError with one line if unusable.

    A regular file, or a pipe (what ``-c <(generate-config)`` passes as /dev/fd/N); nothing
    else, and nothing over MAX_CONFIG_BYTES.
    """
    try:
        mode = os.stat(path).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ConfigError("%s: cannot read the file: it is %s (expected a regular file "
                              "or a pipe)" % (path, _ini_file_kind(mode)))
        with open(path, "rb") as f:
            raw = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError("%s: cannot read the file: %s (expected a readable INI file)"
                          % (path, exc.strerror or exc))
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError("%s: cannot read the file: it is larger than %d MiB (expected a "
                          "configuration of at most %d MiB)"
                          % (path, MAX_CONFIG_BYTES >> 20, MAX_CONFIG_BYTES >> 20))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError("%s:%d: byte 0x%02x is not UTF-8 (expected a UTF-8 text file)"
                          % (path, raw[:exc.start].count(b"\n") + 1, raw[exc.start]))


def _ini_file_kind(mode):
    for test, kind in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return kind
    return "not a regular file"


class ConfigProblems(object):
    """The errors and warnings of one configuration, each with its position."""

    def __init__(self, path):
        self.path = path
        self.errors = []
        self.warnings = []

    def _message(self, line, title, key, text):
        where = "%s:%d:" % (self.path, line) if line else "%s:" % self.path
        if title is not None:
            where += (" [%s] %s:" % (_ini_short(title), _ini_short(key)) if key else
                      " [%s]:" % _ini_short(title))
        # Escaped once more here, for messages made outside the config layer (rules.py,
        # tlvfmt.py) that quote a user's words without shown(); escaping is idempotent.
        return line, "%s %s" % (where, _ini_printable(text))

    def error(self, line, title, key, text):
        self.errors.append(self._message(line, title, key, text))

    def warn(self, line, title, key, text):
        self.warnings.append(self._message(line, title, key, text))

    def report(self, line, title, key, problems):
        """Record each problem as an error; True if there was none."""
        for problem in problems:
            self.error(line, title, key, problem)
        return not problems

    def raise_errors(self):
        """Raise one ConfigError with every error so far, sorted by line."""
        if self.errors:
            raise ConfigError([text for _, text in sorted(self.errors, key=lambda e: e[0])])

    def sorted_warnings(self):
        return tuple(text for _, text in sorted(self.warnings, key=lambda w: w[0]))


IniSection = namedtuple("IniSection", "title line entries")
IniSection.__doc__ = """A section: title, its words joined by one space; line: of its [header];
entries: IniEntry tuples in file order."""

IniEntry = namedtuple("IniEntry", "key value line lines")
IniEntry.__doc__ = """A key: its words joined by one space; value: text (continuation lines
joined by newlines) or None for a flag; line: where the key is; lines: the line of each
line of the value, as configparser joins them (blank lines included)."""


def read_ini(text, problems):
    """The sections of the INI ``text``; raises ConfigError after recording what is unreadable."""
    lines = text.replace("\r\n", "\n").split("\n")
    scanned = _ini_scan(lines, problems)
    problems.raise_errors()
    values = _ini_values(lines, problems)
    problems.raise_errors()
    return [IniSection(section.title, section.line,
                       [IniEntry(" ".join(key.split()), value, entry.line, entry.lines)
                        for (key, value), entry in zip(values[section.header], section.entries)])
            for section in scanned]


_IniScannedSection = namedtuple("_IniScannedSection", "header title line entries")
_IniScannedEntry = namedtuple("_IniScannedEntry", "key line lines")
# header: as configparser names the section. key: as scanned (values are looked up in order,
# with configparser's own key).

_INI_COMMENT = re.compile(r"(?:^|(?<=\s))[#;]")


def _ini_scan(lines, problems):
    """Sections and keys with their lines; reports duplicates and continued flags."""
    sections = []
    section_lines = {}
    key_lines = {}
    entry = None
    indent = 0
    for number, line in enumerate(lines, 1):
        content = _INI_COMMENT.split(line, 1)[0].strip()
        if not content:
            if entry is not None and entry.lines and not line.strip():
                entry.lines.append(number)          # a blank line inside a value
            continue
        line_indent = len(line) - len(line.lstrip())
        if entry is not None and line_indent > indent:
            if entry.lines:
                entry.lines.append(number)
            else:
                problems.error(number, sections[-1].title, entry.key,
                               "an indented line continues a key that has no value (expected "
                               "'%s = ...' above it, or no indent)" % entry.key)
            continue
        indent = line_indent
        entry = None
        header = configparser.RawConfigParser.SECTCRE.match(content)
        if header:
            section = _IniScannedSection(header.group("header"),
                                         " ".join(header.group("header").split()), number, [])
            if section.title in section_lines:
                problems.error(number, section.title, None, "duplicated section (first defined "
                               "on line %d)" % section_lines[section.title])
            section_lines.setdefault(section.title, number)
            key_lines = {}
            sections.append(section)
            continue
        key, equals, _ = content.partition("=")
        key = " ".join(key.split())
        if not sections or not key:
            continue                            # configparser reports these lines itself
        entry = _IniScannedEntry(key, number, [number] if equals else [])
        if key in key_lines:
            what = "server name" if key.split()[0] == "server" else "key"
            problems.error(number, sections[-1].title, key, "duplicated %s (first defined on "
                           "line %d)" % (what, key_lines[key]))
        key_lines.setdefault(key, number)
        sections[-1].entries.append(entry)
    return sections


def _ini_values(lines, problems):
    """configparser's reading of the lines: {header: [(key, value or None), ...]}."""
    parser = configparser.RawConfigParser(
        delimiters=("=",), comment_prefixes=("#", ";"), inline_comment_prefixes=("#", ";"),
        allow_no_value=True, strict=True, default_section="")   # no section can be named ""
    parser.optionxform = str
    try:
        parser.read_file(lines, source=problems.path)
    except configparser.MissingSectionHeaderError as exc:
        problems.error(exc.lineno, None, None, "%s comes before any section (expected a "
                       "[section] line first)" % shown(lines[exc.lineno - 1].strip()))
    except configparser.ParsingError as exc:
        for number, _ in exc.errors:     # the line is a repr before Python 3.13: not shown
            problems.error(number, None, None, "cannot read %s (expected KEY = VALUE, a flag, "
                           "[SECTION] or a comment)" % shown(lines[number - 1].strip()))
    return {header: list(parser[header].items()) for header in parser.sections()}

# -- the words of an option line ----------------------------------------------------------------

_INI_WORD = re.compile(r'"(?P<quoted>(?:[^"\\\n]|\\.)*)"|(?P<plain>[^\s"]+)')
_INI_ESCAPE = re.compile(r"\\(x[0-9A-Fa-f]{2}|.)")
_INI_ESCAPES = {"r": "\r", "n": "\n", "t": "\t", "\\": "\\", '"': '"'}


def split_words(text):
    """Split on whitespace; a double-quoted word keeps its spaces and decodes its escapes.

    \\xHH above 0x7f becomes a lone surrogate, so that encoding the word with
    surrogateescape gives back exactly that byte while other text stays UTF-8.
    Raises ValueError with the reason for bad quoting.
    """
    words = []
    position = 0
    while position < len(text):
        if text[position].isspace():
            position += 1
            continue
        match = _INI_WORD.match(text, position)
        if match is None:
            raise ValueError("unterminated quoted string %s (expected a closing \")"
                             % shown(text[position:]))
        position = match.end()
        if position < len(text) and not text[position].isspace():
            raise ValueError("%s runs into a quote (expected whitespace around a quoted string)"
                             % shown(text[match.start():].split()[0]))
        quoted = match.group("quoted")
        words.append(match.group("plain") if quoted is None else
                     _INI_ESCAPE.sub(_ini_unescape, quoted))
    return words


def _ini_unescape(match):
    code = match.group(1)
    if code in _INI_ESCAPES:
        return _INI_ESCAPES[code]
    if len(code) == 3:
        byte = int(code[1:], 16)
        return chr(byte) if byte < 0x80 else chr(0xDC00 + byte)
    raise ValueError("unknown escape %s (expected \\r, \\n, \\t, \\\\, \\\" or \\xHH)"
                     % shown("\\" + code))
