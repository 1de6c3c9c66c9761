#include "admin_client.h"

#include "net/network_thread.h"
#include "net/rpc_connection.h"
#include "switchboard/proto/admin.capnp.h"

#include <capnp/capability.h>
#include <kj/async.h>
#include <kj/debug.h>
#include <asio/io_context.hpp>
#include <asio/steady_timer.hpp>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <future>
#include <limits>
#include <mutex>
#include <type_traits>
#include <utility>

namespace switchboard::ctl {

std::string defaultAdminSocket() {
  if (const char* env = std::getenv("SWITCHBOARD_ADMIN_SOCKET"); env != nullptr && *env != '\0')
    return env;
  for (const char* candidate : {"./var/admin.sock", "/run/switchboard/admin.sock"}) {
    std::error_code error;
    if (std::filesystem::exists(candidate, error)) return candidate;
  }
  return "./var/admin.sock";
}

std::string operatorMessage(const std::string& description) {
  constexpr std::string_view kRemotePrefix = "remote exception: ";
  std::string text = description;
  while (text.rfind(kRemotePrefix, 0) == 0) text.erase(0, kRemotePrefix.size());
  return text;
}

namespace {

// ---------------------------------------------------------------- conversions (KJ thread)

std::string plain(capnp::Text::Reader text) {
  return std::string(text.cStr(), text.size());
}
template <class T>
T plain(T value) {
  static_assert(std::is_arithmetic_v<T>);
  return value;
}
capnp::Text::Reader text(const std::string& value) {
  return capnp::Text::Reader(value.data(), value.size());
}

PluginVersion toPlain(proto::PluginVersion::Reader in) {
  return PluginVersion{plain(in.getVersion()), plain(in.getBuildId()), plain(in.getSha256()),
                       plain(in.getCurrent()), plain(in.getCalls()),   plain(in.getErrors()),
                       plain(in.getP50Ns()),   plain(in.getP99Ns())};
}

PluginStatus toPlain(proto::PluginStatus::Reader in) {
  PluginStatus out;
  out.kind = plain(in.getKind());
  out.state = plain(in.getState());
  out.version = plain(in.getVersion());
  out.buildId = plain(in.getBuildId());
  out.sha256 = plain(in.getSha256());
  out.probationRemainingMs = plain(in.getProbationRemainingMs());
  for (auto version : in.getVersions()) out.versions.push_back(toPlain(version));
  out.swaps = plain(in.getSwaps());
  out.pauseP50Us = plain(in.getPauseP50Us());
  out.pauseP99Us = plain(in.getPauseP99Us());
  out.pauseMaxUs = plain(in.getPauseMaxUs());
  return out;
}

Status toPlain(proto::Status::Reader in) {
  Status out;
  out.version = plain(in.getVersion());
  out.node = plain(in.getNode());
  out.uptimeSeconds = plain(in.getUptimeSeconds());
  out.threads = plain(in.getThreads());
  out.sessions = plain(in.getSessions());
  out.connections = plain(in.getConnections());
  for (auto plugin : in.getPlugins()) out.plugins.push_back(toPlain(plugin));
  out.dataDir = plain(in.getDataDir());
  out.clientEndpoint = plain(in.getClientEndpoint());
  out.cluster = plain(in.getCluster());
  return out;
}

NodeInfo toPlain(proto::NodeInfo::Reader in) {
  return NodeInfo{plain(in.getName()),      plain(in.getAddress()),
                  plain(in.getSessions()),  plain(in.getPluginVersions()),
                  plain(in.getHeardAtMs()), plain(in.getLastHeardMsAgo()),
                  plain(in.getVersion()),   plain(in.getStartedAtMs())};
}

ClusterStatus toPlain(proto::ClusterStatus::Reader in) {
  ClusterStatus out;
  out.state = plain(in.getState());
  out.url = plain(in.getUrl());
  out.node = plain(in.getNode());
  out.disconnects = plain(in.getDisconnects());
  out.reconnects = plain(in.getReconnects());
  for (auto node : in.getNodes()) out.nodes.push_back(toPlain(node));
  out.error = plain(in.getError());
  return out;
}

PluginOperation toPlain(proto::PluginOperation::Reader in) {
  return PluginOperation{plain(in.getOk()),          plain(in.getError()),
                         plain(in.getFromVersion()), plain(in.getToVersion()),
                         plain(in.getSha256()),      plain(in.getPauseUs())};
}

NodeOperation toPlain(proto::NodeOperation::Reader in) {
  return NodeOperation{plain(in.getNode()), plain(in.getAnswered()), toPlain(in.getResult())};
}

LedgerEntry toPlain(proto::LedgerEntry::Reader in) {
  return LedgerEntry{plain(in.getId()),     plain(in.getAtMs()),        plain(in.getActor()),
                     plain(in.getKind()),   plain(in.getFromVersion()), plain(in.getToVersion()),
                     plain(in.getSha256()), plain(in.getPauseUs()),     plain(in.getResult()),
                     plain(in.getReason())};
}

SessionInfo toPlain(proto::SessionInfo::Reader in) {
  return SessionInfo{plain(in.getPhone()),          plain(in.getSessionId()),
                     plain(in.getPeer()),           plain(in.getThread()),
                     plain(in.getSinceMs()),        plain(in.getQueueLength()),
                     plain(in.getMaxQueueLength()), plain(in.getDelivered())};
}

UserInfo toPlain(proto::UserInfo::Reader in) {
  return UserInfo{plain(in.getPhone()),      plain(in.getCreatedMs()),
                  plain(in.getLastSeenMs()), plain(in.getDeviceName()),
                  plain(in.getOnline()),     plain(in.getQueuedMessages()),
                  plain(in.getContacts()),   plain(in.getGroups())};
}

SmsEntry toPlain(proto::SmsEntry::Reader in) {
  return SmsEntry{plain(in.getPhone()), plain(in.getCode()), plain(in.getText()),
                  plain(in.getAtMs()), plain(in.getOutcome())};
}

Stats toPlain(proto::Stats::Reader in) {
  Stats out;
  out.connections = plain(in.getConnections());
  out.sessions = plain(in.getSessions());
  out.logins = plain(in.getLogins());
  out.failedLogins = plain(in.getFailedLogins());
  out.messagesIn = plain(in.getMessagesIn());
  out.messagesOut = plain(in.getMessagesOut());
  out.duplicates = plain(in.getDuplicates());
  out.codesRequested = plain(in.getCodesRequested());
  out.registrations = plain(in.getRegistrations());
  out.pushes = plain(in.getPushes());
  out.queueAlerts = plain(in.getQueueAlerts());
  out.slowConsumerKicks = plain(in.getSlowConsumerKicks());
  out.maxQueueLength = plain(in.getMaxQueueLength());
  out.storeWrites = plain(in.getStoreWrites());
  out.storeCommits = plain(in.getStoreCommits());
  out.storeCommitP50Us = plain(in.getStoreCommitP50Us());
  out.storeCommitP99Us = plain(in.getStoreCommitP99Us());
  out.smsSent = plain(in.getSmsSent());
  out.smsFailed = plain(in.getSmsFailed());
  out.pushSent = plain(in.getPushSent());
  out.pushFailed = plain(in.getPushFailed());
  out.uptimeSeconds = plain(in.getUptimeSeconds());
  return out;
}

template <class T, class List>
std::vector<T> toPlainList(List list) {
  std::vector<T> out;
  out.reserve(list.size());
  for (auto item : list) out.push_back(toPlain(item));
  return out;
}

// ---------------------------------------------------------------- progress listener

// Where progress steps go, shared by the listener (network thread) and loadPlugin (the
// caller). The host may still hold the listener after loadPlugin returned (a time-out),
// so loadPlugin closes the gate before returning: a late step then calls nothing. The
// callback runs under the mutex, so close() waits for one in progress.
class ProgressGate {
 public:
  explicit ProgressGate(AdminClient::ProgressCallback callback) : callback_(std::move(callback)) {}
  void step(const std::string& name, const std::string& detail) {
    std::lock_guard lock(mutex_);
    if (!callback_) return;
    try {
      callback_(name, detail);
    } catch (...) {
    }
  }
  void close() {
    std::lock_guard lock(mutex_);
    callback_ = nullptr;
  }

