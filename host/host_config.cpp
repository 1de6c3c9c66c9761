#include "host_config.h"

#include <toml++/toml.h>
#include <CLI/CLI.hpp>

#include <functional>
#include <map>
#include <set>
#include <sstream>

namespace switchboard {
namespace {

// One configurable setting: its flag/key name and how to read a TOML value
// into the config. The same table drives the command line and the file, so a
// key can never exist in one and not the other.
struct Setting {
  std::string name;
  std::function<CLI::Option*(CLI::App&, HostConfig&)> addFlag;
  std::function<bool(const toml::node&, HostConfig&)> fromToml;
  std::function<bool(const HostConfig&, const HostConfig&)> same;
  std::function<void(const HostConfig&, HostConfig&)> copy;
};

template <class T, class Field>
Setting setting(std::string name, std::string help, Field HostConfig::*field) {
  Setting s;
  s.name = name;
  s.addFlag = [name, help, field](CLI::App& app, HostConfig& config) {
    return app.add_option("--" + name, config.*field, help)->capture_default_str();
  };
  s.fromToml = [field](const toml::node& node, HostConfig& config) {
    std::optional<T> value = node.value<T>();
    if (!value) return false;
    if constexpr (std::is_unsigned_v<Field>) {
      if (*value < 0) return false;
      config.*field = static_cast<Field>(*value);
    } else {
      config.*field = Field(*value);
    }
    return true;
  };
  s.same = [field](const HostConfig& a, const HostConfig& b) { return a.*field == b.*field; };
  s.copy = [field](const HostConfig& from, HostConfig& to) { to.*field = from.*field; };
  return s;
}

std::vector<Setting> settings() {
  return {
      setting<std::string>("listen", "client port, HOST:PORT", &HostConfig::listen),
      setting<std::string>("admin-socket",
                           "admin Unix socket path, mode 0600 (default: DATA-DIR/admin.sock; "
                           "empty: none)",
                           &HostConfig::adminSocket),
      setting<std::string>("metrics-listen",
                           "Prometheus metrics HTTP endpoint HOST:PORT (empty: none)",
                           &HostConfig::metricsListen),
      setting<std::string>("web-listen", "web app + WebSocket RPC (/rpc), HOST:PORT (empty: none)",
                           &HostConfig::webListen),
      setting<std::string>("web-root", "directory of the web app's files", &HostConfig::webRoot),
      setting<std::string>(
          "web-origins", "comma-separated Origins allowed on /rpc (empty: the page's own; *: any)",
          &HostConfig::webOrigins),
      setting<std::string>("web-trusted-proxy",
                           "comma-separated proxy addresses whose X-Forwarded-For is believed",
                           &HostConfig::webTrustedProxies),
      setting<std::string>("data-dir", "data directory (SQLite, plugin copies)",
                           &HostConfig::dataDir),
      setting<std::string>("plugin-dir", "directory holding the initial plugin builds",
                           &HostConfig::pluginDir),
      setting<std::int64_t>("threads", "network threads (0: one per core)", &HostConfig::threads),
      setting<std::string>("log-level", "debug, info, warn or error", &HostConfig::logLevel),
      setting<std::string>("log-file",
                           "write the log to this file, rotated by size (empty: stderr)",
                           &HostConfig::logFile),
      setting<std::string>("log-format", "text, or json: one JSON object per line",
                           &HostConfig::logFormat),
      setting<std::int64_t>("log-max-bytes", "rotate the log file past this size",
                            &HostConfig::logMaxBytes),
      setting<std::int64_t>("log-max-files", "rotated log files kept beside the live one",
                            &HostConfig::logMaxFiles),
      setting<std::int64_t>("probation-seconds", "window after a swap that watches errors",
                            &HostConfig::probationSeconds),
      setting<std::int64_t>("probation-errors", "errors within probation that roll back",
                            &HostConfig::probationErrorThreshold),
      setting<std::int64_t>("canary-timeout-ms", "how long a canary self-test may run",
                            &HostConfig::canaryTimeoutMs),
      setting<std::int64_t>("keep-versions", "versions of each kind kept for rollback",
                            &HostConfig::keepVersions),
      setting<std::string>("node-name", "this node's name (unique in a cluster)",
                           &HostConfig::nodeName),
      setting<std::string>("cluster",
                           "join the cluster whose NATS server is nats://HOST:PORT "
                           "(empty: single node, no NATS)",
                           &HostConfig::cluster),
      setting<std::int64_t>("session-queue-limit",
                            "items queued to one phone before it is disconnected as too slow",
                            &HostConfig::sessionQueueLimit),
      setting<std::int64_t>("session-queue-alert", "queue length that raises an alert",
                            &HostConfig::sessionQueueAlert),
      setting<std::int64_t>("durable-after-ms",
                            "a message an online phone has not taken for this long is written "
                            "to the store",
                            &HostConfig::durableAfterMs),
      setting<std::int64_t>("session-stall-ms",
                            "a phone whose queue is full and that read nothing for this long "
                            "is disconnected as too slow",
                            &HostConfig::sessionStallMs),
      setting<std::int64_t>("login-deadline-ms",
                            "a phone connection not logged in this long after connecting is "
                            "closed (0: never)",
                            &HostConfig::loginDeadlineMs),
      setting<std::int64_t>("max-connections-per-peer",
                            "open phone connections one IP address may hold (0: no bound)",
                            &HostConfig::maxConnectionsPerPeer),
      setting<std::string>("tls-cert",
                           "TLS on the client port: PEM certificate chain (with --tls-key; "
                           "empty: plaintext)",
                           &HostConfig::tlsCert),
      setting<std::string>("tls-key", "TLS on the client port: PEM private key of --tls-cert",
                           &HostConfig::tlsKey),
      setting<std::string>("sms-command", "executable that sends an SMS: COMMAND PHONE CODE",
                           &HostConfig::smsCommand),
      setting<std::string>("push-webhook", "http://HOST:PORT/PATH that receives push POSTs",
                           &HostConfig::pushWebhook),
  };
}

// Adds one "kind.key=value" plugin setting; returns an error text or "".
std::string addPluginSetting(const std::string& spec, HostConfig& config) {
  auto dot = spec.find('.');
  auto eq = spec.find('=');
  if (dot == std::string::npos || eq == std::string::npos || dot > eq || dot == 0 ||
      eq == dot + 1) {
    return "--plugin-setting wants KIND.KEY=VALUE, got '" + spec + "'";
  }
  std::string kind = spec.substr(0, dot);
  if (kind != "routing" && kind != "auth" && kind != "presence" && kind != "offline") {
    return "--plugin-setting: unknown plugin kind '" + kind + "'";
  }
  config.pluginSettings[kind].emplace_back(spec.substr(dot + 1, eq - dot - 1), spec.substr(eq + 1));
  return {};
}

// The [plugin.KIND] tables: every value is handed to the plugin as text.
std::string applyPluginTables(const std::string& path, const toml::node& node, HostConfig& config) {
  const toml::table* kinds = node.as_table();
  if (kinds == nullptr) return "config " + path + ": 'plugin' must be a table of [plugin.KIND]";
  for (auto&& [kind, settings] : *kinds) {
    const toml::table* table = settings.as_table();
    if (table == nullptr)
      return "config " + path + ": [plugin." + std::string(kind.str()) + "] must be a table";
    for (auto&& [key, value] : *table) {
      std::ostringstream text;
      // By type, not by conversion: toml++ would read `false` as the integer 0.
      if (value.is_string()) {
        text << *value.value<std::string>();
      } else if (value.is_integer()) {
        text << *value.value<std::int64_t>();
      } else if (value.is_boolean()) {
        text << (*value.value<bool>() ? "true" : "false");
      } else {
        return "config " + path + ": plugin." + std::string(kind.str()) + "." +
               std::string(key.str()) + " must be a string, integer or boolean";
      }
      std::string error = addPluginSetting(
          std::string(kind.str()) + "." + std::string(key.str()) + "=" + text.str(), config);
      if (!error.empty()) return "config " + path + ": " + error;
    }
  }
  return {};
}

// Applies the TOML file to `config`, skipping keys given on the command line;
// `keysSeen` receives every top-level key the file has. Returns an error text,
// or an empty string.
std::string applyFile(const std::string& path, const std::vector<Setting>& all, CLI::App& app,
                      HostConfig& config, std::set<std::string>& keysSeen) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream out;
    out << "config " << path << ": " << e.description() << " at line " << e.source().begin.line;
    return out.str();
  }
  std::map<std::string, const Setting*> byName;
  for (const Setting& s : all) byName[s.name] = &s;
  for (auto&& [key, node] : table) {
    keysSeen.insert(std::string(key.str()));
    if (key.str() == "plugin") {
      std::string error = applyPluginTables(path, node, config);
      if (!error.empty()) return error;
      continue;
    }
    auto found = byName.find(std::string(key.str()));
    if (found == byName.end()) {
      return "config " + path + ": unknown key '" + std::string(key.str()) + "'";
    }
    if (app.count("--" + found->first) > 0) continue;  // the flag wins
    if (!found->second->fromToml(node, config)) {
      return "config " + path + ": key '" + found->first + "' has the wrong type";
    }
  }
  return {};
}

}  // namespace

