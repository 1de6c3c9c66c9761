"""A real Switchboard host for tests: the built binary on a free port, a temp data
dir and admin socket. Shared by tests/python and tests/ctl."""

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def build_dir() -> Path:
    """The build directory under test: $SWITCHBOARD_BUILD, else <repo>/build."""
    env = os.environ.get("SWITCHBOARD_BUILD")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2] / "build"


def wait_until(predicate, limit=60.0):
    """Polls until predicate() holds; the limit only stops a hang."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningHost:
    """Starts build/host/switchboard and stops it with SIGTERM (SIGKILL after 20 s).

    The admin socket lives in `workdir`; the data dir is `workdir/data`. The host's
    log goes to `workdir/host.log` (shown by `log()` when a test fails)."""

    def __init__(self, build: Path, workdir: Path, extra_args=()):
        self.build = build
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.admin_socket = str(self.workdir / "admin.sock")
        self.port = free_port()
        self.metrics_port = free_port()
        self.plugin_dir = build / "plugins"
        binary = build / "host" / "switchboard"
        if not binary.exists():
            raise FileNotFoundError(f"{binary} is not built")
        self.log_path = self.workdir / "host.log"
        args = [
            str(binary),
            "--listen", f"127.0.0.1:{self.port}",
            "--data-dir", str(self.data_dir),
            "--plugin-dir", str(self.plugin_dir),
            "--admin-socket", self.admin_socket,
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--threads", "2",
            *([] if "--web-listen" in extra_args else ["--web-listen", ""]),
            *extra_args,
        ]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir)
        self._wait_ready()

    def _wait_ready(self, limit: float = 60.0):
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"host exited with {self.process.returncode}:\n{self.log()}")
            if os.path.exists(self.admin_socket):
                try:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                except OSError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"host not ready after {limit} s:\n{self.log()}")

    def plugin(self, kind: str, next_build: bool = False) -> str:
        name = f"lib{kind}-next.so" if next_build else f"lib{kind}.so"
        return str(self.plugin_dir / kind / name)

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
