#include "admin/admin_server.h"

#include "admin/admin_wire.h"
#include "messaging/field_rules.h"
#include "messaging/messaging_service.h"
#include "net/cross_thread_completion.h"
#include "net/rpc_listener.h"
#include "notify/push_sink.h"
#include "notify/sms_sink.h"
#include "plugin/plugin_manager.h"
#include "session/session_table.h"
#include "store/store.h"

namespace switchboard::admin {

using messaging::refuse;

namespace {

constexpr std::size_t kMaxReasonBytes = 200;

void fillSession(proto::SessionInfo::Builder out, const session::SessionRef& ref) {
  out.setPhone(text(ref.phone));
  out.setSessionId(ref.sessionId);
  out.setPeer(text(ref.peer));
  out.setThread(static_cast<std::uint32_t>(ref.threadIndex));
  out.setSinceMs(ref.since);
  if (ref.gauges) {
    out.setQueueLength(ref.gauges->queueLength.load());
    out.setMaxQueueLength(ref.gauges->maxQueueLength.load());
    out.setDelivered(ref.gauges->delivered.load());
  }
}

void fillSessions(capnp::List<proto::SessionInfo>::Builder out,
                  const std::vector<session::SessionRef>& refs) {
  for (unsigned i = 0; i < refs.size(); ++i) fillSession(out[i], refs[i]);
}

void fillUser(proto::UserInfo::Builder out, const UserSummary& user, bool online) {
  out.setPhone(text(user.phone));
  out.setCreatedMs(user.createdMs);
  out.setLastSeenMs(user.lastSeenMs);
  out.setDeviceName(text(user.deviceName));
  out.setOnline(online);
  out.setQueuedMessages(user.queuedMessages);
  out.setContacts(user.contacts);
  out.setGroups(user.groups);
}

// Resolves on this thread once a store write is durable, or rejects with
// the write's one-sentence refusal.
kj::Promise<void> writeDone(std::function<void(UserAdmin::Done)> start) {
  auto pending = net::makeCompletion<void>();
  start([completion = pending.completion](std::optional<std::string> error) {
    if (error) {
      completion.fail(*error);
    } else {
      completion.complete();
    }
  });
  return kj::mv(pending.promise);
}

}  // namespace

AdminServer::AdminServer(const HostView& host, OperationWorker& worker)
    : host_(host), worker_(worker), users_(host.store) {}

// ---------------------------------------------------------------- status

kj::Promise<void> AdminServer::status(StatusContext context) {
  auto out = context.getResults().initStatus();
  out.setVersion(text(host_.facts.version));
  out.setNode(text(host_.facts.node));
  out.setUptimeSeconds(host_.uptimeSeconds());
  out.setThreads(host_.facts.threads);
  out.setSessions(static_cast<std::uint32_t>(host_.messaging.sessions().size()));
  out.setConnections(static_cast<std::uint32_t>(host_.connectionCount()));
  auto kinds = host_.plugins.status();
  auto list = out.initPlugins(static_cast<unsigned>(kinds.size()));
  for (unsigned i = 0; i < kinds.size(); ++i) fillPluginStatus(list[i], kinds[i]);
  out.setDataDir(text(host_.facts.dataDir));
  out.setClientEndpoint(text(host_.facts.clientEndpoint));
  out.setCluster(text(clusterState(host_)));
  return kj::READY_NOW;
}

// ---------------------------------------------------------------- sessions

kj::Promise<void> AdminServer::sessions(SessionsContext context) {
  auto params = context.getParams();
  std::string prefix = requirePhonePrefix(params.getPhonePrefix());
  std::uint32_t minQueue = params.getMinQueue();
  std::size_t limit = requireLimit(params.getLimit(), 1000);
  std::vector<session::SessionRef> picked;
  for (auto& ref : host_.messaging.sessions().all()) {  // ordered by phone
    if (picked.size() >= limit) break;
    if (ref.phone.compare(0, prefix.size(), prefix) != 0) continue;
    std::uint64_t queued = ref.gauges ? ref.gauges->queueLength.load() : 0;
    if (queued < minQueue) continue;
    picked.push_back(std::move(ref));
  }
  fillSessions(context.getResults().initSessions(static_cast<unsigned>(picked.size())), picked);
  return kj::READY_NOW;
}

kj::Promise<void> AdminServer::session(SessionContext context) {
  std::string phone = requireAdminPhone(context.getParams().getPhone());
  auto ref = host_.messaging.sessions().find(phone);
  if (!ref) refuse("no live session for " + phone);
  fillSession(context.getResults().initSession(), *ref);
  return kj::READY_NOW;
}

kj::Promise<void> AdminServer::kick(KickContext context) {
  auto params = context.getParams();
  std::string phone = requireAdminPhone(params.getPhone());
  std::string reason(params.getReason().cStr(), params.getReason().size());
  if (reason.size() > kMaxReasonBytes) {
    refuse("the reason is longer than " + std::to_string(kMaxReasonBytes) + " bytes");
  }
  if (reason.empty()) reason = "kicked by an operator";
  if (!host_.messaging.kick(phone, reason)) refuse("no live session for " + phone);
  return kj::READY_NOW;
}

kj::Promise<void> AdminServer::queues(QueuesContext context) {
  std::size_t limit = requireLimit(context.getParams().getLimit(), 10);
  auto refs = host_.messaging.sessions().longestQueues(limit);
  fillSessions(context.getResults().initSessions(static_cast<unsigned>(refs.size())), refs);
  return kj::READY_NOW;
}

// ---------------------------------------------------------------- users

kj::Promise<void> AdminServer::users(UsersContext context) {
  auto params = context.getParams();
  std::string prefix = requirePhonePrefix(params.getPhonePrefix());
  std::size_t limit = requireLimit(params.getLimit(), 1000);
  auto found = users_.list(prefix, limit);
  auto out = context.getResults().initUsers(static_cast<unsigned>(found.size()));
  auto& table = host_.messaging.sessions();
  for (unsigned i = 0; i < found.size(); ++i) {
    fillUser(out[i], found[i], table.isOnline(found[i].phone));
  }
  return kj::READY_NOW;
}

kj::Promise<void> AdminServer::user(UserContext context) {
  std::string phone = requireAdminPhone(context.getParams().getPhone());
  auto found = users_.find(phone);
  if (!found) refuse("no user " + phone);
  fillUser(context.getResults().initUser(), *found, host_.messaging.sessions().isOnline(phone));
  return kj::READY_NOW;
}

kj::Promise<void> AdminServer::deleteUser(DeleteUserContext context) {
  std::string phone = requireAdminPhone(context.getParams().getPhone());
  // The removed key is never answered from memory again (messaging/known_users.h).
  return writeDone([this, phone](UserAdmin::Done done) {
           users_.remove(phone, host_.messaging.knownUsers().keyChange(phone, std::move(done)));
         })
      .then([this, phone]() {
        host_.messaging.forgetUser(phone);
        host_.messaging.kick(phone, "account deleted by an operator");
      });
}

kj::Promise<void> AdminServer::revokeKey(RevokeKeyContext context) {
  std::string phone = requireAdminPhone(context.getParams().getPhone());
  return writeDone([this, phone](UserAdmin::Done done) {
           users_.revokeKey(phone, host_.messaging.knownUsers().keyChange(phone, std::move(done)));
         })
      .then([this, phone]() { host_.messaging.kick(phone, "device key revoked"); });
}

kj::Promise<void> AdminServer::outbox(OutboxContext context) {
  auto params = context.getParams();
  std::optional<std::string> phone;
  if (params.getPhone().size() > 0) phone = requireAdminPhone(params.getPhone());
  auto records = host_.sms.outbox(phone, requireLimit(params.getLimit(), 100));
  auto out = context.getResults().initEntries(static_cast<unsigned>(records.size()));
  for (unsigned i = 0; i < records.size(); ++i) {
    out[i].setPhone(text(records[i].phone));
    out[i].setCode(text(records[i].code));
    out[i].setText(text(records[i].text));
    out[i].setAtMs(records[i].atMs);
    out[i].setOutcome(text(records[i].outcome));
  }
  return kj::READY_NOW;
}

// ---------------------------------------------------------------- traffic

kj::Promise<void> AdminServer::stats(StatsContext context) {
  auto out = context.getResults().initStats();
  const auto& counters = host_.messaging.counters();
  auto& table = host_.messaging.sessions();
  out.setConnections(host_.connectionCount());
  out.setSessions(table.size());
  out.setLogins(counters.logins.load());
  out.setFailedLogins(counters.failedLogins.load());
  out.setMessagesIn(counters.messagesIn.load());
  out.setMessagesOut(counters.messagesOut.load());
  out.setDuplicates(counters.duplicates.load());
  out.setCodesRequested(counters.codesRequested.load());
  out.setRegistrations(counters.registrations.load());
  out.setPushes(counters.pushes.load());
  out.setQueueAlerts(counters.queueAlerts.load());
  out.setSlowConsumerKicks(counters.slowConsumerKicks.load());
  auto longest = table.longestQueues(1);
  out.setMaxQueueLength(
      longest.empty() || !longest[0].gauges ? 0 : longest[0].gauges->queueLength.load());
  auto store = host_.store.stats();
  out.setStoreWrites(store.writes);
  out.setStoreCommits(store.commits);
  out.setStoreCommitP50Us(store.commitLatency.p50());
  out.setStoreCommitP99Us(store.commitLatency.p99());
  auto sms = host_.sms.stats();
  out.setSmsSent(sms.sent);
  out.setSmsFailed(sms.failed);
  auto push = host_.push.stats();
  out.setPushSent(push.sent);
  out.setPushFailed(push.failed);
  out.setUptimeSeconds(host_.uptimeSeconds());
  return kj::READY_NOW;
}

kj::Promise<void> AdminServer::broadcast(BroadcastContext context) {
  auto params = context.getParams();
  std::string phone;
  if (params.getPhone().size() > 0) phone = requireAdminPhone(params.getPhone());
  std::string body(params.getBody().cStr(), params.getBody().size());
  messaging::requireBody(body.size());
  return host_.messaging.broadcast(std::move(phone), std::move(body))
      .then([context](std::uint32_t recipients) mutable {
        context.getResults().setRecipients(recipients);
      });
}

}  // namespace switchboard::admin
