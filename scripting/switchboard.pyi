"""Type stub of the `switchboard` extension module (scripting/*.cpp).

Admin(socket_path) operates a host over its admin socket; Client(host, port)
is one phone. Failures raise switchboard.Error (a RuntimeError) with the
server's reason. Keep this file in step with admin_binding.cpp and
client_binding.cpp: tests/package/test_python_module.py checks that every
public name of the module is declared here.
"""

from types import TracebackType
from typing import Any, Callable, Optional, Union

Json = dict[str, Any]

class Error(RuntimeError):
    """A refusal or failure reported by the host, or a connection failure."""

class Admin:
    """A connection to a Switchboard host's admin socket.

    socket_path None: $SWITCHBOARD_ADMIN_SOCKET, else ./var/admin.sock if it
    exists, else /run/switchboard/admin.sock if it exists. Every method blocks
    (GIL released) and returns dicts and lists with snake_case keys.
    """

    def __init__(self, socket_path: Optional[str] = None, timeout: float = 15.0) -> None: ...
    def close(self) -> None: ...
    def __enter__(self) -> "Admin": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None: ...
    def status(self) -> Json:
        """version, node, uptime_seconds, threads, sessions, connections, data_dir,
        client_endpoint, plugins."""
    def plugins(self) -> list[Json]:
        """Per kind: state, serving version, kept versions with calls/errors/latency."""
    def load_plugin(
        self,
        kind: str,
        path: str,
        progress: Optional[Callable[[str, str], None]] = None,
        node: Optional[str] = None,
        wait_probation: bool = False,
        node_timeout: float = 120.0,
    ) -> Any:
        """Copy, abi-check, canary, swap, probation; returns ok, error, from_version,
        to_version, sha256, pause_us. With node="NAME" or "all": forwarded over the
        cluster, returns a list of those dicts, each with node and answered."""
    def rollback_plugin(
        self, kind: str, version: str = "", node: Optional[str] = None, node_timeout: float = 120.0
    ) -> Any: ...
    def plugin_history(self, kind: str = "", limit: int = 0) -> list[Json]: ...
    def sessions(self, prefix: str = "", min_queue: int = 0, limit: int = 0) -> list[Json]: ...
    def session(self, phone: str) -> Json: ...
    def kick(self, phone: str, reason: str = "") -> None: ...
    def queues(self, limit: int = 0) -> list[Json]: ...
    def users(self, prefix: str = "", limit: int = 0) -> list[Json]: ...
    def user(self, phone: str) -> Json: ...
    def delete_user(self, phone: str) -> None: ...
    def revoke_key(self, phone: str) -> None: ...
    def outbox(self, phone: str = "", limit: int = 0) -> list[Json]: ...
    def stats(self) -> Json: ...
    def cluster(self) -> Json:
        """The cluster as this node sees it: state, url, node, nodes, error."""
    def broadcast(self, text: str, to: str = "") -> int:
        """A system message to `to`, or to every user; returns how many got it."""

class Client:
    """One phone's connection to a Switchboard server.

    Incoming messages, receipts, presence and kicks are queued: read them with
    next_message(timeout) etc., or set callbacks (on_message, ...) that run on
    the client's thread.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5222,
        timeout: float = 20.0,
        auto_reconnect: bool = True,
        endpoints: list[str] = [],
        tls_ca: str = "",
        tls_server_name: str = "",
    ) -> None:
        """tls_ca: a PEM file of the CAs to trust; given, the connection is TLS and the
        server's certificate must name tls_server_name (default: the host connected to)."""
    def close(self) -> None: ...
    def __enter__(self) -> "Client": ...
    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        traceback: Optional[TracebackType],
    ) -> None: ...
    def server_info(self) -> Json:
        """version and node of the server."""
    def request_code(self, phone: str) -> int:
        """Asks for a registration code by SMS; returns its lifetime in seconds."""
    def verify(self, phone: str, code: str, device_name: str = "python") -> bytes:
        """Returns the device key to log in with."""
    def login(self, phone: str, key: bytes) -> None: ...
    def logout(self) -> None: ...
    @property
    def logged_in(self) -> bool: ...
    @property
    def phone(self) -> str: ...
    def send(
        self, to: str, body: Union[bytes, str], client_msg_id: Optional[str] = None
    ) -> Json:
        """Returns id, timestamp, client_msg_id, delivered_at once the server has the message.

        delivered_at (ms) is non-zero when the "delivered" tick came in the reply;
        that tick is also queued for next_receipt, as if it had come alone."""
    def send_group(
        self, group: int, body: Union[bytes, str], client_msg_id: Optional[str] = None
    ) -> Json: ...
    def receipt(self, ids: list[int], kind: str = "read") -> None: ...
    def set_presence(self, state: str) -> None: ...
    def typing(self, to: str, active: bool = True) -> None: ...
    def add_contacts(self, phones: list[str]) -> None: ...
    def remove_contacts(self, phones: list[str]) -> None: ...
    def contacts(self) -> list[Json]:
        """phone, registered, state, last_seen per contact."""
    def create_group(self, name: str, members: list[str]) -> int: ...
    def add_members(self, group: int, members: list[str]) -> None: ...
    def remove_members(self, group: int, members: list[str]) -> None: ...
    def leave_group(self, group: int) -> None: ...
    def groups(self) -> list[Json]:
        """id, name, owner, members per group."""
    def next_message(self, timeout: Optional[float] = None) -> Optional[Json]:
        """id, from, group, client_msg_id, body, text, timestamp; None on time-out."""
    def next_receipt(self, timeout: Optional[float] = None) -> Optional[Json]: ...
    def next_presence(self, timeout: Optional[float] = None) -> Optional[Json]: ...
    def wait_kicked(self, timeout: Optional[float] = None) -> Optional[str]: ...
    @property
    def kicked(self) -> Optional[str]: ...
    def on_message(self, callback: Optional[Callable[[Json], None]]) -> None: ...
    def on_receipt(self, callback: Optional[Callable[[Json], None]]) -> None: ...
    def on_presence(self, callback: Optional[Callable[[Json], None]]) -> None: ...
    def on_kicked(self, callback: Optional[Callable[[str], None]]) -> None: ...
    @staticmethod
    def new_client_msg_id() -> str: ...
