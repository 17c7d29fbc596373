"""The event loop alone (loop.py): timers, the thread-safe hand-off, errors contained, and
the sockets it watches; every test runs on both pollers (epoll, and the portable selectors)."""
import errno
import io
import logging
import os
import select
import signal
import socket
import threading

import pytest

from simpleproxy import loop as loop_module
from simpleproxy.logs import LOG, setup_logging
from simpleproxy.loop import (EVENT_ERROR, EVENT_HANGUP, EVENT_READ, EVENT_WRITE,
                              POLLER_VARIABLE, TIMER_HEAP_SLACK, EventLoop)

STEP = 0.02        # seconds between timers: far above the clock's resolution
POLLERS = ["epoll", "selectors"] if hasattr(select, "epoll") else ["selectors"]


@pytest.fixture(autouse=True, params=POLLERS)
def poller(request, monkeypatch):
    """Every EventLoop() of the test uses this poller, as $SIMPLEPROXY_POLLER makes the
    proxy's do."""
    monkeypatch.setenv(POLLER_VARIABLE, request.param)
    return request.param


def serve_rounds(loop, rounds=1, timeout=1.0):
    for _ in range(rounds):
        loop.run_once(timeout)


def run_until_fired(loop, expected, fired):
    """Run the loop until ``expected`` timers have fired (a last timer stops it at worst)."""
    def stop_when_done():
        if len(fired) >= expected:
            loop.stopping = True
        else:
            guard.arm(loop.now + STEP)
    guard = loop.timer(stop_when_done)
    guard.arm(loop.now + STEP / 2)
    deadline = loop.timer(lambda: setattr(loop, "stopping", True))
    deadline.arm(loop.now + 10)
    loop.run()
    loop.close()


def test_timers_fire_in_order_of_their_time_and_only_once():
    loop = EventLoop()
    fired = []
    for name, delay in (("c", 3), ("a", 1), ("b", 2)):
        loop.timer(lambda name=name: fired.append(name)).arm(loop.now + delay * STEP)
    run_until_fired(loop, 3, fired)
    assert fired == ["a", "b", "c"]


def test_a_rearmed_timer_fires_at_its_new_time_and_a_cancelled_one_never():
    loop = EventLoop()
    fired = []
    moved = loop.timer(lambda: fired.append("moved"))
    moved.arm(loop.now + STEP)
    moved.arm(loop.now + 3 * STEP)               # later: the first entry is dead now
    cancelled = loop.timer(lambda: fired.append("cancelled"))
    cancelled.arm(loop.now + STEP)
    cancelled.cancel()
    assert cancelled.when is None
    loop.timer(lambda: fired.append("marker")).arm(loop.now + 2 * STEP)
    run_until_fired(loop, 2, fired)
    assert fired == ["marker", "moved"]
    assert moved.when is None                    # fired: not armed any more


def test_arm_by_keeps_the_sooner_time():
    loop = EventLoop()
    timer = loop.timer(lambda: None)
    timer.arm_by(loop.now + 5)
    timer.arm_by(loop.now + 9)
    assert timer.when == loop.now + 5
    timer.arm_by(loop.now + 1)
    assert timer.when == loop.now + 1
    loop.close()


def test_dead_entries_do_not_pile_up_in_the_heap():
    """Long time-outs re-armed or cancelled early (a session per connection) are dropped once
    they are most of the heap, not kept until they come due."""
    loop = EventLoop()
    live = [loop.timer(lambda: None) for _ in range(100)]
    for timer in live:
        timer.arm(loop.now + 3600)
    for round_ in range(50):
        for timer in live:
            timer.arm(loop.now + 3600 + round_)
        churn = loop.timer(lambda: None)
        for _ in range(200):
            churn.arm(loop.now + 7200)
        churn.cancel()
    assert len(loop._timers) <= 2 * (len(live) + TIMER_HEAP_SLACK) + 2
    assert sum(1 for entry in loop._timers if entry[2] is not None) == len(live)
    loop.close()


def test_calls_from_another_thread_run_on_the_loop():
    loop = EventLoop()
    ran_on = []

    def from_worker():
        loop.call_soon_threadsafe(lambda: ran_on.append(threading.current_thread()))
        loop.stop()
    worker = threading.Thread(target=from_worker)
    worker.start()
    loop.run()
    worker.join(10)
    loop.close()
    assert ran_on == [threading.current_thread()]


