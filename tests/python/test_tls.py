"""switchboard.Client over TLS (tls_ca=...) against a real host started with --tls-cert and
--tls-key, with a throwaway CA and certificate made by the openssl command."""

import re
import subprocess

import pytest

from conftest import BUILD
from switchboard_host import RunningHost

NEW_KEY = ["openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]


def openssl(directory, *args):
    done = subprocess.run(args, cwd=directory, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)} failed: {done.stderr}"


@pytest.fixture
def certificates(tmp_path):
    """A CA, a server certificate it signed for localhost/127.0.0.1, and an unrelated CA."""
    d = tmp_path / "tls"
    d.mkdir()
    openssl(d, *NEW_KEY, "-x509", "-days", "2", "-subj", "/CN=pytest-ca",
            "-keyout", "ca.key", "-out", "ca.pem")
    openssl(d, *NEW_KEY, "-x509", "-days", "2", "-subj", "/CN=another-ca",
            "-keyout", "other-ca.key", "-out", "other-ca.pem")
    openssl(d, *NEW_KEY, "-subj", "/CN=localhost", "-keyout", "server.key", "-out", "server.csr")
    (d / "server.ext").write_text("subjectAltName=DNS:localhost,DNS:127.0.0.1,IP:127.0.0.1\n")
    openssl(d, "openssl", "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "server.ext", "-out", "server.pem")
    return d


@pytest.fixture
def tls_host(tmp_path, certificates):
    running = RunningHost(BUILD, tmp_path, extra_args=[
        "--tls-cert", str(certificates / "server.pem"),
        "--tls-key", str(certificates / "server.key")])
    yield running
    running.stop()


def register(switchboard, admin, host, ca, phone):
    client = switchboard.Client("127.0.0.1", host.port, timeout=20.0, tls_ca=str(ca))
    client.request_code(phone)
    entries = admin.outbox(phone)
    assert len(entries) == 1, f"expected one SMS for {phone}, got {entries}"
    key = client.verify(phone, entries[0]["code"], "pytest-tls")
    client.login(phone, key)
    return client


def test_python_clients_talk_over_tls(tls_host, certificates):
    import switchboard
    ca = certificates / "ca.pem"
    with switchboard.Admin(tls_host.admin_socket) as admin:
        alice = register(switchboard, admin, tls_host, ca, "+15550021001")
        bob = register(switchboard, admin, tls_host, ca, "+15550021002")
    with alice, bob:
        sent = alice.send("+15550021002", "hello over TLS")
        message = bob.next_message(timeout=20)
        assert message is not None, "bob got nothing"
        assert message["from"] == "+15550021001"
        assert message["body"] == b"hello over TLS"
        assert message["id"] == sent["id"]
        receipt = alice.next_receipt(timeout=20)
        assert receipt is not None, "no delivered receipt"
        assert (receipt["id"], receipt["kind"]) == (sent["id"], "delivered")
    assert "(TLS)" in tls_host.log()


def test_refusals_over_tls_name_their_cause(tls_host, certificates):
    import switchboard
    with switchboard.Client("127.0.0.1", tls_host.port, timeout=20.0,
                            tls_ca=str(certificates / "other-ca.pem")) as stranger:
        with pytest.raises(switchboard.Error,
                           match=r"^TLS handshake with 127\.0\.0\.1:\d+ failed: TLS peer's certificate "
                                 r"is not trusted; reason = unable to get local issuer certificate$"):
            stranger.server_info()
    with switchboard.Client("127.0.0.1", tls_host.port, timeout=20.0) as plaintext:
        # The host closes a connection that does not speak TLS; the client sees it end.
        with pytest.raises(switchboard.Error, match=r"^Peer disconnected\.$"):
            plaintext.server_info()
    # The host keeps serving clients that trust its CA.
    with switchboard.Client("127.0.0.1", tls_host.port, timeout=20.0,
                            tls_ca=str(certificates / "ca.pem")) as trusted:
        assert trusted.server_info()["version"]


def test_an_unreadable_ca_file_is_named(tmp_path):
    import switchboard
    missing = tmp_path / "absent-ca.pem"
    with pytest.raises(RuntimeError, match=re.escape(f"cannot read TLS CA file {missing}: "
                                                     "No such file or directory")):
        switchboard.Client("127.0.0.1", 1, tls_ca=str(missing))
