// Swapping every plugin kind in and back out over the host's admin socket (one host, or a
// cluster's rolling upgrade).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace switchboard::bench {

struct SwapFigures {
  std::vector<std::uint64_t> pausesUs;  // as the host measured each swap (PluginOperation.pauseUs)
  std::uint64_t ok = 0;
  std::uint64_t failed = 0;
  std::string firstFailure;
};

// Speaks proto/admin.capnp to a running host: loadPlugin of each kind's "-next" build, then
// rollbackPlugin, `rounds` times per kind. Synchronous, on the calling thread's own KJ loop
// (made here and gone on return); the coordinator calls it while its workers carry load.
class PluginSwapper {
 public:
  explicit PluginSwapper(std::filesystem::path adminSocket);
  SwapFigures swapEach(const std::filesystem::path& pluginDir, std::uint32_t rounds);
  // A cluster, through one node's admin socket: each kind's "-next" build is loaded node
  // by node, each after the last one's probation, by the code `sbctl cluster upgrade` runs
  // (ctl::rollingUpgrade), then rolled back on every node; `rounds` times per kind. Every
  // node's load and rollback is one swap (its pause as that node measured it).
  SwapFigures upgradeCluster(const std::filesystem::path& pluginDir, std::uint32_t rounds);

 private:
  std::filesystem::path adminSocket_;
};

}  // namespace switchboard::bench
