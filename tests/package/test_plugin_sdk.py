"""The plugin SDK as installed: the example plugin is built out of tree with
find_package(Switchboard) and loaded into a running installed host with sbctl."""

import json
import shutil
import sys

import pytest

from host_process import HostProcess, clean_env, run

PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


@pytest.fixture(scope="module")
def example_plugin(prefix, tmp_path_factory):
    work = tmp_path_factory.mktemp("sdk")
    source = work / "plugin-sdk"
    shutil.copytree(prefix / "share/doc/switchboard/examples/plugin-sdk", source)
    run(["cmake", "-S", source, "-B", work / "build", "-G", "Ninja",
         f"-DCMAKE_PREFIX_PATH={prefix}", "-DCMAKE_BUILD_TYPE=RelWithDebInfo"])
    run(["cmake", "--build", work / "build"])
    library = work / "build/libsmall-routing.so"
    assert library.exists()
    return library


def test_example_is_a_few_dozen_lines(prefix):
    source = (prefix / "share/doc/switchboard/examples/plugin-sdk/small_routing.cpp").read_text()
    assert len(source.splitlines()) <= 50
    for hand_written in ("configure(", "exportState(", "importState(", "Descriptor"):
        assert hand_written not in source


def test_built_with_the_flags_the_host_needs(example_plugin):
    exported = run(["nm", "-D", "--defined-only", example_plugin]).stdout.split("\n")
    names = sorted(line.split()[-1] for line in exported if line.strip())
    assert names == ["switchboard_plugin_descriptor"]
    symbols = run(["readelf", "-W", "--dyn-syms", "--syms", example_plugin]).stdout
    assert " UNIQUE " not in symbols  # -fno-gnu-unique: glibc can unmap it


def test_loads_into_a_running_installed_host(prefix, example_plugin, tmp_path):
    host = HostProcess(prefix / "bin/switchboard", tmp_path / "work")
    sbctl = prefix / "bin/sbctl"
    try:
        out = run([sbctl, "plugin", "load", "routing", example_plugin], cwd=host.workdir,
                  env=clean_env()).stdout
        assert "routing: swapped 1.0.0 -> 0.1.0" in out or "1.0.0 -> 0.1.0" in out, out
        plugins = json.loads(run([sbctl, "plugins", "--json"], cwd=host.workdir,
                                 env=clean_env()).stdout)
        routing = next(p for p in plugins if p["kind"] == "routing")
        assert routing["version"] == "0.1.0", routing

        # Its policy is the one serving: a body over 4 KiB is refused with its text.
        script = f"""
import switchboard
admin = switchboard.Admin()
def phone(number):
    c = switchboard.Client("127.0.0.1", {host.port}, timeout=20.0)
    c.request_code(number)
    code = admin.outbox(number)[0]["code"]
    c.login(number, c.verify(number, code, "test"))
    return c
a, b = phone("+15550001001"), phone("+15550001002")
a.send("+15550001002", b"small")
print("small", b.next_message(timeout=20)["text"])
try:
    a.send("+15550001002", b"x" * 5000)
    print("big accepted")
except switchboard.Error as e:
    print("big refused:", e)
"""
        out = run(["/usr/bin/python3", "-c", script], cwd=host.workdir,
                  env=clean_env(PYTHONPATH=str(prefix / "lib" / PY / "dist-packages"))).stdout
        assert "small small" in out, out
        assert "big refused:" in out and "body over 4 KiB" in out, out
    finally:
        host.stop()
