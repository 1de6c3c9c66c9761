// The host's configuration: command-line flags, optionally backed by a TOML file.
//
// Every flag has a key of the same name in the file (`listen`, `data-dir`, ...),
// grouped in no table. A flag given on the command line wins over the file; the
// file wins over the built-in default. Parsing never exits the process: it
// returns either a HostConfig or a one-line error, and main decides the exit code.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace switchboard {

struct HostConfig {
  std::string listen = "127.0.0.1:5222";  // client port, HOST:PORT
  // Relative paths are relative to the working directory; empty: no admin socket.
  std::filesystem::path adminSocket = "var/admin.sock";
  std::string metricsListen = "127.0.0.1:9464";  // GET /metrics, HOST:PORT; empty: none
  // The web app and its WebSocket RPC endpoint (docs/web.md). Empty: none. The default
  // address is best effort: when it is taken the host warns and serves without it.
  std::string webListen = "127.0.0.1:8080";
  std::filesystem::path webRoot;  // the app's files; empty: <exe>/../web/public if built
  std::string webOrigins;         // comma-separated allowed Origins; empty: same origin
  std::string webTrustedProxies;  // comma-separated proxy addresses for X-Forwarded-For
  std::filesystem::path dataDir = "var";
  std::filesystem::path pluginDir;  // initial plugin builds; empty: none
  std::uint32_t threads = 0;        // 0: one per core
  std::string logLevel = "info";

  // Logs (host/log_output.h): stderr unless log-file is set, then that file,
  // rotated past logMaxBytes with logMaxFiles older files kept beside it.
  std::filesystem::path logFile;
  std::string logFormat = "text";  // text, or json: one object per line
  std::uint64_t logMaxBytes = 10 * 1024 * 1024;
  std::uint32_t logMaxFiles = 5;
  // The --config file this was read from; empty when none (SIGHUP re-reads it).
  std::filesystem::path configFile;

  // Plugin swaps (see docs/architecture.md, "The swap").
  std::uint32_t probationSeconds = 60;
  std::uint32_t probationErrorThreshold = 10;
  std::uint32_t canaryTimeoutMs = 5000;
  std::uint32_t keepVersions = 5;

  // Phones and their sessions.
  std::string nodeName = "node1";
  std::string cluster;  // nats://HOST:PORT of the cluster's NATS; empty: single node
  std::uint32_t sessionQueueLimit = 10000;  // past it a slow reader is disconnected
  std::uint32_t sessionQueueAlert = 1000;   // past it an alert is logged and counted
  // A message held for an online phone that has not taken it this long is
  // written to the store (and its sender acknowledged once durable).
  std::uint32_t durableAfterMs = 200;
  std::uint32_t sessionStallMs = 5000;  // full queue + nothing read this long: disconnected

  // Connections on the phone port (see net/connection_limits.h for the protocol limits).
  std::uint32_t loginDeadlineMs = 10000;    // not logged in this long after connecting: closed
  std::uint32_t maxConnectionsPerPeer = 0;  // open connections per IP address; 0: no bound
  // TLS on the phone port: a PEM certificate chain and its unencrypted PEM key. Both or
  // neither; neither: plaintext. A file that cannot be read refuses the start.
  std::filesystem::path tlsCert;
  std::filesystem::path tlsKey;

  // Where SMS codes and push notifications go (empty: the log, for development).
  std::string smsCommand;   // executable run as: COMMAND PHONE CODE
  std::string pushWebhook;  // http://HOST:PORT/PATH receiving a JSON POST per push

  // Plugin settings by kind name: --plugin-setting auth.code-ttl-seconds=600,
  // or a [plugin.auth] table in the config file.
  std::map<std::string, std::vector<std::pair<std::string, std::string>>> pluginSettings;
};

// What parsing produced: run with `config`; print `text` (--help, --version)
// and exit 0; or print `text` as an error and exit 2.
struct ParsedConfig {
  enum class Outcome { run, print, error };
  Outcome outcome = Outcome::error;
  HostConfig config;
  std::string text;
};

ParsedConfig parseHostConfig(int argc, char** argv);

// For a reload: the keys whose values differ between `a` and `b`, in the order
// of --help, then "plugin.KIND" for each kind whose plugin settings differ.
std::vector<std::string> changedSettings(const HostConfig& a, const HostConfig& b);
// Copies the value of one key named by changedSettings from `from` to `to`.
void copySetting(const std::string& key, const HostConfig& from, HostConfig& to);

}  // namespace switchboard
