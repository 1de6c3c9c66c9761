"""--log-file with size-based rotation, and --log-format json (one object per line)."""

import json

from host_process import HostProcess, clean_env, run, wait_until


def start(build, workdir, *flags):
    return HostProcess(build / "host/switchboard", workdir,
                       ["--plugin-dir", build / "plugins", *flags])


def refused_load(build, host, name):
    """A load the host refuses and logs (a warn line naming `name`: the file is not a
    shared object); returns once logged: the host writes the line before it answers."""
    library = host.workdir / f"{name}.so"
    library.write_text("not ELF")
    result = run([build / "ctl/sbctl", "plugin", "load", "routing", library],
                 cwd=host.workdir, env=clean_env(), check=False)
    assert result.returncode == 1, result.stdout
    assert "not a shared object" in result.stdout, result.stdout


def test_log_file_rotates_by_size(build, tmp_path):
    log = tmp_path / "logs" / "switchboard.log"
    log.parent.mkdir()
    host = start(build, tmp_path / "work", "--log-file", log, "--log-max-bytes", "4096",
                 "--log-max-files", "2")
    try:
        markers = [f"marker-{i:03d}" for i in range(150)]  # ~16 KB of lines: 4+ files
        for marker in markers:
            refused_load(build, host, marker)
    finally:
        host.stop()
    files = sorted(p.name for p in log.parent.iterdir())
    assert files == ["switchboard.1.log", "switchboard.2.log", "switchboard.log"]
    texts = {name: (log.parent / name).read_text() for name in files}
    for name, text in texts.items():
        assert (log.parent / name).stat().st_size <= 4096, name
        assert text.count("\n") > 5, name
    # Newest in the live file, older ones in .1 then .2, the oldest rotated away.
    assert markers[-1] in texts["switchboard.log"]
    def present(name):
        return [i for i, m in enumerate(markers) if m in texts[name]]
    assert max(present("switchboard.2.log")) < min(present("switchboard.1.log"))
    assert max(present("switchboard.1.log")) < min(present("switchboard.log"))
    assert markers[0] not in "".join(texts.values())
    # Nothing went to stdout/stderr once the file took over.
    assert "marker-" not in host.output()


def test_json_format_is_one_object_per_line(build, tmp_path):
    log = tmp_path / "switchboard.log"
    host = start(build, tmp_path / "work", "--log-file", log, "--log-format", "json")
    try:
        refused_load(build, host, 'quote"back\\slash\ttab')
        host.hangup()
        wait_until(lambda: "reload: done: " in log.read_text(), 30, "the reload report")
    finally:
        host.stop()
    lines = log.read_text().splitlines()
    assert len(lines) >= 5
    records = [json.loads(line) for line in lines]  # every line parses on its own
    for record in records:
        assert sorted(record) == ["level", "message", "pid", "thread", "time"], record
        assert record["time"].endswith("Z") and "T" in record["time"]
        assert record["level"] in ("debug", "info", "warning", "error")
    messages = [r["message"] for r in records]
    assert any(m.startswith("switchboard ") and "serving phones" in m for m in messages)
    refused = [m for m in messages if 'quote"back\\slash\ttab' in m]
    assert len(refused) == 1 and refused[0].startswith("plugin routing admin rejected (): not a shared object: "), messages
    assert next(r for r in records if r["message"] == refused[0])["level"] == "warning"
    assert "reload: nothing changed" in messages
    assert {r["pid"] for r in records} == {host.process.pid}


def test_json_format_on_stderr(build, tmp_path):
    host = start(build, tmp_path / "work", "--log-format", "json")
    host.stop()
    lines = [line for line in host.output().splitlines() if line.strip()]
    assert len(lines) >= 3
    messages = [json.loads(line)["message"] for line in lines]
    assert any("shutting down" in m for m in messages), messages


def test_unwritable_log_file_is_one_line_and_exit_2(build, tmp_path):
    (tmp_path / "a-file").write_text("")  # a file where the log's directory should be
    result = run([build / "host/switchboard", "--log-file", tmp_path / "a-file/x.log",
                  "--listen", "127.0.0.1:0", "--metrics-listen", ""], cwd=tmp_path, check=False)
    assert result.returncode == 2
    assert result.stdout.startswith("switchboard: cannot open the log file "), result.stdout
    assert len(result.stdout.strip().splitlines()) == 1
