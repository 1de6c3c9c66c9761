#include "cluster/delivery_transport.h"

#include <nats/nats.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <memory>
#include <optional>

#include "cluster/cluster_records.h"
#include "cluster/delivery_outbox.h"
#include "cluster/kv_bucket.h"
#include "cluster/nats_link.h"
#include "cluster/stream_envelopes.h"
#include "net/network_thread.h"
#include "switchboard/proto/cluster.capnp.h"

namespace switchboard::cluster {

std::string inboxSubject(const std::string& recipient) {
  return "sb.inbox." + encodeKeyToken(recipient);
}

std::string nodeNoticeSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".inbox";
}

std::string nodeRecheckSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".recheck";
}

std::string nodeKickSubject(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".kick";
}

void DeliveryTransport::ensureStream() {
  link_.requireConnected();
  std::lock_guard lock(mutex_);
  if (streamReady_) return;
  jsStreamConfig config;
  jsStreamConfig_Init(&config);
  config.Name = kInboxStream;
  const char* subjects[] = {"sb.inbox.>"};
  config.Subjects = subjects;
  config.SubjectsLen = 1;
  config.Storage = js_FileStorage;
  config.Duplicates =
      std::chrono::duration_cast<std::chrono::nanoseconds>(options_.duplicateWindow).count();
  config.MaxAge = std::chrono::duration_cast<std::chrono::nanoseconds>(options_.maxAge).count();
  config.AllowDirect = true;  // pending() reads with direct get, next by subject
  jsErrCode error = static_cast<jsErrCode>(0);
  jsStreamInfo* info = nullptr;
  natsStatus status = js_AddStream(&info, link_.jetStream(), &config, nullptr, &error);
  if (info != nullptr) jsStreamInfo_Destroy(info);
  if (status != NATS_OK) {
    // Another node made it first (same settings): bind to it.
    info = nullptr;
    requireOk(js_GetStreamInfo(&info, link_.jetStream(), kInboxStream, nullptr, nullptr),
              std::string("stream ") + kInboxStream);
    jsStreamInfo_Destroy(info);
  }
  // Listed is not yet listening (a fresh cluster's nodes race for that
  // moment): used only once a publish to it is answered, as a bucket is.
  awaitStreamListening(link_, inboxSubject("sb_ready_probe"),
                       std::string("stream ") + kInboxStream);
  streamReady_ = true;
}

PublishResult DeliveryTransport::publish(const Envelope& envelope) {
  ensureStream();
  OwnedMsg msg = streamMessage(envelope);
  jsPubAck* ack = nullptr;
  jsErrCode error = static_cast<jsErrCode>(0);
  requireOk(js_PublishMsg(&ack, link_.jetStream(), msg.get(), nullptr, &error),
            "publishing to " + inboxSubject(envelope.recipient));
  PublishResult result{ack->Sequence, ack->Duplicate};
  jsPubAck_Destroy(ack);
  return result;
}

std::vector<QueuedEnvelope> DeliveryTransport::pending(const std::string& recipient,
                                                       std::uint64_t afterId, std::size_t limit) {
  ensureStream();
  std::string subject = inboxSubject(recipient);
  std::vector<QueuedEnvelope> out;
  std::uint64_t from = afterId + 1;
  while (out.size() < limit) {
    jsDirectGetMsgOptions options;
    jsDirectGetMsgOptions_Init(&options);
    options.Sequence = from;
    options.NextBySubject = subject.c_str();
    natsMsg* raw = nullptr;
    natsStatus status = js_DirectGetMsg(&raw, link_.jetStream(), kInboxStream, nullptr, &options);
    OwnedMsg msg(raw);
    if (status == NATS_NOT_FOUND) break;
    requireOk(status, "reading " + subject);
    const char* sequence = nullptr;
    requireOk(natsMsgHeader_Get(msg.get(), "Nats-Sequence", &sequence), "direct get sequence");
    std::uint64_t serverId = std::strtoull(sequence, nullptr, 10);
    out.push_back(envelopeFrom(natsMsg_GetData(msg.get()),
                               static_cast<std::size_t>(natsMsg_GetDataLength(msg.get())),
                               serverId));
    from = serverId + 1;
  }
  return out;
}

std::vector<std::uint64_t> DeliveryTransport::stillStored(const std::string& recipient,
                                                          std::vector<std::uint64_t> serverIds) {
  std::sort(serverIds.begin(), serverIds.end());
  serverIds.erase(std::unique(serverIds.begin(), serverIds.end()), serverIds.end());
  std::vector<std::uint64_t> stored;
  auto next = serverIds.begin();
  while (next != serverIds.end()) {
    // The recipient's first envelope at or after the next id asked about:
    // every id asked about below it is gone.
    auto first = pending(recipient, *next - std::min<std::uint64_t>(*next, 1), 1);
    if (first.empty()) break;  // none of the rest is there
    std::uint64_t found = first.front().serverId;
    next = std::lower_bound(next, serverIds.end(), found);
    if (next != serverIds.end() && *next == found) {
      stored.push_back(found);
      ++next;
    }
  }
  return stored;
}

