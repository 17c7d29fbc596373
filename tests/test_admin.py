"""The runtime API's protocol: bytes in, bytes out, against a reference target over real
BackendPools (tests/stats_support.py)."""
import pytest

from simpleproxy.admin import MAX_LINE, AdminConversation
from simpleproxy.balancer import DRAIN, MAINT, READY, UP
from stats_support import ReferenceTarget


def talk(data, level="admin", target=None):
    conversation = AdminConversation(target or ReferenceTarget(), level)
    out = conversation.feed(data)
    return out, conversation.closed


@pytest.mark.parametrize("line, answer", [
    # HAProxy 2.6.12's answers, byte for byte.
    (b"set server app/s1 state drain\n", b"\n"),
    (b"set server app/zz state drain\n", b"No such server.\n\n"),
    (b"set server zz/s1 state drain\n", b"No such backend.\n\n"),
    (b"set server app/s1 state bogus\n",
     b"'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"),
    (b"set server app/s1 weight 5\n", b"\n"),
    (b"set server app/s1 weight 300\n",
     b"Absolute weight can only be between 0 and 256 inclusive.\n\n"),
    (b"set server app/s1 weight x\n", b"Empty weight string empty or preceded by garbage\n"),
    (b"set maxconn server app/s1 10\n", b"\n"),
    (b"set maxconn server app/s1 x\n", b"maxconn string empty or preceded by garbage\n"),
    (b"set maxconn server app/s1 5x\n", b"Trailing garbage in maxconn string\n"),
    # HAProxy takes a negative maxconn silently; refused here, with the range.
    (b"set maxconn server app/s1 -3\n", b"maxconn must be between 0 (no limit) and "
                                          b"2147483647.\n\n"),
    (b"disable server app/s1\n", b"\n"),
    (b"enable server app/s1\n", b"\n"),
    (b"disable server app/zz\n", b"No such server.\n\n"),
    (b"set server\n", b"Require 'backend/server'.\n\n"),
    (b"show servers state zz\n", b"Can't find backend.\n\n"),
    (b"set server app/s1 weight 1;set server app/s1 weight 1\n", b"\n\n"),
    (b"set server app/s1 weight 1\r\n", b"\n"),
    (b"set server app/s1 weight\n", b"Require <weight> or <weight%>.\n\n"),
    (b"set server app/s1 weight -1\n",
     b"Absolute weight can only be between 0 and 256 inclusive.\n\n"),
    (b"set server app/s1 weight \xc2\xb2\n", b"Empty weight string empty or preceded by garbage\n"),
    (b"set server app/s1 state\n",
     b"'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n\n"),
    (b"set maxconn server app/s1\n", b"Require <maxconn>.\n\n"),
    (b"set maxconn server app/zz 4\n", b"No such server.\n\n"),
    (b"get weight app/s2\n", b"3 (initial 3)\n\n"),
    (b"get weight app/zz\n", b"No such server.\n\n"),
    (b"get weight\n", b"Require 'backend/server'.\n\n"),
    (b"set weight app/s1 4\n", b"\n"),
    (b"set weight app/s1\n", b"Require <weight> or <weight%>.\n\n"),
    (b"set weight app/zz 3\n", b"No such server.\n\n"),
    (b"set timeout cli 60\n", b"\n"),
    (b"set timeout cli 2m\n", b"\n"),
    (b"set timeout cli\n", b"Expects an integer value.\n\n"),
    (b"set timeout cli 0\n", b"Invalid timeout value.\n\n"),
    (b"set timeout cli soon\n", b"Invalid timeout value.\n\n"),
    (b"set timeout server 5\n", b"'set timeout' only supports 'cli'.\n\n"),
    # Relative weights (hatop's F4 sends "100%"), as HAProxy 2.6.12 reads them.
    (b"set weight app/s1 100%\n", b"\n"),
    (b"set server app/s2 weight 50%\n", b"\n"),
    (b"set weight app/s1 -5%\n", b"Relative weight must be positive.\n\n"),
    (b"set weight app/s1 1x\n", b"Trailing garbage in weight string\n"),
    (b"set weight app/s1 5%x\n", b"Trailing garbage in weight string\n"),
    (b"set weight app/s1 %\n", b"Empty weight string empty or preceded by garbage\n"),
])
def test_answers_as_haproxy(line, answer):
    assert talk(line) == (answer, True)


