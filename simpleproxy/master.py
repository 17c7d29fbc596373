"""The master process: owns the listening sockets, supervises the workers, reloads.

With ``workers`` (or another process key: grace, hard-stop-after, pidfile, user, group) in
[global], or under systemd, the process started is the master. It
binds every listening socket once, forks the workers, each running the ordinary event loop
(proxy.run_proxy) on the inherited sockets, and never serves traffic itself.

* A worker that dies is logged with its exit status or signal and started again (after a
  second if it lived less than that, so that a worker that cannot start does not spin).
* SIGTERM / SIGINT: the workers get SIGTERM (today's prompt stop) and the master exits 0.
* SIGHUP / SIGUSR2: reload. The new config is read and checked; if it is invalid, or a new
  address cannot be bound, the errors are logged and nothing changes. Otherwise a new
  generation of workers starts on the same sockets (an address that stays keeps the very
  same socket, so nothing queued on it is lost; new addresses are bound, removed ones
  closed), and once each new worker says ``ready`` the old ones are told ``stop``: they stop
  accepting at once and finish their connections, bounded by ``hard-stop-after``.
  ``grace`` does not apply to reloads, as HAProxy's manual advises.
* SIGUSR1: soft stop. The workers are told ``soft-stop`` (their /health says 503) and keep
  accepting for ``grace``, then all are told ``stop``
  (hard-stop-after counts from there) and the master closes its listening sockets and
  exits 0 when the last worker has.

Why one shared listening socket per address rather than one SO_REUSEPORT socket per worker:
a reload must not lose connections, and closing a REUSEPORT socket drops whatever is queued
on it (Linux migrates them only with net.ipv4.tcp_migrate_req, 5.14+), while a shared socket
simply goes on being accepted from by the new workers. The cost of a shared socket is that
every idle worker wakes for each connection; each worker therefore registers its listeners
with EPOLLEXCLUSIVE in the epoll its loop waits on (loop.py), which wakes one.
``bench/accept_modes.py`` measures the ways; its figures are in docs/operations.md.

Why ``workers = 1`` is a master and one worker rather than one process handing its sockets
to a re-executed successor: it is the same code path as N workers, so reloads, restarts and
soft stops are tested once for every count. Without any process key (and outside systemd)
the proxy stays today's single process, which cannot reload.

``maxconn`` is per proxy: the global, frontend and server limits are split across the
workers, each getting its share rounded up (process.split_limit); so is a server maxconn
an operator sets at run time.

The master is also where one proxy is seen from outside: it keeps the latest health verdict
and operator setting of every server (by backend and server name) and hands them to every
new worker, and it gathers the workers' counters.

Host names (discovery.py) are followed as health is checked: once, by the checking worker,
whose lookups' outcome (``server-addr``) the master passes on to the other workers. Were each
worker to resolve on its own, a DNS server that answers each query with another subset of
its addresses (Route 53 multivalue, DNS round robin) would give each worker other addresses
in a template's slots, and a verdict on web2 reached by the checker would be applied to
another address in a sibling; clients of ``balance source`` would get another server
depending on the worker that accepted them. The master keeps the latest address of each
server and hands them to every worker it forks: a reload's workers (and a restarted one)
start from them when init-addr says ``last`` (the default, ``last,libc``), and so does the
master's own check of the new config, so a name that does not resolve at that moment does
not fail the reload. channel.py lists the messages and the
calls the runtime API makes here (``set_server_admin``, ``request_counters``). The stats
socket and the stats listener are the master's: served on ``self.loop`` (an EventLoop of the
master's own, which its ``_loop`` serves a round at a time between its own chores), they act
on a masterview.MasterView; the workers serve neither.
"""
import json
import logging
import os
import signal
import socket
import sys
import time
import traceback

from .balancer import ADMIN_TRANSITIONS, MAX_WEIGHT
from .channel import (MSG_COUNTERS, MSG_READY, MSG_SERVER_ADDR, MSG_SERVER_ADMIN,
                      MSG_SERVER_FAILED, MSG_SERVER_STATE, MSG_SOFT_STOP, MSG_STOP, admin_fields,
                      channel_pair, receive_message, send_message)