void DeliveryTransport::remove(std::uint64_t serverId) {
  ensureStream();
  jsErrCode error = static_cast<jsErrCode>(0);
  natsStatus status = js_DeleteMsg(link_.jetStream(), kInboxStream, serverId, nullptr, &error);
  if (status == NATS_OK || status == NATS_NOT_FOUND) return;
  // Already gone (a repeat, or expired): JetStream answers "no message found"
  // (API error 10057) rather than a status of its own.
  const char* detail = nats_GetLastError(nullptr);
  if (error == 10057 ||
      (detail != nullptr && std::string(detail).find("no message found") != std::string::npos)) {
    return;
  }
  requireOk(status, "removing envelope " + std::to_string(serverId));
}

std::uint64_t DeliveryTransport::lastSequence() {
  ensureStream();
  jsStreamInfo* info = nullptr;
  requireOk(js_GetStreamInfo(&info, link_.jetStream(), kInboxStream, nullptr, nullptr),
            std::string("stream ") + kInboxStream);
  std::uint64_t last = info->State.LastSeq;
  jsStreamInfo_Destroy(info);
  return last;
}

template <class T>
void DeliveryTransport::subscribe(const std::string& subject, net::NetworkThread& thread,
                                  T (*decode)(const void*, std::size_t),
                                  std::function<void(T)> handler) {
  auto listener = std::make_unique<Listener>();
  listener->onMessage = [&thread, decode, handler = std::move(handler)](natsMsg* msg) {
    std::optional<T> item;
    try {
      item = decode(natsMsg_GetData(msg), static_cast<std::size_t>(natsMsg_GetDataLength(msg)));
    } catch (...) {
      spdlog::warn("cluster: dropped an unreadable message on {}", natsMsg_GetSubject(msg));
      return;
    }
    if constexpr (requires { item->replyTo; }) {
      const char* reply = natsMsg_GetReply(msg);
      if (reply != nullptr) item->replyTo = reply;
    }
    thread.post([handler, item = std::move(*item)]() mutable { handler(std::move(item)); });
  };
  requireOk(natsConnection_Subscribe(&listener->subscription, link_.connection(), subject.c_str(),
                                     &DeliveryTransport::onMessage, listener.get()),
            "subscribing to " + subject);
  listeners_.push_back(std::move(listener));
  // libnats only queues the SUB for its flusher: until nats-server has it, what is published to
  // the subject is dropped for want of interest. A round trip makes the subscription live when
  // this returns (the contract of listen()); without NATS it is sent on reconnect.
  if (!link_.isConnected()) return;
  natsStatus flushed = natsConnection_FlushTimeout(
      link_.connection(), static_cast<std::int64_t>(link_.options().operationTimeout.count()));
  if (flushed != NATS_OK) {
    spdlog::debug("cluster: subscription to {} not confirmed yet: {}", subject,
                  natsStatus_GetText(flushed));
  }
}

// On a libnats thread.
void DeliveryTransport::onMessage(natsConnection*, natsSubscription*, natsMsg* raw,
                                  void* listener) {
  OwnedMsg msg(raw);
  static_cast<Listener*>(listener)->onMessage(msg.get());
}

void DeliveryTransport::listen(net::NetworkThread& thread,
                               std::function<void(NoticeBatch)> handler) {
  subscribe<NoticeBatch>(nodeNoticeSubject(options_.node), thread, &noticeBatchFrom,
                         std::move(handler));
  // Nothing is dropped for being slow: the senders' windows bound what waits.
  natsSubscription_SetPendingLimits(listeners_.back()->subscription, -1, -1);
}

void DeliveryTransport::listenRechecks(net::NetworkThread& thread,
                                       std::function<void(NoticeBatch)> handler) {
  subscribe<NoticeBatch>(nodeRecheckSubject(options_.node), thread, &noticeBatchFrom,
                         std::move(handler));
}

// ---------------------------------------------------------------- kick notices

namespace {
std::string kickBytes(const KickNotice& notice) {
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::KickNotice>();
  out.setPhone(notice.phone);
  out.setSessionId(notice.sessionId);
  out.setReason(notice.reason);
  return recordBytes(message);
}
}  // namespace

