"""A worker's end of the channel to its master (master.py, channel.py).

The master forks each worker and hands run_proxy an ``attach`` that builds a WorkerLink on the
worker's own loop: through it the worker reports its health verdicts, name lookups and
counters, and takes what the master passes on from its siblings and from the operator.
"""
import json
import os

from .channel import (MESSAGE_MAX, MSG_COUNTERS, MSG_READY, MSG_SERVER_ADDR, MSG_SERVER_ADMIN,
                      MSG_SERVER_FAILED, MSG_SERVER_STATE, MSG_SOFT_STOP, MSG_STOP, STATE_DOWN,
                      STATE_UP, parse_admin_fields, receive_message, send_message)
from .discovery import ip_address
from .logs import LOG
from .loop import EVENT_READ
from .masterview import SESSIONS_IN_SNAPSHOT, session_record
from .stats import stats_snapshot

class WorkerLink(object):
    """A worker's end of its channel, on the worker's loop (run_proxy's ``attach``).

    Slot 0 of each generation is the one that runs health checks, and its verdicts go to
    the master, which passes them on; the other workers run no checks, take the verdicts
    they are sent and send their failed client connections (passive health) to be counted
    by the checker, so each server gets one check per interval and one count however many
    workers there are."""

    def __init__(self, proxy, channel, checking, hard_stop_after):
        self.proxy = proxy
        self.channel = channel
        self.checking = checking
        self.hard_stop_after = hard_stop_after
        self.snapshot_too_large = False     # said once in the log
        if checking:
            proxy.on_server_change = self.send_verdict
            proxy.checker.on_resolved = self.send_resolution
        else:
            proxy.hand_checks_over(self.send_failure)
        channel.setblocking(False)
        proxy.loop.register(channel, EVENT_READ, self.on_message)
        send_message(channel, MSG_READY)
        if checking:
            for name in proxy.checker.names:
                self.send_resolution(name)

    def send_verdict(self, pool, server):
        send_message(self.channel, MSG_SERVER_STATE, pool.backend.name, server.config.name,
                     STATE_UP if server.healthy else STATE_DOWN)

    def send_resolution(self, name):
        """Where the servers of a followed name (health.FollowedNameState) connect now."""
        for server_name, (pool, server) in name.servers.items():
            address = "-" if server.address is None else server.address.sockaddr[0]
            send_message(self.channel, MSG_SERVER_ADDR, pool.backend.name, server_name, address,
                         "1" if server.dns_maint else "0", name.resolution.status)

    def send_failure(self, server, cause, duration):
        send_message(self.channel, MSG_SERVER_FAILED, server.backend.name, server.config.name,
                     cause, "%.6f" % duration)

    def on_message(self, mask):
        message = receive_message(self.channel)
        if message is None:
            return
        kind = message[0] if message else None
        if kind is None or kind == MSG_STOP:
            if kind is None:
                LOG.warning("the master is gone: finishing the connections")
            self.proxy.loop.unregister(self.channel)
            self.proxy.soft_stop(self.hard_stop_after)
        elif kind == MSG_SOFT_STOP:
            self.proxy.stopping_softly = True
        elif kind == MSG_SERVER_STATE and len(message) == 4:
            for pool, server in self.servers_named(message[1], message[2]):
                self.proxy.checker.adopt(pool, server, message[3] == STATE_UP)
        elif kind == MSG_SERVER_ADDR and len(message) == 6:
            address = None if message[3] == "-" else ip_address(message[3])
            for pool, server in self.servers_named(message[1], message[2]):
                self.proxy.checker.adopt_resolution(pool, server, address, message[4] == "1",
                                                    message[5])
        elif kind == MSG_SERVER_FAILED and len(message) == 5:
            for pool, server in self.servers_named(message[1], message[2]):
                self.proxy.checker.connection_failed(server, message[3], float(message[4]))
        elif kind == MSG_SERVER_ADMIN and len(message) >= 4:
            self.apply_admin(message[1], message[2], parse_admin_fields(message[3:]))
        elif kind == MSG_COUNTERS and len(message) == 2:
            self.send_counters(message[1])

    def send_counters(self, request_id):
        text = json.dumps(counter_snapshot(self.proxy, self.checking), separators=(",", ":"))
        if len(text) + len(request_id) + len(MSG_COUNTERS) + 2 > MESSAGE_MAX:
            if not self.snapshot_too_large:
                self.snapshot_too_large = True
                LOG.warning("this worker's counters (%d bytes) do not fit a channel message "
                            "(%d): the stats under the master leave it out", len(text),
                            MESSAGE_MAX)
            return
        send_message(self.channel, MSG_COUNTERS, request_id, text)

    def apply_admin(self, backend, server_name, settings):
        for pool, server in self.servers_named(backend, server_name):
            try:
                self.proxy.set_server_admin(pool, server, settings.get("state"),
                                            settings.get("weight"), settings.get("maxconn"))
            except ValueError as exc:
                LOG.warning("server-admin %s/%s: %s", backend, server_name, exc)

    def servers_named(self, backend, server_name):
        """(pool, server) of the server this config has by those names: one, or none."""
        pool = self.proxy.pools.get(backend)
        return [(pool, server) for server in (pool.servers if pool is not None else ())
                if server.config.name == server_name]



def counter_snapshot(proxy, checking):
    """One worker's counters, by name: what ``counters`` carries to the master. Gauges and
    totals only (stats.stats_snapshot), so that the master can add the workers' snapshots up
    (masterview.aggregate_counters); ``checking``: this worker runs the health checks."""
    now = proxy.loop.now
    snapshot = stats_snapshot(proxy.stats, now, checking)
    snapshot.update(pid=os.getpid(), active=proxy.active,
                    stopping_softly=proxy.stopping_softly,
                    sessions=[session_record(view, now) for view in
                              proxy.session_views(SESSIONS_IN_SNAPSHOT)])
    return snapshot
