"""What a configuration reads into: the frozen objects the rest of simpleproxy reads.

config.py checks an INI file and builds these; the proxy, the balancer, health and the
master only ever read them. They are namedtuples so that a configuration, once read, cannot
change under a running proxy: a reload reads a new one.
"""

from collections import namedtuple

from .statsconfig import DEFAULT_STATS_NAME


Bind = namedtuple("Bind", "address accept_proxy accept_proxy_from proxy_optional_from "
                          "accept_proxy_version v6only proxy_max_header line")
Bind.__doc__ = """One listening address of a frontend.

accept_proxy: whether PROXY headers are handled on it at all. accept_proxy_from and
proxy_optional_from: tuples of ipaddress networks and/or the string "unix" (Unix-socket
peers); peers in the first must send a header, peers in the second may. An empty
accept_proxy_from with accept_proxy on trusts every peer. accept_proxy_version: "v1",
"v2" or "any". v6only: settled (see config.py's _CfgReader._settle_binds). proxy_max_header: bytes, the
bind's own value or else its frontend's."""

Frontend = namedtuple("Frontend", "name binds default_backend maxconn timeout_client "
                                  "timeout_client_fin timeout_proxy_header maxconn_per_source "
                                  "maxconn_pending_header dontlognull dontlog_normal rules "
                                  "log_format line")
Frontend.__doc__ = """A frontend or the front half of a listen section.

maxconn None: only the global limit applies; maxconn_per_source 0: off. Timeouts are
float seconds. rules: its acl, use_backend and tcp-request rules compiled (rules.py's
FrontendRules; NO_RULES when it has none). log_format: "tcplog" or "json"."""

Server = namedtuple("Server", "name address send_proxy proxy_v2_tlvs check check_send_proxy "
                              "inter fastinter downinter rise fall weight backup maxconn disabled "
                              "check_port check_addr check_send check_expect host init_addr "
                              "resolve_prefer resolve template line")
Server.__doc__ = """One server line, with default-server and the built-in defaults applied.

send_proxy: 0, 1 or 2 (the header version sent to it); proxy_v2_tlvs: the tlvfmt.TlvPlan
of its v2 header (proxy-v2-options and set-proxy-v2-tlv-fmt; NO_TLVS: addresses only);
check_send_proxy: bool, resolved as HAProxy does (on with
send-proxy unless the check goes to its own port or addr); check_port: int or None (the
server's port); check_addr: an Address whose port is already the check port, or None
(check the server's address); check_send: bytes or None; check_expect: None,
("string", bytes) or ("rstring", bytes pattern); maxconn 0: unlimited. Durations are
float seconds.

Following its host name (discovery.py): host is the name as written (None for an IP address
or a Unix socket; ``address`` keeps it too until start-up resolves it); init_addr: the
init-addr methods, words and IP texts; resolve_prefer: "ipv4" or "ipv6"; resolve: the
``resolve`` option; template: the server-template's NAME for its servers, else None."""

Backend = namedtuple("Backend", "name balance servers retries redispatch allbackups "
                                "timeout_connect timeout_server timeout_server_fin timeout_queue "
                                "timeout_check maxqueue line")
Backend.__doc__ = """A backend or the back half of a listen section.

servers: tuple of Server; timeout_check None: each server's inter; maxqueue 0:
unbounded."""

GlobalSettings = namedtuple("GlobalSettings", "maxconn log_level bufsize check_threads "
                                              "resolve_interval resolve_hold_nx "
                                              "resolve_hold_timeout resolve_hold_other workers "
                                              "grace hard_stop_after pidfile user group "
                                              "stats_socket stats_http stats_auth stats_refresh "
                                              "stats_name log_target bufsize_large "
                                              "buffers_limit")
GlobalSettings.__doc__ = """The [global] section. maxconn None: the engine derives it from
the descriptor limit; bufsize: the read size in bytes before relaying, and while relaying
once the held bytes are at their bound; bufsize_large: the relay read size below it;
buffers_limit: that bound, in large buffers (0: none); resolve_interval None: host
names are resolved once, at start (but see the ``resolve`` option); the holds: seconds a
failing name keeps its servers' addresses, by HAProxy's failure kinds; workers None: one
process, no master (see master.py), else the worker count; grace and hard_stop_after: float
seconds or None; pidfile, user, group: str or None. stats_socket: a statsconfig.StatsSocket
or None; stats_http: an Address or None; stats_auth: a StatsAuth or None; stats_refresh: the
page's refresh in seconds; stats_name: what show info and the page call the process;
log_target: where the log goes, a statsconfig.LogTarget, or None for stderr."""
# The process keys (absent means not set) and the stats keys have defaults.
GlobalSettings.__new__.__defaults__ = (None,) * 6 + (None, None, None, 5, DEFAULT_STATS_NAME,
                                                    None, 4 * 1024 * 1024, 16)

Config = namedtuple("Config", "path global_settings frontends backends warnings")
Config.__doc__ = """A whole configuration. frontends: tuple in file order (listen sections
included); backends: dict name -> Backend in file order; warnings: tuple of messages."""
