"""Every sbctl subcommand with --json against a real host; error cases exit non-zero
with exactly one line on stderr."""

import json
import subprocess

import switchboard


def run(sbctl_path, host, *args, socket=None):
    command = [str(sbctl_path), "--socket", socket or host.admin_socket, *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def run_json(sbctl_path, host, *args):
    done = run(sbctl_path, host, "--json", *args)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return json.loads(done.stdout)


def expect_one_line_error(done, fragment):
    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("sbctl: ")
    assert fragment in lines[0], lines[0]


def register(host, admin_json, phone):
    """A registered, logged-in phone through the Python module (conftest imports it)."""
    client = switchboard.Client("127.0.0.1", host.port)
    client.request_code(phone)
    code = admin_json("outbox", phone)[0]["code"]
    client.login(phone, client.verify(phone, code, "sbctl-test"))
    return client


def test_status_and_plugins(sbctl_path, host):
    status = run_json(sbctl_path, host, "status")
    assert status["clientEndpoint"] == f"127.0.0.1:{host.port}"
    plugins = run_json(sbctl_path, host, "plugins")
    assert sorted(p["kind"] for p in plugins) == ["auth", "offline", "presence", "routing"]
    # --json also works after the subcommand
    done = run(sbctl_path, host, "stats", "--json")
    assert done.returncode == 0
    assert "messagesIn" in json.loads(done.stdout)


def test_plugin_load_rollback_history(sbctl_path, host):
    loaded = run_json(sbctl_path, host, "plugin", "load", "presence",
                      host.plugin("presence", next_build=True))
    assert loaded["ok"] and loaded["toVersion"] == "1.1.0"
    assert [s["step"] for s in loaded["steps"]][:4] == ["copy", "abi-check", "canary", "swap"]
    back = run_json(sbctl_path, host, "plugin", "rollback", "presence", "--to", "1.0.0")
    assert back["ok"] and back["toVersion"] == "1.0.0"
    history = run_json(sbctl_path, host, "plugin", "history", "presence", "--limit", "2")
    assert [(e["fromVersion"], e["toVersion"]) for e in history] == [("1.1.0", "1.0.0"),
                                                                      ("1.0.0", "1.1.0")]
    everything = run_json(sbctl_path, host, "plugin", "history")
    assert {e["kind"] for e in everything} >= {"routing", "auth", "presence", "offline"}


def test_human_load_shows_progress_steps(sbctl_path, host):
    done = run(sbctl_path, host, "plugin", "load", "offline", host.plugin("offline", next_build=True))
    assert done.returncode == 0, done.stderr
    for step in ("copy", "abi-check", "canary", "swap", "probation"):
        assert f"  {step}" in done.stdout, done.stdout


def test_users_sessions_outbox_kick_broadcast(sbctl_path, host):
    admin_json = lambda *a: run_json(sbctl_path, host, *a)  # noqa: E731
    client = register(host, admin_json, "+15550008001")
    try:
        users = admin_json("users", "--prefix", "+1555000800")
        assert [u["phone"] for u in users] == ["+15550008001"]
        assert admin_json("user", "+15550008001")["online"] is True
        sessions = admin_json("sessions", "--prefix", "+1555000800", "--min-queue", "0")
        assert [s["phone"] for s in sessions] == ["+15550008001"]
        assert admin_json("session", "+15550008001")["phone"] == "+15550008001"
        assert isinstance(admin_json("queues", "--limit", "3"), list)
        assert admin_json("outbox", "+15550008001")[0]["phone"] == "+15550008001"
        assert isinstance(admin_json("outbox"), list)
        assert admin_json("broadcast", "--to", "+15550008001", "hello")["recipients"] == 1
        assert client.next_message(timeout=20)["text"] == "hello"
        assert admin_json("kick", "+15550008001", "--reason", "test")["ok"] is True
        assert "test" in (client.wait_kicked(timeout=20) or "")
        assert admin_json("user", "revoke", "+15550008001")["ok"] is True
        assert admin_json("user", "+15550008001")["deviceName"] == ""
        assert admin_json("user", "delete", "+15550008001")["ok"] is True
        expect_one_line_error(run(sbctl_path, host, "user", "+15550008001"), "+15550008001")
    finally:
        client.close()


def test_top_frames(sbctl_path, host):
    frames = run_json(sbctl_path, host, "top", "--iterations", "2", "--interval", "200")
    assert len(frames) == 2
    assert {p["kind"] for p in frames[0]["plugins"]} == {"routing", "auth", "presence", "offline"}
    done = run(sbctl_path, host, "top", "--once", "--interval", "100")
    assert done.returncode == 0
    assert "msgs in/s" in done.stdout


def test_errors_are_one_line(sbctl_path, host, tmp_path):
    expect_one_line_error(run(sbctl_path, host, "status", socket=str(tmp_path / "none.sock")),
                          "cannot connect to")
    expect_one_line_error(run(sbctl_path, host, "plugin", "load", "routin",
                              host.plugin("routing")), "no plugin kind 'routin'")
    expect_one_line_error(run(sbctl_path, host, "plugin", "load", "routing",
                              str(tmp_path / "missing.so")), "missing.so")
    expect_one_line_error(run(sbctl_path, host, "user", "+15559990001"), "+15559990001")
    expect_one_line_error(run(sbctl_path, host, "session", "+15559990001"), "+15559990001")
    expect_one_line_error(run(sbctl_path, host, "kick", "+15559990001"), "+15559990001")
    expect_one_line_error(run(sbctl_path, host, "frobnicate"), "frobnicate")
