"""scripts/package builds switchboard_<version>_amd64.deb; unpacked with dpkg -x into
a temporary root, its host and sbctl run from there, and its unit file passes
systemd-analyze verify."""

import json
import re
import shutil
import subprocess

import pytest

from host_process import REPO, HostProcess, clean_env, run

KINDS = ["auth", "offline", "presence", "routing"]


@pytest.fixture(scope="module")
def deb(build):
    out = run([REPO / "scripts/package"], env=clean_env(preload=False, SWITCHBOARD_BUILD=str(build)))
    path = out.stdout.strip().splitlines()[-1]
    return path


@pytest.fixture(scope="module")
def root(deb, tmp_path_factory):
    root = tmp_path_factory.mktemp("debroot")
    run(["dpkg", "-x", deb, root])
    return root


def field(deb, name):
    return run(["dpkg-deb", "-f", deb, name]).stdout.strip()


def test_name_and_depends_come_from_the_linked_libraries(deb, build):
    version = re.search(r"project\(switchboard VERSION ([0-9.]+)",
                        (REPO / "CMakeLists.txt").read_text()).group(1)
    assert deb.endswith(f"/switchboard_{version}_amd64.deb")
    assert field(deb, "Package") == "switchboard"
    assert field(deb, "Architecture") == "amd64"
    depends = field(deb, "Depends")
    # Each library the host binary links has its Debian package in Depends.
    linked = run(["ldd", build / "host/switchboard"]).stdout
    for soname, package in [("libcapnp-", "libcapnp-"), ("libsodium", "libsodium"),
                            ("libspdlog", "libspdlog"), ("libsqlite3", "libsqlite3"),
                            ("libstdc++", "libstdc++6"), ("libc.so", "libc6")]:
        assert soname in linked, linked
        assert package in depends, f"{package} missing from Depends: {depends}"
    # dpkg-shlibdeps writes versioned dependencies, never a hand-kept list.
    assert re.search(r"libc6 \(>= [0-9.]+\)", depends), depends


def test_config_is_a_conffile(deb, tmp_path):
    run(["dpkg-deb", "-e", deb, tmp_path / "control"])
    assert (tmp_path / "control/conffiles").read_text().split() == ["/etc/switchboard/switchboard.toml"]


def test_contents(root):
    for path in ["usr/bin/switchboard", "usr/bin/sbctl", "etc/switchboard/switchboard.toml",
                 "usr/lib/systemd/system/switchboard.service",
                 "usr/lib/python3/dist-packages/switchboard.pyi",
                 "usr/share/bash-completion/completions/sbctl",
                 "usr/include/switchboard/plugin_api.h",
                 "usr/lib/cmake/Switchboard/SwitchboardConfig.cmake",
                 *[f"usr/lib/switchboard/plugins/{k}/lib{k}.so" for k in KINDS]]:
        assert (root / path).exists(), path
    assert len(list((root / "usr/lib/python3/dist-packages").glob("switchboard.cpython-*.so"))) == 1
    unit = (root / "usr/lib/systemd/system/switchboard.service").read_text()
    assert "ExecStart=/usr/bin/switchboard --config /etc/switchboard/switchboard.toml" in unit


def test_python_module_is_where_debian_python_imports_it(root):
    # /usr/lib/python3/dist-packages is on Debian's python3 path with no PYTHONPATH;
    # the unpacked copy is imported from the same path under the temporary root.
    path = run(["/usr/bin/python3", "-c", "import sys; print('\\n'.join(sys.path))"],
               env=clean_env()).stdout.split()
    assert "/usr/lib/python3/dist-packages" in path
    out = run(["/usr/bin/python3", "-c", "import switchboard; print(switchboard.Admin.__doc__)"],
              env=clean_env(PYTHONPATH=str(root / "usr/lib/python3/dist-packages"))).stdout
    assert "admin socket" in out


def test_unpacked_host_and_sbctl_run(root, tmp_path):
    host = HostProcess(root / "usr/bin/switchboard", tmp_path / "work")
    try:
        status = json.loads(run([root / "usr/bin/sbctl", "status", "--json"], cwd=host.workdir,
                                env=clean_env()).stdout)
        versions = {p["kind"]: p["version"] for p in status["plugins"]}
        assert versions == {k: "1.0.0" for k in KINDS}
        assert f"routing plugin 1.0.0 loaded from {root}/usr/lib/switchboard/plugins/routing/" \
            in host.output()
    finally:
        host.stop()


def test_unit_file_verifies(root, tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine (package systemd); "
                    "the unit file was not verified")
    unit = (root / "usr/lib/systemd/system/switchboard.service").read_text()
    # verify checks that ExecStart's program exists on this machine, where the package is
    # unpacked, not installed: point it at the unpacked binary, change nothing else.
    assert unit.count("ExecStart=/usr/bin/switchboard ") == 1
    copy = tmp_path / "switchboard.service"
    copy.write_text(unit.replace("ExecStart=/usr/bin/switchboard ",
                                 f"ExecStart={root}/usr/bin/switchboard "))
    result = run([analyze, "verify", copy], check=False)
    # verify exits 0 on warnings (an unknown key, a bad value): read what it said.
    assert result.returncode == 0 and "switchboard.service" not in result.stdout, result.stdout
    security = run([analyze, "security", "--offline=yes", copy], check=False).stdout
    exposure = re.search(r"Overall exposure level for switchboard.service: ([0-9.]+)", security)
    assert exposure and float(exposure.group(1)) <= 2.0, security[-2000:]