 private:
  std::mutex mutex_;
  AdminClient::ProgressCallback callback_;
};

// The PluginProgress capability handed to loadPlugin: forwards each step through the
// gate. Swallows what the callback throws, so an operator's display error never aborts
// a swap on the host.
class ProgressListener final : public proto::PluginProgress::Server {
 public:
  explicit ProgressListener(std::shared_ptr<ProgressGate> gate) : gate_(std::move(gate)) {}

 protected:
  kj::Promise<void> step(StepContext context) override {
    auto params = context.getParams();
    gate_->step(plain(params.getName()), plain(params.getDetail()));
    return kj::READY_NOW;
  }

 private:
  std::shared_ptr<ProgressGate> gate_;
};

// ---------------------------------------------------------------- time-out

// Rejects `promise` with "... timed out" after `limit`, using an Asio timer on the loop's
// io_context: the time-out lives on the KJ side, so the thread blocked in runSync always
// gets an answer. Dropping the returned promise cancels the timer.
template <class T>
kj::Promise<T> withTimeout(net::NetworkThread& thread, kj::Promise<T> promise,
                           std::chrono::milliseconds limit, std::string what) {
  struct Deadline {
    asio::steady_timer timer;
    kj::Own<kj::PromiseFulfiller<void>> fulfiller;
    explicit Deadline(asio::io_context& io) : timer(io) {}
  };
  auto paf = kj::newPromiseAndFulfiller<void>();
  auto deadline = std::make_shared<Deadline>(thread.ioContext());
  deadline->fulfiller = kj::mv(paf.fulfiller);
  deadline->timer.expires_after(limit);
  deadline->timer.async_wait([weak = std::weak_ptr<Deadline>(deadline)](const std::error_code& ec) {
    if (ec) return;
    if (auto alive = weak.lock()) alive->fulfiller->fulfill();
  });
  auto expired = paf.promise.then([what = std::move(what), limit]() -> kj::Promise<T> {
    auto message = what + " timed out after " + std::to_string(limit.count()) + " ms";
    return kj::Exception(kj::Exception::Type::OVERLOADED, __FILE__, __LINE__,
                         kj::heapString(message.data(), message.size()));
  });
  return promise.exclusiveJoin(kj::mv(expired)).attach(kj::defer([deadline]() {
    deadline->timer.cancel();
  }));
}

}  // namespace

// ---------------------------------------------------------------- Impl

struct AdminClient::Impl {
  AdminClientOptions options;
  net::NetworkThread thread{"sbctl-admin"};
  // Loop-thread state: made, used and destroyed on `thread`.
  kj::Own<net::RpcConnection> connection;
  kj::Maybe<proto::Admin::Client> admin;

