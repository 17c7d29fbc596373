"""The event loop proper: a poller, a timer heap, a thread-safe hand-off, run and stop.

It knows nothing of proxying (asyncio's ``base_events.py`` is the model): its users watch
sockets with ``loop.register(sock, mask, callback)``, ``loop.modify``, ``loop.unregister``
and ``loop.forget`` (``callback(mask)`` runs when the socket is ready) and keep timers
(``loop.timer(callback)``) for the time-outs they need. Every socket of the proxy is served
on the loop's thread; other threads (health checks) and signals only reach it through
``call_soon_threadsafe`` and the wake-up socket. ``run()`` is ``run_once()`` over and over:
a poll, the ready callbacks, the calls they left for the end of the round
(``call_after_events``: work that gains from a short wait, such as reading a new
connection's first bytes, which a round's other callbacks give time to arrive), the due
timers.

Two pollers stand behind those calls, and the loop's users cannot tell them apart:

* On Linux, ``select.epoll`` itself with a table from descriptor to callback
  (``EpollPoller``). ``selectors`` costs about 9 % of a proxied connection (a key namedtuple
  per registration, fd-to-key dicts, a translation of every event), and epoll's own events
  say more than selectors passes on: ``EVENT_ERROR`` (EPOLLERR) tells a failed connect from a
  completed one without a ``getsockopt(SO_ERROR)``.
* Elsewhere, and wherever ``SIMPLEPROXY_POLLER=selectors`` (or ``EventLoop("selectors")``)
  asks for it, ``selectors.DefaultSelector`` (``SelectorsPoller``): the portable path, which
  the tests run the proxy on too. It never reports ``EVENT_ERROR`` (``tells_errors`` is
  False), so a user that wants to know whether a connect failed asks the socket.

The masks are epoll's numbers on both paths (``EVENT_READ`` 1, ``EVENT_WRITE`` 4): epoll's
events need no translation, selectors' cost two bit operations. The epoll path asks for
EPOLLRDHUP with every ``EVENT_READ`` (not with EPOLLEXCLUSIVE, which refuses it) and reports
it as ``EVENT_HANGUP``: the peer's FIN has arrived, so a read that returns less than it asked
for has emptied the socket up to the EOF (a reader then needs no second read to learn it);
selectors never reports it. On a socket, epoll reports an error or a hang-up together with
the readiness the callback asked for (the kernel marks a socket that failed or closed
readable and writable), so a callback that looks only at ``EVENT_READ`` and ``EVENT_WRITE``
misses nothing on either path.

Closing a watched socket: ``loop.forget(sock)`` just before ``sock.close()``. epoll drops a
descriptor from its set by itself when the last descriptor of the socket is closed, so the
epoll path only forgets its table entry (no ``epoll_ctl(DEL)``, one syscall per socket
saved); this holds only while no other descriptor refers to the socket (no ``dup``, no fork
that keeps it), which is true of a session's sockets. The events of one ``poll`` are matched
to their callbacks before any of them runs, as ``selectors`` does: a socket closed by an
earlier callback of the same round, whose descriptor number a new socket took, never hands
its stale event to the newcomer's callback.

Timers, and why they look the way they do:

* One heap for every timer. A ``Timer`` is re-armable and owns its heap entry; re-arming or
  cancelling it does not search the heap, it marks the old entry dead, and dead entries are
  skipped when they come due (lazy cancellation, asyncio's ``TimerHandle``). So that many
  long time-outs re-armed or cancelled early cannot pile up, the heap is rebuilt from its
  live entries once more than half of it is dead.
* ``loop.timer(callback)`` is the one timer API (asyncio's ``call_at``, made re-armable):
  ``arm(when)`` fires it at ``when``; ``arm_by(when)`` arms it unless it is already due
  sooner. A session is its own timer (a ``Deadline``, as a Timer is) and works out, when it
  comes due, whether it really timed out (from a last-activity stamp) or re-arms itself. No
  timer operation per read.

The wake-up socket pair serves two masters: ``call_soon_threadsafe`` writes a byte after
appending to the deque, and ``signal.set_wakeup_fd`` writes the signal number, so that a
signal arriving while the poll sleeps makes it return at once (Python runs the handler only
between bytecodes of the main thread, which the poll would otherwise keep waiting).

The log never blocks the loop (logs.py's ``LogWriter``): when stderr takes no more, the
writer holds lines and tells the loop, which watches the descriptor and writes them out as
it has room. Connection lines wait for others in the writer's batch, which a loop timer
writes out (``LOG_BATCH_DELAY``).
"""
import heapq
import os
import select
import selectors
import signal
import socket
import threading
import time
import traceback
from collections import deque

