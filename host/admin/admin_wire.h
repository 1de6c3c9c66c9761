// The admin protocol's edge: checks on what a caller sent, and conversions
// from host values to the protocol's structs. Every check refuses with a KJ
// FAILED exception whose description is one sentence (messaging::refuse).
#pragma once

#include <capnp/common.h>
#include <kj/string.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "plugin/plugin_manager.h"
#include "switchboard/proto/admin.capnp.h"

namespace switchboard::admin {

inline kj::StringPtr text(const std::string& s) {
  return kj::StringPtr(s.c_str(), s.size());
}

// The largest list one call returns, whatever limit it asked for.
inline constexpr std::size_t kMaxListLimit = 100000;

// A plugin kind by name, or "no plugin kind 'routin': expected routing, auth,
// presence or offline".
plugin::Kind requireKind(capnp::Text::Reader name);
// An E.164 phone ("+" and 8 to 15 digits).
std::string requireAdminPhone(capnp::Text::Reader phone);
// Empty, or "+" followed by up to 15 digits.
std::string requirePhonePrefix(capnp::Text::Reader prefix);
// 0 means `fallback`; above kMaxListLimit is refused.
std::size_t requireLimit(std::uint32_t limit, std::size_t fallback);

void fillPluginStatus(proto::PluginStatus::Builder out, const plugin::KindStatus& status);
void fillOperation(proto::PluginOperation::Builder out, const plugin::OperationResult& result);

struct HostView;
// "single-node", "connected" or "degraded" (cluster_admin.cpp).
std::string clusterState(const HostView& host);

}  // namespace switchboard::admin