  explicit Impl(AdminClientOptions opts) : options(std::move(opts)) {}

  // Runs `makeCall` (which returns a kj::Promise<T>) on the loop with the time-out, and
  // turns every failure into an AdminError.
  template <class F>
  auto call(const char* what, std::chrono::milliseconds limit, F&& makeCall) {
    try {
      return thread.runSync([&]() {
        auto promise = makeCall();
        return withTimeout(thread, kj::mv(promise), limit, what);
      });
    } catch (const AdminError&) {
      throw;
    } catch (const std::future_error&) {
      throw AdminError(std::string(what) + ": the admin connection was closed");
    } catch (const std::exception& error) {
      throw AdminError(operatorMessage(error.what()));
    }
  }

  proto::Admin::Client& stub() {
    KJ_IF_MAYBE (client, admin) {
      return *client;
    }
    KJ_FAIL_REQUIRE("not connected");
  }
};

AdminClient::AdminClient(AdminClientOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {
  impl_->thread.start();
  auto& impl = *impl_;
  impl.call("connecting", impl.options.callTimeout, [&impl]() {
    return net::RpcConnection::connect(impl.thread, impl.options.socketPath)
        .then([&impl](kj::Own<net::RpcConnection> connection) {
          impl.admin = connection->bootstrapAs<proto::Admin>();
          impl.connection = kj::mv(connection);
        });
  });
}

AdminClient::~AdminClient() {
  try {
    impl_->thread.runSync([this]() {
      impl_->admin = nullptr;
      impl_->connection = nullptr;
    });
  } catch (...) {
  }
  impl_->thread.stop();
}

const AdminClientOptions& AdminClient::options() const {
  return impl_->options;
}

Status AdminClient::status() {
  return impl_->call("status", impl_->options.callTimeout, [this]() {
    return impl_->stub().statusRequest().send().then(
        [](auto response) { return toPlain(response.getStatus()); });
  });
}

ClusterStatus AdminClient::cluster() {
  return impl_->call("cluster", impl_->options.callTimeout, [this]() {
    return impl_->stub().clusterRequest().send().then(
        [](auto response) { return toPlain(response.getCluster()); });
  });
}

std::vector<PluginStatus> AdminClient::plugins() {
  return impl_->call("plugins", impl_->options.callTimeout, [this]() {
    return impl_->stub().pluginsRequest().send().then(
        [](auto response) { return toPlainList<PluginStatus>(response.getPlugins()); });
  });
}

PluginOperation AdminClient::loadPlugin(const std::string& kind, const std::string& path,
                                        ProgressCallback progress, bool waitProbation) {
  auto gate = progress ? std::make_shared<ProgressGate>(std::move(progress)) : nullptr;
  auto closeGate = kj::defer([&gate]() {
    if (gate) gate->close();
  });
  return impl_->call("loading the plugin", impl_->options.loadTimeout, [&]() {
    auto request = impl_->stub().loadPluginRequest();
    request.setKind(text(kind));
    request.setPath(text(path));
    if (gate) request.setProgress(kj::heap<ProgressListener>(gate));
    request.setWaitProbation(waitProbation);
    return request.send().then([](auto response) { return toPlain(response.getResult()); });
  });
}

PluginOperation AdminClient::rollbackPlugin(const std::string& kind, const std::string& version) {
  return impl_->call("rolling back", impl_->options.loadTimeout, [&]() {
    auto request = impl_->stub().rollbackPluginRequest();
    request.setKind(text(kind));
    request.setVersion(text(version));
    return request.send().then([](auto response) { return toPlain(response.getResult()); });
  });
}

namespace {
std::uint32_t timeoutMs(std::chrono::milliseconds timeout) {
  return static_cast<std::uint32_t>(
      std::clamp<std::int64_t>(timeout.count(), 1, std::numeric_limits<std::uint32_t>::max()));
}
}  // namespace

std::vector<NodeOperation> AdminClient::loadPluginOnNodes(const std::string& node,
                                                          const std::string& kind,
                                                          const std::string& path,
                                                          bool waitProbation,
                                                          std::chrono::milliseconds nodeTimeout) {
  return impl_->call("loading the plugin", nodeTimeout + impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().loadPluginOnNodesRequest();
    request.setNode(text(node));
    request.setKind(text(kind));
    request.setPath(text(path));
    request.setWaitProbation(waitProbation);
    request.setTimeoutMs(timeoutMs(nodeTimeout));
    return request.send().then(
        [](auto response) { return toPlainList<NodeOperation>(response.getResults()); });
  });
}

std::vector<NodeOperation> AdminClient::rollbackPluginOnNodes(
    const std::string& node, const std::string& kind, const std::string& version,
    std::chrono::milliseconds nodeTimeout) {
  return impl_->call("rolling back", nodeTimeout + impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().rollbackPluginOnNodesRequest();
    request.setNode(text(node));
    request.setKind(text(kind));
    request.setVersion(text(version));
    request.setTimeoutMs(timeoutMs(nodeTimeout));
    return request.send().then(
        [](auto response) { return toPlainList<NodeOperation>(response.getResults()); });
  });
}

