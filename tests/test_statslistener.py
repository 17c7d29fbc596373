"""The stats socket and the stats listener of a running proxy: real sockets, real process.

What the issue asks of them end to end: the commands reach the pools (drain, maint, weight,
maxconn change routing), the counters match the traffic sent, the Unix socket is
owner-only, and bad commands, huge lines and slow clients get an error or a close while
the proxy goes on serving.
"""
import json
import os
import socket
import stat
import threading
import time

import pytest

from simpleproxy.proxyproto import build_v2
from simpleproxy.statslistener import CLIENT_TIMEOUT, MAX_CLIENTS
from stats_support import ask, http_get, metrics, stats_config
from support import (DEFAULT_TIMEOUT, PAYLOAD, RESET, TIMING_MARGIN, RecordingServer, connect,
                     exchange, exchange_or_reset, free_port, read_to_eof, v2_header, wait_until)


def test_the_unix_socket_is_owner_only_and_answers_show_info(launch, tmp_path, echo_servers):
    text, sock, http, _ = stats_config(
        tmp_path, [("s1", echo_servers[0].config_address)])
    proxy = launch(text)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o600 and stat.S_ISSOCK(os.stat(sock).st_mode)
    info = ask(sock, "show info\n")
    assert info.startswith("Name: simpleproxy\nVersion: ")
    assert "\nPid: %d\n" % proxy.proc.pid in info and "\nMaxconn: " in info
    assert info.endswith("\n\n")


def test_mode_and_level_user_and_stats_name(launch, tmp_path, echo_servers):
    text, sock, _, _ = stats_config(tmp_path, [("s1", echo_servers[0].config_address)],
                                      global_extra="stats name = HAProxy\n")
    text = text.replace("admin.sock\n", "admin.sock mode 660 level user\n")
    launch(text)
    assert stat.S_IMODE(os.stat(sock).st_mode) == 0o660
    assert ask(sock, "show info\n").startswith("Name: HAProxy\nVersion: ")   # haproxyadmin's test
    assert ask(sock, "show stat\n").startswith("# pxname,svname,qcur,")
    assert ask(sock, "disable server app/s1\n") == "Permission denied\n\n"
    assert "s1,0,0,0,0,,0,0,0,,0,,0,0,0,0,no check," in ask(sock, "show stat\n")


def test_a_stale_socket_is_replaced_and_another_file_is_refused(launch, tmp_path, echo_servers):
    text, sock, _, _ = stats_config(tmp_path, [("s1", echo_servers[0].config_address)])
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(sock)
    leftover.close()                          # the file of a socket nobody listens on
    launch(text)
    assert ask(sock, "show info\n").startswith("Name: simpleproxy\n")
    launch.stop_all()
    assert not os.path.exists(sock)           # removed at stop
    with open(sock, "w") as f:
        f.write("precious")
    path = os.path.join(str(tmp_path), "refused.ini")
    with open(path, "w") as f:
        f.write(text)
    result = launch.cli([path])
    assert result.returncode != 0
    assert "cannot listen for the stats socket on %s: the path exists and is not a socket" \
        % sock in result.stderr
    with open(sock) as f:
        assert f.read() == "precious"


def test_stats_socket_over_tcp_and_prompt_mode(launch, tmp_path, echo_servers):
    port = free_port()
    text, _, _, _ = stats_config(tmp_path, [("s1", echo_servers[0].config_address)])
    text = text.replace("stats socket = %s" % os.path.join(str(tmp_path), "admin.sock"),
                        "stats socket = 127.0.0.1:%d" % port)
    launch(text)
    answer = ask(("127.0.0.1", port), "prompt\nshow servers state app\nhelp set\nquit\n")
    assert answer.startswith("\n> 1\n# be_id be_name srv_id srv_name srv_addr")
    assert "app 1 s1 127.0.0.1 2 0 1 1 " in answer
    assert "  set server <bk>/<srv> [opts]  " in answer and "show stat" not in answer


def test_set_timeout_cli_sets_the_clients_own_deadline(launch, tmp_path, echo_servers):
    """hatop sends "set timeout cli 60" on connecting; here a shorter one shows it is kept:
    an idle prompt-mode client is closed after it, not after CLIENT_TIMEOUT."""
    text, sock, _, _ = stats_config(tmp_path, [("s1", echo_servers[0].config_address)])
    launch(text)
    client = connect(sock)
    try:
        started = time.monotonic()
        client.settimeout(CLIENT_TIMEOUT + TIMING_MARGIN)
        client.sendall(b"prompt\nset timeout cli 1\n")
        assert read_to_eof(client) == b"\n> \n> "
        assert 1 <= time.monotonic() - started < CLIENT_TIMEOUT - 1
    finally:
        client.close()


