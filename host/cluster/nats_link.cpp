#include "cluster/nats_link.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>
#include <vector>

#include "net/network_thread.h"

namespace switchboard::cluster {

const char* linkStateName(LinkState state) {
  return state == LinkState::connected ? "connected" : "degraded";
}

void requireOk(int status, const std::string& what) {
  if (status == NATS_OK) return;
  // The thread's last error may be an older call's (a conflict answered a
  // moment ago): its text belongs to this failure only if its status does.
  natsStatus lastStatus = NATS_OK;
  const char* detail = nats_GetLastError(&lastStatus);
  if (lastStatus != static_cast<natsStatus>(status)) detail = nullptr;
  std::string text = what + ": " + natsStatus_GetText(static_cast<natsStatus>(status));
  if (detail != nullptr && detail[0] != '\0' && text.find(detail) == std::string::npos) {
    text += std::string(" (") + detail + ")";
  }
  throw ClusterError(text);
}

// ---------------------------------------------------------------- the worker thread

struct NatsLink::Impl {
  natsConnection* connection = nullptr;
  jsCtx* jetStream = nullptr;

  std::mutex mutex;
  std::condition_variable wake;
  std::deque<std::function<void()>> jobs;
  struct Periodic {
    std::chrono::milliseconds interval;
    std::chrono::steady_clock::time_point next;
    std::function<void()> job;
  };
  std::vector<Periodic> periodic;
  std::vector<std::function<void(LinkState)>> listeners;
  std::vector<std::function<void()>> reconnectJobs;
  bool stopping = false;
  bool closed = false;  // libnats ran its last callback (the closed one)
  std::condition_variable closedWake;
  std::thread thread;

  static void runJob(const std::function<void()>& job) {
    try {
      job();
    } catch (const std::exception& e) {
      spdlog::warn("cluster: {}", e.what());
    } catch (...) {
      spdlog::warn("cluster: a job failed with an unknown error");  // kj::Exception, say
    }
  }

  // Queued jobs and due periodic ones take turns: after a round of periodic
  // jobs the next queued job runs, and after a queued job the periodic jobs
  // that are due. Neither can starve the other: a steady stream of queued
  // jobs (imports asked by notices under a flood) the heartbeat, the import
  // checks and the sweep that moves kept rows into the stream; periodic jobs
  // that take longer than their interval (that sweep, under a flood) the
  // queued imports.
  void run() {
    std::unique_lock lock(mutex);
    bool queuedTurn = false;
    while (!stopping) {
      if (!jobs.empty() && (queuedTurn || !periodicDue(std::chrono::steady_clock::now()))) {
        queuedTurn = false;
        auto job = std::move(jobs.front());
        jobs.pop_front();
        lock.unlock();
        runJob(job);
        lock.lock();
        continue;
      }
      queuedTurn = true;
      auto now = std::chrono::steady_clock::now();
      auto next = now + std::chrono::hours(1);
      for (std::size_t i = 0; i < periodic.size(); ++i) {
        if (periodic[i].next <= now) {
          periodic[i].next = now + periodic[i].interval;
          auto job = periodic[i].job;  // copied: every() may add while it runs
          lock.unlock();
          runJob(job);
          lock.lock();
          now = std::chrono::steady_clock::now();
        }
        if (i < periodic.size()) next = std::min(next, periodic[i].next);
      }
      if (jobs.empty() && !stopping) wake.wait_until(lock, next);
    }
  }