ParsedConfig parseHostConfig(int argc, char** argv) {
  ParsedConfig parsed;
  CLI::App app{"switchboard: the Switchboard messaging host"};
  app.set_version_flag("--version", "switchboard " SWITCHBOARD_VERSION);
  std::string configPath;
  app.add_option("--config", configPath, "TOML file with the same keys as these flags")
      ->check(CLI::ExistingFile);
  std::vector<Setting> all = settings();
  for (const Setting& s : all) s.addFlag(app, parsed.config);
  std::vector<std::string> pluginSettings;
  app.add_option("--plugin-setting", pluginSettings,
                 "KIND.KEY=VALUE handed to a plugin's configure(); repeatable");
  app.get_option("--log-level")->check(CLI::IsMember({"debug", "info", "warn", "error"}));
  app.get_option("--log-format")->check(CLI::IsMember({"text", "json"}));

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    parsed.outcome = ParsedConfig::Outcome::print;
    parsed.text = app.help();
    return parsed;
  } catch (const CLI::CallForVersion&) {
    parsed.outcome = ParsedConfig::Outcome::print;
    parsed.text = app.version();
    return parsed;
  } catch (const CLI::ParseError& e) {
    parsed.text = e.what();
    return parsed;
  }
  std::set<std::string> fileKeys;
  if (!configPath.empty()) {
    parsed.text = applyFile(configPath, all, app, parsed.config, fileKeys);
    if (!parsed.text.empty()) return parsed;
  }
  // The admin socket lives in the data dir unless placed elsewhere on purpose.
  if (app.count("--admin-socket") == 0 && !fileKeys.contains("admin-socket")) {
    parsed.config.adminSocket = parsed.config.dataDir / "admin.sock";
  }
  for (const std::string& spec : pluginSettings) {
    parsed.text = addPluginSetting(spec, parsed.config);
    if (!parsed.text.empty()) return parsed;
  }
  if (!parsed.config.cluster.empty() && parsed.config.cluster.rfind("nats://", 0) != 0) {
    parsed.text = "--cluster wants nats://HOST:PORT, got '" + parsed.config.cluster + "'";
    return parsed;
  }
  parsed.config.configFile = configPath;
  // Checked here too, as the file bypasses the flags' own checks.
  const std::set<std::string> levels{"debug", "info", "warn", "error"};
  if (!levels.contains(parsed.config.logLevel)) {
    parsed.text =
        "log-level must be debug, info, warn or error, got '" + parsed.config.logLevel + "'";
    return parsed;
  }
  if (parsed.config.logFormat != "text" && parsed.config.logFormat != "json") {
    parsed.text = "log-format must be text or json, got '" + parsed.config.logFormat + "'";
    return parsed;
  }
  if (parsed.config.logMaxBytes < 4096 || parsed.config.logMaxFiles < 1) {
    parsed.text = "log-max-bytes must be at least 4096 and log-max-files at least 1";
    return parsed;
  }
  if (parsed.config.tlsCert.empty() != parsed.config.tlsKey.empty()) {
    parsed.text = "tls-cert and tls-key go together: give both, or neither for plaintext";
    return parsed;
  }
  if (parsed.config.threads > 256) {
    parsed.text = "--threads must be between 0 and 256";
    return parsed;
  }
  parsed.outcome = ParsedConfig::Outcome::run;
  return parsed;
}