void DeliveryTransport::sendKick(const std::string& node, const KickNotice& notice) {
  if (!link_.isConnected()) return;
  std::string bytes = kickBytes(notice);
  std::string subject = nodeKickSubject(node);
  natsStatus status = natsConnection_Publish(link_.connection(), subject.c_str(), bytes.data(),
                                             static_cast<int>(bytes.size()));
  if (status != NATS_OK) {
    spdlog::warn("cluster: kick of {} on {} not sent: {}", notice.phone, node,
                 natsStatus_GetText(status));
  }
}

void DeliveryTransport::listenKicks(net::NetworkThread& thread,
                                    std::function<void(KickNotice)> handler) {
  subscribe<KickNotice>(
      nodeKickSubject(options_.node), thread,
      [](const void* data, std::size_t size) {
        RecordReader reader(data, size);
        auto in = reader.get<proto::cluster::KickNotice>();
        return KickNotice{in.getPhone(), in.getSessionId(), in.getReason(), {}};
      },
      std::move(handler));
}

// ---------------------------------------------------------------- handovers

bool DeliveryTransport::handOver(const std::string& node, const KickNotice& notice,
                                 std::chrono::milliseconds timeout) {
  if (!link_.isConnected()) return false;
  std::string bytes = kickBytes(notice);
  std::string subject = nodeKickSubject(node);
  natsMsg* raw = nullptr;
  natsStatus status = natsConnection_Request(&raw, link_.connection(), subject.c_str(),
                                             bytes.data(), static_cast<int>(bytes.size()),
                                             static_cast<std::int64_t>(timeout.count()));
  OwnedMsg reply(raw);
  if (status != NATS_OK) {
    // NATS_NO_RESPONDERS: the node is gone; NATS_TIMEOUT: it did not answer in time.
    spdlog::info("cluster: handover of {} from {} not answered: {}", notice.phone, node,
                 natsStatus_GetText(status));
    return false;
  }
  return true;
}

void DeliveryTransport::answerHandover(const KickNotice& notice) {
  if (notice.replyTo.empty() || !link_.isConnected()) return;
  natsStatus status =
      natsConnection_Publish(link_.connection(), notice.replyTo.c_str(), nullptr, 0);
  if (status != NATS_OK) {
    spdlog::debug("cluster: handover answer for {} not sent: {}", notice.phone,
                  natsStatus_GetText(status));
  }
}

// ---------------------------------------------------------------- presence notices

void DeliveryTransport::publishPresence(const PresenceNotice& notice) {
  if (!link_.isConnected()) return;
  capnp::MallocMessageBuilder message;
  auto out = message.initRoot<proto::cluster::PresenceNotice>();
  out.setNode(notice.node);
  out.setPhone(notice.phone);
  out.setState(notice.state);
  out.setLastSeen(notice.lastSeen);
  out.setTyping(notice.typing);
  out.setTo(notice.to);
  auto contacts = out.initContacts(static_cast<unsigned>(notice.contacts.size()));
  for (unsigned i = 0; i < notice.contacts.size(); ++i) contacts.set(i, notice.contacts[i]);
  std::string bytes = recordBytes(message);
  std::string subject = "sb.presence." + encodeKeyToken(notice.phone);
  natsStatus status = natsConnection_Publish(link_.connection(), subject.c_str(), bytes.data(),
                                             static_cast<int>(bytes.size()));
  if (status != NATS_OK) {
    spdlog::debug("cluster: presence of {} not sent: {}", notice.phone, natsStatus_GetText(status));
  }
}

void DeliveryTransport::listenPresence(net::NetworkThread& thread,
                                       std::function<void(PresenceNotice)> handler) {
  // Every node publishes and hears sb.presence.>: its own notices are dropped here.
  subscribe<PresenceNotice>(
      "sb.presence.>", thread,
      [](const void* data, std::size_t size) {
        RecordReader reader(data, size);
        auto in = reader.get<proto::cluster::PresenceNotice>();
        PresenceNotice notice;
        notice.node = in.getNode();
        notice.phone = in.getPhone();
        notice.state = in.getState();
        notice.lastSeen = in.getLastSeen();
        notice.typing = in.getTyping();
        notice.to = in.getTo();
        for (auto contact : in.getContacts()) notice.contacts.emplace_back(contact);
        return notice;
      },
      [node = options_.node, handler = std::move(handler)](PresenceNotice notice) {
        if (notice.node != node) handler(std::move(notice));
      });
}

DeliveryTransport::DeliveryTransport(NatsLink& link, DeliveryTransportOptions options)
    : link_(link),
      options_(std::move(options)),
      outbox_(std::make_unique<Outbox>(*this)),
      liveness_(std::make_shared<Liveness>()) {
  liveness_->transport = this;
}

