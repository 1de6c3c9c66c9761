// The Switchboard plugin ABI: the one host header a plugin includes.
//
// A plugin is a shared object holding the policy of one kind (routing, auth,
// presence, offline). The stable host process owns every socket, session and
// byte of storage; a plugin decides, and reaches the host only through the
// HostServices it is given. The host may swap a plugin for another version at
// any time between two calls, so everything a plugin must remember across a
// swap leaves it as bytes (exportState) and enters the next version as bytes
// (importState) — Erlang's code_change.
//
// Rules that make unloading safe (the host relies on them; breaking one is a
// crash after a swap, not a compile error):
//   * No exception leaves a plugin call. The host wraps every call and counts a
//     throw as an error of that version, but a plugin should return errors.
//   * Nothing made by the plugin outlives its library: no object with a vtable,
//     no std::function, no type_info, no exception_ptr crosses to the host.
//     Plain data (integers, std::string, std::vector of plain structs) may.
//   * A plugin starts no threads and uses no thread_local: calls arrive on the
//     host's network threads, concurrently, so a plugin guards its own state.
//   * A plugin never blocks: host services are non-blocking by contract.
//
// Build a plugin with -fvisibility=hidden -fno-gnu-unique: the installed CMake
// package does it (find_package(Switchboard), switchboard_add_plugin(), see
// docs/plugin-authoring.md). Export its descriptor with SWITCHBOARD_PLUGIN, or
// the class and its descriptor at once with SWITCHBOARD_PLUGIN_CLASS
// (switchboard/plugin_sdk.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace switchboard::plugin {

// Bumped on any change to the layout of the types below. A library built
// against another value is refused at load time.
inline constexpr std::uint32_t kAbiVersion = 1;

enum class Kind : std::uint32_t { routing = 1, auth = 2, presence = 3, offline = 4 };

// "routing", "auth", "presence", "offline"; "unknown" for anything else.
constexpr std::string_view kindName(Kind kind) {
  switch (kind) {
    case Kind::routing:
      return "routing";
    case Kind::auth:
      return "auth";
    case Kind::presence:
      return "presence";
    case Kind::offline:
      return "offline";
  }
  return "unknown";
}

enum class LogLevel : std::uint8_t { debug, info, warn, error };

// ---------------------------------------------------------------- host services

// What a plugin may ask of the host. Every method is thread-safe, non-blocking
// and noexcept in effect (the host never throws into a plugin). The reference
// stays valid for the whole life of the plugin instance.
class HostServices {
 public:
  virtual void log(LogLevel level, std::string_view message) = 0;
  // Adds `delta` to the counter `name` (exported per plugin kind and version).
  virtual void count(std::string_view name, std::uint64_t delta) = 0;
  // Wall clock, milliseconds since the Unix epoch. Plugins take time from here
  // so that tests can reason about expiry.
  virtual std::int64_t nowMs() = 0;

 protected:
  ~HostServices() = default;
};

// ---------------------------------------------------------------- lifecycle

struct SelfTestResult {
  bool ok = false;
  std::string message;  // why it failed; free text for the ledger
};

// The lifecycle every kind shares. The host calls, in order:
//   create → configure → importState (only when replacing a running version)
//   → start → ...calls of the kind's interface... → exportState → stop → destroy.
// A swap quiesces the old instance, calls its exportState, then the new one's
// importState and start, and only then the old one's stop: if the new version
// refuses the state, the old one resumes as if nothing happened. A reload of
// the host's settings (SIGHUP) is the same swap to a fresh instance of the
// serving version, configured with the new settings.
// selfTest runs only in the canary child process, on a fresh instance.
//
// Every method but selfTest has a default that suits a plugin with no
// settings and no state: configure refuses any setting, start and stop do
// nothing, exportState returns no bytes and importState drops what an older
// version exported. Such a plugin writes its kind's decision and selfTest,
// nothing else. The defaults are inline and compiled into the plugin, so
// they change no layout (kAbiVersion stays where it was).
class Plugin {
 public:
  virtual ~Plugin() = default;

  // Settings from the host's configuration (the [plugin.<kind>] table of the
  // config file, or --plugin-setting kind.key=value), given before start() and
  // to every new version before its start(). Returns an empty string when
  // accepted, or why not (an unknown key, a bad value): the version is refused.
  struct Setting {
    std::string key;
    std::string value;
  };
  virtual std::string configure(const std::vector<Setting>& settings) {
    if (settings.empty()) return {};
    return "unknown setting \"" + settings.front().key + "\" (this plugin takes no settings)";
  }