def test_counters_match_the_traffic(launch, tmp_path, echo_servers):
    text, sock, http, port = stats_config(
        tmp_path, [("s1", echo_servers[0].config_address),
                   ("s2", echo_servers[1].config_address)],
        bind_extra=" accept-proxy accept-proxy-from 127.0.0.1/32")
    launch(text)
    sent = 6
    header = v2_header("10.0.0.1", "10.0.0.2", 1234, 80)
    for _ in range(sent):
        assert exchange(("127.0.0.1", port), header + PAYLOAD) == PAYLOAD
    bad = b"GARBAGE that is no PROXY header\r\n"
    assert exchange(("127.0.0.1", port), bad) == b""
    wait_until(lambda: metrics(http)[("haproxy_frontend_sessions_total",
                                      (("proxy", "web"),))] == sent + 1, what="every session")
    wait_until(lambda: metrics(http)[("haproxy_frontend_current_sessions",
                                      (("proxy", "web"),))] == 0, what="every session closed")
    values = metrics(http)
    web, app = (("proxy", "web"),), (("proxy", "app"),)
    assert values[("haproxy_frontend_bytes_in_total", web)] == sent * len(PAYLOAD)
    assert values[("haproxy_frontend_bytes_out_total", web)] == sent * len(PAYLOAD)
    assert values[("haproxy_backend_sessions_total", app)] == sent
    assert values[("haproxy_backend_bytes_in_total", app)] == sent * len(PAYLOAD)
    per_server = [values[("haproxy_server_sessions_total",
                          (("proxy", "app"), ("server", name)))] for name in ("s1", "s2")]
    assert per_server == [sent / 2, sent / 2]                # roundrobin
    assert values[("haproxy_server_bytes_out_total",
                   (("proxy", "app"), ("server", "s1")))] == sent / 2 * len(PAYLOAD)
    assert values[("haproxy_frontend_request_errors_total", web)] == 1
    assert values[("simpleproxy_proxy_headers_received_total",
                   (("command", "PROXY"), ("version", "v2")))] == sent
    assert values[("simpleproxy_proxy_headers_rejected_total", (("kind", "not-proxy"),))] == 1
    assert sum(value for (name, _), value in values.items()
               if name == "simpleproxy_trust_decisions_total") == sent + 1
    assert values[("haproxy_server_status",
                   (("proxy", "app"), ("server", "s1"), ("state", "UP")))] == 1
    # The same numbers in the CSV, and the refused header in "show errors".
    rows = {line.split(",")[1]: line.split(",") for line in ask(sock, "show stat\n").splitlines()
            if line.startswith("web,") or line.startswith("app,")}
    assert rows["FRONTEND"][7:10] == [str(sent + 1), str(sent * len(PAYLOAD)),
                                      str(sent * len(PAYLOAD))]
    errors = ask(sock, "show errors\n")
    assert "frontend web: PROXY header refused, not-proxy (" in errors
    assert "%d bytes received" % len(bad) in errors
    assert "  00000  47 41 52 42 41 47 45 20 74 68 61 74 20 69 73 20  GARBAGE that is " in errors
    # Rates come from the loop's once-a-second tick.
    wait_until(lambda: metrics(http)[("haproxy_frontend_max_session_rate", web)] >= 1,
               what="a session rate")


def test_health_and_basic_auth(launch, tmp_path, echo_servers):
    text, _, http, _ = stats_config(tmp_path, [("s1", echo_servers[0].config_address)],
                                      global_extra="stats auth = ops:s3cret\n")
    launch(text)
    assert http_get(http, "/health") == (200, b"ok\n")
    assert http_get(http, "/metrics")[0] == 401
    assert http_get(http, "/;csv")[0] == 401
    status, body = http_get(http, "/;csv", "Authorization: Basic b3BzOnMzY3JldA==\r\n")
    assert status == 200 and body.startswith(b"# pxname,svname,")
    status, page = http_get(http, "/", "Authorization: Basic b3BzOnMzY3JldA==\r\n")
    assert status == 200 and b"<html" in page and b">s1<" in page


def hold(port, count):
    """``count`` connections through the proxy, each one echo round trip in: established."""
    held = []
    for _ in range(count):
        sock = connect(("127.0.0.1", port))
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        held.append(sock)
    return held


def server_total(sock, server):
    """The stot column of ``server``'s row in show stat: connections sent to it."""
    row = next(line.split(",") for line in ask(sock, "show stat\n").splitlines()
               if line.startswith("app,%s," % server))
    return int(row[7])


