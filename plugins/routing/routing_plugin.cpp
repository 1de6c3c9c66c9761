// The routing plugin: where one recipient's copy of a message or receipt goes.
//
// Policy, in order:
//   empty `to`                             -> reject "no recipient"
//   group message, the sender's own copy   -> drop
//   recipient has a session on this node   -> localSession
//   recipient's session is on another node -> remoteNode (that node)
//   otherwise                              -> offlineQueue
// Receipts follow the same rules as messages. A direct message to oneself is
// delivered like any other (a note to self).
//
// Settings: none; any key is refused (the SDK default configure).
// State: one counter per destination. Format 1 (1.0.x): the five counters as
// fixed-width u64 in Destination order. Format 2 (1.1.x): a count, then
// (destination name, compact u64) pairs, names sorted.
#include <array>
#include <cstdint>
#include <exception>
#include <map>
#include <mutex>
#include <new>
#include <string>
#include <string_view>

#include "scratch_host.h"
#include "state_codec.h"
#include "switchboard/plugin_sdk.h"

namespace switchboard::plugins::routing {
namespace {

using plugin::HostServices;
using plugin::LogLevel;
using plugin::RoutingPlugin;
using Destination = RoutingPlugin::Destination;

constexpr char kStateLetter = 'R';
constexpr std::size_t kDestinations = 5;

constexpr std::array<std::string_view, kDestinations> kDestinationNames = {
    "localSession", "remoteNode", "offlineQueue", "reject", "drop"};
constexpr std::array<std::string_view, kDestinations> kCounterNames = {
    "route_local_session", "route_remote_node", "route_offline_queue", "route_reject",
    "route_drop"};

// Routes envelopes and counts the decisions. Owned by the host through the
// descriptor's create/destroy. route() is called concurrently from the
// network threads; the counters are guarded by mutex_. No call throws except
// importState, which refuses malformed state by throwing (ABI contract).
class RoutingPolicy final : public RoutingPlugin {
 public:
  explicit RoutingPolicy(HostServices& host) : host_(host) {}

  // configure and stop: the SDK defaults (no settings; nothing to release).
  void start() override {
    host_.log(LogLevel::info, "routing " SWITCHBOARD_PLUGIN_VERSION " started");
  }

  Decision route(const Envelope& envelope) override {
    try {
      Decision decision = decide(envelope);
      const auto index = static_cast<std::size_t>(decision.destination);
      {
        std::lock_guard lock(mutex_);
        ++counters_[index];
      }
      host_.count(kCounterNames[index], 1);
      return decision;
    } catch (...) {
      // Only allocation can fail above; refuse this one recipient rather than crash.
      Decision refused;
      refused.destination = Destination::reject;
      refused.error = "routing failed";
      return refused;
    }
  }

  std::string exportState() override {
    std::array<std::uint64_t, kDestinations> counters;
    {
      std::lock_guard lock(mutex_);
      counters = counters_;
    }
    StateWriter writer(kStateLetter, kOwnStateFormat);
    if (kOwnStateFormat == StateFormat::fixedWidth) {
      for (const auto value : counters) writer.u64(value);
    } else {
      std::map<std::string_view, std::uint64_t> byName;
      for (std::size_t i = 0; i < kDestinations; ++i) byName[kDestinationNames[i]] = counters[i];
      writer.u64(byName.size());
      for (const auto& [name, value] : byName) {
        writer.text(name);
        writer.u64(value);
      }
    }
    return std::move(writer).finish();
  }

  void importState(std::string_view fromVersion, std::string_view bytes) override {
    const StateFormat format = requireStateFormatOf(fromVersion);
    std::array<std::uint64_t, kDestinations> counters{};
    StateReader reader(bytes, kStateLetter, format);
    if (format == StateFormat::fixedWidth) {
      for (auto& value : counters) value = reader.u64();
    } else {
      const std::uint64_t entries = reader.count(2);
      for (std::uint64_t i = 0; i < entries; ++i) {
        const std::string name = reader.text();
        const std::uint64_t value = reader.u64();
        std::size_t index = 0;
        while (index < kDestinations && kDestinationNames[index] != name) ++index;
        if (index == kDestinations)
          throw StateError("routing state names an unknown destination \"" + name + "\"");
        counters[index] += value;
      }
    }
    reader.expectEnd();
    std::lock_guard lock(mutex_);
    counters_ = counters;
    host_.log(LogLevel::info, "routing imported state of " + std::string(fromVersion));
  }

  plugin::SelfTestResult selfTest() override {
    try {
      ScratchHost scratchHost(0);
      RoutingPolicy scratch(scratchHost);
      SelfTestLog log;
      Envelope envelope;
      envelope.from = "+15550000001";
      envelope.to = "+15550000002";
      envelope.recipientOnline = true;
      log.check(scratch.route(envelope).destination == Destination::localSession,
                "online recipient not routed to its session");
      envelope.recipientOnline = false;
      envelope.recipientNode = "node-b";
      const Decision remote = scratch.route(envelope);
      log.check(remote.destination == Destination::remoteNode && remote.node == "node-b",
                "recipient on another node not routed there");
      envelope.recipientNode.clear();
      envelope.payload = Payload::receipt;
      log.check(scratch.route(envelope).destination == Destination::offlineQueue,
                "offline recipient not queued");
      envelope.payload = Payload::message;
      envelope.group = 7;
      envelope.to = envelope.from;
      log.check(scratch.route(envelope).destination == Destination::drop,
                "sender's own group copy not dropped");
      envelope.to.clear();
      log.check(scratch.route(envelope).destination == Destination::reject,
                "empty recipient not rejected");
      log.check(scratch.configure({{"bogus", "1"}}).find("unknown setting") != std::string::npos,
                "unknown setting accepted");
      RoutingPolicy copy(scratchHost);
      copy.importState(SWITCHBOARD_PLUGIN_VERSION, scratch.exportState());
      log.check(copy.exportState() == scratch.exportState(), "state did not survive export/import");
      log.check(scratchHost.counter("route_drop") == 1, "drop not counted");
      return log.result("routing self test passed");
    } catch (const std::exception& error) {
      return {false, std::string("routing self test threw: ") + error.what()};
    }
  }

 private:
  static Decision decide(const Envelope& envelope) {
    Decision decision;
    if (envelope.to.empty()) {
      decision.destination = Destination::reject;
      decision.error = "no recipient";
    } else if (envelope.group != 0 && envelope.to == envelope.from) {
      decision.destination = Destination::drop;
    } else if (envelope.recipientOnline) {
      decision.destination = Destination::localSession;
    } else if (!envelope.recipientNode.empty()) {
      decision.destination = Destination::remoteNode;
      decision.node = envelope.recipientNode;
    } else {
      decision.destination = Destination::offlineQueue;
    }
    return decision;
  }

  HostServices& host_;
  std::mutex mutex_;
  std::array<std::uint64_t, kDestinations> counters_{};
};

}  // namespace
}  // namespace switchboard::plugins::routing

SWITCHBOARD_PLUGIN_CLASS(switchboard::plugins::routing::RoutingPolicy, routing)