from .config import load_config
from .config_values import MAX_COUNT
from .discovery import ip_address
from .errors import SimpleProxyError
from .listeners import listen_key, open_listener
from .logs import LOG, reopen_log, setup_logging
from .loop import EVENT_READ, EventLoop
from .masterview import MasterView
from .process import drop_privileges, split_limit
from .proxy import run_proxy
from .resolve import resolve_addresses
from .statslistener import open_stats_listeners
from .systemd import Notifier, activated_sockets
from .worker import WorkerLink

RESTART_DELAY = 1.0          # a worker that lived less than this is restarted this much later
STOP_TIMEOUT = 10.0          # after SIGTERM, workers still alive this much later get SIGKILL
RELOAD_SIGNALS = (signal.SIGHUP, signal.SIGUSR2)
MASTER_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGCHLD) + RELOAD_SIGNALS
COUNTERS_TIMEOUT = 1.0       # request_counters answers with what came in by then


class Worker(object):
    """The master's record of one worker process."""

    def __init__(self, pid, generation, slot, channel, started):
        self.pid = pid
        self.generation = generation
        self.slot = slot              # its number within its generation, 0 to workers - 1
        self.channel = channel
        self.started = started
        self.ready = False
        self.stopping = False


def worker_config(config):
    """The config a worker runs: connection limits split across the workers."""
    count = config.global_settings.workers
    settings = config.global_settings._replace(
        maxconn=split_limit(config.global_settings.maxconn, count))
    frontends = tuple(fe._replace(maxconn=split_limit(fe.maxconn, count))
                      for fe in config.frontends)
    backends = {name: be._replace(servers=tuple(server._replace(
        maxconn=split_limit(server.maxconn, count)) for server in be.servers))
        for name, be in config.backends.items()}
    return config._replace(global_settings=settings, frontends=frontends, backends=backends)


def bind_keys(config):
    """Every bind line of ``config``, by listen_key."""
    return {listen_key(bind.address.family, bind.address.sockaddr): bind
            for frontend in config.frontends for bind in frontend.binds}