std::vector<LedgerEntry> AdminClient::pluginHistory(const std::string& kind, std::uint32_t limit) {
  return impl_->call("pluginHistory", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().pluginHistoryRequest();
    request.setKind(text(kind));
    request.setLimit(limit);
    return request.send().then(
        [](auto response) { return toPlainList<LedgerEntry>(response.getEntries()); });
  });
}

std::vector<SessionInfo> AdminClient::sessions(const std::string& phonePrefix,
                                               std::uint32_t minQueue, std::uint32_t limit) {
  return impl_->call("sessions", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().sessionsRequest();
    request.setPhonePrefix(text(phonePrefix));
    request.setMinQueue(minQueue);
    request.setLimit(limit);
    return request.send().then(
        [](auto response) { return toPlainList<SessionInfo>(response.getSessions()); });
  });
}

SessionInfo AdminClient::session(const std::string& phone) {
  return impl_->call("session", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().sessionRequest();
    request.setPhone(text(phone));
    return request.send().then([](auto response) { return toPlain(response.getSession()); });
  });
}

void AdminClient::kick(const std::string& phone, const std::string& reason) {
  impl_->call("kick", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().kickRequest();
    request.setPhone(text(phone));
    request.setReason(text(reason));
    return request.send().ignoreResult();
  });
}

