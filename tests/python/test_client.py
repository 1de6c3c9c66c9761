"""switchboard.Client against a real host: messages, kicks, receipts, contacts, groups."""

import pytest


def test_message_between_two_python_clients(register):
    alice = register("+15550003001")
    bob = register("+15550003002")
    sent = alice.send("+15550003002", "hi bob")
    assert sent["id"] > 0
    # Bob is online: the "delivered" tick rides in the reply.
    assert sent["delivered_at"] >= sent["timestamp"]
    message = bob.next_message(timeout=20)
    assert message is not None, "bob got nothing"
    assert message["from"] == "+15550003001"
    assert message["text"] == "hi bob"
    assert message["body"] == b"hi bob"
    assert message["id"] == sent["id"]

    bob.receipt([message["id"]], "read")
    kinds = []
    while "read" not in kinds:
        receipt = alice.next_receipt(timeout=20)
        assert receipt is not None, f"alice saw only {kinds}"
        assert receipt["id"] == sent["id"]
        kinds.append(receipt["kind"])
    assert kinds == ["delivered", "read"]


def test_kick_is_seen_by_the_client(admin, register):
    carol = register("+15550004001")
    admin.kick("+15550004001", reason="maintenance")
    reason = carol.wait_kicked(timeout=20)
    assert reason is not None, "no kick arrived"
    assert "maintenance" in reason
    assert carol.kicked == reason


def test_broadcast_reaches_a_user(admin, register):
    dave = register("+15550005001")
    assert admin.broadcast("system notice", to="+15550005001") == 1
    message = dave.next_message(timeout=20)
    assert message is not None
    assert message["text"] == "system notice"


def test_contacts_and_groups(register):
    erin = register("+15550006001")
    register("+15550006002")
    erin.add_contacts(["+15550006002"])
    contacts = erin.contacts()
    assert [c["phone"] for c in contacts] == ["+15550006002"]
    assert contacts[0]["registered"] is True
    group = erin.create_group("team", ["+15550006002"])
    groups = erin.groups()
    assert [g["id"] for g in groups] == [group]
    assert sorted(groups[0]["members"]) == ["+15550006001", "+15550006002"]


def test_refused_send_raises_with_the_servers_reason(register):
    import switchboard
    frank = register("+15550007001")
    with pytest.raises(switchboard.Error) as caught:
        frank.send("+15559999998", "anyone?")
    assert str(caught.value) == "unknown recipient +15559999998"


EXIT_WHILE_EVENTS_ARRIVE = r"""
import sys
import switchboard

port, admin_socket, tag = int(sys.argv[1]), sys.argv[2], sys.argv[3]
admin = switchboard.Admin(admin_socket)


def register(phone):
    client = switchboard.Client("127.0.0.1", port, timeout=20.0)
    client.request_code(phone)
    key = client.verify(phone, admin.outbox(phone)[0]["code"], "exit-test")
    client.login(phone, key)
    return client


alice = register(f"+1555009{tag}1")
bob = register(f"+1555009{tag}2")
seen = []


def slow(event):  # holds the GIL a while, so a callback is often waiting for it at exit
    seen.append(sum(range(20000)) + event["id"])


bob.on_message(slow)
alice.on_receipt(slow)
for i in range(50):
    alice.send(f"+1555009{tag}2", f"message {i}")
print("sent", flush=True)
# Exits now, Clients still open, deliveries and receipts still arriving on their threads.
"""


def test_a_script_ending_with_open_clients_and_events_arriving_exits_cleanly(host, tmp_path):
    import os
    import subprocess
    import sys
    from conftest import BUILD
    script = tmp_path / "exit_while_events_arrive.py"
    script.write_text(EXIT_WHILE_EVENTS_ARRIVE)
    env = dict(os.environ, PYTHONPATH=str(BUILD / "scripting"))
    for run in range(3):
        done = subprocess.run([sys.executable, str(script), str(host.port), str(host.admin_socket),
                               f"{run}0"], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"run {run} exited {done.returncode}:\n{done.stderr}"
        assert done.stdout == "sent\n"
        assert "FATAL" not in done.stderr and "terminate" not in done.stderr, done.stderr
