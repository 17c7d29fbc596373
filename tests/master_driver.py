"""A master with a stand-in for the runtime API's admin socket, for tests/test_master.py.

    python master_driver.py CONTROL_SOCKET CONFIG

It runs simpleproxy's Master on CONFIG and serves a Unix socket at CONTROL_SOCKET through
``Master.watch``, as the runtime API will: a connection sends one line, gets one line back.

    admin BACKEND SERVER FIELD=VALUE...   Master.set_server_admin: "ok" or its error
    counters                              Master.request_counters: JSON, {"snapshots": the
                                          workers' own, "total": aggregate_counters of them}
"""
import json
import socket
import sys

from simpleproxy.channel import parse_admin_fields
from simpleproxy.config import load_config
from simpleproxy.logs import setup_logging
from simpleproxy.master import Master, with_workers
from simpleproxy.masterview import aggregate_counters
from simpleproxy.resolve import resolve_addresses


def serve_control(master, path):
    control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    control.bind(path)
    control.listen(8)

    def on_connection(mask):
        conn, _ = control.accept()
        conn.settimeout(5)
        words = conn.makefile("r").readline().split()
        if words[:1] == ["admin"] and len(words) >= 4:
            error = master.set_server_admin(words[1], words[2],
                                            **parse_admin_fields(words[3:]))
            reply(conn, error or "ok")
        elif words == ["counters"]:
            master.request_counters(lambda snapshots: reply(conn, json.dumps(
                {"snapshots": snapshots, "total": aggregate_counters(snapshots)})))
        else:
            reply(conn, "unknown command")
    master.watch(control, on_connection)


def reply(conn, line):
    conn.sendall(line.encode() + b"\n")
    conn.close()


def main(control_path, config_path):
    setup_logging("info")
    config = load_config(config_path)
    master = Master(with_workers(resolve_addresses(config)), config_path)
    serve_control(master, control_path)
    return master.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
