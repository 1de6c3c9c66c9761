"""SIGHUP re-reads the config file: the log level, the swap limits and plugin
settings apply while running; other keys are reported as needing a restart;
refused settings and a broken file change nothing. The host says which in its
log (json here, so each report is one parsed record)."""

import json

import pytest

from host_process import HostProcess, clean_env, run, wait_until


class ReloadingHost:
    def __init__(self, build, tmp_path, config_text):
        self.build = build
        self.config = tmp_path / "switchboard.toml"
        self.config.write_text(config_text)
        self.log = tmp_path / "switchboard.log"
        self.host = HostProcess(build / "host/switchboard", tmp_path / "work",
                                ["--plugin-dir", build / "plugins", "--config", self.config,
                                 "--log-file", self.log, "--log-format", "json"])

    def records(self):
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def reload(self, config_text):
        """Rewrites the file, sends SIGHUP and returns the reload's report records."""
        if config_text is not None:
            self.config.write_text(config_text)
        before = len(self.records())
        self.host.hangup()

        def report():
            new = self.records()[before:]
            done = [i for i, r in enumerate(new) if r["message"].startswith("reload: done: ")]
            if not done:
                return None
            return [r for r in new[:done[0]] if r["message"].startswith("reload: ")
                    and not r["message"].startswith("reload: reading")]

        return wait_until(report, 30, "the reload report")

    def sbctl(self, *args):
        return json.loads(run([self.build / "ctl/sbctl", *args, "--json"],
                              cwd=self.host.workdir, env=clean_env()).stdout)

    def stop(self):
        self.host.stop()


INITIAL = """
log-level = "info"
probation-seconds = 60
session-queue-limit = 10000

[plugin.presence]
require-mutual-contacts = true
"""

CHANGED = """
log-level = "debug"
probation-seconds = 7
session-queue-limit = 500

[plugin.presence]
require-mutual-contacts = false
"""


@pytest.fixture
def reloading(build, tmp_path):
    host = ReloadingHost(build, tmp_path, INITIAL)
    yield host
    host.stop()


def messages(records):
    return [r["message"] for r in records]


def test_reload_applies_what_it_can_and_names_the_rest(reloading):
    report = reloading.reload(CHANGED)
    text = messages(report)
    assert "reload: applied: log-level info -> debug, probation-seconds, plugin.presence" in text, text
    assert "reload: not applied, needs a restart: session-queue-limit" in text, text
    assert not any(m.startswith("reload: refused") for m in text), text
    # No debug line before the reload applied the level.
    assert not any(r["level"] == "debug" for r in reloading.records())

    # The presence plugin restarted with its new settings (same version, a ledger row).
    history = reloading.sbctl("plugin", "history", "presence")
    assert history[0]["result"] == "reconfigured", history[0]
    assert (history[0]["fromVersion"], history[0]["toVersion"]) == ("1.0.0", "1.0.0")
    presence = next(p for p in reloading.sbctl("plugins") if p["kind"] == "presence")
    assert presence["version"] == "1.0.0"

    # The new probation window holds for the next swap.
    run([reloading.build / "ctl/sbctl", "plugin", "load", "routing",
         reloading.build / "plugins/routing/librouting-next.so"],
        cwd=reloading.host.workdir, env=clean_env())
    swap = reloading.sbctl("plugin", "history", "routing")[0]
    assert swap["result"] == "swapped" and swap["reason"] == "probation 7000 ms", swap

    # The level is debug now: the next reload writes its debug line. The key that
    # needs a restart is still reported, as it still differs from what runs.
    again = reloading.reload(None)
    assert any(r["level"] == "debug" and r["message"].startswith("reload: reading")
               for r in reloading.records())
    assert messages(again) == ["reload: not applied, needs a restart: session-queue-limit"]


def test_refused_plugin_settings_keep_the_old_ones(reloading):
    report = reloading.reload(INITIAL + 'bogus = "1"\n')
    text = messages(report)
    refused = [m for m in text if m.startswith("reload: refused: plugin.presence: ")]
    assert len(refused) == 1, text
    assert 'refused its settings: unknown setting "bogus" for the presence plugin' in refused[0]
    assert next(r for r in report if r["message"] == refused[0])["level"] == "error"
    history = reloading.sbctl("plugin", "history", "presence")
    assert history[0]["result"] == "rejected", history[0]
    presence = next(p for p in reloading.sbctl("plugins") if p["kind"] == "presence")
    assert presence["version"] == "1.0.0" and presence["state"] == "serving"
    # Back to the file as it was: nothing to do.
    assert messages(reloading.reload(INITIAL)) == ["reload: nothing changed"]


def test_a_broken_file_changes_nothing(reloading):
    report = reloading.reload('log-level = "debug"\nlisten = \n')
    text = messages(report)
    assert len(text) == 1 and text[0].startswith("reload: refused, nothing applied: config "), text
    report = reloading.reload('log-level = "loud"\n')
    assert messages(report) == [
        "reload: refused, nothing applied: log-level must be debug, info, warn or error, got 'loud'"]
    assert not any(r["level"] == "debug" for r in reloading.records())
    assert reloading.host.process.poll() is None
