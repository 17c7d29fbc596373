"""Listening sockets (listeners.py): a listener shared by workers wakes one of them, where the
loop's poller passes EPOLLEXCLUSIVE."""
import select
import socket
import threading

import pytest

from simpleproxy.listeners import accept_events
from simpleproxy.loop import POLLER_VARIABLE, EventLoop
from support import wait_until

# How many of two loops sleeping on a shared listener one connection wakes.
WAKES = [("epoll", 1), ("selectors", 2)] if hasattr(select, "epoll") else [("selectors", 2)]


def _waiting_in_epoll(thread):
    """The thread sleeps in epoll_wait (the loop's, or the one selectors calls)."""
    try:
        with open("/proc/self/task/%d/wchan" % thread.native_id) as f:
            return "ep" in f.read()          # do_epoll_wait, ep_poll
    except (AttributeError, OSError):
        pytest.skip("no /proc/self/task/TID/wchan or Thread.native_id here")


@pytest.mark.skipif(not hasattr(select, "EPOLLEXCLUSIVE"), reason="no EPOLLEXCLUSIVE")
@pytest.mark.parametrize("poller, wakes", WAKES)
def test_a_shared_listener_wakes_one_of_two_loops_on_epoll(monkeypatch, poller, wakes):
    """Two loops (two workers' worth) watch one listening socket for accept_events(); a
    connection wakes one of them on the epoll poller, both on selectors (which cannot pass
    EPOLLEXCLUSIVE). The loop woken first holds the connection unaccepted meanwhile, so that
    the other one, were it woken, still finds it there (it is woken within microseconds
    when the flag is missing)."""
    monkeypatch.setenv(POLLER_VARIABLE, poller)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.setblocking(False)
    loops = [EventLoop(), EventLoop()]
    woken = []
    release = threading.Event()

    def on_ready(index):
        def callback(mask):
            woken.append(index)
            release.wait(10)
            try:
                listener.accept()[0].close()
            except BlockingIOError:
                pass
        return callback

    threads = [threading.Thread(target=loop.run_once, args=(10,)) for loop in loops]
    client = None
    try:
        for index, loop in enumerate(loops):
            loop.register(listener, accept_events(loop, shared=True), on_ready(index))
        for thread in threads:
            thread.start()
        wait_until(lambda: all(_waiting_in_epoll(thread) for thread in threads),
                   what="both loops to wait in epoll_wait")
        client = socket.create_connection(listener.getsockname())
        wait_until(lambda: len(woken) >= wakes, what="%d loops to wake" % wakes)
        if wakes == 1:
            with pytest.raises(AssertionError):
                wait_until(lambda: len(woken) > 1, timeout=0.5, what="a second wake-up")
        assert len(woken) == wakes
    finally:
        release.set()
        for loop in loops:
            loop.stop()
        for thread in threads:
            if thread.ident is not None:
                thread.join(10)
        for loop in loops:
            loop.close()
        listener.close()
        if client is not None:
            client.close()