def test_calls_after_events_run_once_the_rounds_events_are_served_before_its_timers():
    """Whichever of two ready sockets is served first leaves a call: it runs after both, and
    before the round's due timer; a call left by such a call waits for the next round."""
    log = io.StringIO()
    setup_logging("info", log)
    loop = EventLoop()
    pairs = [socket.socketpair() for _ in range(2)]
    happened = []

    def later(name):
        happened.append(name)
        if name == "after events":
            loop.call_after_events(lambda: happened.append("next round"))
        raise RuntimeError("a broken call after events")     # logged, the others still run

    def on_ready(name, sock):
        def callback(mask):
            sock.recv(16)
            happened.append(name)
            if len(happened) == 1:
                loop.call_after_events(lambda: later("after events"))
        return callback
    try:
        for number, (ours, theirs) in enumerate(pairs):
            loop.register(ours, EVENT_READ, on_ready("event %d" % number, ours))
            theirs.send(b"x")
        loop.timer(lambda: happened.append("timer")).arm(loop.now)
        readable, _, _ = select.select([ours for ours, _ in pairs], [], [], 10)
        assert len(readable) == 2            # so one poll sees both
        serve_rounds(loop)
        assert sorted(happened[:2]) == ["event 0", "event 1"]
        assert happened[2:] == ["after events", "timer"]
        serve_rounds(loop, timeout=0)
        assert happened[4:] == ["next round"]
        assert log.getvalue().count("internal error in a call after events") == 1
    finally:
        loop.close()
        for pair in pairs:
            for sock in pair:
                sock.close()


def test_a_call_after_events_left_by_a_timer_does_not_wait_for_an_event():
    """A timer runs after the round's calls after events: one it leaves runs in the next
    round, whose poll then does not sleep (run() would otherwise wait for any event)."""
    loop = EventLoop()
    happened = []

    def stop():
        happened.append("later")
        loop.stopping = True
    loop.timer(lambda: loop.call_after_events(stop)).arm(loop.now)
    watchdog = loop.timer(lambda: happened.append("no call before this"))
    watchdog.arm(loop.now + 2)
    try:
        loop.run()
    finally:
        loop.close()
    assert happened == ["later"]


def test_an_error_in_a_timer_is_logged_and_the_loop_goes_on():
    log = io.StringIO()
    setup_logging("info", log)
    loop = EventLoop()
    fired = []

    def broken():
        raise RuntimeError("a broken timer")
    loop.timer(broken).arm(loop.now + STEP)
    loop.timer(lambda: fired.append("after")).arm(loop.now + 2 * STEP)
    run_until_fired(loop, 1, fired)
    assert fired == ["after"]
    assert "internal error in a timer" in log.getvalue()
    assert "RuntimeError: a broken timer" in log.getvalue()


def test_the_loop_knows_nothing_of_proxying():
    """No name of the proxy's world appears in the loop's namespace."""
    names = set(vars(loop_module))
    assert names & {"Session", "Proxy", "Listener", "BackendPool", "HealthChecker"} == set()


@pytest.mark.parametrize("delay", [25 * 86400.0, 1e16])
def test_a_timer_beyond_what_the_selector_can_wait_does_not_stop_the_loop(delay):
    """epoll takes at most 2^31 - 1 ms; Python's select() raises OverflowError beyond (or
    "timestamp out of range" for 1e16 s). The loop waits at most LONGEST_WAIT and the timer
    stays armed for its own time."""
    loop = EventLoop()
    far = loop.timer(lambda: None)
    far.arm(loop.now + delay)
    loop.stop()                  # wakes the selector at once, far timer first in the heap
    loop.run()
    loop.close()
    assert far.when is not None


# -- watching sockets -------------------------------------------------------------------------

def test_the_poller_is_the_one_asked_for(poller):
    loop = EventLoop()
    assert type(loop._poller).__name__ == {"epoll": "EpollPoller",
                                           "selectors": "SelectorsPoller"}[poller]
    assert loop.tells_errors == (poller == "epoll")
    loop.close()
    with pytest.raises(ValueError):
        EventLoop("kqueue-please")


