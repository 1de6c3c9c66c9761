// libFuzzer target: importState of every plugin build with arbitrary bytes.
//
// The first input byte picks the library (kind x build: lib<kind>.so 1.0.0 and
// lib<kind>-next.so 1.1.0), the second the version the state claims to come from; the rest
// is the state. A plugin may refuse state by throwing (the ABI contract); it must not crash,
// hang or corrupt memory, and after a refusal or an import it must still export and answer.
// The libraries are loaded once, before fuzzing starts, the way the host loads them.
#include <cstddef>
#include <cstdint>
#include <exception>
#include <string>
#include <string_view>
#include <vector>

#include "loaded_plugin.h"

namespace {

using namespace switchboard;
using plugins::testing::PluginPtr;
using plugins::testing::TestHost;

struct Build {
  plugin::Kind kind;
  const char* path;
};

const Build kBuilds[] = {
    {plugin::Kind::routing, SWITCHBOARD_FUZZ_PLUGIN_DIR "/routing/librouting.so"},
    {plugin::Kind::routing, SWITCHBOARD_FUZZ_PLUGIN_DIR "/routing/librouting-next.so"},
    {plugin::Kind::auth, SWITCHBOARD_FUZZ_PLUGIN_DIR "/auth/libauth.so"},
    {plugin::Kind::auth, SWITCHBOARD_FUZZ_PLUGIN_DIR "/auth/libauth-next.so"},
    {plugin::Kind::presence, SWITCHBOARD_FUZZ_PLUGIN_DIR "/presence/libpresence.so"},
    {plugin::Kind::presence, SWITCHBOARD_FUZZ_PLUGIN_DIR "/presence/libpresence-next.so"},
    {plugin::Kind::offline, SWITCHBOARD_FUZZ_PLUGIN_DIR "/offline/liboffline.so"},
    {plugin::Kind::offline, SWITCHBOARD_FUZZ_PLUGIN_DIR "/offline/liboffline-next.so"},
};
constexpr size_t kBuildCount = sizeof(kBuilds) / sizeof(kBuilds[0]);
const char* const kFromVersions[] = {"1.0.0", "1.1.0", "1.0.1", "1.2.0", "0.9.0", "2.0.0", ""};
constexpr size_t kVersionCount = sizeof(kFromVersions) / sizeof(kFromVersions[0]);

TestHost& host() {
  static TestHost* testHost = new TestHost();
  return *testHost;
}

// One instance per build; importState replaces its state on every input.
std::vector<PluginPtr<plugin::Plugin>>& instances() {
  static auto* made = new std::vector<PluginPtr<plugin::Plugin>>();
  return *made;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (const Build& build : kBuilds)
    instances().push_back(
        plugins::testing::loadPlugin<plugin::Plugin>(build.path, build.kind, host()));
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  plugin::Plugin& plugin = *instances()[data[0] % kBuildCount];
  std::string_view fromVersion = kFromVersions[data[1] % kVersionCount];
  std::string_view state(reinterpret_cast<const char*>(data + 2), size - 2);
  try {
    plugin.importState(fromVersion, state);
  } catch (const std::exception&) {
    // Refused: allowed. The instance keeps working either way (checked below).
  }
  std::string exported = plugin.exportState();
  // What a build exports, the same build must take back.
  try {
    plugin.importState(
        instances()[data[0] % kBuildCount].get_deleter().library->descriptor().version, exported);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "a plugin refused its own exported state: %s\n", e.what());
    std::abort();
  }
  return 0;
}
