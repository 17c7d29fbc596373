"""The session's state table (session.py): every state and transition is in it, and only there.

What each state does with real sockets is tested end to end (test_proxy, test_hostile,
test_faults, test_backends); here, that the table itself is whole."""
import pytest

from simpleproxy import session
from simpleproxy.session import CLOSED, NEW, SessionState

STATES = {value.name: value for value in vars(session).values() if isinstance(value, SessionState)}


def test_the_table_has_the_states_the_docstring_names():
    assert sorted(STATES) == sorted(["NEW", "HEADER", "LOCAL_WAIT", "QUEUED", "CONNECTING",
                                     "RETRY_WAIT", "RELAY", "CLOSED"])
    for name in STATES:
        assert "    %s " % name in session.__doc__


@pytest.mark.parametrize("name", sorted(STATES))
def test_every_state_goes_only_to_states_of_the_table_and_can_always_close(name):
    state = STATES[name]
    assert set(state.next_states) <= set(STATES)
    assert state.closed == (state is CLOSED)
    if state is not CLOSED:
        assert "CLOSED" in state.next_states


@pytest.mark.parametrize("name", sorted(set(STATES) - {"NEW", "CLOSED"}))
def test_every_live_state_handles_events_and_its_deadline(name):
    state = STATES[name]
    assert callable(state.on_event) and callable(state.deadline) and callable(state.on_timeout)


def test_the_hidden_states_are_states_now():
    """Waiting to retry and a LOCAL connection waiting for payload were flags once."""
    assert "RETRY_WAIT" in STATES["CONNECTING"].next_states
    assert STATES["RETRY_WAIT"].next_states == ("CONNECTING", "CLOSED")
    assert "LOCAL_WAIT" in STATES["HEADER"].next_states
    assert "HEADER" not in STATES["LOCAL_WAIT"].next_states


def test_a_transition_not_in_the_table_is_refused():
    class Bare(object):
        state = NEW
    bare = Bare()
    session.Session._enter(bare, STATES["HEADER"])
    assert bare.state.name == "HEADER"
    with pytest.raises(AssertionError, match="cannot go from HEADER to RELAY"):
        session.Session._enter(bare, STATES["RELAY"])


@pytest.mark.parametrize("sockaddr, loopback", [
    (("127.0.0.1", 80), True), (("127.9.8.7", 80), True), (("::1", 80, 0, 0), True),
    (("10.0.0.20", 80), False), (("128.0.0.1", 80), False), (("::10", 80, 0, 0), False),
    (("::ffff:10.0.0.1", 80, 0, 0), False)])
def test_only_a_loopback_server_is_sent_to_before_its_connect_is_seen_done(sockaddr, loopback):
    """A remote server cannot have answered the SYN within connect(): no early send there."""
    assert session._on_loopback(sockaddr) is loopback
