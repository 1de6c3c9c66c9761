"""Several real hosts joined over a real nats-server (docs/cluster.md): the node
registry, `sbctl cluster`, degraded while NATS is away and recovered after, and
the client library's list of endpoints."""

import json
import signal
import subprocess
import urllib.request

import pytest

from nats_server import NatsServer
from switchboard_host import RunningHost, build_dir, free_port, wait_until

BUILD = build_dir()


@pytest.fixture
def nats(tmp_path):
    server = NatsServer(tmp_path)
    server.start()
    yield server
    server.stop(signal.SIGKILL)


@pytest.fixture
def cluster(tmp_path, nats):
    """Three nodes on one machine, as docs/cluster.md runs them."""
    hosts = []
    for name in ("n1", "n2", "n3"):
        workdir = tmp_path / name
        workdir.mkdir()
        hosts.append(RunningHost(BUILD, workdir,
                                 extra_args=["--cluster", nats.url, "--node-name", name]))
    yield hosts
    for host in hosts:
        host.stop()


def admin_for(host):
    import switchboard
    return switchboard.Admin(host.admin_socket)


def sbctl(host, *args):
    run = subprocess.run([str(BUILD / "ctl" / "sbctl"), "--socket", host.admin_socket, *args],
                         capture_output=True, text=True, timeout=60)
    return run


def node_names(host):
    with admin_for(host) as admin:
        return sorted(n["name"] for n in admin.cluster()["nodes"])


def metric(host, name):
    port = host.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_every_node_lists_the_three_nodes(cluster, nats):
    for host in cluster:
        assert wait_until(lambda: node_names(host) == ["n1", "n2", "n3"]), host.log()
    with admin_for(cluster[0]) as admin:
        status = admin.status()
        assert status["cluster"] == "connected"
        view = admin.cluster()
    assert view["state"] == "connected"
    assert view["url"] == nats.url
    assert view["node"] == "n1"
    assert view["error"] == ""
    nodes = {n["name"]: n for n in view["nodes"]}
    assert len(nodes) == 3
    for host, name in zip(cluster, ("n1", "n2", "n3")):
        assert nodes[name]["address"] == f"127.0.0.1:{host.port}"
        assert nodes[name]["sessions"] == 0
        assert "routing=" in nodes[name]["plugin_versions"]
        assert nodes[name]["last_heard_ms_ago"] < 60000

    run = sbctl(cluster[1], "cluster")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert any(line.split()[:2] == ["state", "connected"] for line in lines), run.stdout
    rows = [line.split()[0] for line in lines if line.startswith("n")]
    assert rows == ["node", "nats", "n1", "n2", "n3"], run.stdout
    as_json = json.loads(sbctl(cluster[2], "cluster", "--json").stdout)
    assert [n["name"] for n in as_json["nodes"]] == ["n1", "n2", "n3"]


def test_a_node_that_stops_leaves_the_listing(cluster):
    assert wait_until(lambda: node_names(cluster[0]) == ["n1", "n2", "n3"])
    cluster[2].stop()
    assert wait_until(lambda: node_names(cluster[0]) == ["n1", "n2"])


def test_nats_lost_degrades_every_node_which_keeps_serving_then_recovers(cluster, nats):
    import switchboard
    assert wait_until(lambda: node_names(cluster[0]) == ["n1", "n2", "n3"])
    host = cluster[0]
    with admin_for(host) as admin:
        client = switchboard.Client("127.0.0.1", host.port, timeout=20.0)
        client.request_code("+15550101")
        key = client.verify("+15550101", admin.outbox("+15550101")[0]["code"], "pytest")
        client.close()
    nats.stop(signal.SIGKILL)
    for node in cluster:
        assert wait_until(lambda: admin_for(node).status()["cluster"] == "degraded"), node.log()
        assert metric(node, "switchboard_cluster_degraded") == 1
    run = sbctl(cluster[0], "cluster")
    assert run.returncode == 1
    assert "degraded" in run.stdout
    assert "cluster degraded: NATS at " + nats.url + " unreachable" in run.stdout

    # A degraded node still serves the phones it knows: log in, send to self.
    with admin_for(host) as admin:
        client = switchboard.Client("127.0.0.1", host.port, timeout=20.0)
        client.login("+15550101", key)
        sent = client.send("+15550101", "while degraded", "c1")
        assert sent["id"] > 0
        # A new device needs the directory (its key must replace the old one on every
        # node): refused with the reason until NATS is back.
        client.request_code("+15550102")
        code = admin.outbox("+15550102")[0]["code"]
        with pytest.raises(switchboard.Error,
                           match="cluster degraded: NATS at " + nats.url + " unreachable"):
            client.verify("+15550102", code, "pytest")
        client.close()

    nats.start()
    for host in cluster:
        assert wait_until(lambda: admin_for(host).status()["cluster"] == "connected"), host.log()
        assert metric(host, "switchboard_cluster_degraded") == 0
        assert metric(host, "switchboard_cluster_disconnects_total") == 1
    assert wait_until(lambda: node_names(cluster[1]) == ["n1", "n2", "n3"])


def test_a_single_node_says_so(host):
    with admin_for(host) as admin:
        assert admin.status()["cluster"] == "single-node"
        view = admin.cluster()
    assert view["state"] == "single-node"
    assert view["nodes"] == []
    assert metric(host, "switchboard_cluster_degraded") is None
    run = sbctl(host, "cluster")
    assert run.returncode == 0
    assert run.stdout.startswith("single node: not in a cluster")


def test_the_client_moves_on_to_the_next_endpoint_that_accepts(host):
    import switchboard
    dead = f"127.0.0.1:{free_port()}"  # nobody listens here
    client = switchboard.Client(endpoints=[dead, f"127.0.0.1:{host.port}"], timeout=20.0)
    client.request_code("+15550102")
    with admin_for(host) as admin:
        code = admin.outbox("+15550102")[0]["code"]
    client.login("+15550102", client.verify("+15550102", code, "pytest"))
    assert client.send("+15550102", "hello", "c1")["id"] > 0
    client.close()