std::vector<std::string> changedSettings(const HostConfig& a, const HostConfig& b) {
  std::vector<std::string> changed;
  for (const Setting& s : settings()) {
    if (!s.same(a, b)) changed.push_back(s.name);
  }
  std::set<std::string> kinds;
  for (const auto& [kind, values] : a.pluginSettings) kinds.insert(kind);
  for (const auto& [kind, values] : b.pluginSettings) kinds.insert(kind);
  for (const std::string& kind : kinds) {
    auto inA = a.pluginSettings.find(kind);
    auto inB = b.pluginSettings.find(kind);
    const bool sameSettings =
        inA != a.pluginSettings.end() && inB != b.pluginSettings.end()
            ? inA->second == inB->second
            : (inA == a.pluginSettings.end() ? inB->second.empty() : inA->second.empty());
    if (!sameSettings) changed.push_back("plugin." + kind);
  }
  return changed;
}

void copySetting(const std::string& key, const HostConfig& from, HostConfig& to) {
  if (key.starts_with("plugin.")) {
    const std::string kind = key.substr(7);
    auto found = from.pluginSettings.find(kind);
    if (found == from.pluginSettings.end()) {
      to.pluginSettings.erase(kind);
    } else {
      to.pluginSettings[kind] = found->second;
    }
    return;
  }
  for (const Setting& s : settings()) {
    if (s.name == key) s.copy(from, to);
  }
}

}  // namespace switchboard