  virtual void start() {}
  virtual void stop() {}

  // The plugin's state as bytes in this version's own format. Called with the
  // slot quiesced: no other call runs concurrently.
  virtual std::string exportState() { return {}; }
  // Adopt state exported by version `fromVersion` (older or newer: rollback uses
  // the same call). Throwing refuses the swap and the old version keeps serving.
  virtual void importState(std::string_view /*fromVersion*/, std::string_view /*bytes*/) {}

  // Exercises the plugin without touching shared host state. Runs in a
  // throwaway process; a crash, a hang or ok=false rejects the version.
  virtual SelfTestResult selfTest() = 0;
};

// ---------------------------------------------------------------- the four kinds

// Where a message goes. Policy only: the host owns sessions and storage and
// carries out the decision.
class RoutingPlugin : public Plugin {
 public:
  // drop: not delivered to this recipient and not an error (for example the
  // sender's own copy of a group message).
  enum class Destination : std::uint8_t { localSession, remoteNode, offlineQueue, reject, drop };
  struct Decision {
    Destination destination = Destination::reject;
    std::string node;   // remoteNode: the node that holds the session
    std::string error;  // reject: why, shown to the sender
  };
  enum class Payload : std::uint8_t { message, receipt };
  // One recipient of one message or receipt. The host fills in what it knows
  // about the recipient; a group message is routed once per member.
  struct Envelope {
    std::string from;  // taken from the sender's session, never from the message
    std::string to;
    std::uint64_t bodyBytes = 0;
    std::uint64_t group = 0;  // 0: a direct message
    Payload payload = Payload::message;
    bool recipientOnline = false;  // has a live session on this node
    std::string recipientNode;     // cluster node holding its session, if another one
  };
  virtual Decision route(const Envelope& envelope) = 0;
};

class AuthPlugin : public Plugin {
 public:
  // Policy for registration codes; key generation and hashing are host mechanism.
  struct CodeDecision {
    bool ok = false;
    std::string code;     // the code to send, when ok
    std::string smsText;  // the whole SMS the host sends to the phone
    std::uint32_t expiresInSeconds = 0;
    std::string error;  // why not, when !ok (rate limit, bad number)
  };
  virtual CodeDecision requestCode(std::string_view phone, std::string_view peer) = 0;
  struct VerifyDecision {
    bool ok = false;
    std::string error;  // wrong code, expired, locked after too many attempts
  };
  virtual VerifyDecision verifyCode(std::string_view phone, std::string_view code) = 0;
};

class PresencePlugin : public Plugin {
 public:
  // Whether `watcher` may see the presence of `user` (online, last seen, typing).
  virtual bool visible(std::string_view user, std::string_view watcher,
                       bool watcherHasUserAsContact, bool userHasWatcherAsContact) = 0;
};

class OfflinePlugin : public Plugin {
 public:
  struct QueuePolicy {
    std::int64_t expiresAtMs = 0;  // when the queued message is dropped
    bool push = false;             // send a push notification now
    std::string pushText;
  };
  virtual QueuePolicy onQueued(std::string_view recipient, std::string_view sender,
                               std::uint64_t queuedForRecipient) = 0;
};

// ---------------------------------------------------------------- export

// What a library exports, through SWITCHBOARD_PLUGIN. All pointers refer to
// storage inside the library and stay valid while it is mapped.
struct Descriptor {
  std::uint32_t abiVersion;  // kAbiVersion as the plugin was compiled
  Kind kind;
  const char* version;  // semantic version, "1.4.2"
  const char* buildId;  // free text identifying the build (commit, date)
  // Makes one instance; the host destroys it with `destroy` (same library).
  Plugin* (*create)(HostServices& host);
  void (*destroy)(Plugin* plugin);
};

// The exported symbol name the host looks up.
inline constexpr const char* kDescriptorSymbol = "switchboard_plugin_descriptor";

}  // namespace switchboard::plugin

// Exports `fn`, a function `const switchboard::plugin::Descriptor* fn()`, with
// Boost.DLL under the alias the host looks up (kDescriptorSymbol). Use once per
// library, at namespace scope.
#ifndef BOOST_DLL_USE_STD_FS
#define BOOST_DLL_USE_STD_FS
#endif
#include <boost/dll/alias.hpp>
#define SWITCHBOARD_PLUGIN(fn) BOOST_DLL_ALIAS(fn, switchboard_plugin_descriptor)