def test_unknown_command_suggests():
    out, closed = talk(b"show nothing\n")
    lines = out.decode().split("\n")
    assert lines[0] == "Unknown command, but maybe one of the following ones is a better match:"
    assert lines[1].startswith("  show errors ") and out.endswith(b"  quit" + b" " * 36 +
                                                                 b": disconnect\n\n")
    assert closed
    # HAProxy 2.6 answers "maybe one of" to any word it does not know (its guesses are fuzzy;
    # here all commands), and "Please enter" only to an empty command.
    out, _ = talk(b"frobnicate\n")
    assert out.startswith(b"Unknown command, but maybe one of the following ones is a better "
                          b"match:\n  disable server ")
    out, _ = talk(b"\n")
    assert out.startswith(b"Unknown command. Please enter one of the following commands only:\n")
    out, _ = talk(b"quit now\n")
    assert out.count(b"  quit ") == 1


def test_help_lists_commands_in_haproxy_layout():
    out, _ = talk(b"help\n")
    assert out.startswith(b"The following commands are valid at this level:\n")
    assert b"  show servers state [<backend>]          : dump volatile server information " \
           b"(all or for a single backend)\n" in out
    user_help, _ = talk(b"help\n", "user")
    assert b"set server" not in user_help and b"show stat" in user_help
    set_help, _ = talk(b"help set\n")
    assert [line.split()[:2] for line in set_help.decode().splitlines()[1:] if line] == [
        ["set", "maxconn"], ["set", "server"], ["set", "timeout"], ["set", "weight"],
        ["help", "[<command>]"],
        ["prompt", ":"], ["quit", ":"]]


@pytest.mark.parametrize("line", [b"set server app/s1 state drain\n", b"disable server app/s1\n",
                                  b"enable server app/s1\n", b"set server app/s1 weight 2\n",
                                  b"set weight app/s1 2\n", b"set maxconn server app/s1 5\n"])
def test_level_user_is_read_only(line):
    target = ReferenceTarget()
    assert talk(line, "user", target) == (b"Permission denied\n\n", True)
    s1 = target.stats.backend("app").servers[0].state
    assert (s1.admin, s1.weight, s1.maxconn) == (READY, 1, 0)


def test_show_stat_filters_and_typed():
    out, _ = talk(b"show stat -1 2 -1\n")
    assert [line.split(",")[:2] for line in out.decode().splitlines()[1:] if line] == \
        [["app", "BACKEND"], ["db", "BACKEND"]]
    out, _ = talk(b"show stat 3 4 -1 typed\n")
    assert out.startswith(b"S.3.1.0.pxname.1:KNS:str:db\n") and out.endswith(b"\n\n")
    assert b"BACKEND" not in out


@pytest.mark.parametrize("line, rows", [
    # As HAProxy 2.6 reads IID TYPE SID: IID an id or a proxy's name; a TYPE or SID that is
    # not a number is 0 (atoi); fewer than three words filter nothing.
    (b"show stat app 4 -1\n", [["app", "s1"], ["app", "s2"], ["app", "s3"]]),
    (b"show stat db 3 -1\n", [["db", "FRONTEND"], ["db", "BACKEND"]]),
    (b"show stat 99 4 -1\n", []),
    (b"show stat app x -1\n", []),
    (b"show stat db 7 y\n", [["db", "FRONTEND"], ["db", "BACKEND"]]),
])
def test_show_stat_reads_filters_as_haproxy(line, rows):
    out, _ = talk(line)
    assert out.startswith(b"# pxname,")
    assert [row.split(",")[:2] for row in out.decode().splitlines()[1:] if row] == rows


@pytest.mark.parametrize("line", [b"show stat nope 4 -1\n", b"show stat typed -1 2 -1\n"])
def test_show_stat_unknown_proxy(line):
    assert talk(line) == (b"No such proxy.\n\n", True)


@pytest.mark.parametrize("line, seconds", [(b"set timeout cli 60\n", 60),
                                           (b"set timeout cli 1500ms\n", 1.5)])
