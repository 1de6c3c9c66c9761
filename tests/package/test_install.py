"""`cmake --install` into a temporary prefix: the layout, and the installed host,
sbctl and Python module working with no flags that name where things are."""

import ast
import json
import re
import subprocess
import sys

from host_process import REPO, HostProcess, clean_env, run

KINDS = ["auth", "offline", "presence", "routing"]
PY = f"python{sys.version_info.major}.{sys.version_info.minor}"


def debian_python_path():
    out = run(["/usr/bin/python3", "-c", "import sys; print('\\n'.join(sys.path))"],
              env=clean_env()).stdout
    return out.split()


def test_layout(prefix):
    expected = [
        "bin/switchboard", "bin/sbctl",
        *[f"lib/switchboard/plugins/{k}/lib{k}.so" for k in KINDS],
        "include/switchboard/plugin_api.h", "include/switchboard/plugin_sdk.h",
        "lib/cmake/Switchboard/SwitchboardConfig.cmake",
        "lib/cmake/Switchboard/SwitchboardConfigVersion.cmake",
        "lib/cmake/Switchboard/SwitchboardPlugin.cmake",
        "lib/cmake/Switchboard/plugin_exports.map",
        "lib/systemd/system/switchboard.service",
        "etc/switchboard/switchboard.toml",
        "share/bash-completion/completions/sbctl",
        "share/switchboard/grafana-dashboard.json",
        "share/switchboard/web/index.html", "share/switchboard/web/app.js",
        "share/doc/switchboard/operations.md", "share/doc/switchboard/plugin-authoring.md",
        "share/doc/switchboard/examples/plugin-sdk/CMakeLists.txt",
        f"lib/{PY}/dist-packages/switchboard.pyi",
    ]
    missing = [p for p in expected if not (prefix / p).exists()]
    assert missing == []
    modules = list((prefix / "lib" / PY / "dist-packages").glob("switchboard.cpython-*.so"))
    assert len(modules) == 1, modules
    # Only the production builds are installed, not the -next test builds.
    assert sorted(p.name for p in (prefix / "lib/switchboard/plugins").rglob("*.so")) == \
        sorted(f"lib{k}.so" for k in KINDS)


def test_unit_points_at_the_prefix(prefix):
    unit = (prefix / "lib/systemd/system/switchboard.service").read_text()
    assert f"ExecStart={prefix}/bin/switchboard --config {prefix}/etc/switchboard/switchboard.toml" in unit
    for line in ("DynamicUser=yes", "StateDirectory=switchboard", "RuntimeDirectory=switchboard",
                 "LimitNOFILE=65536", "ExecReload=/bin/kill -HUP $MAINPID", "ProtectSystem=strict"):
        assert line in unit


def test_python_module_goes_where_debian_python_looks(prefix):
    # For prefix /usr/local Debian's python3 reads /usr/local/lib/python3.X/dist-packages;
    # the install put the module at the same place under the temporary prefix.
    assert f"/usr/local/lib/{PY}/dist-packages" in debian_python_path()
    assert (prefix / "lib" / PY / "dist-packages" / "switchboard.pyi").exists()


def test_installed_host_finds_its_plugins_and_sbctl_its_socket(prefix, tmp_path):
    # No --plugin-dir, --data-dir or --admin-socket: the host loads the installed
    # plugins and makes ./var/admin.sock; sbctl, run in the same directory, finds it.
    host = HostProcess(prefix / "bin/switchboard", tmp_path / "work")
    try:
        status = json.loads(run([prefix / "bin/sbctl", "status", "--json"], cwd=host.workdir,
                                env=clean_env()).stdout)
        plugins = {p["kind"]: p for p in status["plugins"]}
        assert sorted(plugins) == KINDS
        for kind in KINDS:
            assert plugins[kind]["version"] == "1.0.0", plugins[kind]
            assert plugins[kind]["state"] == "serving", plugins[kind]
        assert f"routing plugin 1.0.0 loaded from {prefix}/lib/switchboard/plugins/routing/" \
            in host.output()

        # The installed Python module, by the same default.
        script = ("import switchboard; a = switchboard.Admin(); "
                  "print(sorted(p['kind'] for p in a.status()['plugins']))")
        out = run(["/usr/bin/python3", "-c", script], cwd=host.workdir,
                  env=clean_env(PYTHONPATH=str(prefix / "lib" / PY / "dist-packages"))).stdout
        assert out.strip() == str(KINDS)

        # SWITCHBOARD_ADMIN_SOCKET names the socket from anywhere.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        out = run([prefix / "bin/sbctl", "plugins", "--json"], cwd=elsewhere,
                  env=clean_env(SWITCHBOARD_ADMIN_SOCKET=str(host.admin_socket))).stdout
        assert len(json.loads(out)) == 4
        refused = run([prefix / "bin/sbctl", "status"], cwd=elsewhere, env=clean_env(),
                      check=False)
        assert refused.returncode == 1
        assert "./var/admin.sock" in refused.stdout
    finally:
        host.stop()