class Master(object):
    """The supervisor; ``run()`` returns the exit status."""

    def __init__(self, config, config_path, environ=os.environ):
        self.config = config
        self.config_path = config_path
        self.notifier = Notifier(environ)
        self.activated = activated_sockets(environ)
        self.listening = {}
        self.workers = {}             # pid -> Worker
        self.server_states = {}       # (backend, server) -> UP or DOWN, the latest verdict
        self.server_admin = {}        # (backend, server) -> {field: value}, what operators set
        # (backend, server) -> (host, ADDRESS, MAINT, STATUS): the latest server-addr fields
        self.server_addresses = {}
        self.counter_requests = {}    # request id -> CounterRequest
        self._request_ids = 0
        self.generation = 0
        self.serving = 0              # the generation whose workers all said ready
        self.restarts = []            # (due, generation, slot) of workers to start again
        self.signals = []
        self.soft_stop_at = None      # when SIGUSR1's grace ends
        self.stopping = False         # the workers were told to stop: exit when they are gone
        # The runtime API's stats socket and listener run on this loop (masterview.py); the
        # master's own sockets share it, and _loop() serves it a round at a time.
        self.loop = EventLoop()
        self.view = None              # the MasterView, when a stats socket or listener is set
        self.stats_listeners = []
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.loop.register(self._wake_r, EVENT_READ, lambda mask: _drain(self._wake_r))
        self.next_watchdog = None

    # -- listening sockets ------------------------------------------------------------------

    def open_listening(self, config):
        """Sockets for every bind of ``config``: kept, activated by systemd, or bound now.

        Returns the new mapping; raises SimpleProxyError (after closing what it opened) when
        an address cannot be bound, so that a reload can give up without a trace."""
        listening, opened = {}, []
        try:
            for key, bind in bind_keys(config).items():
                sock = self.listening.get(key) or self.activated.pop(key, None)
                if sock is None:
                    sock = open_listener(bind)
                    opened.append(sock)
                listening[key] = sock
        except SimpleProxyError:
            for sock in opened:
                sock.close()
            raise
        return listening

    def close_listening(self, keep):
        """Close the sockets whose address is not in ``keep`` (unlinking Unix paths)."""
        for key, sock in list(self.listening.items()):
            if key in keep:
                continue
            sock.close()
            if key[0] == socket.AF_UNIX and not key[1].startswith("\0"):
                try:
                    os.unlink(key[1])
                except OSError:
                    pass
            del self.listening[key]

    # -- workers ----------------------------------------------------------------------------

    def spawn(self, slot):
        """Fork one worker of the current generation."""
        master_end, worker_end = channel_pair()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            master_end.close()
            os._exit(self._worker_main(worker_end, slot))
        worker_end.close()
        master_end.setblocking(False)       # a worker that stops reading must not stall us
        worker = Worker(pid, self.generation, slot, master_end, time.monotonic())
        self.workers[pid] = worker
        self.loop.register(master_end, EVENT_READ, lambda mask: self.on_message(worker))
        LOG.info("worker %d.%d started (pid %d)", self.generation, slot, pid)

    def _worker_main(self, channel, slot):
        """In the child: forget the master's state, drop privileges, run the loop."""
        code = 1
        try:
            for signum in MASTER_SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            for signum in (signal.SIGUSR1,) + RELOAD_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)     # the master's signals, not ours
            signal.set_wakeup_fd(-1)
            for fileobj in self.loop.registered():
                if hasattr(fileobj, "close"):
                    fileobj.close()       # channels, wake-up ends, stats sockets, watch()'s
            for listener in self.stats_listeners:
                listener.sock.close()     # also when paused (not watched by the loop then)
            self.loop.close()
            self._wake_w.close()
            setup_logging(logging.getLevelName(LOG.getEffectiveLevel()).lower(),
                          target=self.config.global_settings.log_target)
            ours = bind_keys(self.config)
            for key, sock in self.listening.items():
                if key not in ours:
                    sock.close()        # an address this reload removes: closed everywhere
            settings = self.config.global_settings
            drop_privileges(settings.user, settings.group)
            code = run_proxy(worker_config(self.config), self.listening,
                             lambda proxy: WorkerLink(proxy, channel, slot == 0,
                                                      settings.hard_stop_after),
                             self.last_addresses())
        except SimpleProxyError as exc:
            LOG.error("%s", exc)
        except BaseException:
            LOG.error("worker failed:\n%s", traceback.format_exc().rstrip())
        finally:
            sys.stderr.flush()
        return code

    def reap(self):
        """Collect every dead worker: log it, start a replacement when it was current."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is None:
                continue
            self.loop.unregister(worker.channel)
            worker.channel.close()
            how = describe_exit(status)
            expected = worker.stopping or self.stopping
            LOG.log(logging.INFO if expected else logging.WARNING, "worker %d.%d (pid %d) %s",
                    worker.generation, worker.slot, pid, how)
            if not expected and worker.generation == self.generation:
                now = time.monotonic()
                due = now + RESTART_DELAY if now - worker.started < RESTART_DELAY else now
                self.restarts.append((due, worker.generation, worker.slot))

    def on_message(self, worker):
        message = receive_message(worker.channel)
        if not message:
            return                    # EOF: the worker is exiting, reap() will tell
        if message[0] == MSG_READY:
            worker.ready = True
            for (backend, server), state in self.server_states.items():
                send_message(worker.channel, MSG_SERVER_STATE, backend, server, state)
            for (backend, server), settings in self.server_admin.items():
                self._send_admin(worker, backend, server, settings)
            if worker.slot != 0:      # the checking worker is where the addresses come from
                for (backend, server), fields in self.current_addresses():
                    send_message(worker.channel, MSG_SERVER_ADDR, backend, server, *fields)
            if self.soft_stop_at is not None:
                send_message(worker.channel, MSG_SOFT_STOP)
            self._retire_old_generations()
        elif message[0] == MSG_SERVER_STATE and len(message) == 4:
            self.server_states[message[1], message[2]] = message[3]
            for other in self.workers.values():
                if other is not worker and other.ready:
                    send_message(other.channel, *message)
        elif message[0] == MSG_SERVER_ADDR and len(message) == 6:
            if worker.generation == self.generation and worker.slot == 0:
                self._server_resolved(worker, message)
        elif message[0] == MSG_SERVER_FAILED and len(message) == 5:
            for checker in self.workers.values():
                if checker.generation == self.generation and checker.slot == 0 and checker.ready:
                    send_message(checker.channel, *message)
        elif message[0] == MSG_COUNTERS and len(message) == 3:
            request = self.counter_requests.get(message[1])
            if request is not None:
                request.answered(worker.pid, message[2])
                if request.complete():
                    self._finish_counters(message[1])

    def _server_resolved(self, checker, message):
        """The checking worker's ``server-addr``: kept, passed to its siblings, shown."""
        backend, server, fields = message[1], message[2], tuple(message[3:])
        self.server_addresses[backend, server] = (server_host(self.config, backend, server),) \
            + fields
        for other in self.workers.values():
            if other is not checker and other.ready and other.generation == self.generation:
                send_message(other.channel, *message)
        if self.view is not None:
            self.view.show_resolution(backend, server, *fields)

    def current_addresses(self):
        """The kept server-addr fields, as ((backend, server), (ADDRESS, MAINT, STATUS))."""
        return [(key, record[1:]) for key, record in self.server_addresses.items()]

    def last_addresses(self):
        """init-addr ``last`` for a new worker or config (resolve.start_addresses): the kept
        addresses of servers that had one and were not in DNS maintenance."""
        return {(backend, server, record[0]): ip_address(record[1])
                for (backend, server), record in self.server_addresses.items()
                if record[0] is not None and record[1] != "-" and record[2] == "0"}

    # -- what the runtime API calls (channel.py) ------------------------------------------------

    def watch(self, sock, callback):
        """Serve ``sock`` on the master's loop: ``callback(mask)`` when it is readable (the
        runtime API's admin socket, and what its connections need). Workers close it."""
        self.loop.register(sock, EVENT_READ, callback)

    def unwatch(self, sock):
        self.loop.unregister(sock)

    def set_server_admin(self, backend, server, state=None, weight=None, maxconn=None):
        """Set a server's admin state, weight or maxconn in every worker, now and after
        reloads and restarts; None, or a one-line reason why nothing was done."""
        be = self.config.backends.get(backend)
        if be is None or server not in [s.name for s in be.servers]:
            return "no server %s/%s" % (backend, server)
        if state is not None and state not in ADMIN_TRANSITIONS:
            return "state must be one of %s" % ", ".join(sorted(ADMIN_TRANSITIONS))
        if weight is not None and not 0 <= weight <= MAX_WEIGHT:
            return "weight must be from 0 to %d" % MAX_WEIGHT
        if maxconn is not None and not 0 <= maxconn <= MAX_COUNT:
            return "maxconn must be from 0 (unlimited) to %d" % MAX_COUNT
        settings = self.server_admin.setdefault((backend, server), {})
        changed = {field: value for field, value in
                   (("state", state), ("weight", weight), ("maxconn", maxconn))
                   if value is not None}
        settings.update(changed)
        for worker in self.workers.values():
            if worker.ready and not worker.stopping:
                self._send_admin(worker, backend, server, changed)
        return None

    def _send_admin(self, worker, backend, server, settings):
        """``server-admin`` to one worker, with its share of a maxconn."""
        if settings.get("maxconn") is not None:
            settings = dict(settings, maxconn=split_limit(
                settings["maxconn"], self.config.global_settings.workers))
        send_message(worker.channel, MSG_SERVER_ADMIN, backend, server, *admin_fields(settings))

    def request_counters(self, callback):
        """Ask every serving worker for its counters; ``callback(snapshots)`` later."""
        self._request_ids += 1
        request_id = str(self._request_ids)
        asked = [worker for worker in self.workers.values()
                 if worker.ready and not worker.stopping]
        self.counter_requests[request_id] = CounterRequest(
            callback, {worker.pid for worker in asked}, time.monotonic() + COUNTERS_TIMEOUT)
        for worker in asked:
            send_message(worker.channel, MSG_COUNTERS, request_id)
        if not asked:
            self._finish_counters(request_id)

    def _finish_counters(self, request_id):
        request = self.counter_requests.pop(request_id)
        request.callback(request.snapshots)

    def _retire_old_generations(self):
        """Once every worker of the new generation serves, the older ones stop accepting."""
        current = [w for w in self.workers.values() if w.generation == self.generation]
        if self.serving == self.generation or len(current) < self.config.global_settings.workers \
                or not all(w.ready for w in current):
            return
        self.serving = self.generation
        for worker in self.workers.values():
            if worker.generation != self.generation and not worker.stopping:
                worker.stopping = True
                send_message(worker.channel, MSG_STOP)
        self.close_listening(bind_keys(self.config))
        status = "generation %d serves with %d worker(s)" % (self.generation, len(current))
        LOG.info("%s", status)
        self.notifier.ready(status)

    # -- signals ------------------------------------------------------------------------------

    def reload(self):
        reopen_log()                  # logrotate's postrotate may send the reload signal
        LOG.info("reloading %s", self.config_path)
        self.notifier.reloading()
        try:
            config = with_workers(resolve_addresses(load_config(self.config_path),
                                                    self.last_addresses()))
            listening = self.open_listening(config)
        except SimpleProxyError as exc:       # ConfigError included (resolve_addresses too)
            for message in getattr(exc, "messages", None) or [str(exc)]:
                LOG.error("%s", message)
            LOG.error("reload aborted: the workers keep serving the previous configuration")
            self.notifier.ready("reload failed, serving the previous configuration")
            return
        for warning in config.warnings:
            LOG.warning("%s", warning)
        self.config = config
        # Kept only for servers the new config names by the same host name.
        self.server_addresses = {key: record for key, record in self.server_addresses.items()
                                 if record[0] is not None
                                 and record[0] == server_host(config, *key)}
        if self.view is not None:
            self.view.build(config)
        self.listening.update(listening)
        self.generation += 1
        self.restarts = []
        for slot in range(config.global_settings.workers):
            self.spawn(slot)

    def soft_stop(self):
        if self.stopping:
            return
        LOG.info("soft stop: all workers stop accepting, their connections drain")
        self.stopping = True
        self.notifier.stopping()
        self.restarts = []
        for worker in self.workers.values():
            worker.stopping = True
            send_message(worker.channel, MSG_STOP)
        self.close_listening(())
        for request_id in list(self.counter_requests):
            self._finish_counters(request_id)

    def hard_stop(self, signum):
        LOG.info("received %s, stopping", signal.Signals(signum).name)
        self.stopping = True
        self.notifier.stopping()
        for worker in self.workers.values():
            _kill(worker.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while self.workers and time.monotonic() < deadline:
            time.sleep(0.01)
            self.reap()
        for worker in self.workers.values():
            LOG.error("worker %d.%d (pid %d) ignored SIGTERM for %.0fs: killing it",
                      worker.generation, worker.slot, worker.pid, STOP_TIMEOUT)
            _kill(worker.pid, signal.SIGKILL)

    def _on_signal(self, signum, frame):
        self.signals.append(signum)

    # -- the loop -----------------------------------------------------------------------------

    def run(self):
        settings = self.config.global_settings
        self.listening = self.open_listening(self.config)
        for sock in self.activated.values():
            LOG.warning("a socket from systemd matches no bind line: %s", sock.getsockname())
            sock.close()
        self.activated = {}
        if settings.stats_socket is not None or settings.stats_http is not None:
            self.view = MasterView(self)
            self.stats_listeners = open_stats_listeners(self.loop, settings, self.view)
            self.view.start()
        signal.set_wakeup_fd(self._wake_w.fileno())
        for signum in MASTER_SIGNALS:
            signal.signal(signum, self._on_signal)
        if settings.pidfile:
            with open(settings.pidfile, "w") as f:
                f.write("%d\n" % os.getpid())
        LOG.info("simpleproxy master ready (pid %d): %d worker(s), %s", os.getpid(),
                 settings.workers, ", ".join(bind.address.text for bind in
                                             bind_keys(self.config).values()))
        self.generation = 1
        for slot in range(settings.workers):
            self.spawn(slot)
        if self.notifier.watchdog_interval:
            self.next_watchdog = time.monotonic()
        try:
            self._loop()
        finally:
            self.close_listening(())
            for listener in self.stats_listeners:
                listener.close()
            if settings.pidfile:
                try:
                    os.unlink(settings.pidfile)
                except OSError:
                    pass
        LOG.info("master stopped")
        return 0

    def _loop(self):
        while not (self.stopping and not self.workers):
            now = time.monotonic()
            timeout = min([due for due in self._dues() if due is not None] or [now + 1.0]) - now
            self.loop.run_once(max(0.0, timeout))
            self._handle_signals()
            now = time.monotonic()
            if self.next_watchdog is not None and now >= self.next_watchdog:
                self.notifier.watchdog()
                self.next_watchdog = now + self.notifier.watchdog_interval
            if self.soft_stop_at is not None and now >= self.soft_stop_at:
                self.soft_stop()
            for request_id, request in list(self.counter_requests.items()):
                if now >= request.deadline:
                    self._finish_counters(request_id)
            for entry in [r for r in self.restarts if r[0] <= now]:
                self.restarts.remove(entry)
                if entry[1] == self.generation and not self.stopping:
                    self.spawn(entry[2])

    def _dues(self):
        yield self.next_watchdog
        wait = self.loop.next_wait()
        yield None if wait is None else time.monotonic() + wait
        yield None if self.stopping else self.soft_stop_at
        for request in self.counter_requests.values():
            yield request.deadline
        for entry in self.restarts:
            yield entry[0]

    def _handle_signals(self):
        while self.signals:
            signum = self.signals.pop(0)
            if signum == signal.SIGCHLD:
                self.reap()
            elif signum in (signal.SIGTERM, signal.SIGINT):
                self.hard_stop(signum)
            elif self.stopping:
                continue
            elif signum in RELOAD_SIGNALS:
                self.reload()
            elif signum == signal.SIGUSR1 and self.soft_stop_at is None:
                grace = self.config.global_settings.grace or 0.0
                LOG.info("received SIGUSR1: soft stop in %.3fs (grace)", grace)
                self.notifier.send("STATUS=soft stop: accepting for %.3fs more" % grace)
                self.soft_stop_at = time.monotonic() + grace
                for worker in self.workers.values():
                    send_message(worker.channel, MSG_SOFT_STOP)


class CounterRequest(object):
    """A request_counters() waiting for the workers' answers."""

    def __init__(self, callback, waiting_for, deadline):
        self.callback = callback
        self.waiting_for = waiting_for        # pids that have not answered yet
        self.deadline = deadline
        self.snapshots = []

    def answered(self, pid, text):
        if pid in self.waiting_for:
            self.waiting_for.discard(pid)
            self.snapshots.append(json.loads(text))

    def complete(self):
        return not self.waiting_for


def server_host(config, backend, server):
    """The host name ``config`` names ``backend``/``server`` by (None: no such server, or an
    IP address)."""
    be = config.backends.get(backend)
    return next((srv.host for srv in (be.servers if be is not None else ())
                 if srv.name == server), None)


def describe_exit(status):
    if os.WIFSIGNALED(status):
        signum = os.WTERMSIG(status)
        try:
            name = signal.Signals(signum).name
        except ValueError:
            name = str(signum)
        return "was killed by signal %s" % name
    return "exited with status %d" % os.WEXITSTATUS(status)


def _kill(pid, signum):
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _drain(sock):
    try:
        while sock.recv(4096):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def with_workers(config):
    """``config`` with a worker count: one when [global] does not say."""
    if config.global_settings.workers is not None:
        return config
    return config._replace(global_settings=config.global_settings._replace(workers=1))


def run_master(config):
    """Run the master on ``config`` (already checked) until it stops; the exit status."""
    return Master(with_workers(resolve_addresses(config)), config.path).run()


def needs_master(settings, environ=os.environ):
    """Whether to run as a master: when [global] sets any key of the process model (none of
    them means anything to a single process), or under systemd (it expects notifications
    or passes sockets)."""
    return (any(value is not None for value in (
        settings.workers, settings.grace, settings.hard_stop_after, settings.pidfile,
        settings.user, settings.group))
        or bool(environ.get("NOTIFY_SOCKET") or environ.get("LISTEN_FDS")))
