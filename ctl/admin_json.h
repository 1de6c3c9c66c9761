// JSON forms of the admin results: what `sbctl --json` prints and what the Python
// module hands to scripts. Keys are the schema's field names (proto/admin.capnp).
#pragma once

#include "admin_client.h"

#include <nlohmann/json.hpp>

namespace switchboard::ctl {

void to_json(nlohmann::json& out, const PluginVersion& in);
void to_json(nlohmann::json& out, const PluginStatus& in);
void to_json(nlohmann::json& out, const Status& in);
void to_json(nlohmann::json& out, const NodeInfo& in);
void to_json(nlohmann::json& out, const ClusterStatus& in);
void to_json(nlohmann::json& out, const PluginOperation& in);
void to_json(nlohmann::json& out, const NodeOperation& in);
void to_json(nlohmann::json& out, const LedgerEntry& in);
void to_json(nlohmann::json& out, const SessionInfo& in);
void to_json(nlohmann::json& out, const UserInfo& in);
void to_json(nlohmann::json& out, const SmsEntry& in);
void to_json(nlohmann::json& out, const Stats& in);

}  // namespace switchboard::ctl