DeliveryTransport::~DeliveryTransport() {
  {
    std::lock_guard lock(liveness_->mutex);
    liveness_->transport = nullptr;
  }
  outbox_.reset();  // fails what it still holds, then lets go of its libnats handles
  for (auto& listener : listeners_) {
    natsSubscription_Unsubscribe(listener->subscription);
    natsSubscription_Destroy(listener->subscription);
  }
}

void DeliveryTransport::setLocator(
    std::function<std::optional<std::string>(const std::string& phone)> locate) {
  std::lock_guard lock(outbox_->mutex);
  outbox_->locate = std::move(locate);
}

void DeliveryTransport::setHold(std::function<Hold(const std::string& recipient)> hold) {
  std::lock_guard lock(outbox_->mutex);
  outbox_->hold = std::move(hold);
}

void DeliveryTransport::holdChanged() {
  {
    std::lock_guard lock(outbox_->mutex);
    outbox_->lookAgain = true;
  }
  outbox_->wake.notify_all();
}

DeliveryTransport::Counts DeliveryTransport::counts() const {
  Counts counts;
  counts.published = outbox_->publishedCount.load();
  std::lock_guard lock(outbox_->mutex);
  counts.waited = outbox_->waited;
  counts.rechecks = outbox_->rechecksSent;
  return counts;
}

void DeliveryTransport::send(Envelope envelope, std::function<void(SendOutcome)> done) {
  outbox_->send(std::move(envelope), std::move(done));
}

std::size_t DeliveryTransport::outboxLength() const {
  return outbox_->length();
}

void DeliveryTransport::notify(const std::string& node, std::vector<QueuedEnvelope> queued) {
  outbox_->chain(queued);
  // As requests, like the outbox's notice batches (counted against no
  // window): one that gets no answer, or is not sent, is rechecked.
  bool sent = false;
  std::size_t begin = 0;
  for (std::size_t end : noticeRuns(queued, noticeBatchLimit(link_.connection()))) {
    sent |= outbox_->request(nodeNoticeSubject(node), node, queued.data() + begin, nullptr,
                             end - begin, 0);
    begin = end;
  }
  if (!sent) return;
  // Out of this process before the caller acknowledges anything: a node
  // killed right after its ack must not take the notice down with it.
  natsStatus status = natsConnection_FlushTimeout(
      link_.connection(), static_cast<std::int64_t>(link_.options().operationTimeout.count()));
  if (status != NATS_OK) {
    spdlog::debug("cluster: notice to {} not flushed ({}); rechecked if not answered", node,
                  natsStatus_GetText(status));
  }
}

void DeliveryTransport::removeLater(std::uint64_t serverId, RemovalDone done) {
  streamRequestLater(std::string("$JS.API.STREAM.MSG.DELETE.") + kInboxStream,
                     "{\"seq\":" + std::to_string(serverId) + ",\"no_erase\":true}",
                     std::move(done));
}

void DeliveryTransport::streamRequestLater(std::string subject, std::string request,
                                           RemovalDone done) {
  outbox_->later([this, subject = std::move(subject), request = std::move(request),
                  done = std::move(done)]() mutable {
    Outbox& outbox = *outbox_;
    if (!link_.isConnected()) {
      done(false);  // the copies stay; the next import skips or repeats them (the phone drops
                    // repeats)
      return;
    }
    std::uint64_t token = 0;
    {
      std::lock_guard lock(outbox.mutex);
      token = outbox.nextToken++;
      outbox.removals[token] = {Outbox::Clock::now(), std::move(done)};
    }
    std::string reply = outbox.prefix + "r." + std::to_string(token);
    natsStatus status =
        natsConnection_PublishRequest(link_.connection(), subject.c_str(), reply.c_str(),
                                      request.data(), static_cast<int>(request.size()));
    if (status == NATS_OK) return;
    RemovalDone failed;
    {
      std::lock_guard lock(outbox.mutex);
      auto it = outbox.removals.find(token);
      if (it == outbox.removals.end()) return;
      failed = std::move(it->second.done);
      outbox.removals.erase(it);
    }
    failed(false);
  });
}

std::function<void(const std::string&)> DeliveryTransport::noticeAnswerer() {
  return [liveness = liveness_](const std::string& replyTo) {
    std::lock_guard lock(liveness->mutex);
    if (liveness->transport != nullptr) liveness->transport->answerNotices(replyTo);
  };
}

void DeliveryTransport::answerNotices(const std::string& replyTo) {
  if (replyTo.empty()) return;
  outbox_->later([this, replyTo]() {
    if (!link_.isConnected()) return;
    natsStatus status = natsConnection_Publish(link_.connection(), replyTo.c_str(), nullptr, 0);
    if (status != NATS_OK) {
      spdlog::debug("cluster: notice answer not sent: {}", natsStatus_GetText(status));
    }
  });
}

}  // namespace switchboard::cluster