from .logs import LOG, LOG_BATCH_DELAY, log_writer
from .timeouts import LONGEST_WAIT

EVENT_READ = 1              # epoll's EPOLLIN, also on the selectors path (see above)
EVENT_WRITE = 4             # EPOLLOUT
EVENT_FAILED = 8            # EPOLLERR alone: an error (a reset), not a peer's orderly FIN
EVENT_ERROR = EVENT_FAILED | 16     # and EPOLLHUP: only the epoll path reports them
EVENT_HANGUP = 0x2000       # EPOLLRDHUP: the peer's FIN has arrived (the epoll path only)
POLLER_VARIABLE = "SIMPLEPROXY_POLLER"     # "selectors": the portable path, also on Linux
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
TIMER_HEAP_SLACK = 512       # dead entries always tolerated before a rebuild is considered


class Deadline(object):
    """A re-armable one-shot deadline on a loop: ``fire()`` runs once ``when`` has come.

    ``when`` is None while it is not armed (new, cancelled, or fired). A subclass gives
    ``fire()`` and the slots ``loop``, ``when`` (None to start with) and ``_entry`` (None):
    a Timer calls a callback; a session is its own deadline (session.py), which saves a
    timer object, a bound method and the cycle between them on every connection."""

    __slots__ = ()

    def arm(self, when):
        """Fire at ``when`` (loop clock), instead of whenever it was armed for."""
        loop = self.loop
        if self._entry is not None:
            self._entry[2] = None
            loop._dead_timers += 1
        self.when = when
        loop._timer_sequence += 1
        entry = self._entry = [when, loop._timer_sequence, self]
        timers = loop._timers
        heapq.heappush(timers, entry)
        if loop._dead_timers > TIMER_HEAP_SLACK and loop._dead_timers * 2 > len(timers):
            loop._drop_dead_timers()

    def arm_by(self, when):
        """Make sure it fires by ``when``: arm it unless it is already due sooner."""
        if self.when is None or when < self.when:
            self.arm(when)

    def cancel(self):
        if self._entry is not None:
            self._entry[2] = None
            self._entry = None
            self.when = None
            self.loop._dead_timers += 1


class Timer(Deadline):
    """A Deadline that calls ``callback()``."""

    __slots__ = ("loop", "callback", "when", "_entry")

    def __init__(self, loop, callback):
        self.loop = loop
        self.callback = callback
        self.when = None
        self._entry = None           # [when, sequence, self] in the heap; [.., .., None] is dead

    def fire(self):
        self.callback()

    def release(self):
        """Cancel for good: its owner has ended. The callback is usually the owner's bound
        method, and the owner holds the timer: dropping it breaks that cycle, so that both
        are freed when the owner's last reference goes, not by the cyclic garbage collector
        (whose passes cost a proxied connection about 3 us)."""
        self.cancel()
        self.callback = None


def _ignore_event(mask):
    """The callback of an event whose descriptor the loop no longer watches."""


class EpollPoller(object):
    """The Linux path: ``select.epoll`` and a table from descriptor to callback."""

    tells_errors = True
    # EPOLLEXCLUSIVE (Linux 4.5): added to EVENT_READ, one of the processes watching a shared
    # listening socket wakes, not all. Such a registration is never modified, only removed.
    exclusive = getattr(select, "EPOLLEXCLUSIVE", 0)
    _hangup_wanted = EVENT_READ | exclusive     # masked: EVENT_READ alone asks for EVENT_HANGUP

    def __init__(self):
        self._epoll = select.epoll()
        self._callbacks = {}        # fd -> callback(mask)
        self._files = {}            # fd -> what was registered (closed for a forked worker)

    def register(self, fileobj, mask, callback):
        # A socket, or a bare descriptor (the log writer's).
        fd = fileobj if fileobj.__class__ is int else fileobj.fileno()
        if fd in self._callbacks:
            raise KeyError("%r is already registered" % (fileobj,))
        if mask & self._hangup_wanted == EVENT_READ:
            mask |= EVENT_HANGUP
        self._epoll.register(fd, mask)
        self._callbacks[fd] = callback
        self._files[fd] = fileobj

    def modify(self, fileobj, mask, callback):
        fd = fileobj if fileobj.__class__ is int else fileobj.fileno()
        if mask & self._hangup_wanted == EVENT_READ:
            mask |= EVENT_HANGUP
        self._epoll.modify(fd, mask)
        self._callbacks[fd] = callback

    def unregister(self, fileobj):
        fd = fileobj if fileobj.__class__ is int else fileobj.fileno()
        del self._callbacks[fd]            # KeyError, as selectors, when it is not registered
        del self._files[fd]
        self._epoll.unregister(fd)

    def forget(self, fileobj):
        """``fileobj`` is closed next, and holds the only descriptor of its socket: epoll
        drops it then by itself, so only the table forgets it (no epoll_ctl)."""
        fd = fileobj.fileno()
        del self._callbacks[fd]
        del self._files[fd]

    def poll(self, timeout):
        """The ready (callback, mask) pairs; callbacks are looked up before any runs."""
        callbacks = self._callbacks
        return [(callbacks.get(fd, _ignore_event), mask)
                for fd, mask in self._epoll.poll(-1 if timeout is None else timeout)]

    def registered(self):
        return list(self._files.values())

    def close(self):
        self._epoll.close()