  // Mutex held.
  bool periodicDue(std::chrono::steady_clock::time_point now) const {
    return std::any_of(periodic.begin(), periodic.end(),
                       [&](const Periodic& p) { return p.next <= now; });
  }
};

// ---------------------------------------------------------------- connection

namespace {
// On a libnats thread: what the server reported without closing the
// connection (a permissions violation: that publish was dropped; a slow
// consumer), worth an operator's eye.
void reportAsyncError(natsConnection* connection, natsSubscription*, natsStatus status, void*) {
  const char* detail = nullptr;
  natsConnection_GetLastError(connection, &detail);
  spdlog::warn("cluster: NATS reported: {} ({})", natsStatus_GetText(status),
               detail != nullptr ? detail : "");
}
}  // namespace

NatsLink::NatsLink(NatsLinkOptions options, net::NetworkThread& owner)
    : options_(std::move(options)), owner_(owner), impl_(new Impl) {
  auto colon = options_.url.rfind(':');
  if (options_.url.rfind("nats://", 0) != 0 || colon == std::string::npos || colon < 8 ||
      colon + 1 == options_.url.size()) {
    throw ClusterError("NATS URL '" + options_.url + "' is not nats://HOST:PORT");
  }
  natsOptions* opts = nullptr;
  requireOk(natsOptions_Create(&opts), "NATS options");
  std::unique_ptr<natsOptions, void (*)(natsOptions*)> ownOpts(opts, natsOptions_Destroy);
  requireOk(natsOptions_SetURL(opts, options_.url.c_str()), "NATS URL '" + options_.url + "'");
  if (!options_.clientName.empty()) natsOptions_SetName(opts, options_.clientName.c_str());
  natsOptions_SetMaxReconnect(opts, -1);  // forever: a node never gives up its cluster
  natsOptions_SetReconnectWait(opts, options_.reconnectWait.count());
  natsOptions_SetTimeout(opts, options_.operationTimeout.count());
  natsOptions_SetPingInterval(opts, 2000);  // a silent server is noticed within seconds
  natsOptions_SetMaxPingsOut(opts, 2);
  natsOptions_SetDisconnectedCB(opts, &NatsLink::onDisconnected, this);
  natsOptions_SetReconnectedCB(opts, &NatsLink::onConnected, this);
  natsOptions_SetRetryOnFailedConnect(opts, true, &NatsLink::onConnected, this);
  natsOptions_SetClosedCB(opts, &NatsLink::onClosed, this);
  natsOptions_SetErrorHandler(opts, &reportAsyncError, nullptr);

  natsStatus status = natsConnection_Connect(&impl_->connection, opts);
  if (status != NATS_OK && status != NATS_NOT_YET_CONNECTED) {
    if (impl_->connection != nullptr) natsConnection_Destroy(impl_->connection);
    throw ClusterError("cannot use NATS at " + options_.url + ": " + natsStatus_GetText(status));
  }
  if (status == NATS_OK) connected_ = true;
  jsOptions jsOpts;
  jsOptions_Init(&jsOpts);
  jsOpts.Wait = options_.operationTimeout.count();
  requireOk(natsConnection_JetStream(&impl_->jetStream, impl_->connection, &jsOpts),
            "JetStream context");
  impl_->thread = std::thread([this] { impl_->run(); });
  if (connected_) {
    spdlog::info("cluster: connected to NATS at {}", options_.url);
  } else {
    spdlog::warn("cluster: NATS at {} unreachable; degraded until it answers", options_.url);
  }
}

NatsLink::~NatsLink() {
  stopWorker();
  if (impl_->connection != nullptr) {
    // libnats runs callbacks on a thread of its own, in order, and may still be
    // about to run a disconnected one when Close() returns: `this` must live
    // until the closed callback, always the last, has run.
    natsConnection_Close(impl_->connection);
    std::unique_lock lock(impl_->mutex);
    if (!impl_->closedWake.wait_for(lock, std::chrono::seconds(10),
                                    [this] { return impl_->closed; })) {
      spdlog::error("cluster: libnats did not report the connection closed within 10 s");
    }
  }
  // Destroying the context before the connection is the order libnats asks for.
  if (impl_->jetStream != nullptr) jsCtx_Destroy(impl_->jetStream);
  if (impl_->connection != nullptr) natsConnection_Destroy(impl_->connection);
}

void NatsLink::stopWorker() {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->stopping = true;
  }
  impl_->wake.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

void NatsLink::onConnected(natsConnection*, void* self) {
  static_cast<NatsLink*>(self)->changed(true);
}

void NatsLink::onDisconnected(natsConnection*, void* self) {
  static_cast<NatsLink*>(self)->changed(false);
}

void NatsLink::onClosed(natsConnection*, void* self) {
  Impl& impl = *static_cast<NatsLink*>(self)->impl_;
  std::lock_guard lock(impl.mutex);
  impl.closed = true;
  impl.closedWake.notify_all();
}

// On a libnats thread: flip the state, then hop to our own threads.
void NatsLink::changed(bool connected) {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) return;  // closing: nobody is listening any more
  }
  bool was = connected_.exchange(connected);
  if (was == connected) return;
  if (connected) {
    ++reconnects_;
    spdlog::info("cluster: NATS at {} is back; catching up", options_.url);
  } else {
    ++disconnects_;
    spdlog::warn("cluster: lost NATS at {}; degraded, serving local sessions", options_.url);
  }
  LinkState state = connected ? LinkState::connected : LinkState::degraded;
  std::vector<std::function<void(LinkState)>> listeners;
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) return;
    listeners = impl_->listeners;
    if (connected) {
      for (auto& job : impl_->reconnectJobs) impl_->jobs.push_back(job);
    }
  }
  impl_->wake.notify_all();
  for (auto& listener : listeners) {
    owner_.post([listener, state] { listener(state); });
  }
}

void NatsLink::addStateListener(std::function<void(LinkState)> listener) {
  std::lock_guard lock(impl_->mutex);
  impl_->listeners.push_back(std::move(listener));
}

void NatsLink::addReconnectJob(std::function<void()> job) {
  std::lock_guard lock(impl_->mutex);
  impl_->reconnectJobs.push_back(std::move(job));
}

void NatsLink::post(std::function<void()> job) {
  {
    std::lock_guard lock(impl_->mutex);
    if (impl_->stopping) return;
    impl_->jobs.push_back(std::move(job));
  }
  impl_->wake.notify_all();
}

void NatsLink::every(std::chrono::milliseconds interval, std::function<void()> job) {
  {
    std::lock_guard lock(impl_->mutex);
    impl_->periodic.push_back({interval, std::chrono::steady_clock::now(), std::move(job)});
  }
  impl_->wake.notify_all();
}

bool NatsLink::onWorker() const {
  return std::this_thread::get_id() == impl_->thread.get_id();
}

natsConnection* NatsLink::connection() const {
  return impl_->connection;
}

jsCtx* NatsLink::jetStream() const {
  return impl_->jetStream;
}

void NatsLink::requireConnected() const {
  if (!connected_) throw ClusterError("cluster degraded: NATS at " + options_.url + " unreachable");
}

}  // namespace switchboard::cluster