def test_drain_under_load_finishes_established_connections_and_sends_new_ones_elsewhere(
        launch, tmp_path, echo_servers):
    text, sock, _, port = stats_config(
        tmp_path, [("s1", echo_servers[0].config_address),
                   ("s2", echo_servers[1].config_address)])
    proxy = launch(text)
    held = hold(port, 6)                                   # 3 on s1, 3 on s2
    on_s1 = len(echo_servers[0].accepted)
    assert on_s1 == 3
    stop = threading.Event()
    failures = []

    def load():
        while not stop.is_set():
            try:
                if exchange(("127.0.0.1", port), PAYLOAD) != PAYLOAD:
                    failures.append("short echo")
            except OSError as exc:
                failures.append(repr(exc))
    loaders = [threading.Thread(target=load) for _ in range(3)]
    for thread in loaders:
        thread.start()
    try:
        wait_until(lambda: len(echo_servers[1].accepted) > 20, what="load on both servers")
        assert ask(sock, "set server app/s1 state drain\n") == "\n"
        drained_at = server_total(sock, "s1")      # the proxy's count: no race with the backend
        s2_then = len(echo_servers[1].accepted)
        wait_until(lambda: len(echo_servers[1].accepted) > s2_then + 40, what="more load")
        assert server_total(sock, "s1") == drained_at          # nothing new went to s1
        for sock_held in held:                                # the established ones go on
            sock_held.sendall(PAYLOAD)
            sock_held.shutdown(socket.SHUT_WR)
            assert read_to_eof(sock_held) == b"hello"[5:] + PAYLOAD
        assert ask(sock, "set server app/s1 state drain\n") == "\n"    # already: silent
        assert ",DRAIN," in ask(sock, "show stat\n")
        assert ask(sock, "set server app/s1 state ready\n") == "\n"
        before = len(echo_servers[0].accepted)
        wait_until(lambda: len(echo_servers[0].accepted) > before, what="s1 back in use")
    finally:
        stop.set()
        for thread in loaders:
            thread.join()
        for sock_held in held:
            sock_held.close()
    assert failures == []
    assert proxy.log_lines("server app/s1 administrative state changed from READY to DRAIN")
    assert proxy.log_lines("server app/s1 administrative state changed from DRAIN to READY")
    assert not proxy.log_lines("end=client-abort") and not proxy.log_lines("end=server-abort")


def test_maint_stops_checks_and_leaving_it_restarts_them(launch, tmp_path):
    checked = RecordingServer(mode="record")
    try:
        text, sock, _, port = stats_config(
            tmp_path, [("s1", checked.config_address + " check inter 100ms")])
        proxy = launch(text)
        wait_until(lambda: len(checked.accepted) >= 2, what="checks running")
        wait_until(lambda: ",L4OK," in ask(sock, "show stat\n"), what="a check result shown")
        assert ask(sock, "disable server app/s1\n") == "\n"
        time.sleep(0.3)                              # a check already running may still land
        during = len(checked.accepted)
        time.sleep(0.6)                              # six intervals: no check may come
        assert len(checked.accepted) == during
        assert exchange_or_reset(("127.0.0.1", port), b"x") in (b"", RESET)
        assert " be=- " in proxy.wait_for("end=no-server")   # the disabled server was not tried
        assert ask(sock, "enable server app/s1\n") == "\n"
        wait_until(lambda: len(checked.accepted) > during + 2, what="checks again")
    finally:
        checked.close()


def test_weight_and_maxconn_at_run_time(launch, tmp_path, echo_servers):
    text, sock, _, port = stats_config(
        tmp_path, [("s1", echo_servers[0].config_address),
                   ("s2", echo_servers[1].config_address)], backend="timeout queue = 20s")
    launch(text)
    assert ask(sock, "set server app/s2 weight 0\n") == "\n"
    assert ask(sock, "get weight app/s2\n") == "0 (initial 1)\n\n"
    held = hold(port, 2)
    assert len(echo_servers[1].accepted) == 0 and len(echo_servers[0].accepted) == 2
    assert ask(sock, "set maxconn server app/s1 2\n") == "\n"
    waiting = connect(("127.0.0.1", port))
    waiting.sendall(b"queued")
    wait_until(lambda: ",1,1,2,2," in ask(sock, "show stat -1 2 -1\n"), what="one queued")
    assert ask(sock, "set maxconn server app/s1 3\n") == "\n"    # its slot: the queue is served
    assert waiting.recv(6) == b"queued"
    for sock_held in held + [waiting]:
        sock_held.close()