def test_set_timeout_cli_is_the_conversations_own(line, seconds):
    conversation = AdminConversation(ReferenceTarget(), "user")     # any level, as HAProxy
    assert conversation.timeout is None
    conversation.feed(line)
    assert conversation.timeout == seconds


def test_level_user_may_look():
    out, _ = talk(b"show stat\n", "user")
    assert out.startswith(b"# pxname,svname,") and out.endswith(b",\n\n")


def test_commands_change_the_pool():
    target = ReferenceTarget()
    pool = target.stats.backend("app").pool
    s1, s2 = pool.servers[0], pool.servers[1]
    talk(b"set server app/s1 state drain\n", target=target)
    assert (s1.admin, s1.status) == (DRAIN, DRAIN) and pool.candidates == [s2]
    talk(b"set server app/s1 state maint\n", target=target)
    assert s1.status == MAINT
    talk(b"enable server app/s1\n", target=target)
    assert s1.status == UP and pool.candidates == [s1, s2]
    talk(b"set server app/s2 weight 0\n", target=target)
    assert pool.candidates == [s1]
    talk(b"set weight app/s1 0\n", target=target)
    assert pool.candidates == [pool.servers[2]]          # the backup takes over
    talk(b"set weight app/s1 1\n", target=target)
    talk(b"set weight app/s2 2\n", target=target)
    assert pool.candidates == [s1, s2] and s2.weight == 2
    talk(b"set server app/s2 weight 50%\n", target=target)     # of its configured 3
    assert s2.weight == 1
    talk(b"set weight app/s2 1000%\n", target=target)
    assert s2.weight == 30
    talk(b"set weight app/s2 100000%\n", target=target)        # capped, as HAProxy does
    assert s2.weight == 256
    talk(b"set server app/s2 weight 0\n", target=target)
    talk(b"set maxconn server app/s1 7\n", target=target)
    assert s1.maxconn == 7
    out, _ = talk(b"show servers state app\n", target=target)
    assert b"\n2 app 2 s2 127.0.0.1 2 0 0 3 " in out


def test_prompt_mode():
    conversation = AdminConversation(ReferenceTarget())
    assert conversation.feed(b"prompt\n") == b"\n> "
    assert conversation.feed(b"set server app/s1 weight 2\n") == b"\n> "
    # As HAProxy 2.6: a prompt after each command of a ';' line.
    assert conversation.feed(b"set server app/zz weight 1; set server app/s1 weight 1\n") == \
        b"No such server.\n\n> \n> "
    assert conversation.feed(b"show ") == b""          # a line in pieces waits for its end
    assert conversation.feed(b"info\n").startswith(b"Name: simpleproxy\nVersion: ")
    assert not conversation.closed
    assert conversation.feed(b"quit\n") == b"" and conversation.closed
    assert conversation.feed(b"show info\n") == b""


def test_prompt_twice_leaves_interactive_mode():
    conversation = AdminConversation(ReferenceTarget())
    assert conversation.feed(b"prompt\nprompt\nset server app/s1 weight 1\n") == b"\n> \n"
    assert conversation.closed


def test_one_line_per_connection_without_prompt():
    conversation = AdminConversation(ReferenceTarget())
    assert conversation.feed(b"set server app/s1 weight 1\nshow info\n") == b"\n"
    assert conversation.closed


def test_last_line_without_newline_runs_at_eof():
    conversation = AdminConversation(ReferenceTarget())
    assert conversation.feed(b"set server app/s1 weight 1") == b""
    assert conversation.eof() == b"\n" and conversation.closed


def test_a_huge_line_is_refused_without_growing():
    conversation = AdminConversation(ReferenceTarget())
    assert conversation.feed(b"x" * MAX_LINE) == b""
    out = conversation.feed(b"y" * 10)
    assert out.startswith(b"Command line too long") and conversation.closed
    assert conversation._buffer == b""
    assert conversation.feed(b"z" * (MAX_LINE * 4)) == b""


def test_bad_bytes_are_an_unknown_command():
    out, closed = talk(b"\xff\x00\x1b[2J\n")
    assert out.startswith(b"Unknown command") and closed