def test_help_of_the_installed_module_documents_admin(prefix):
    script = "import pydoc, switchboard; print(pydoc.render_doc(switchboard.Admin, renderer=pydoc.plaintext))"
    text = run(["/usr/bin/python3", "-c", script],
               env=clean_env(PYTHONPATH=str(prefix / "lib" / PY / "dist-packages"))).stdout
    assert "A connection to a Switchboard host's admin socket" in text
    assert "/run/switchboard/admin.sock" in text
    for method, words in [("load_plugin", "progress"), ("rollback_plugin", "previous version"),
                          ("plugin_history", "ledger"), ("kick", "closes its session"),
                          ("broadcast", "system message")]:
        assert re.search(rf"{method}\(.*\n(.*\n)*?.*{words}", text), (method, text[:3000])


def test_stub_declares_every_public_name(prefix):
    tree = ast.parse((prefix / "lib" / PY / "dist-packages" / "switchboard.pyi").read_text())
    declared = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            declared[node.name] = {n.name for n in node.body
                                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    script = ("import json, switchboard; print(json.dumps({n: [m for m in dir(getattr(switchboard, n)) "
              "if not m.startswith('_') and n in ('Admin', 'Client')] for n in dir(switchboard) "
              "if not n.startswith('_')}))")
    names = json.loads(run(["/usr/bin/python3", "-c", script],
                           env=clean_env(PYTHONPATH=str(prefix / "lib" / PY / "dist-packages"))).stdout)
    assert sorted(names) == ["Admin", "Client", "Error"]
    for cls in ("Admin", "Client"):
        missing = sorted(set(names[cls]) - declared[cls])
        assert missing == [], f"{cls} methods missing from switchboard.pyi"
    assert "Error" in declared


def test_example_config_names_every_key_and_is_accepted(prefix, tmp_path):
    help_text = run([prefix / "bin/switchboard", "--help"]).stdout
    flags = set(re.findall(r"^\s+--([a-z][a-z-]+)", help_text, re.M))
    flags -= {"help", "version", "config", "plugin-setting"}
    assert len(flags) > 15, help_text
    config = prefix / "etc/switchboard/switchboard.toml"
    text = config.read_text()
    unnamed = sorted(k for k in flags if not re.search(rf"^#? ?{re.escape(k)} = ", text, re.M))
    assert unnamed == [], "keys of --help missing from the example config"
    # Every commented key, uncommented, is one the host accepts: parse the whole file
    # with the comments taken out and the paths pointed at the test's own dirs.
    live = []
    for line in text.splitlines():
        m = re.match(r"^# ?(\[plugin\.[a-z]+\]|[a-z-]+ = .*)$", line)
        live.append(m.group(1) if m else line)
    work = tmp_path / "work"
    overrides = {"data-dir": f'"{work}/data"', "admin-socket": f'"{work}/var/admin.sock"',
                 "log-file": f'"{work}/switchboard.log"', "plugin-dir": f'"{prefix}/lib/switchboard/plugins"',
                 "sms-command": '""', "push-webhook": '""', "threads": "2"}
    body = "\n".join(re.sub(r"^([a-z-]+) = .*$",
                            lambda m: f"{m.group(1)} = {overrides[m.group(1)]}"
                            if m.group(1) in overrides else m.group(0), line) for line in live)
    full = tmp_path / "full.toml"
    full.write_text(body + "\n")
    host = HostProcess(prefix / "bin/switchboard", work, ["--config", full])
    try:
        assert (work / "switchboard.log").exists()
        assert (work / "data").is_dir()
    finally:
        host.stop()


def test_bash_completion_offers_the_commands_sbctl_has(prefix):
    help_text = run([prefix / "bin/sbctl", "--help"]).stdout
    subcommands = set(re.findall(r"^\s+([a-z]+)\s{2,}\S", help_text.split("Subcommands:")[1], re.M))
    assert {"status", "plugin", "top"} <= subcommands, help_text
    script = (f"source {prefix}/share/bash-completion/completions/sbctl; "
              "COMP_WORDS=(sbctl ''); COMP_CWORD=1; _sbctl; echo ${COMPREPLY[@]}")
    offered = set(run(["bash", "-c", script]).stdout.split())
    assert subcommands <= offered, f"not completed: {sorted(subcommands - offered)}"
    script = (f"source {prefix}/share/bash-completion/completions/sbctl; "
              "COMP_WORDS=(sbctl plugin load ''); COMP_CWORD=3; _sbctl; echo ${COMPREPLY[@]}")
    assert run(["bash", "-c", script]).stdout.split() == ["routing", "auth", "presence", "offline"]
