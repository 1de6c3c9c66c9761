"""switchboard.Admin's node= argument against two real hosts joined over a real
nats-server (docs/cluster.md, "Plugins across the cluster"), and the rolling
upgrade example scripting/examples/cluster_rolling_upgrade.py run as written."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from nats_server import NatsServer
from switchboard_host import RunningHost, build_dir, wait_until

BUILD = build_dir()
EXAMPLE = Path(__file__).resolve().parents[2] / "scripting" / "examples" / "cluster_rolling_upgrade.py"


@pytest.fixture
def nodes(tmp_path):
    server = NatsServer(tmp_path)
    server.start()
    hosts = []
    for name in ("n1", "n2"):
        workdir = tmp_path / name
        workdir.mkdir()
        hosts.append(RunningHost(BUILD, workdir, extra_args=[
            "--cluster", server.url, "--node-name", name, "--probation-seconds", "1"]))
    import switchboard
    for host in hosts:
        with switchboard.Admin(host.admin_socket) as admin:
            assert wait_until(lambda: len(admin.cluster()["nodes"]) == 2), host.log()
    yield hosts
    for host in hosts:
        host.stop()
    server.stop(signal.SIGKILL)


def routing_version(host):
    import switchboard
    with switchboard.Admin(host.admin_socket) as admin:
        return next(p for p in admin.plugins() if p["kind"] == "routing")["version"]


def test_load_and_rollback_with_node(nodes):
    import switchboard
    n1, n2 = nodes
    with switchboard.Admin(n1.admin_socket) as admin:
        results = admin.load_plugin("routing", n1.plugin("routing", next_build=True), node="n2")
        assert len(results) == 1
        [result] = results
        assert (result["node"], result["answered"], result["ok"]) == ("n2", True, True), result
        assert (result["from_version"], result["to_version"]) == ("1.0.0", "1.1.0")
        assert routing_version(n2) == "1.1.0"
        assert routing_version(n1) == "1.0.0"

        missing = admin.load_plugin("routing", "/nonexistent/librouting.so", node="all")
        assert [r["node"] for r in missing] == ["n1", "n2"]
        for r in missing:
            assert r["answered"] and not r["ok"]
            assert r["error"] == "no file /nonexistent/librouting.so"

        back = admin.rollback_plugin("routing", node="n2")
        assert len(back) == 1
        assert back[0]["ok"], back[0]["error"]
        assert back[0]["to_version"] == "1.0.0"
        assert routing_version(n2) == "1.0.0"

        with pytest.raises(switchboard.Error, match=r"^no node 'n9' in the cluster \(nodes: n1, n2\)$"):
            admin.load_plugin("routing", n1.plugin("routing", next_build=True), node="n9")


def test_wait_probation_on_this_node(nodes):
    import switchboard
    n1, _ = nodes
    with switchboard.Admin(n1.admin_socket) as admin:
        result = admin.load_plugin("routing", n1.plugin("routing", next_build=True),
                                   wait_probation=True)
        assert result["ok"], result["error"]
        # The answer came after the window closed: no longer on probation.
        routing = next(p for p in admin.plugins() if p["kind"] == "routing")
        assert (routing["version"], routing["state"]) == ("1.1.0", "serving")


def test_the_rolling_upgrade_example(nodes):
    n1, n2 = nodes
    env = dict(os.environ, PYTHONPATH=str(BUILD / "scripting"))
    run = subprocess.run([sys.executable, str(EXAMPLE), "routing",
                          n1.plugin("routing", next_build=True), "--socket", n2.admin_socket],
                         capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout == ("n1: 1.0.0 -> 1.1.0, probation passed\n"
                          "n2: 1.0.0 -> 1.1.0, probation passed\n"
                          "routing: every node upgraded\n")
    assert routing_version(n1) == "1.1.0"
    assert routing_version(n2) == "1.1.0"
