"""The event loop alone (loop.py): timers, the thread-safe hand-off, errors contained."""
import io
import threading

import pytest

from simpleproxy import loop as loop_module
from simpleproxy.logs import setup_logging
from simpleproxy.loop import TIMER_HEAP_SLACK, EventLoop

STEP = 0.02        # seconds between timers: far above the clock's resolution


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
