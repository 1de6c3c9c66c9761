// The stable host process: everything that must outlive a plugin swap.
//
// It owns, in order of construction (and reverse order of destruction): the
// store, the network threads, the plugin manager with the four slots, the SMS
// and push sinks, the session table, the messaging service, the phone
// listener, and the admin room: its operation worker, the admin socket (on
// the first network thread) and the metrics HTTP server (its own thread).
// Construction brings the whole server up or throws HostStartError with one
// line for the operator; run() then serves until SIGINT or SIGTERM and
// shuts down cleanly: stop accepting, tell every session, close connections,
// stop the plugins, flush the store.
#pragma once

#include <filesystem>
#include <memory>
#include <stdexcept>
#include <string>

#include "host_config.h"

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

  // The client endpoint as bound ("127.0.0.1:5222").
  std::string clientEndpoint() const;
  // The metrics endpoint as bound ("127.0.0.1:9464"); empty when disabled.
  std::string metricsEndpoint() const;

  // The plugin manager, for operators inside this process (the in-process
  // plugin swap tests; later the admin service). Valid until destruction.
  plugin::PluginManager& plugins();

 private:
  struct Parts;
  void loadInitialPlugins();
  void startAdmin();
  void shutdown();

  const HostConfig config_;
  std::unique_ptr<Parts> parts_;
};

// Where the initial plugin builds are looked for when --plugin-dir is not
// given: <dir of the executable>/../plugins (the build tree's layout), if it
// exists. Empty otherwise.
std::filesystem::path defaultPluginDir();

}  // namespace switchboard
