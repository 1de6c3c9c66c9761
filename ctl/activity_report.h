// `sbctl top`: the live activity report (in the spirit of WhatsApp's wsar), built from
// two reads of the admin counters a known interval apart.
#pragma once

#include "admin_client.h"

#include <chrono>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>
#include <vector>

namespace switchboard::ctl {

// What the host said at one instant: the raw material of a frame.
struct ActivitySample {
  std::chrono::steady_clock::time_point at;
  Stats stats;
  std::vector<PluginStatus> plugins;
  std::vector<SessionInfo> queues;  // longest first

  static ActivitySample read(AdminClient& admin, std::uint32_t queueRows);
};

struct PluginActivity {
  std::string kind;
  std::string state;
  std::string version;
  double callsPerSecond = 0;
  std::uint64_t errors = 0;
  std::uint64_t p99Ns = 0;
  std::uint64_t swaps = 0;
  std::uint64_t pauseP99Us = 0;
  std::uint64_t pauseMaxUs = 0;
};

// One frame: rates are the counter deltas between two samples divided by the time
// between them; gauges are the later sample's.
struct ActivityFrame {
  double seconds = 0;  // between the two samples
  std::uint64_t connections = 0;
  std::uint64_t sessions = 0;
  double loginsPerSecond = 0;
  double messagesInPerSecond = 0;
  double messagesOutPerSecond = 0;
  std::uint64_t maxQueueLength = 0;
  std::uint64_t queueAlerts = 0;
  std::uint64_t slowConsumerKicks = 0;
  std::uint64_t storeCommitP50Us = 0;
  std::uint64_t storeCommitP99Us = 0;
  std::uint64_t uptimeSeconds = 0;
  std::vector<PluginActivity> plugins;
  std::vector<SessionInfo> queues;

  static ActivityFrame between(const ActivitySample& before, const ActivitySample& after);
  void render(std::ostream& out, const std::string& endpoint) const;
};

void to_json(nlohmann::json& out, const ActivityFrame& in);

struct TopOptions {
  // 0: until the operator presses q (or a signal); otherwise this many frames, printed
  // one after another with no terminal mode changes (for scripts and tests).
  unsigned iterations = 0;
  std::chrono::milliseconds interval{1000};
  std::uint32_t queueRows = 10;
  bool json = false;  // with iterations: one JSON array of the frames
};

// Runs the report against `admin`, writing to stdout. Interactive mode puts the
// terminal in non-canonical, no-echo mode and restores it on every exit path,
// SIGINT/SIGTERM included. Returns the process exit code.
int runTop(AdminClient& admin, const TopOptions& options);

}  // namespace switchboard::ctl
