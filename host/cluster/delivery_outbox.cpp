#include "cluster/delivery_outbox.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>
#include <utility>

#include "cluster/cluster_records.h"
#include "cluster/nats_link.h"
#include "cluster/stream_envelopes.h"

namespace switchboard::cluster {

namespace {

// What this node's answers come back on: sb.node.<node>.answer.n.<batch> for
// a notice batch, .r.<token> for a removal.
std::string answerPrefix(const std::string& node) {
  return "sb.node." + encodeKeyToken(node) + ".answer.";
}

}  // namespace

DeliveryTransport::Outbox::Outbox(DeliveryTransport& transport)
    : transport(transport), link(transport.link_), prefix(answerPrefix(transport.options_.node)) {
  jsOptions options;
  jsOptions_Init(&options);
  options.Wait = link.options().operationTimeout.count();
  options.PublishAsync.AckHandler = &Outbox::onPubAck;
  options.PublishAsync.AckHandlerClosure = this;
  options.PublishAsync.MaxPending = 1 << 20;  // our windows bound it, not libnats
  requireOk(natsConnection_JetStream(&jetStream, link.connection(), &options),
            "JetStream context (outbox)");
  std::string subject = prefix + ">";
  requireOk(natsConnection_Subscribe(&answers, link.connection(), subject.c_str(),
                                     &Outbox::onAnswer, this),
            "subscribing to " + subject);
  natsSubscription_SetPendingLimits(answers, -1, -1);
  thread = std::thread([this] { run(); });
}

DeliveryTransport::Outbox::~Outbox() {
  {
    std::lock_guard lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  if (thread.joinable()) thread.join();
  // No more answers or PubAcks reach this object past these calls.
  if (link.isConnected()) {
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = 1000;
    js_PublishAsyncComplete(jetStream, &options);
  }
  natsSubscription_Unsubscribe(answers);
  natsSubscription_Destroy(answers);
  jsCtx_Destroy(jetStream);
  std::deque<OwnedItem> left;
  {
    std::lock_guard lock(mutex);
    for (auto& item : queue) left.push_back(std::move(item));
    for (auto& [msg, item] : published) left.push_back(std::move(item));
    for (auto& item : acked) left.push_back(std::move(item));
    for (auto& [recipient, waiting] : parked) {
      for (auto& item : waiting) left.push_back(std::move(item));
    }
    queue.clear();
    published.clear();
    acked.clear();
    parked.clear();
  }
  for (auto& item : left) {
    if (!item->outcome.published) item->outcome.error = "the node is shutting down";
    finish(*item);
  }
}

void DeliveryTransport::Outbox::send(Envelope envelope, std::function<void(SendOutcome)> done) {
  auto item = std::make_unique<Item>();
  item->envelope = std::move(envelope);
  item->done = std::move(done);
  {
    std::lock_guard lock(mutex);
    item->order = nextOrder++;
    queue.push_back(std::move(item));
  }
  wake.notify_all();
}

void DeliveryTransport::Outbox::later(std::function<void()> job) {
  {
    std::lock_guard lock(mutex);
    jobs.push_back(std::move(job));
  }
  wake.notify_all();
}

std::size_t DeliveryTransport::Outbox::length() const {
  std::lock_guard lock(mutex);
  std::size_t waiting = 0;
  for (const auto& [recipient, items] : parked) waiting += items.size();
  return queue.size() + published.size() + acked.size() + waiting;
}

void DeliveryTransport::Outbox::onPubAck(jsCtx*, natsMsg* msg, jsPubAck* ack, jsPubAckErr* error,
                                         void* closure) {
  auto& self = *static_cast<Outbox*>(closure);
  {
    std::lock_guard lock(self.mutex);
    auto it = self.published.find(msg);
    if (it != self.published.end()) {
      OwnedItem item = std::move(it->second);
      self.published.erase(it);
      if (ack != nullptr) {
        item->outcome.published = PublishResult{ack->Sequence, ack->Duplicate};
        self.acked.push_back(std::move(item));
      } else {
        item->outcome.error = std::string("publishing to ") + natsMsg_GetSubject(msg) + ": " +
                              (error != nullptr && error->ErrText != nullptr
                                   ? error->ErrText
                                   : natsStatus_GetText(error != nullptr ? error->Err : NATS_ERR));
        self.failRun(std::move(item));
      }
    }  // else: given up on already (timed out here)
  }
  natsMsg_Destroy(msg);
  self.wake.notify_all();
}

void DeliveryTransport::Outbox::onAnswer(natsConnection*, natsSubscription*, natsMsg* raw,
                                         void* closure) {
  OwnedMsg msg(raw);
  auto& self = *static_cast<Outbox*>(closure);
  std::string_view subject = natsMsg_GetSubject(msg.get());
  subject.remove_prefix(std::min(subject.size(), self.prefix.size()));
  if (subject.size() < 3) return;
  char kind = subject[0];
  std::uint64_t token = std::strtoull(std::string(subject.substr(2)).c_str(), nullptr, 10);
  DeliveryTransport::RemovalDone done;
  {
    std::lock_guard lock(self.mutex);
    if (kind == 'n') {
      // Answered, or "no responders" (the node is gone): either way done.
      auto it = self.batches.find(token);
      if (it == self.batches.end()) return;
      self.release(it->second);
      self.batches.erase(it);
    } else if (kind == 'r') {
      auto it = self.removals.find(token);
      if (it == self.removals.end()) return;
      done = std::move(it->second.done);
      self.removals.erase(it);
    }
  }
  self.wake.notify_all();
  if (done) done(reportsSuccess(msg.get()));
}

bool DeliveryTransport::Outbox::reportsSuccess(natsMsg* answer) {
  std::string_view data(natsMsg_GetData(answer),
                        static_cast<std::size_t>(natsMsg_GetDataLength(answer)));
  return data.find("\"success\":true") != std::string_view::npos;
}

void DeliveryTransport::Outbox::run() {
  std::unique_lock lock(mutex);
  while (!stopping) {
    bool worked = false;
    if (!acked.empty() || !jobs.empty()) {
      std::deque<OwnedItem> in;
      in.swap(acked);
      std::deque<std::function<void()>> todo;
      todo.swap(jobs);
      lock.unlock();
      // Notices before removals and answers: nats-server handles one
      // connection's messages in order, and stores (a removal is a
      // JetStream API call) inline, so a notice written after them waits
      // for them there, and the message waits with it.
      if (!in.empty()) notice(in);
      for (auto& job : todo) runJob(job);
      lock.lock();
      worked = true;
    }
    expire(lock);
    worked |= sendRechecks(lock);
    worked |= lookAgainAtParked(lock);
    // Publish from the head while the window towards its node has room.
    for (int n = 0; n < 512 && !queue.empty() && !stopping; ++n) {
      giveUpPublished(!link.isConnected());
      Item& head = *queue.front();
      const std::string recipient = head.envelope.recipient;
      auto waitingFor = parked.find(recipient);
      DeliveryTransport::Hold held =
          waitingFor != parked.end() ? DeliveryTransport::Hold::wait : isHeld(recipient, lock);
      if (held != DeliveryTransport::Hold::publish) {
        OwnedItem item = std::move(queue.front());
        queue.pop_front();
        worked = true;
        if (held == DeliveryTransport::Hold::wait) {
          // Behind the recipient's kept rows, which are moving into the
          // stream: it waits here, in order, and is published after them.
          ++waited;
          parked[recipient].push_back(std::move(item));
          continue;
        }
        // Earlier envelopes for the recipient were not published: this one
        // must not overtake them through the stream.
        keepBehind(std::move(item));
        continue;
      }
      if (!head.charged) {
        lock.unlock();
        auto node = cachedLocation(head.envelope.recipient);
        lock.lock();
        head.charged = node.value_or(std::string());
      }
      if (!head.charged->empty() && inWindow[*head.charged] >= transport.options_.windowPerNode) {
        break;  // the head waits for that node's answers, and everything behind it
      }
      OwnedItem item = std::move(queue.front());
      queue.pop_front();
      if (!item->charged->empty()) ++inWindow[*item->charged];
      lock.unlock();
      publish(std::move(item));
      lock.lock();
      worked = true;
    }
    if (!worked && acked.empty() && jobs.empty() && !lookAgain && !stopping) {
      wake.wait_for(lock, std::chrono::milliseconds(100));
    }
  }
}

void DeliveryTransport::Outbox::runJob(const std::function<void()>& job) {
  try {
    job();
  } catch (const std::exception& e) {
    spdlog::warn("cluster: outbox: {}", e.what());
  }
}

DeliveryTransport::Hold DeliveryTransport::Outbox::isHeld(const std::string& recipient,
                                                          std::unique_lock<std::mutex>& lock) {
  auto it = failing.find(recipient);
  if (it != failing.end() && it->second > 0) return DeliveryTransport::Hold::keep;
  if (!hold) return DeliveryTransport::Hold::publish;
  auto ask = hold;
  lock.unlock();
  DeliveryTransport::Hold held = ask(recipient);
  lock.lock();
  return held;
}

void DeliveryTransport::Outbox::keepBehind(OwnedItem item) {
  item->outcome.error = "kept behind earlier envelopes for " + item->envelope.recipient +
                        " that are not in the stream";
  ++failing[item->envelope.recipient];
  acked.push_back(std::move(item));
}

bool DeliveryTransport::Outbox::lookAgainAtParked(std::unique_lock<std::mutex>& lock) {
  lookAgain = false;
  if (parked.empty()) return false;
  std::vector<std::string> recipients;
  for (const auto& [recipient, items] : parked) recipients.push_back(recipient);
  bool moved = false;
  for (const std::string& recipient : recipients) {
    DeliveryTransport::Hold held = isHeld(recipient, lock);
    if (held == DeliveryTransport::Hold::wait) continue;
    auto it = parked.find(recipient);
    if (it == parked.end()) continue;
    std::deque<OwnedItem> waiting = std::move(it->second);
    parked.erase(it);
    moved = true;
    if (held == DeliveryTransport::Hold::keep) {
      for (auto& item : waiting) keepBehind(std::move(item));
      continue;
    }
    for (auto item = waiting.rbegin(); item != waiting.rend(); ++item) {
      (*item)->charged.reset();  // where the recipient is: asked again
      queue.push_front(std::move(*item));
    }
  }
  return moved;
}

void DeliveryTransport::Outbox::giveUpPublished(bool all) {
  if (published.empty()) return;
  std::uint64_t epoch = link.disconnects();
  if (!all && epoch == epochSeen) return;
  epochSeen = epoch;
  std::vector<OwnedItem> waiting;
  for (auto it = published.begin(); it != published.end();) {
    if (!all && it->second->epoch == epoch) {
      ++it;
      continue;
    }
    waiting.push_back(std::move(it->second));
    it = published.erase(it);  // libnats still owns the message; its PubAck finds nothing
  }
  std::sort(waiting.begin(), waiting.end(),
            [](const OwnedItem& x, const OwnedItem& y) { return x->order < y->order; });
  for (auto& item : waiting) {
    item->outcome.error =
        "NATS was lost before the PubAck for an envelope to " + item->envelope.recipient;
    ++failing[item->envelope.recipient];
    acked.push_back(std::move(item));
  }
}

void DeliveryTransport::Outbox::failRun(OwnedItem failed) {
  const std::string recipient = failed->envelope.recipient;
  std::vector<OwnedItem> run;
  run.push_back(std::move(failed));
  for (auto it = published.begin(); it != published.end();) {
    if (it->second->envelope.recipient != recipient) {
      ++it;
      continue;
    }
    it->second->outcome.error = "an envelope sent with it to " + recipient + " failed";
    run.push_back(std::move(it->second));
    it = published.erase(it);  // libnats still owns the message; its PubAck finds nothing
  }
  std::sort(run.begin(), run.end(),
            [](const OwnedItem& x, const OwnedItem& y) { return x->order < y->order; });
  for (auto& item : run) {
    ++failing[recipient];
    acked.push_back(std::move(item));
  }
}

void DeliveryTransport::Outbox::publish(OwnedItem item) {
  try {
    transport.ensureStream();  // fails at once while degraded
    OwnedMsg msg = streamMessage(item->envelope);
    natsMsg* raw = msg.get();
    item->publishedAt = Clock::now();
    item->epoch = link.disconnects();
    {
      std::lock_guard lock(mutex);
      published[raw] = std::move(item);  // before the PubAck can come in
    }
    jsPubOptions options;
    jsPubOptions_Init(&options);
    options.MaxWait = link.options().operationTimeout.count();
    natsMsg* handed = msg.release();
    // Only on a connection that is up: while libnats reconnects it keeps
    // publishes in a buffer and sends them once it is back, so one given up
    // here (and kept by the sender's node) would land in the stream after
    // the return, ahead of earlier sends still kept, and a phone importing
    // then would take it first. A publish just before libnats notices a
    // dead socket is written to that socket: stored before the loss, or
    // not at all.
    natsStatus status = natsConnection_Status(link.connection()) == NATS_CONN_STATUS_CONNECTED
                            ? js_PublishMsgAsync(jetStream, &handed, &options)
                            : NATS_CONNECTION_DISCONNECTED;
    if (status == NATS_OK) return;  // libnats owns the message now
    OwnedMsg back(handed);
    std::lock_guard lock(mutex);
    auto it = published.find(raw);
    if (it == published.end()) return;
    item = std::move(it->second);
    published.erase(it);
    item->outcome.error = "publishing to " + inboxSubject(item->envelope.recipient) + ": " +
                          natsStatus_GetText(status);
  } catch (const std::exception& e) {
    if (!item) return;
    item->outcome.error = e.what();
  }
  std::lock_guard lock(mutex);
  giveUpPublished(!link.isConnected());
  failRun(std::move(item));
}

void DeliveryTransport::Outbox::notice(std::deque<OwnedItem>& items) {
  for (auto& item : items) {
    if (item->outcome.published && item->outcome.published->duplicate &&
        item->envelope.kind == Envelope::Kind::message) {
      readBackStored(*item);
    }
  }
  struct ToNode {
    std::vector<QueuedEnvelope> envelopes;
    std::vector<std::string> charged;  // per envelope: the node whose window counts it, or ""
  };
  std::unordered_map<std::string, ToNode> byNode;
  std::vector<std::string> uncharge;
  for (auto& item : items) {
    bool counted = item->charged && !item->charged->empty();
    if (item->outcome.published && item->noticed) {
      const PublishResult& result = *item->outcome.published;
      // A duplicate is an old envelope noticed again: not in the chain.
      std::uint64_t prev =
          result.duplicate ? 0 : chainOne(item->envelope.recipient, result.serverId);
      if (auto node = cachedLocation(item->envelope.recipient)) {
        ToNode& to = byNode[*node];
        to.envelopes.push_back({result.serverId, item->envelope, prev});
        to.charged.push_back(counted ? *item->charged : std::string());
        continue;
      }
    }
    if (counted) uncharge.push_back(*item->charged);
  }
  bool sent = false;
  std::size_t limit = noticeBatchLimit(link.connection());
  for (auto& [node, to] : byNode) {
    std::size_t begin = 0;
    for (std::size_t end : noticeRuns(to.envelopes, limit)) {
      sent |= sendBatch(node, to.envelopes.data() + begin, to.charged.data() + begin, end - begin);
      begin = end;
    }
  }
  // After the notices (nats-server stores each entry before it reads on),
  // before the flush and the senders' acks.
  rememberSent(items);
  if (sent) {
    // Out of this process before the senders are acknowledged: a node killed
    // right after an ack must not take the notice down with it.
    natsConnection_FlushTimeout(link.connection(),
                                static_cast<std::int64_t>(link.options().operationTimeout.count()));
  }
  {
    std::lock_guard lock(mutex);
    for (const std::string& node : uncharge) releaseOne(node, 1);
  }
  wake.notify_all();
  for (auto& item : items) {
    if (item->outcome.published) ++publishedCount;
    finish(*item);
    if (item->outcome.published) continue;
    // Its `done` has run: the sender's own record of what it keeps (`hold`)
    // covers the recipient from here on.
    std::lock_guard lock(mutex);
    auto it = failing.find(item->envelope.recipient);
    if (it != failing.end() && --it->second == 0) failing.erase(it);
  }
}

void DeliveryTransport::Outbox::rememberSent(const std::deque<OwnedItem>& items) {
  if (natsConnection_Status(link.connection()) != NATS_CONN_STATUS_CONNECTED) return;
  for (const auto& item : items) {
    const Envelope& e = item->envelope;
    if (!item->outcome.published || item->outcome.published->duplicate ||
        e.kind != Envelope::Kind::message || e.clientMsgId.empty()) {
      continue;
    }
    std::string subject =
        std::string("$KV.") + kSentBucket + "." + sentKey(e.sender, e.clientMsgId);
    std::string value = sentValue(e.messageId, e.sentAtMs);
    natsStatus status = natsConnection_Publish(link.connection(), subject.c_str(), value.data(),
                                               static_cast<int>(value.size()));
    if (status != NATS_OK) {
      spdlog::debug("cluster: {} not written: {}", subject, natsStatus_GetText(status));
    }
  }
}

void DeliveryTransport::Outbox::readBackStored(Item& item) {
  PublishResult& result = *item.outcome.published;
  jsDirectGetMsgOptions options;
  jsDirectGetMsgOptions_Init(&options);
  options.Sequence = result.serverId;
  natsMsg* raw = nullptr;
  natsStatus status = js_DirectGetMsg(&raw, jetStream, kInboxStream, nullptr, &options);
  OwnedMsg msg(raw);
  if (status != NATS_OK) {
    spdlog::debug("cluster: duplicate of {} from {}: the first copy is gone ({})",
                  item.envelope.clientMsgId, item.envelope.sender, natsStatus_GetText(status));
    item.noticed = false;
    return;
  }
  try {
    QueuedEnvelope stored =
        envelopeFrom(natsMsg_GetData(msg.get()),
                     static_cast<std::size_t>(natsMsg_GetDataLength(msg.get())), result.serverId);
    if (stored.envelope.sender != item.envelope.sender ||
        stored.envelope.clientMsgId != item.envelope.clientMsgId) {
      return;  // not the same message (cannot happen with its key): leave it alone
    }
    result.storedMessageId = stored.envelope.messageId;
    result.storedSentAtMs = stored.envelope.sentAtMs;
    item.envelope = std::move(stored.envelope);
  } catch (const std::exception& e) {
    spdlog::warn("cluster: reading back envelope {}: {}", result.serverId, e.what());
  }
}

bool DeliveryTransport::Outbox::sendBatch(const std::string& node, const QueuedEnvelope* envelopes,
                                          const std::string* charged, std::size_t count) {
  return request(nodeNoticeSubject(node), node, envelopes, charged, count, 0);
}

bool DeliveryTransport::Outbox::request(const std::string& subject, const std::string& node,
                                        const QueuedEnvelope* envelopes, const std::string* charged,
                                        std::size_t count, int attempt) {
  std::uint64_t id = 0;
  {
    std::lock_guard lock(mutex);
    id = nextToken++;
    Batch& batch = batches[id];
    batch.sentAt = Clock::now();
    batch.rechecks = attempt;
    for (std::size_t i = 0; i < count; ++i) {
      if (charged != nullptr && !charged[i].empty()) ++batch.charges[charged[i]];
      batch.noticed.push_back({envelopes[i].envelope.recipient, envelopes[i].serverId});
    }
    if (attempt > 0) ++rechecksSent;
  }
  std::string bytes = noticeBatchBytes(transport.options_.node, envelopes, count);
  std::string reply = prefix + "n." + std::to_string(id);
  natsStatus status = link.isConnected() ? natsConnection_PublishRequest(
                                               link.connection(), subject.c_str(), reply.c_str(),
                                               bytes.data(), static_cast<int>(bytes.size()))
                                         : NATS_CONNECTION_DISCONNECTED;
  if (status == NATS_OK) return true;
  spdlog::log(link.isConnected() ? spdlog::level::warn : spdlog::level::debug,
              "cluster: notices to {} not sent ({}); they wait in the stream, rechecked later",
              node, natsStatus_GetText(status));
  std::lock_guard lock(mutex);
  auto it = batches.find(id);
  if (it != batches.end()) {
    release(it->second);
    recheckLater(it->second);
    batches.erase(it);
  }
  return false;
}

void DeliveryTransport::Outbox::recheckLater(Batch& batch) {
  if (batch.rechecks >= kRecheckAttempts) {
    spdlog::warn(
        "cluster: {} envelopes noticed without an answer after {} rechecks; they wait in "
        "the stream for their phones' next login",
        batch.noticed.size(), batch.rechecks);
    return;
  }
  toRecheck.push_back({std::move(batch.noticed), batch.rechecks + 1});
}

void DeliveryTransport::Outbox::sendRecheck(const std::string& node,
                                            const QueuedEnvelope* envelopes, std::size_t count,
                                            int attempt) {
  spdlog::info("cluster: {} notices to {} not answered; recheck {} sent", count, node, attempt);
  request(nodeRecheckSubject(node), node, envelopes, nullptr, count, attempt);
}

bool DeliveryTransport::Outbox::sendRechecks(std::unique_lock<std::mutex>& lock) {
  if (toRecheck.empty() || !link.isConnected()) return false;
  std::vector<PendingRecheck> due;
  due.swap(toRecheck);
  lock.unlock();
  for (PendingRecheck& pending : due) {
    std::unordered_map<std::string, std::vector<QueuedEnvelope>> byNode;
    for (Noticed& noticed : pending.noticed) {
      auto node = cachedLocation(noticed.recipient);
      if (!node) continue;  // no session anywhere: its next login imports it
      QueuedEnvelope queued;
      queued.serverId = noticed.serverId;
      queued.envelope.recipient = std::move(noticed.recipient);
      byNode[*node].push_back(std::move(queued));
    }
    std::size_t limit = noticeBatchLimit(link.connection());
    for (auto& [node, envelopes] : byNode) {
      std::size_t begin = 0;
      for (std::size_t end : noticeRuns(envelopes, limit)) {
        sendRecheck(node, envelopes.data() + begin, end - begin, pending.attempt);
        begin = end;
      }
    }
  }
  lock.lock();
  return true;
}

void DeliveryTransport::Outbox::finish(Item& item) {
  if (auto done = std::exchange(item.done, nullptr)) {
    try {
      done(std::move(item.outcome));
    } catch (const std::exception& e) {
      spdlog::warn("cluster: outbox: {}", e.what());
    }
  }
}

std::optional<std::string> DeliveryTransport::Outbox::cachedLocation(const std::string& phone) {
  auto now = Clock::now();
  auto it = locations.find(phone);
  if (it != locations.end() && now - it->second.fetchedAt < kLocationCacheTtl) {
    return it->second.node;
  }
  std::function<std::optional<std::string>(const std::string&)> find;
  {
    std::lock_guard lock(mutex);
    find = locate;
  }
  if (!find) return std::nullopt;
  std::optional<std::string> node;
  try {
    node = find(phone);
  } catch (const std::exception& e) {
    spdlog::debug("cluster: where {} is: {}", phone, e.what());
    return std::nullopt;  // not cached: ask again next time
  }
  if (locations.size() > 100000) locations.clear();
  locations[phone] = {node, Clock::now()};
  return node;
}

std::uint64_t DeliveryTransport::Outbox::chainOne(const std::string& recipient,
                                                  std::uint64_t serverId) {
  std::lock_guard lock(mutex);
  if (lastNoticed.size() >= kChained && !lastNoticed.contains(recipient)) lastNoticed.clear();
  return std::exchange(lastNoticed[recipient], serverId);
}

void DeliveryTransport::Outbox::chain(std::vector<QueuedEnvelope>& queued) {
  for (QueuedEnvelope& q : queued) q.prevServerId = chainOne(q.envelope.recipient, q.serverId);
}

void DeliveryTransport::Outbox::release(const Batch& batch) {
  for (const auto& [node, count] : batch.charges) releaseOne(node, count);
}

void DeliveryTransport::Outbox::releaseOne(const std::string& node, std::size_t count) {
  auto it = inWindow.find(node);
  if (it == inWindow.end()) return;
  it->second -= std::min(it->second, count);
  if (it->second == 0) inWindow.erase(it);
}

void DeliveryTransport::Outbox::expire(std::unique_lock<std::mutex>& lock) {
  auto now = Clock::now();
  auto timeout = transport.options_.noticeTimeout;
  if (now - lastExpiry < std::chrono::milliseconds(250)) return;
  lastExpiry = now;
  for (auto it = batches.begin(); it != batches.end();) {
    if (now - it->second.sentAt < timeout) {
      ++it;
      continue;
    }
    release(it->second);
    recheckLater(it->second);
    it = batches.erase(it);
  }
  std::vector<DeliveryTransport::RemovalDone> removed;
  for (auto it = removals.begin(); it != removals.end();) {
    if (now - it->second.sentAt < timeout) {
      ++it;
      continue;
    }
    removed.push_back(std::move(it->second.done));
    it = removals.erase(it);
  }
  // A PubAck libnats never reported (its own time-out should have): given up.
  std::vector<OwnedItem> late;
  for (auto it = published.begin(); it != published.end();) {
    if (now - it->second->publishedAt < 2 * link.options().operationTimeout) {
      ++it;
      continue;
    }
    it->second->outcome.error = "no PubAck for an envelope to " + it->second->envelope.recipient;
    late.push_back(std::move(it->second));
    it = published.erase(it);
  }
  std::sort(late.begin(), late.end(),
            [](const OwnedItem& x, const OwnedItem& y) { return x->order < y->order; });
  for (auto& item : late) {
    if (item) failRun(std::move(item));
  }
  if (removed.empty()) return;
  lock.unlock();
  for (auto& done : removed) done(false);
  lock.lock();
}

}  // namespace switchboard::cluster
