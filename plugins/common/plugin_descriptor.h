// The descriptor every production plugin exports. Its version and build id
// come from the build (SWITCHBOARD_PLUGIN_VERSION, SWITCHBOARD_PLUGIN_BUILD_ID,
// set by switchboard_add_plugin); its instances are `Policy` objects made with
// the host's services. A constructor that throws makes create() return null,
// which the host reports as a refused version: nothing throws across the ABI.
#pragma once

#include <new>

#include "switchboard/plugin_api.h"

namespace switchboard::plugins {
namespace {  // one copy per plugin library, never shared between libraries

template <class Policy, plugin::Kind kKind>
const plugin::Descriptor* describePlugin() {
  static const plugin::Descriptor descriptor{plugin::kAbiVersion,
                                             kKind,
                                             SWITCHBOARD_PLUGIN_VERSION,
                                             SWITCHBOARD_PLUGIN_BUILD_ID,
                                             [](plugin::HostServices& host) -> plugin::Plugin* {
                                               try {
                                                 return new Policy(host);
                                               } catch (...) {
                                                 return nullptr;
                                               }
                                             },
                                             [](plugin::Plugin* instance) { delete instance; }};
  return &descriptor;
}

}  // namespace
}  // namespace switchboard::plugins