def test_events_come_with_the_mask_asked_for_and_follow_modify_and_unregister():
    loop = EventLoop()
    a, b = socket.socketpair()
    seen = []
    try:
        loop.register(a, EVENT_WRITE, lambda mask: seen.append(("write", mask)))
        serve_rounds(loop)
        assert seen == [("write", EVENT_WRITE)]          # room to write, nothing to read
        del seen[:]
        loop.modify(a, EVENT_READ, lambda mask: seen.append(("read", mask)))
        loop.run_once(0)
        assert seen == []                                # nothing to read yet
        b.send(b"x")
        serve_rounds(loop)
        assert seen == [("read", EVENT_READ)]
        del seen[:]
        loop.modify(a, EVENT_READ | EVENT_WRITE, lambda mask: seen.append(("both", mask)))
        serve_rounds(loop)
        assert seen == [("both", EVENT_READ | EVENT_WRITE)]
        assert a in loop.registered()
        loop.unregister(a)
        assert a not in loop.registered()
        del seen[:]
        loop.run_once(0)
        assert seen == []
    finally:
        loop.close()
        a.close()
        b.close()


@pytest.mark.parametrize("family", [socket.AF_INET, socket.AF_UNIX])
def test_a_peers_fin_comes_as_a_hangup_where_the_poller_tells_errors(family):
    """epoll adds EPOLLRDHUP to a read interest and reports the FIN that has arrived, after
    the bytes before it, as EVENT_HANGUP (after a modify too); selectors never reports it.
    A shared listener's EPOLLEXCLUSIVE interest, which refuses EPOLLRDHUP, registers."""
    loop = EventLoop()
    if family == socket.AF_INET:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.create_connection(listener.getsockname())
        b = listener.accept()[0]
    else:
        listener = None
        a, b = socket.socketpair()
    seen = []
    try:
        loop.register(a, EVENT_WRITE, lambda mask: None)
        loop.modify(a, EVENT_READ, lambda mask: seen.append(mask))
        b.sendall(b"last words")
        b.shutdown(socket.SHUT_WR)
        serve_rounds(loop)                       # both are in: loopback delivers at once
        hangup = EVENT_HANGUP if loop.tells_errors else 0
        assert seen == [EVENT_READ | hangup]
        assert a.recv(100) == b"last words"
        if listener is not None and loop.exclusive:
            loop.register(listener, EVENT_READ | loop.exclusive, lambda mask: None)
    finally:
        loop.close()
        for sock in (a, b, listener):
            if sock is not None:
                sock.close()


class SignalInTheMiddle(logging.Handler):
    """A log handler during whose work SIGTERM arrives, as it can in the log writer: records
    whether a line was logged again from inside (the signal handler re-entering it)."""

    def __init__(self):
        logging.Handler.__init__(self)
        self.messages = []
        self.depth = 0
        self.reentered = False

    def emit(self, record):
        self.reentered = self.reentered or self.depth > 0
        self.depth += 1
        try:
            self.messages.append(record.getMessage())
            if len(self.messages) == 1:
                os.kill(os.getpid(), signal.SIGTERM)
                sum(range(10000))              # bytecodes: the Python handler runs in here
        finally:
            self.depth -= 1


def test_a_stop_signal_logs_nothing_from_its_handler_and_run_logs_it():
    """A signal handler runs between any two bytecodes of the loop's thread, maybe inside
    the log writer, whose lock lets the same thread in again: a line logged there lost the
    lines a drain was writing (the unread-stderr test, under load). So the handler only sets
    flags, and run() logs the signal once it returns."""
    handler = SignalInTheMiddle()
    saved = LOG.handlers[:], LOG.level, {s: signal.getsignal(s) for s in loop_module.STOP_SIGNALS}
    LOG.handlers[:] = [handler]
    LOG.setLevel(logging.INFO)
    loop = EventLoop()
    try:
        loop.install_signal_handlers()
        LOG.info("a line being written")
        assert not handler.reentered
        loop.run()                               # the signal stopped it: it returns at once
        loop.close()
    finally:
        LOG.handlers[:], level, handlers = saved
        LOG.setLevel(level)
        for signum, previous in handlers.items():
            signal.signal(signum, previous)
    assert handler.messages == ["a line being written", "received SIGTERM, stopping"]


