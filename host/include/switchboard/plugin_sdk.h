// What a plugin library needs beside the ABI: the descriptor, written once.
//
// describePlugin<Policy>(kind, version, buildId) returns the Descriptor of a
// library whose instances are `Policy` objects, each made as Policy(host)
// with the host's services. A constructor that throws makes create() return
// null, which the host reports as a refused version: nothing throws across
// the ABI. The descriptor and the two functions it points to live in the
// plugin's library, as the ABI requires.
//
// SWITCHBOARD_PLUGIN_CLASS(Policy, kind) does the rest: it defines the
// descriptor function with the version and build id the build passes in
// (SWITCHBOARD_PLUGIN_VERSION, SWITCHBOARD_PLUGIN_BUILD_ID, defined by the
// CMake function switchboard_add_plugin) and exports it. Use it once per
// library, at global scope, after the class:
//
//   class Lobby final : public switchboard::plugin::RoutingPlugin { ... };
//   SWITCHBOARD_PLUGIN_CLASS(Lobby, routing)
#pragma once

#include "switchboard/plugin_api.h"

namespace switchboard::plugin {

template <class Policy>
const Descriptor* describePlugin(Kind kind, const char* version, const char* buildId) {
  static const Descriptor descriptor{kAbiVersion,
                                     kind,
                                     version,
                                     buildId,
                                     [](HostServices& host) -> Plugin* {
                                       try {
                                         return new Policy(host);
                                       } catch (...) {
                                         return nullptr;
                                       }
                                     },
                                     [](Plugin* instance) { delete instance; }};
  return &descriptor;
}

}  // namespace switchboard::plugin

#define SWITCHBOARD_PLUGIN_CLASS(Policy, kind)                                              \
  namespace {                                                                               \
  const ::switchboard::plugin::Descriptor* switchboardPluginDescriptor() {                  \
    return ::switchboard::plugin::describePlugin<Policy>(::switchboard::plugin::Kind::kind, \
                                                         SWITCHBOARD_PLUGIN_VERSION,        \
                                                         SWITCHBOARD_PLUGIN_BUILD_ID);      \
  }                                                                                         \
  }                                                                                         \
  SWITCHBOARD_PLUGIN(switchboardPluginDescriptor)