std::vector<SessionInfo> AdminClient::queues(std::uint32_t limit) {
  return impl_->call("queues", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().queuesRequest();
    request.setLimit(limit);
    return request.send().then(
        [](auto response) { return toPlainList<SessionInfo>(response.getSessions()); });
  });
}

std::vector<UserInfo> AdminClient::users(const std::string& phonePrefix, std::uint32_t limit) {
  return impl_->call("users", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().usersRequest();
    request.setPhonePrefix(text(phonePrefix));
    request.setLimit(limit);
    return request.send().then(
        [](auto response) { return toPlainList<UserInfo>(response.getUsers()); });
  });
}

UserInfo AdminClient::user(const std::string& phone) {
  return impl_->call("user", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().userRequest();
    request.setPhone(text(phone));
    return request.send().then([](auto response) { return toPlain(response.getUser()); });
  });
}

void AdminClient::deleteUser(const std::string& phone) {
  impl_->call("deleteUser", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().deleteUserRequest();
    request.setPhone(text(phone));
    return request.send().ignoreResult();
  });
}

void AdminClient::revokeKey(const std::string& phone) {
  impl_->call("revokeKey", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().revokeKeyRequest();
    request.setPhone(text(phone));
    return request.send().ignoreResult();
  });
}

std::vector<SmsEntry> AdminClient::outbox(const std::string& phone, std::uint32_t limit) {
  return impl_->call("outbox", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().outboxRequest();
    request.setPhone(text(phone));
    request.setLimit(limit);
    return request.send().then(
        [](auto response) { return toPlainList<SmsEntry>(response.getEntries()); });
  });
}

Stats AdminClient::stats() {
  return impl_->call("stats", impl_->options.callTimeout, [this]() {
    return impl_->stub().statsRequest().send().then(
        [](auto response) { return toPlain(response.getStats()); });
  });
}

std::uint32_t AdminClient::broadcast(const std::string& phone, const std::string& body) {
  return impl_->call("broadcast", impl_->options.callTimeout, [&]() {
    auto request = impl_->stub().broadcastRequest();
    request.setPhone(text(phone));
    request.setBody(text(body));
    return request.send().then([](auto response) { return response.getRecipients(); });
  });
}

}  // namespace switchboard::ctl
