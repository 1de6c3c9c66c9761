"""switchboard.Admin against a real host: plugins, ledger, sessions, users."""

import pytest


def test_status_lists_the_four_plugins(admin, host):
    status = admin.status()
    kinds = sorted(p["kind"] for p in status["plugins"])
    assert kinds == ["auth", "offline", "presence", "routing"]
    assert status["client_endpoint"].endswith(str(host.port))
    assert all(p["version"] == "1.0.0" for p in status["plugins"])


def test_load_next_build_then_roll_back_and_read_the_ledger(admin, host):
    import switchboard
    steps = []
    result = admin.load_plugin("routing", host.plugin("routing", next_build=True),
                               progress=lambda step, detail: steps.append(step))
    assert result["ok"], result["error"]
    assert result["from_version"] == "1.0.0"
    assert result["to_version"] == "1.1.0"
    for expected in ("copy", "abi-check", "canary", "swap"):
        assert expected in steps, steps
    routing = next(p for p in admin.plugins() if p["kind"] == "routing")
    assert routing["version"] == "1.1.0"

    back = admin.rollback_plugin("routing")
    assert back["ok"], back["error"]
    assert back["to_version"] == "1.0.0"
    routing = next(p for p in admin.plugins() if p["kind"] == "routing")
    assert routing["version"] == "1.0.0"

    ledger = admin.plugin_history("routing")
    assert len(ledger) >= 2
    newest, previous = ledger[0], ledger[1]
    assert (newest["from_version"], newest["to_version"]) == ("1.1.0", "1.0.0")
    assert (previous["from_version"], previous["to_version"]) == ("1.0.0", "1.1.0")
    assert newest["id"] > previous["id"]

    with pytest.raises(switchboard.Error, match="no plugin kind .routin."):
        admin.load_plugin("routin", host.plugin("routing", next_build=True))
    with pytest.raises(switchboard.Error, match="no file /nonexistent/librouting.so"):
        admin.load_plugin("routing", "/nonexistent/librouting.so")


def test_register_via_outbox_and_list_users_and_sessions(admin, register):
    import switchboard
    register("+15550001001")
    register("+15550001002")
    users = admin.users(prefix="+1555000100")
    assert [u["phone"] for u in users] == ["+15550001001", "+15550001002"]
    assert all(u["device_name"] == "pytest" for u in users)
    assert admin.user("+15550001001")["online"] is True

    sessions = admin.sessions(prefix="+1555000100")
    assert [s["phone"] for s in sessions] == ["+15550001001", "+15550001002"]
    assert admin.session("+15550001002")["phone"] == "+15550001002"
    assert len(admin.queues(limit=5)) >= 2

    with pytest.raises(switchboard.Error, match=r"no user \+15559999999"):
        admin.user("+15559999999")
    with pytest.raises(switchboard.Error, match=r"no live session for \+15559999999"):
        admin.session("+15559999999")


def test_stats_count_logins_and_messages(admin, register):
    before = admin.stats()
    alice = register("+15550002001")
    register("+15550002002")
    alice.send("+15550002002", "hello")
    after = admin.stats()
    assert after["logins"] >= before["logins"] + 2
    assert after["messages_in"] >= before["messages_in"] + 1


def test_admin_errors_are_switchboard_errors(tmp_path):
    import switchboard
    with pytest.raises(switchboard.Error, match="cannot connect"):
        switchboard.Admin(str(tmp_path / "missing.sock"))
    assert issubclass(switchboard.Error, RuntimeError)