@pytest.mark.slow                  # the slow clients wait out CLIENT_TIMEOUT (10 s)
def test_bad_commands_huge_lines_and_slow_clients_leave_the_proxy_unharmed(
        launch, tmp_path, echo_servers):
    text, sock, http, port = stats_config(tmp_path, [("s1", echo_servers[0].config_address)])
    launch(text)
    assert ask(sock, "frobnicate\n").startswith("Unknown command, but maybe one of the "
                                                "following ones is a better match:\n")
    assert ask(sock, "show sta\n").startswith("Unknown command, but maybe one of the "
                                              "following ones is a better match:\n")
    assert ask(sock, "set server app/nope state drain\n") == "No such server.\n\n"
    assert ask(sock, "set server app/s1 weight 999\n") == ("Absolute weight can only be between 0 and 256 "
                                                         "inclusive.\n\n")
    assert ask(sock, b"x" * 100000 + b"\n").startswith("Command line too long")
    status, _ = http_get(http, "/" + "a" * 20000)
    assert status == 413
    silent = [connect(sock) for _ in range(MAX_CLIENTS + 4)]
    started = time.monotonic()
    try:
        # Beyond MAX_CLIENTS the extra clients are closed at once; the proxy serves on.
        closed_at_once = 0
        for client in silent[MAX_CLIENTS:]:
            client.settimeout(DEFAULT_TIMEOUT)
            closed_at_once += client.recv(1) == b""
        assert closed_at_once == 4
        assert exchange(("127.0.0.1", port), PAYLOAD) == PAYLOAD
        assert http_get(http, "/health")[0] == 200
        for client in silent[:MAX_CLIENTS]:            # and the slow ones time out
            client.settimeout(CLIENT_TIMEOUT + TIMING_MARGIN + DEFAULT_TIMEOUT)
            assert client.recv(1) == b""
        assert CLIENT_TIMEOUT <= time.monotonic() - started <= CLIENT_TIMEOUT + 2 * TIMING_MARGIN
    finally:
        for client in silent:
            client.close()
    assert ask(sock, "show info\n").startswith("Name: simpleproxy\n")


@pytest.mark.parametrize("workers", ["", "workers = 2\n"], ids=["single", "two-workers"])
def test_show_sess_shows_the_client_the_header_gave_and_its_tlvs_escaped(
        launch, tmp_path, echo_servers, workers):
    """Under a master (two workers), from the workers' last snapshots: at most a second old."""
    text, sock, _, port = stats_config(tmp_path, [("s1", echo_servers[0].config_address)],
                                         global_extra=workers,
                                         bind_extra=" accept-proxy accept-proxy-from 127.0.0.1/32")
    launch(text)
    header = build_v2(("10.0.0.1", 1234), ("10.0.0.2", 80), tlvs=[(0x02, b"evil host\n\x00"),
                                                                 (0xE1, b"\x01\xff")])
    client = connect(("127.0.0.1", port))
    try:
        client.sendall(header + b"ping")
        assert client.recv(4) == b"ping"
        line = wait_until(lambda: next((line for line in ask(sock, "show sess\n").splitlines()
                                        if "src=10.0.0.1:1234" in line and "bytes_out=4" in line),
                                       None), what="the connection in show sess")
        assert " peer=127.0.0.1:%d " % client.getsockname()[1] in line
        assert " fe=web be=app srv=s1 state=RELAY " in line and " bytes_in=4 bytes_out=4" in line
        # Text TLVs by the JSON log's names, others by type; every byte escaped.
        assert line.endswith(" pp=v2/TCP4 authority=evil\\x20host\\x0a\\x00 tlv0xe1=\\x01\\xff")
    finally:
        client.close()


def test_json_log_format(launch, tmp_path, echo_servers):
    text, _, _, port = stats_config(tmp_path, [("s1", echo_servers[0].config_address)],
                                      frontend="log-format = json",
                                      bind_extra=" accept-proxy accept-proxy-from 127.0.0.1/32")
    proxy = launch(text)
    header = v2_header("10.0.0.1", "10.0.0.2", 1234, 80)
    assert exchange(("127.0.0.1", port), header + PAYLOAD) == PAYLOAD
    line = proxy.wait_for('"end":"normal"')
    record = json.loads(line[line.index("{"):])
    assert record["client"] == "10.0.0.1:1234" and record["frontend"] == "web"
    assert (record["backend"], record["server"]) == ("app", "s1")
    assert (record["bytes_in"], record["bytes_out"]) == (len(PAYLOAD), len(PAYLOAD))
    assert record["pp"] == "v2/TCP4" and record["trust"]


def test_config_check_reports_stats_keys_with_file_and_line(launch, tmp_path):
    path = os.path.join(str(tmp_path), "bad.ini")
    with open(path, "w") as f:
        f.write("[global]\nstats socket = /tmp/x.sock level root\nstats http = 127.0.0.1\n"
                "[frontend f]\nbind = :8000\nlog-format = xml\ndefault_backend = b\n"
                "[backend b]\nserver s = 127.0.0.1:1\n")
    result = launch.cli(["-c", path])
    assert result.returncode != 0
    assert "%s:2: [global] stats socket: level 'root' is unknown" % path in result.stderr
    assert "%s:3: [global] stats http: '127.0.0.1' has no port" % path in result.stderr
    assert "%s:6: [frontend f] log-format: 'xml' is not a log format" % path in result.stderr
