#include "admin_json.h"

namespace switchboard::ctl {

// Every string here is schema Text (UTF-8). Callers dump with
// error_handler_t::replace so a stray invalid byte never turns into a crash.

void to_json(nlohmann::json& out, const PluginVersion& in) {
  out = {{"version", in.version}, {"buildId", in.buildId}, {"sha256", in.sha256},
         {"current", in.current}, {"calls", in.calls},     {"errors", in.errors},
         {"p50Ns", in.p50Ns},     {"p99Ns", in.p99Ns}};
}

void to_json(nlohmann::json& out, const PluginStatus& in) {
  out = {{"kind", in.kind},
         {"state", in.state},
         {"version", in.version},
         {"buildId", in.buildId},
         {"sha256", in.sha256},
         {"probationRemainingMs", in.probationRemainingMs},
         {"versions", in.versions},
         {"swaps", in.swaps},
         {"pauseP50Us", in.pauseP50Us},
         {"pauseP99Us", in.pauseP99Us},
         {"pauseMaxUs", in.pauseMaxUs}};
}

void to_json(nlohmann::json& out, const Status& in) {
  out = {{"version", in.version}, {"node", in.node},         {"uptimeSeconds", in.uptimeSeconds},
         {"threads", in.threads}, {"sessions", in.sessions}, {"connections", in.connections},
         {"plugins", in.plugins}, {"dataDir", in.dataDir},   {"clientEndpoint", in.clientEndpoint},
         {"cluster", in.cluster}};
}

void to_json(nlohmann::json& out, const NodeInfo& in) {
  out = {{"name", in.name},           {"address", in.address},
         {"sessions", in.sessions},   {"pluginVersions", in.pluginVersions},
         {"heardAtMs", in.heardAtMs}, {"lastHeardMsAgo", in.lastHeardMsAgo},
         {"version", in.version},     {"startedAtMs", in.startedAtMs}};
}

void to_json(nlohmann::json& out, const ClusterStatus& in) {
  out = {{"state", in.state},
         {"url", in.url},
         {"node", in.node},
         {"disconnects", in.disconnects},
         {"reconnects", in.reconnects},
         {"nodes", in.nodes},
         {"error", in.error}};
}

void to_json(nlohmann::json& out, const PluginOperation& in) {
  out = {{"ok", in.ok},
         {"error", in.error},
         {"fromVersion", in.fromVersion},
         {"toVersion", in.toVersion},
         {"sha256", in.sha256},
         {"pauseUs", in.pauseUs}};
}

// Flat: the node's name and whether it answered, beside the operation's fields.
void to_json(nlohmann::json& out, const NodeOperation& in) {
  to_json(out, in.result);
  out["node"] = in.node;
  out["answered"] = in.answered;
}

void to_json(nlohmann::json& out, const LedgerEntry& in) {
  out = {{"id", in.id},
         {"atMs", in.atMs},
         {"actor", in.actor},
         {"kind", in.kind},
         {"fromVersion", in.fromVersion},
         {"toVersion", in.toVersion},
         {"sha256", in.sha256},
         {"pauseUs", in.pauseUs},
         {"result", in.result},
         {"reason", in.reason}};
}

void to_json(nlohmann::json& out, const SessionInfo& in) {
  out = {{"phone", in.phone},
         {"sessionId", in.sessionId},
         {"peer", in.peer},
         {"thread", in.thread},
         {"sinceMs", in.sinceMs},
         {"queueLength", in.queueLength},
         {"maxQueueLength", in.maxQueueLength},
         {"delivered", in.delivered}};
}

void to_json(nlohmann::json& out, const UserInfo& in) {
  out = {{"phone", in.phone},           {"createdMs", in.createdMs},
         {"lastSeenMs", in.lastSeenMs}, {"deviceName", in.deviceName},
         {"online", in.online},         {"queuedMessages", in.queuedMessages},
         {"contacts", in.contacts},     {"groups", in.groups}};
}

void to_json(nlohmann::json& out, const SmsEntry& in) {
  out = {{"phone", in.phone},
         {"code", in.code},
         {"text", in.text},
         {"atMs", in.atMs},
         {"outcome", in.outcome}};
}

void to_json(nlohmann::json& out, const Stats& in) {
  out = {{"connections", in.connections},
         {"sessions", in.sessions},
         {"logins", in.logins},
         {"failedLogins", in.failedLogins},
         {"messagesIn", in.messagesIn},
         {"messagesOut", in.messagesOut},
         {"duplicates", in.duplicates},
         {"codesRequested", in.codesRequested},
         {"registrations", in.registrations},
         {"pushes", in.pushes},
         {"queueAlerts", in.queueAlerts},
         {"slowConsumerKicks", in.slowConsumerKicks},
         {"maxQueueLength", in.maxQueueLength},
         {"storeWrites", in.storeWrites},
         {"storeCommits", in.storeCommits},
         {"storeCommitP50Us", in.storeCommitP50Us},
         {"storeCommitP99Us", in.storeCommitP99Us},
         {"smsSent", in.smsSent},
         {"smsFailed", in.smsFailed},
         {"pushSent", in.pushSent},
         {"pushFailed", in.pushFailed},
         {"uptimeSeconds", in.uptimeSeconds}};
}

}  // namespace switchboard::ctl
