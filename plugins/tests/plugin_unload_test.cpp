// Every plugin build really leaves the process when its last instance and
// library reference go: the property hot swapping rests on (built with
// -fno-gnu-unique and exporting only the descriptor, see plugins/CMakeLists.txt).
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "loaded_plugin.h"

namespace switchboard::plugins::testing {
namespace {

bool mapped(const std::string& path) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line))
    if (line.find(path) != std::string::npos) return true;
  return false;
}

struct Build {
  const char* path;
  plugin::Kind kind;
  const char* version;
};

TEST(PluginUnloadTest, EachBuildUnmapsAfterItsLastInstanceIsDestroyed) {
  const Build builds[] = {
      {SWITCHBOARD_ROUTING_PLUGIN, plugin::Kind::routing, "1.0.0"},
      {SWITCHBOARD_ROUTING_PLUGIN_NEXT, plugin::Kind::routing, "1.1.0"},
      {SWITCHBOARD_AUTH_PLUGIN, plugin::Kind::auth, "1.0.0"},
      {SWITCHBOARD_AUTH_PLUGIN_NEXT, plugin::Kind::auth, "1.1.0"},
      {SWITCHBOARD_PRESENCE_PLUGIN, plugin::Kind::presence, "1.0.0"},
      {SWITCHBOARD_PRESENCE_PLUGIN_NEXT, plugin::Kind::presence, "1.1.0"},
      {SWITCHBOARD_OFFLINE_PLUGIN, plugin::Kind::offline, "1.0.0"},
      {SWITCHBOARD_OFFLINE_PLUGIN_NEXT, plugin::Kind::offline, "1.1.0"},
  };
  TestHost host;
  for (const Build& build : builds) {
    SCOPED_TRACE(build.path);
    {
      auto instance = loadPlugin<plugin::Plugin>(build.path, build.kind, host);
      const auto& descriptor = instance.get_deleter().library->descriptor();
      EXPECT_EQ(std::string(descriptor.version), build.version);
      EXPECT_EQ(std::string(descriptor.buildId).rfind(std::string(build.version) + " ", 0), 0u)
          << descriptor.buildId;
      const auto result = instance->selfTest();
      EXPECT_TRUE(result.ok) << result.message;
      instance->stop();
      EXPECT_TRUE(mapped(build.path));
    }
    EXPECT_FALSE(mapped(build.path)) << "still mapped after its last instance was destroyed";
  }
}

}  // namespace
}  // namespace switchboard::plugins::testing
