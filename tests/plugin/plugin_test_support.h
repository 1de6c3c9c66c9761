// What the plugin tests share: a private data dir with a real Store, and a
// manager whose canary is this test binary.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <memory>
#include <random>
#include <string>

#include "plugin/plugin_host_services.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"
#include "test_support.h"

namespace switchboard::plugin::testing {

using switchboard::testing::TempDir;

inline std::filesystem::path canaryExecutable() {
  return std::filesystem::read_symlink("/proc/self/exe");
}

// A real Store and a PluginManager over it in a private data dir. Members are
// declared in dependency order, so the manager goes first.
class ManagerTest : public ::testing::Test {
 protected:
  PluginManagerOptions defaultOptions() const {
    PluginManagerOptions options;
    options.dataDir = dir_.path();
    options.canary.executable = canaryExecutable();
    options.canary.timeout = std::chrono::seconds(20);  // failure guard only
    return options;
  }

  void SetUp() override { start(defaultOptions()); }

  void start(PluginManagerOptions options) {
    manager_.reset();
    if (!store_) {
      store::StoreOptions storeOptions;
      storeOptions.dataDir = dir_.path();
      store_ = store::Store::open(storeOptions);
    }
    manager_ = std::make_unique<PluginManager>(std::move(options), host_, *store_);
  }

  // One routing call; the counter fixture returns its running total.
  CallResult<RoutingPlugin::Decision> route() {
    return manager_->call<RoutingPlugin>([](RoutingPlugin& plugin) {
      RoutingPlugin::Envelope envelope;
      envelope.from = "alice";
      envelope.to = "bob";
      envelope.bodyBytes = 5;
      return plugin.route(envelope);
    });
  }
  std::uint64_t routeTotal() {
    auto result = route();
    EXPECT_TRUE(result.ok()) << result.error;
    return result.ok() ? std::stoull(result.value->node) : 0;
  }
  std::string currentVersion() {
    return manager_->status(Kind::routing).currentVersion.value_or("");
  }

  TempDir dir_;
  PluginHostServices host_;
  std::unique_ptr<store::Store> store_;
  std::unique_ptr<PluginManager> manager_;
};

}  // namespace switchboard::plugin::testing
