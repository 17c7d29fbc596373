"""curl as a real PROXY v1 client (``--haproxy-protocol``) through simpleproxy to nginx."""
import subprocess

import pytest

from peers import CLIENTS, find_program, free_port, program_output, wait_for_lines
from support import DEFAULT_TIMEOUT, hostport

NGINX_BODY = b"nginx http\n"


@pytest.fixture(scope="module")
def curl_chain(module_lab):
    """simpleproxy accept-proxy (IPv4 and IPv6) -> send-proxy-v2 -> nginx http proxy_protocol."""
    curl = find_program("curl")
    nginx_port, proxy_port = free_port(), free_port()
    nginx = module_lab.nginx(
        [nginx_port],
        http="server {\n listen 127.0.0.1:%d proxy_protocol;\n access_log {dir}/http.log pp;\n"
             " location / { return 200 \"nginx http\\n\"; }\n}\n" % nginx_port)
    proxy = module_lab.simpleproxy(
        "[listen from_curl]\nbind = 127.0.0.1:%d accept-proxy\n       [::1]:%d accept-proxy\n"
        "server nginx = 127.0.0.1:%d send-proxy-v2\n" % (proxy_port, proxy_port, nginx_port))
    return curl, proxy, nginx, proxy_port


def run_curl(curl, *args):
    """curl's body, and the local address and port it used (from ``-w``)."""
    result = subprocess.run(
        [curl, "-sS", "--max-time", str(DEFAULT_TIMEOUT), "-w", "\n%{local_ip} %{local_port}"]
        + list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=2 * DEFAULT_TIMEOUT)
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    body, _, local = result.stdout.rpartition(b"\n")
    local_ip, local_port = local.decode().split()
    return body, local_ip, int(local_port)


@pytest.mark.parametrize("client", sorted(CLIENTS))
def test_curl_haproxy_protocol_through_simpleproxy_to_nginx(curl_chain, client):
    curl, proxy, nginx, proxy_port = curl_chain
    source, host = CLIENTS[client]
    url = "http://%s/" % hostport(host, proxy_port)
    body, local_ip, local_port = run_curl(curl, "--haproxy-protocol", "--interface", source,
                                          "-g", url)
    assert (body, local_ip) == (NGINX_BODY, source)
    line = proxy.wait_for(hostport(source, local_port) + " ")
    assert "pp=v1/%s" % ("TCP4" if client == "ipv4" else "TCP6") in line.split()
    wait_for_lines(nginx.access_log("http.log"), 1, matching="%s %d " % (source, local_port))


def test_curl_haproxy_clientip_names_the_client(curl_chain):
    """``--haproxy-clientip`` (curl 8.2.0) puts a chosen client address in the v1 line."""
    curl, proxy, nginx, proxy_port = curl_chain
    if "--haproxy-clientip" not in program_output([curl, "--help", "all"]):
        version = program_output([curl, "--version"]).split()[1]
        pytest.skip("curl %s has no --haproxy-clientip (added in curl 8.2.0)" % version)
    body, local_ip, local_port = run_curl(
        curl, "--haproxy-protocol", "--haproxy-clientip", "203.0.113.7",
        "http://127.0.0.1:%d/" % proxy_port)
    assert body == NGINX_BODY
    proxy.wait_for("203.0.113.7:%d " % local_port)
    wait_for_lines(nginx.access_log("http.log"), 1, matching="203.0.113.7 %d " % local_port)
