"""Fixtures: the `switchboard` module from the build under test, and a real host."""

import sys

import pytest

from switchboard_host import RunningHost, build_dir

BUILD = build_dir()
sys.path.insert(0, str(BUILD / "scripting"))

# A module that is missing or fails to import is a failure of the build under test,
# never a reason to skip: the whole run stops here with the import error.
try:
    import switchboard  # noqa: F401
except ImportError as error:
    raise ImportError(f"the switchboard module in {BUILD / 'scripting'} does not import: "
                      f"{error}") from error


@pytest.fixture
def host(tmp_path):
    running = RunningHost(BUILD, tmp_path, extra_args=["--probation-seconds", "1"])
    yield running
    running.stop()


@pytest.fixture
def admin(host):
    import switchboard
    with switchboard.Admin(host.admin_socket) as a:
        yield a


@pytest.fixture
def register(host, admin):
    """register(phone) -> a logged-in switchboard.Client, via the outbox code."""
    import switchboard
    clients = []

    def make(phone):
        client = switchboard.Client("127.0.0.1", host.port, timeout=20.0)
        clients.append(client)
        client.request_code(phone)
        entries = admin.outbox(phone)
        assert entries, f"no SMS for {phone} in the outbox"
        code = entries[0]["code"]
        assert code, "the development SMS sink keeps the code in clear"
        key = client.verify(phone, code, "pytest")
        assert isinstance(key, bytes) and len(key) > 0
        client.login(phone, key)
        return client

    yield make
    for client in clients:
        client.close()
