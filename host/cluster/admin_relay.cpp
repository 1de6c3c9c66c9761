#include "cluster/admin_relay.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <optional>
#include <utility>

#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "cluster/node_registry.h"
#include "net/network_thread.h"
#include "switchboard/proto/cluster.capnp.h"

namespace switchboard::cluster {

namespace {

namespace wire = proto::cluster;

std::string requestBytes(const PluginRequest& request) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<wire::PluginRequest>();
  out.setOperation(request.operation == PluginRequest::Operation::load
                       ? wire::PluginRequest::Operation::LOAD
                       : wire::PluginRequest::Operation::ROLLBACK);
  out.setKind(request.kind);
  out.setPath(request.path);
  out.setVersion(request.version);
  out.setWaitProbation(request.waitProbation);
  out.setActor(request.actor);
  return recordBytes(message);
}

PluginRequest requestFrom(const void* data, std::size_t size) {
  RecordReader reader(data, size);
  auto in = reader.get<wire::PluginRequest>();
  PluginRequest request;
  request.operation = in.getOperation() == wire::PluginRequest::Operation::LOAD
                          ? PluginRequest::Operation::load
                          : PluginRequest::Operation::rollback;
  request.kind = in.getKind();
  request.path = in.getPath();
  request.version = in.getVersion();
  request.waitProbation = in.getWaitProbation();
  request.actor = in.getActor();
  return request;
}

std::string replyBytes(const PluginReply& reply) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<wire::PluginReply>();
  out.setNode(reply.node);
  out.setOk(reply.ok);
  out.setError(reply.error);
  out.setFromVersion(reply.fromVersion);
  out.setToVersion(reply.toVersion);
  out.setSha256(reply.sha256);
  out.setPauseUs(reply.pauseUs);
  return recordBytes(message);
}

PluginReply replyFrom(const void* data, std::size_t size) {
  RecordReader reader(data, size);
  auto in = reader.get<wire::PluginReply>();
  PluginReply reply;
  reply.node = in.getNode();
  reply.answered = true;
  reply.ok = in.getOk();
  reply.error = in.getError();
  reply.fromVersion = in.getFromVersion();
  reply.toVersion = in.getToVersion();
  reply.sha256 = in.getSha256();
  reply.pauseUs = in.getPauseUs();
  return reply;
}

PluginReply unanswered(const std::string& node, std::string error) {
  PluginReply reply;
  reply.node = node;
  reply.error = std::move(error);
  return reply;
}

std::string durationText(std::chrono::milliseconds timeout) {
  if (timeout.count() % 1000 == 0) return std::to_string(timeout.count() / 1000) + " s";
  return std::to_string(timeout.count()) + " ms";
}

}  // namespace

std::string nodeAdminSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".admin";
}

// ---------------------------------------------------------------- serving

// What the subscription's callbacks use. libnats holds one reference (freed by
// the subscription's completion callback, after its last message handler),
// each request posted to the thread another.
struct AdminRelay::Served {
  NatsLink* link = nullptr;
  std::string node;
  net::NetworkThread* thread = nullptr;
  Handler handler;
  std::atomic<bool> serving{true};  // flipped on `thread` only
};

void AdminRelay::serve(net::NetworkThread& thread, Handler handler) {
  auto served = std::make_shared<Served>();
  served->link = &link_;
  served->node = node_;
  served->thread = &thread;
  served->handler = std::move(handler);
  std::string subject = nodeAdminSubject(node_);
  auto* held = new std::shared_ptr<Served>(served);
  natsSubscription* subscription = nullptr;
  natsStatus status = natsConnection_Subscribe(&subscription, link_.connection(), subject.c_str(),
                                               &AdminRelay::onRequest, held);
  if (status != NATS_OK) {
    delete held;
    requireOk(status, "subscribing to " + subject);
  }
  natsSubscription_SetOnCompleteCB(
      subscription, [](void* closure) { delete static_cast<std::shared_ptr<Served>*>(closure); },
      held);
  std::lock_guard lock(mutex_);
  served_ = std::move(served);
  subscription_ = subscription;
}

// On a libnats thread: decode, then hand over to the serving thread.
void AdminRelay::onRequest(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
  std::shared_ptr<Served> served = *static_cast<std::shared_ptr<Served>*>(closure);
  std::optional<PluginRequest> decoded;
  std::string replyTo = natsMsg_GetReply(raw) != nullptr ? natsMsg_GetReply(raw) : "";
  try {
    decoded =
        requestFrom(natsMsg_GetData(raw), static_cast<std::size_t>(natsMsg_GetDataLength(raw)));
  } catch (...) {
    spdlog::warn("cluster: dropped an unreadable plugin request on {}", natsMsg_GetSubject(raw));
  }
  natsMsg_Destroy(raw);
  if (!decoded || replyTo.empty()) return;
  served->thread->post([served, request = std::move(*decoded), replyTo]() mutable {
    if (!served->serving) return;
    NatsLink* link = served->link;
    std::string node = served->node;
    served->handler(std::move(request), [link, node, replyTo](PluginReply reply) {
      reply.node = node;
      reply.answered = true;
      link->post([link, replyTo, bytes = replyBytes(reply)] {
        natsStatus status = natsConnection_Publish(link->connection(), replyTo.c_str(),
                                                   bytes.data(), static_cast<int>(bytes.size()));
        if (status != NATS_OK) {
          spdlog::warn("cluster: plugin reply not sent: {}", natsStatus_GetText(status));
        }
      });
    });
  });
}