def test_registering_twice_or_unregistering_a_stranger_is_a_key_error():
    loop = EventLoop()
    a, b = socket.socketpair()
    try:
        loop.register(a, EVENT_READ, lambda mask: None)
        with pytest.raises(KeyError):
            loop.register(a, EVENT_READ, lambda mask: None)
        with pytest.raises(KeyError):
            loop.unregister(b)
    finally:
        loop.close()
        a.close()
        b.close()


def test_a_forgotten_socket_is_gone_once_closed_and_its_number_serves_the_next_one():
    """forget() + close(): no epoll_ctl on the epoll path; the kernel drops the closed socket,
    and a new socket on the same descriptor number is watched as itself."""
    loop = EventLoop()
    a, b = socket.socketpair()
    c = d = None
    seen = []
    try:
        loop.register(a, EVENT_READ, lambda mask: seen.append("a"))
        number = a.fileno()
        loop.forget(a)
        a.close()
        b.close()                        # a's peer hangs up: an event, were a watched
        loop.run_once(0.05)
        assert seen == []
        c, d = socket.socketpair()
        assert number in (c.fileno(), d.fileno())
        mine = c if c.fileno() == number else d
        loop.register(mine, EVENT_READ, lambda mask: seen.append("new"))
        loop.run_once(0.05)
        assert seen == []                # nothing sent to the new one yet
        (d if mine is c else c).send(b"y")
        serve_rounds(loop)
        assert seen == ["new"]
        assert set(loop.registered()) == {mine, loop._wake_r}
    finally:
        loop.close()
        for sock in (a, b, c, d):
            if sock is not None:
                sock.close()


def test_an_event_of_a_socket_closed_earlier_in_the_round_never_reaches_its_successor():
    """Two sockets ready in one round: the first callback closes the second and a new socket
    takes its descriptor number. The round's event for the old socket goes to the old
    callback (which knows it is closed), never to the new socket's."""
    loop = EventLoop()
    pairs = [socket.socketpair() for _ in range(2)]
    calls = []
    replaced = {}

    def first(mask):
        calls.append("first")
        if replaced:
            return
        victim = pairs[1][0]
        number = victim.fileno()
        loop.forget(victim)
        victim.close()
        new, peer = socket.socketpair()
        assert number in (new.fileno(), peer.fileno())
        if new.fileno() != number:
            new, peer = peer, new
        replaced["sockets"] = (new, peer)
        loop.register(new, EVENT_READ, lambda mask: calls.append("successor"))

    try:
        loop.register(pairs[0][0], EVENT_READ, first)
        loop.register(pairs[1][0], EVENT_READ, lambda mask: calls.append("victim"))
        pairs[0][1].send(b"x")
        pairs[1][1].send(b"x")
        loop.run_once(1.0)
        assert "successor" not in calls
        assert calls.count("first") == 1
    finally:
        loop.close()
        for a, b in pairs + [replaced.get("sockets", (None, None))]:
            for sock in (a, b):
                if sock is not None:
                    sock.close()


def test_a_refused_connect_is_an_error_event_where_the_poller_tells_errors():
    """epoll's EVENT_ERROR tells a failed connect from a completed one without SO_ERROR;
    selectors cannot (the session asks the socket then)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()                                       # nobody listens there now
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    loop = EventLoop()
    masks = {}
    socks = []
    try:
        for name, target in (("refused", port), ("accepted", listener.getsockname()[1])):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            socks.append(sock)
            err = sock.connect_ex(("127.0.0.1", target))
            assert err in (0, errno.EINPROGRESS, errno.ECONNREFUSED)
            if err == errno.ECONNREFUSED:
                pytest.skip("this kernel refuses a loopback connect at once")
            loop.register(sock, EVENT_WRITE, lambda mask, name=name: masks.setdefault(name, mask))
        for _ in range(20):
            if len(masks) == 2:
                break
            loop.run_once(0.5)
        assert masks["accepted"] == EVENT_WRITE
        assert masks["refused"] & EVENT_WRITE
        assert bool(masks["refused"] & EVENT_ERROR) == loop.tells_errors
        assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == errno.ECONNREFUSED
    finally:
        loop.close()
        listener.close()
        for sock in socks:
            sock.close()
