// What the admin room reads and drives: the host's parts, by reference, and
// the facts about this process that do not change while it runs.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace switchboard::store {
class Store;
}
namespace switchboard::plugin {
class PluginManager;
class PluginHostServices;
}  // namespace switchboard::plugin
namespace switchboard::messaging {
class MessagingService;
}
namespace switchboard::notify {
class SmsSink;
class PushSink;
}  // namespace switchboard::notify
namespace switchboard::net {
class NetworkThread;
}
namespace switchboard::cluster {
class ClusterNode;
}

namespace switchboard::admin {

struct HostFacts {
  std::string version;
  std::string node;
  std::string dataDir;
  std::string clientEndpoint;
  std::uint32_t threads = 0;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// Borrowed views of the host's parts. The host owns every one of them and
// keeps them alive until the admin socket, the metrics server and the
// operation worker are gone. Every part is thread-safe for what the admin
// room does with it (reads, kicks, writes through the store's queue);
// `adminThread` is the network thread serving admin connections, where
// results of blocking operations are posted back.
struct HostView {
  HostFacts facts;
  store::Store& store;
  plugin::PluginManager& plugins;
  plugin::PluginHostServices& pluginServices;
  messaging::MessagingService& messaging;
  notify::SmsSink& sms;
  notify::PushSink& push;
  net::NetworkThread& adminThread;
  std::function<std::size_t()> connectionCount;  // live phone connections
  cluster::ClusterNode* cluster;                 // null: single node (no --cluster)

  std::uint64_t uptimeSeconds() const {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::seconds>(
                                          std::chrono::steady_clock::now() - facts.started)
                                          .count());
  }
};

}  // namespace switchboard::admin