void AdminRelay::stopServing() {
  std::shared_ptr<Served> served;
  natsSubscription* subscription = nullptr;
  {
    std::lock_guard lock(mutex_);
    served = std::move(served_);
    subscription = std::exchange(subscription_, nullptr);
  }
  if (!served) return;
  if (subscription != nullptr) natsSubscription_Unsubscribe(subscription);
  // On the serving thread, so a handler already posted sees it before it starts.
  auto stop = [&served] { served->serving = false; };
  try {
    if (served->thread->isRunning() && !served->thread->isCurrent()) {
      served->thread->runSync(stop);
    } else {
      stop();
    }
  } catch (const std::exception&) {
    stop();  // the thread stopped meanwhile: nothing runs there any more
  }
  if (subscription != nullptr) natsSubscription_Destroy(subscription);
}

// ---------------------------------------------------------------- sending

// The replies of one send(), one slot per node, filled as they come.
struct AdminRelay::Gather {
  std::mutex mutex;
  std::vector<PluginReply> replies;
  std::size_t remaining = 0;
  Done done;

  void fill(std::size_t slot, PluginReply reply) {
    Done finished;
    {
      std::lock_guard lock(mutex);
      replies[slot] = std::move(reply);
      if (--remaining == 0) finished = std::move(done);
    }
    if (finished) finished(std::move(replies), std::string());
  }
};

namespace {

// One request in flight: owned by its reply subscription, whose handler runs
// once with the reply or with nullptr at the time-out, and closes it there.
struct PendingRequest {
  std::function<void(PluginReply)> fill;
  std::string node;
  std::chrono::milliseconds timeout{0};
  std::atomic<bool> settled{false};

  void settle(PluginReply reply) {
    if (!settled.exchange(true)) fill(std::move(reply));
  }
};

void onReply(natsConnection*, natsSubscription* subscription, natsMsg* raw, void* closure) {
  auto* pending = static_cast<PendingRequest*>(closure);
  if (raw == nullptr) {
    pending->settle(unanswered(pending->node, "node " + pending->node + " did not answer within " +
                                                  durationText(pending->timeout)));
  } else {
    try {
      pending->settle(
          replyFrom(natsMsg_GetData(raw), static_cast<std::size_t>(natsMsg_GetDataLength(raw))));
    } catch (...) {
      pending->settle(
          unanswered(pending->node, "node " + pending->node + " sent an unreadable answer"));
    }
    natsMsg_Destroy(raw);
  }
  // Closed from its own handler: libnats calls it no more.
  natsSubscription_Destroy(subscription);
  delete pending;
}

}  // namespace

AdminRelay::AdminRelay(NatsLink& link, NodeRegistry& registry, std::string node)
    : link_(link), registry_(registry), node_(std::move(node)) {}

AdminRelay::~AdminRelay() {
  stopServing();
}

void AdminRelay::send(const std::string& target, PluginRequest request,
                      std::chrono::milliseconds timeout, Done done) {
  link_.post([this, target, bytes = requestBytes(request), timeout, done = std::move(done)] {
    std::vector<std::string> names;
    try {
      link_.requireConnected();
      for (const auto& node : registry_.list()) names.push_back(node.name);
    } catch (const std::exception& e) {
      done({}, e.what());
      return;
    }
    std::vector<std::string> targets;
    if (target == "all") {
      targets = names;
    } else if (std::find(names.begin(), names.end(), target) != names.end()) {
      targets = {target};
    } else {
      std::string known;
      for (const auto& name : names) known += (known.empty() ? "" : ", ") + name;
      done({}, "no node '" + target +
                   "' in the cluster (nodes: " + (known.empty() ? "none" : known) + ")");
      return;
    }
    if (targets.empty()) {
      done({}, "no node in the cluster");
      return;
    }
    auto gather = std::make_shared<Gather>();
    gather->replies.resize(targets.size());
    gather->remaining = targets.size();
    gather->done = done;
    for (std::size_t i = 0; i < targets.size(); ++i) sendTo(targets[i], bytes, timeout, gather, i);
  });
}

// On the worker: subscribe to a fresh inbox (with the time-out), then publish
// the request with that inbox as its reply subject. The subscription reaches
// the server before the request does (one connection keeps its order).
void AdminRelay::sendTo(const std::string& node, const std::string& bytes,
                        std::chrono::milliseconds timeout, const std::shared_ptr<Gather>& gather,
                        std::size_t slot) {
  auto* pending = new PendingRequest;
  pending->fill = [gather, slot](PluginReply reply) { gather->fill(slot, std::move(reply)); };
  pending->node = node;
  pending->timeout = timeout;

  natsInbox* inbox = nullptr;
  natsStatus status = natsInbox_Create(&inbox);
  natsSubscription* subscription = nullptr;
  if (status == NATS_OK) {
    status = natsConnection_SubscribeTimeout(&subscription, link_.connection(), inbox,
                                             static_cast<std::int64_t>(timeout.count()), &onReply,
                                             pending);
  }
  if (status != NATS_OK) {
    if (inbox != nullptr) natsInbox_Destroy(inbox);
    pending->settle(
        unanswered(node, "request to node " + node + " not sent: " + natsStatus_GetText(status)));
    delete pending;
    return;
  }
  std::string subject = nodeAdminSubject(node);
  status = natsConnection_PublishRequest(link_.connection(), subject.c_str(), inbox, bytes.data(),
                                         static_cast<int>(bytes.size()));
  natsInbox_Destroy(inbox);
  if (status != NATS_OK) {
    // The subscription's time-out closes it and frees `pending`.
    pending->settle(
        unanswered(node, "request to node " + node + " not sent: " + natsStatus_GetText(status)));
  }
}

}  // namespace switchboard::cluster