class SelectorsPoller(object):
    """The portable path: ``selectors.DefaultSelector``, with the masks translated."""

    tells_errors = False
    exclusive = 0                   # selectors cannot pass EPOLLEXCLUSIVE

    def __init__(self):
        self._selector = selectors.DefaultSelector()

    def register(self, fileobj, mask, callback):
        self._selector.register(fileobj, (mask & EVENT_READ) | (mask & EVENT_WRITE) >> 1,
                                callback)

    def modify(self, fileobj, mask, callback):
        self._selector.modify(fileobj, (mask & EVENT_READ) | (mask & EVENT_WRITE) >> 1,
                              callback)

    def unregister(self, fileobj):
        self._selector.unregister(fileobj)

    forget = unregister        # selectors keeps a key per socket: it must go

    def poll(self, timeout):
        return [(key.data, (mask & EVENT_READ) | (mask & selectors.EVENT_WRITE) << 1)
                for key, mask in self._selector.select(timeout)]

    def registered(self):
        return [key.fileobj for key in self._selector.get_map().values()]

    def close(self):
        self._selector.close()


def make_poller(name=None):
    """The poller called ``name`` ("epoll", "selectors"), else the one $SIMPLEPROXY_POLLER
    names, else epoll where the platform has it."""
    name = name or os.environ.get(POLLER_VARIABLE) or (
        "epoll" if hasattr(select, "epoll") else "selectors")
    if name == "epoll":
        return EpollPoller()
    if name == "selectors":
        return SelectorsPoller()
    raise ValueError("unknown poller %r (epoll or selectors)" % name)


