"""/metrics: the exposition parsed by prometheus_client, with HAProxy's names and labels."""
from prometheus_client.parser import text_string_to_metric_families

from simpleproxy.balancer import MAINT
from simpleproxy.metrics import escape_label, exposition
from stats_support import START, ReferenceTarget


def metrics(stats, now=START):
    return {family.name: family for family in
            text_string_to_metric_families(exposition(stats, now))}


def samples(families, name):
    return {tuple(sorted(sample.labels.items())): sample.value
            for family in families.values() for sample in family.samples if sample.name == name}


def test_metrics_parse_and_follow_haproxy_names():
    target = ReferenceTarget()
    stats = target.stats
    fe = stats.frontends[0]
    fe.stot, fe.bin, fe.bout = 5, 500, 7000
    be = stats.backend("app")
    be.servers[0].bin = 321
    be.pool.set_admin(be.servers[1].state, MAINT)
    stats.pp_received[2, "PROXY"] += 4
    stats.pp_rejected["bad-checksum"] += 1
    stats.trust_decisions["accept-proxy-from:10.0.0.0/8"] += 3
    families = metrics(stats)
    assert samples(families, "haproxy_frontend_sessions_total") == {(("proxy", "web"),): 5.0,
                                                                  (("proxy", "db"),): 0.0}
    assert samples(families, "haproxy_frontend_bytes_out_total")[(("proxy", "web"),)] == 7000
    assert samples(families, "haproxy_server_bytes_in_total")[
        (("proxy", "app"), ("server", "s1"))] == 321
    assert samples(families, "haproxy_backend_active_servers")[(("proxy", "app"),)] == 1
    status = samples(families, "haproxy_server_status")
    assert {labels[2][1]: value for labels, value in status.items()
            if labels[:2] == (("proxy", "app"), ("server", "s2"))} == \
        {"DOWN": 0, "UP": 0, "MAINT": 1, "DRAIN": 0, "NOLB": 0}
    assert samples(families, "simpleproxy_proxy_headers_received_total")[
        (("command", "PROXY"), ("version", "v2"))] == 4
    assert samples(families, "simpleproxy_proxy_headers_rejected_total")[
        (("kind", "bad-checksum"),)] == 1
    assert samples(families, "simpleproxy_trust_decisions_total")[
        (("rule", "accept-proxy-from:10.0.0.0/8"),)] == 3
    assert families["haproxy_frontend_sessions"].type == "counter"


def test_label_values_are_escaped():
    assert escape_label('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    stats = ReferenceTarget().stats
    stats.trust_decisions['we"ird\\\nrule'] += 1
    families = metrics(stats)
    assert samples(families, "simpleproxy_trust_decisions_total") == {
        (("rule", 'we"ird\\\nrule'),): 1}
