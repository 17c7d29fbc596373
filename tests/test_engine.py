"""The engine in this process, on real loopback sockets: what cannot be provoked from outside.

A bug in the handling of one connection must cost that connection only: it is logged with its
traceback, closed, and every other connection carries on.
"""
import io
import socket
import threading

import pytest

from simpleproxy.config import parse_config
from simpleproxy.engine import Engine, Session
from simpleproxy.logs import setup_logging
from support import RecordingServer, connect, exchange, free_port, read_to_eof, wait_until

PAYLOAD = b"hello\x00world\r\n"
REPLY = b"reply"


@pytest.fixture
def running_engine():
    """Start an Engine on a thread with one frontend; yields (engine, port, backend, log)."""
    backend = RecordingServer(mode="record", reply=REPLY)
    port = free_port()
    config = parse_config("[listen app]\nbind = 127.0.0.1:%d\nserver s1 = %s send-proxy\n"
                          % (port, backend.config_address))
    log = io.StringIO()
    setup_logging("info", log)
    engine = Engine(config)
    engine.bind_all()
    thread = threading.Thread(target=engine.run, daemon=True)
    thread.start()
    yield engine, port, backend, log
    engine.stop()
    thread.join(10)
    assert not thread.is_alive()
    backend.close()


def test_a_failing_connection_is_contained(running_engine, monkeypatch):
    engine, port, backend, log = running_engine
    real_header = Session._outgoing_header
    calls = []

    def broken_once(session):
        calls.append(session)
        if len(calls) == 1:
            raise RuntimeError("injected failure")
        return real_header(session)

    monkeypatch.setattr(Session, "_outgoing_header", broken_once)
    victim = connect(("127.0.0.1", port))
    wait_until(lambda: len(calls) == 1, what="the first connection to reach its header")
    healthy = connect(("127.0.0.1", port))      # opened while the failure is being handled
    try:
        assert read_to_eof(victim) == b""        # closed (a reset is fine too)
    except ConnectionResetError:
        pass
    wait_until(lambda: "RuntimeError: injected failure" in log.getvalue(),
               what="the traceback in the log")
    assert "end=internal-error" in log.getvalue()
    assert exchange(("127.0.0.1", port), PAYLOAD) == REPLY
    healthy.sendall(PAYLOAD)
    healthy.shutdown(socket.SHUT_WR)
    assert read_to_eof(healthy) == REPLY


def test_an_error_outside_any_session_does_not_stop_the_loop(running_engine):
    engine, port, backend, log = running_engine

    def explode():
        raise ValueError("a broken callback")

    engine.call_soon_threadsafe(explode)      # the entry point the health-check threads use
    wait_until(lambda: "ValueError: a broken callback" in log.getvalue(), what="the error logged")
    assert exchange(("127.0.0.1", port), PAYLOAD) == REPLY

