"""Every metric the Grafana dashboard (packaging/grafana-dashboard.json) queries is
in a live host's /metrics output, after the host has done the things that make
each family appear: a plugin swap, registrations, logins and a message."""

import json
import re
import urllib.request

from host_process import REPO, HostProcess, clean_env, run

DASHBOARD = REPO / "packaging/grafana-dashboard.json"


def queried_metrics():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    assert len(exprs) == sum(len(p["targets"]) for p in dashboard["panels"]) > 10
    return sorted({m for e in exprs for m in re.findall(r"\bswitchboard_[a-z_]+\b", e)})


def test_dashboard_metrics_exist_in_a_live_host(build, tmp_path):
    metrics = queried_metrics()
    assert len(metrics) >= 20, metrics
    host = HostProcess(build / "host/switchboard", tmp_path / "work",
                       ["--plugin-dir", build / "plugins"])
    try:
        sbctl = build / "ctl/sbctl"
        run([sbctl, "plugin", "load", "routing", build / "plugins/routing/librouting-next.so"],
            cwd=host.workdir, env=clean_env())
        script = f"""
import switchboard
admin = switchboard.Admin()
def phone(number):
    c = switchboard.Client("127.0.0.1", {host.port}, timeout=20.0)
    c.request_code(number)
    c.login(number, c.verify(number, admin.outbox(number)[0]["code"], "test"))
    return c
a, b = phone("+15550002001"), phone("+15550002002")
a.send("+15550002002", b"hello")
print(b.next_message(timeout=20)["text"])
"""
        out = run(["/usr/bin/python3", "-c", script], cwd=host.workdir,
                  env=clean_env(PYTHONPATH=str(build / "scripting"))).stdout
        assert out.strip() == "hello"
        with urllib.request.urlopen(f"http://127.0.0.1:{host.metrics_port}/metrics",
                                    timeout=20) as response:
            text = response.read().decode()
    finally:
        host.stop()
    samples = {re.match(r"[a-z_]+", line).group(0)
               for line in text.splitlines() if line and not line.startswith("#")}
    missing = [m for m in metrics if m not in samples]
    assert missing == [], f"queried by the dashboard but not exported: {missing}"