class EventLoop(object):
    """A poller loop with timers; ``run()`` serves until ``stop()``.

    ``register``, ``modify``, ``unregister`` and ``forget`` are the poller's own methods
    (no call in between on the hot path); ``tells_errors`` says whether masks carry
    ``EVENT_ERROR``; ``exclusive``, when not 0, is the flag that makes a registration wake
    one process of those sharing a socket (EPOLLEXCLUSIVE)."""

    def __init__(self, poller=None):
        poller = self._poller = make_poller(poller)
        self.register = poller.register
        self.modify = poller.modify
        self.unregister = poller.unregister
        self.forget = poller.forget
        self.registered = poller.registered
        self.tells_errors = poller.tells_errors
        self.exclusive = poller.exclusive
        self.now = time.monotonic()
        self.stopping = False
        self._stop_signals_installed = False
        self._stop_signal = None     # the SIGTERM or SIGINT that stopped run(), to log
        self._timers = []
        self._timer_sequence = 0
        self._dead_timers = 0
        self._calls = deque()
        self._after_events = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.register(self._wake_r, EVENT_READ, self._on_wakeup)
        self._log_writer = log_writer()
        if self._log_writer is not None:
            self._log_writer.on_held = self._log_held
            self._log_writer.on_batch_started = self._log_batch_started
            self._log_batch_timer = Timer(self, self._log_writer.write_batch)

    def timer(self, callback):
        """A Timer of this loop, not armed yet: ``callback()`` runs once it is armed and due."""
        return Timer(self, callback)

    def run(self):
        """Serve events and timers until stop() (or a signal, see install_signal_handlers)."""
        while not self.stopping:
            self.run_once(self.next_wait())
        if self._stop_signal is not None:
            LOG.info("received %s, stopping", signal.Signals(self._stop_signal).name)

    def run_once(self, timeout):
        """Wait up to ``timeout`` seconds (None: until an event), then serve the ready
        sockets and the due timers: one round of run(), also the master's."""
        ready = self._poller.poll(timeout)
        now = self.now = time.monotonic()
        for callback, mask in ready:
            try:
                callback(mask)
            except Exception:
                log_loop_error("an event handler")
        if self._after_events:
            calls, self._after_events = self._after_events, []
            for callback in calls:
                try:
                    callback()
                except Exception:
                    log_loop_error("a call after events")
        timers = self._timers
        while timers and timers[0][0] <= now:
            timer = heapq.heappop(timers)[2]
            if timer is None:
                self._dead_timers -= 1
                continue
            timer._entry = timer.when = None
            try:
                timer.fire()
            except Exception:
                log_loop_error("a timer")

    def next_wait(self):
        """How long a poll may sleep: until the first timer is due, None without one, 0 with
        calls after events left for the next round. A timer may be due later than a poll
        can wait: it wakes up early, finds nothing due, and waits again. (The master, which
        also watches clocks of its own, asks too.)"""
        if self._after_events:
            return 0.0
        timers = self._timers
        if not timers:
            return None
        return min(max(0.0, timers[0][0] - time.monotonic()), LONGEST_WAIT)

    def _drop_dead_timers(self):
        timers = self._timers
        timers[:] = [entry for entry in timers if entry[2] is not None]
        heapq.heapify(timers)
        self._dead_timers = 0

    def call_after_events(self, callback):
        """Run ``callback()`` in this round once its ready callbacks have run (before its
        timers); one added by such a call runs in the next round. Loop thread only."""
        self._after_events.append(callback)

    def call_soon_threadsafe(self, callback):
        """Run ``callback()`` on the loop's thread soon; safe to call from any thread. This
        is the only door into the loop for other threads."""
        self._calls.append(callback)
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, InterruptedError):
            pass         # the pipe is full, so the loop is awake anyway

    def _on_wakeup(self, mask):
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass
        calls = self._calls
        while calls:
            callback = calls.popleft()
            try:
                callback()
            except Exception:
                log_loop_error("a loop callback")

    def install_signal_handlers(self):
        """SIGTERM and SIGINT stop the loop; the wake-up fd makes select() return at once.

        The loop's users give HAProxy's reload and soft-stop signals (SIGHUP, SIGUSR1,
        SIGUSR2) a meaning with add_signal_handler, or ignore them; SIGPIPE stays ignored, as
        Python leaves it.
        """
        signal.set_wakeup_fd(self._wake_w.fileno())
        for signum in STOP_SIGNALS:
            signal.signal(signum, self._on_signal)
        self._stop_signals_installed = True

    def add_signal_handler(self, signum, callback):
        """Run ``callback()`` on the loop when ``signum`` arrives (the handler only appends to
        the hand-off, as a thread would)."""
        signal.signal(signum, lambda signum, frame: self.call_soon_threadsafe(callback))

    def _on_signal(self, signum, frame):
        """Flags only: a handler runs between any two bytecodes of the loop's thread, maybe
        in the middle of the log writer, whose lock lets the same thread in again (a line
        logged here lost the lines a drain was writing); run() logs the signal."""
        self._stop_signal = signum
        self.stopping = True

    def _log_batch_started(self):
        """A connection's log line started a batch: written with the others LOG_BATCH_DELAY
        later, or sooner if it fills (logs.py)."""
        self._log_batch_timer.arm_by(self.now + LOG_BATCH_DELAY)

    def _log_held(self):
        """The log writer holds lines (called from any thread that logs)."""
        try:
            self.call_soon_threadsafe(self._watch_log)
        except OSError:
            pass             # the loop has closed its wake-up socket: the exit flush writes them

    def _watch_log(self):
        """Write the held log lines when stderr has room (on the loop)."""
        try:
            self.register(self._log_writer.fd, EVENT_WRITE, self._on_log_writable)
        except KeyError:
            pass                 # already watched

    def _on_log_writable(self, mask):
        if self._log_writer.drain():
            self.unregister(self._log_writer.fd)

    def stop(self):
        """Ask the loop to stop; callable from any thread."""
        def _stop():
            self.stopping = True
        self.call_soon_threadsafe(_stop)

    def close(self):
        """Release the poller and the wake-up sockets, once run() has returned."""
        if threading.current_thread() is threading.main_thread():
            signal.set_wakeup_fd(-1)
        if self._stop_signals_installed:
            # The process is on its way out. At exit Python puts the default action back for
            # every signal with a Python handler, so a second SIGTERM in that window would kill
            # it (status -15) instead of letting it finish; an ignored one is left ignored.
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
        writer = self._log_writer
        if writer is not None:                 # what it still holds is written at exit
            writer.write_batch()               # from now on it writes each line at once
            if writer.on_held == self._log_held:
                writer.on_held = writer.on_batch_started = None
            try:
                self.unregister(writer.fd)
            except KeyError:
                pass
        self._poller.close()
        self._wake_r.close()
        self._wake_w.close()


def log_loop_error(where):
    """Sessions contain their own errors; this is the loop's last line of defence, so that
    nothing unexpected ever stops it."""
    LOG.error("internal error in %s:\n%s", where, traceback.format_exc().rstrip())
