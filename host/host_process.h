// The stable host process: everything that must outlive a plugin swap.
//
// It owns, in order of construction (and reverse order of destruction): the
// store, the network threads, the plugin manager with the four slots, the SMS
// and push sinks, the session table, the messaging service, the phone
// listener, the web endpoint (docs/web.md), and the admin room: its operation worker, the admin
// socket (on the first network thread) and the metrics HTTP server (its own thread).
// With --cluster it also owns a cluster::ClusterNode (host/cluster/) between the listener
// and the admin room; without it nothing of NATS is touched.
// Construction brings the whole server up or throws HostStartError with one line for the
// operator; run() then serves until SIGINT or SIGTERM (SIGHUP reloads the configuration, see
// reload()) and shuts down cleanly: stop accepting, tell every session, close connections,
// stop the plugins, flush the store.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "host_config.h"
#include "net/rpc_listener.h"

namespace switchboard {

namespace plugin {
class PluginManager;
}

class HostStartError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class HostProcess {
 public:
  explicit HostProcess(HostConfig config);
  ~HostProcess();
  HostProcess(const HostProcess&) = delete;
  HostProcess& operator=(const HostProcess&) = delete;

  // Serves until SIGINT/SIGTERM (or requestStop()), then shuts down. Returns
  // the process exit code.
  int run();
  // Makes run() return; thread-safe and async-signal-free (posts to run()).
  void requestStop();

  // What SIGHUP re-reads: the same flags and config file as at startup. Set
  // before run(); without one, SIGHUP logs that there is nothing to re-read.
  void setConfigSource(std::function<ParsedConfig()> source);
  // Re-reads the configuration and applies what can change while running:
  // log-level, probation-seconds, probation-errors, canary-timeout-ms and
  // the plugins' settings ([plugin.KIND], each kind's serving version
  // restarted with them through a swap). Every other changed key is logged
  // as needing a restart, and stays pending; a refused plugin setting keeps
  // the old ones. Logs one line per outcome ("reload: applied: ...",
  // "reload: not applied, needs a restart: ...", "reload: refused: ...", then
  // "reload: done: A applied, R need a restart, F refused") and returns them.
  // Runs on run()'s thread when SIGHUP arrives.
  std::vector<std::string> reload();

  // The client endpoint as bound ("127.0.0.1:5222").
  std::string clientEndpoint() const;
  // The web endpoint as bound; empty when there is none.
  std::string webEndpoint() const;
  // The metrics endpoint as bound ("127.0.0.1:9464"); empty when disabled.
  std::string metricsEndpoint() const;

  // The plugin manager, for operators inside this process (the in-process
  // plugin swap tests; later the admin service). Valid until destruction.
  plugin::PluginManager& plugins();

 private:
  struct Parts;
  void loadInitialPlugins();
  void startWeb(const std::vector<net::NetworkThread*>& threads,
                const net::BootstrapFactory& gateway);
  void startCluster();
  void startAdmin();
  void shutdown();

  const HostConfig config_;
  HostConfig live_;  // config_ with what reloads applied since
  std::function<ParsedConfig()> configSource_;
  std::unique_ptr<Parts> parts_;
};

// Where the initial plugin builds are looked for when --plugin-dir is not
// given: <dir of the executable>/../plugins (the build tree's layout), if it
// exists. Empty otherwise.
std::filesystem::path defaultPluginDir();
// The web app's files when --web-root is not given: <dir of the executable>/../web/public (the
// build tree) or <dir of the executable>/../share/switchboard/web (installed), the first with
// an index.html. Empty otherwise.
std::filesystem::path defaultWebRoot();

}  // namespace switchboard
