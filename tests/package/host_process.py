"""A Switchboard host started from any binary (an installed or unpacked one), in a
working directory of its own, for the packaging tests.

Unlike tests/python's RunningHost (which points the build's host at the build's
plugins and a socket of its choosing), this passes only the flags a test names, so
a test can show what the host finds by itself. Ports are always passed: other test
hosts run on this machine at the same time."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from switchboard_host import build_dir, free_port  # noqa: E402,F401

REPO = Path(__file__).resolve().parents[2]


def wait_until(condition, limit=60.0, what="condition"):
    """Polls `condition` until it returns a true value (returned) or `limit` s pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {limit} s waiting for {what}")


class HostProcess:
    """Runs `binary` in `workdir` with `args` plus --listen/--metrics-listen on free
    ports. Ready once `admin_socket` (default workdir/var/admin.sock, the host's own
    default) exists and the phone port accepts. stop() sends SIGTERM."""

    def __init__(self, binary, workdir, args=(), admin_socket=None, env=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.metrics_port = free_port()
        self.admin_socket = Path(admin_socket) if admin_socket else self.workdir / "var" / "admin.sock"
        self.log_path = self.workdir / "host.out"
        self._out = open(self.log_path, "wb")
        command = [str(binary), "--listen", f"127.0.0.1:{self.port}",
                   "--metrics-listen", f"127.0.0.1:{self.metrics_port}", "--threads", "2", *args]
        if os.environ.get("SWITCHBOARD_SANITIZED_PRELOAD") and "--canary-timeout-ms" not in args:
            # Under ASan a canary's start-up alone passed the 5 s default on a loaded box.
            command += ["--canary-timeout-ms", "30000"]
        self.process = subprocess.Popen(command, cwd=self.workdir, stdout=self._out,
                                        stderr=subprocess.STDOUT, env=env)
        try:
            wait_until(self._ready, 60.0, f"{binary} to serve")
        except AssertionError:
            self.stop()
            raise AssertionError(f"host not ready:\n{self.output()}")

    def _ready(self):
        if self.process.poll() is not None:
            raise AssertionError(f"host exited with {self.process.returncode}:\n{self.output()}")
        if not self.admin_socket.exists():
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return True
        except OSError:
            return False

    def output(self):
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except OSError:
            return ""

    def hangup(self):
        self.process.send_signal(signal.SIGHUP)

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._out.close()


def run(command, cwd=None, env=None, timeout=600, check=True):
    """Runs a command, returns CompletedProcess with text output; on failure with
    check=True the assertion shows the output."""
    result = subprocess.run([str(c) for c in command], cwd=cwd, env=env, timeout=timeout,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if check:
        assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}"
    return result


def clean_env(preload=True, **extra):
    """The environment without PYTHONPATH or SWITCHBOARD_ADMIN_SOCKET, plus `extra`.
    Under scripts/sanitize the ASan runtime is preloaded (SWITCHBOARD_SANITIZED_PRELOAD):
    Debian's python3 is not instrumented, and the installed module is. preload=False is
    for commands that run no instrumented code in an uninstrumented process (cpack, dpkg):
    with the runtime preloaded, LeakSanitizer reports those tools' own leaks."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SWITCHBOARD_ADMIN_SOCKET")}
    if preload and os.environ.get("SWITCHBOARD_SANITIZED_PRELOAD"):
        env["LD_PRELOAD"] = os.environ["SWITCHBOARD_SANITIZED_PRELOAD"]
    env.update(extra)
    return env
