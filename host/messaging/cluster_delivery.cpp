// Delivery across nodes (docs/cluster.md): items for phones elsewhere go into
// the stream through the transport's outbox (kept here while NATS is away),
// and live notices from other nodes are offered to the phones live here.

#include <spdlog/spdlog.h>

#include <memory>
#include <optional>
#include <unordered_map>

#include "cluster/cluster_node.h"
#include "messaging/cluster_parts.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
#include "net/network_thread.h"
#include "store/store.h"

namespace switchboard::messaging {

using session::OutboundMessage;
using session::OutboundReceipt;
using session::ReceiptKind;

namespace {

// Envelopes a live phone holds that a look for lost notices steps over at
// most (past them, a lost one waits for the phone's next login).
constexpr std::size_t kLostNoticeLook = 1024;

// Answers a notice batch's sender (its window) once nothing here holds it.
// (It may be the last thing to go at shutdown, after the transport.)
class NoticeAnswer {
 public:
  NoticeAnswer(std::function<void(const std::string&)> answer, std::string replyTo)
      : answer_(std::move(answer)), replyTo_(std::move(replyTo)) {}
  ~NoticeAnswer() { answer_(replyTo_); }
  NoticeAnswer(const NoticeAnswer&) = delete;
  NoticeAnswer& operator=(const NoticeAnswer&) = delete;

 private:
  std::function<void(const std::string&)> answer_;
  std::string replyTo_;
};

}  // namespace

// Every envelope moved is noticed (a live phone takes each from its notice),
// flushed before the rows are gone from here.
void MessagingService::tellHolder(const std::string& phone,
                                  const std::vector<cluster::QueuedEnvelope>& moved) {
  if (moved.empty()) return;
  if (auto where = cluster_->directory().location(phone)) {
    cluster_->transport().notify(where->node, moved);
  }
}

void MessagingService::publishRemote(std::string to, OutboundMessage message) {
  cluster::Envelope envelope;
  envelope.kind = cluster::Envelope::Kind::message;
  envelope.sender = message.from;
  envelope.recipient = std::move(to);
  envelope.clientMsgId = message.clientMsgId;
  envelope.body = message.body;
  envelope.sentAtMs = message.timestamp;
  envelope.group = message.group == 0 ? std::string() : std::to_string(message.group);
  envelope.messageId = message.id;
  publishOrKeep(std::move(envelope), std::move(message));
}

void MessagingService::publishReceipt(std::string to, OutboundReceipt receipt) {
  cluster::Envelope envelope;
  envelope.kind = receipt.kind == ReceiptKind::read ? cluster::Envelope::Kind::read
                                                    : cluster::Envelope::Kind::delivered;
  envelope.sender = receipt.by;
  envelope.recipient = std::move(to);
  envelope.sentAtMs = receipt.timestamp;
  envelope.receiptOf = receipt.messageId;
  publishOrKeep(std::move(envelope), std::move(receipt));
}

template <class Item>
void MessagingService::publishOrKeep(cluster::Envelope envelope, Item item) {
  std::string to = envelope.recipient;
  auto held = std::make_shared<Item>(std::move(item));
  // Every item goes through the outbox, kept or not: what it does not publish
  // (NATS away, or behind items kept for the phone: its `hold`) comes back
  // failed, on the outbox thread, in the order of the sends, and is counted
  // and kept here in that order. (Keeping some straight from here, behind
  // rows kept for the phone, could store one ahead of earlier sends the
  // outbox still held.)
  cluster_->transport().send(std::move(envelope), [this, held, to](cluster::SendOutcome outcome) {
    if (outcome.published) {
      if constexpr (std::is_same_v<Item, OutboundMessage>) {
        const cluster::PublishResult& result = *outcome.published;
        if (result.storedMessageId != 0 && result.storedMessageId != held->id) {
          rememberStoredInstead(held->id, {result.storedMessageId, result.storedSentAtMs});
        }
      }
      if (held->ack) std::exchange(held->ack, nullptr)->settle();
      return;
    }
    countKept(to, outcome.error, [this, held, to]() { keepForExport(to, std::move(*held)); });
  });
}

void MessagingService::rememberStoredInstead(std::uint64_t chosenId, SentMessage stored) {
  spdlog::info("cluster: message {} was in the stream already as {}; its sender is answered so",
               chosenId, stored.id);
  std::lock_guard lock(storedInsteadMutex_);
  storedInstead_[chosenId] = stored;
}

SentMessage MessagingService::answeredWith(SentMessage sent) {
  std::lock_guard lock(storedInsteadMutex_);
  auto it = storedInstead_.find(sent.id);
  if (it == storedInstead_.end()) return sent;
  SentMessage stored = it->second;
  storedInstead_.erase(it);
  return stored;
}

void MessagingService::countKept(const std::string& phone, const std::string& why,
                                 std::function<void()> keep) {
  std::lock_guard lock(keptMutex_);
  auto it = keptFor_.find(phone);
  if (it == keptFor_.end()) {
    spdlog::warn("cluster: items for {} kept on this node from now on: {}", phone, why);
    it = keptFor_.emplace(phone, Kept{}).first;
  } else {
    spdlog::debug("cluster: an item for {} kept on this node: {}", phone, why);
  }
  ++it->second.writing;
  ++counters_.clusterKept;
  threads_.front()->post(std::move(keep));
}

template <class Item>
void MessagingService::keepForExport(std::string to, Item item) {
  std::vector<Addressed<Item>> items;
  items.push_back({to, std::move(item)});
  WriteOrigin origin;
  origin.keptForStream = true;  // its export moves it, behind what was kept before
  if constexpr (std::is_same_v<Item, OutboundMessage>) {
    storeMessages(std::move(items), std::move(origin));
  } else {
    storeReceipts(std::move(items), std::move(origin));
  }
  // Committed after the row (the writer keeps the order of writes).
  store_.write([](store::Connection&) {},
               [this, to](std::optional<std::string>) {
                 std::lock_guard lock(keptMutex_);
                 auto it = keptFor_.find(to);
                 if (it != keptFor_.end() && it->second.writing > 0) --it->second.writing;
               });
}

// ---------------------------------------------------------------- live notices

void MessagingService::noticesArrived(cluster::NoticeBatch batch) {
  std::shared_ptr<void> token;
  if (!batch.replyTo.empty()) {
    token = std::make_shared<NoticeAnswer>(cluster_->transport().noticeAnswerer(),
                                           std::move(batch.replyTo));
  }
  std::uint64_t epoch = cluster_->link().disconnects();
  std::vector<std::string> imports;
  for (cluster::QueuedEnvelope& queued : batch.items) {
    std::string phone = queued.envelope.recipient;
    switch (intake_->notice(queued, batch.node, epoch, token)) {
      case StreamIntake::Verdict::offer:
        if (auto address = sessions_.locate(phone)) {
          offerFromStream(*address, std::move(queued), token);
        } else {
          intake_->settled(phone, queued.serverId);  // gone meanwhile: it stays in the stream
        }
        break;
      case StreamIntake::Verdict::gap:
        spdlog::info(
            "cluster: notices for {} may be lost (envelope {} from {} came, {} before it did "
            "not); it imports from the stream",
            phone, queued.serverId, batch.node, queued.prevServerId);
        imports.push_back(std::move(phone));
        break;
      case StreamIntake::Verdict::import:
        imports.push_back(std::move(phone));
        break;
      case StreamIntake::Verdict::notHere:
      case StreamIntake::Verdict::skip:
      case StreamIntake::Verdict::kept:
        break;
    }
  }
  for (std::string& phone : imports) {
    cluster_->link().post([this, phone = std::move(phone)]() { importFromStream(phone); });
  }
}

// A sender got no answer for these notices: they may be lost on the way, or
// their batch's answer was only late (it waits for every envelope in it, and
// one phone's may be kept while it imports, for seconds under a flood). A
// phone here that cannot account for one of them (StreamIntake::unaccounted)
// and finds it still in the stream lost its notice, and imports; one taken
// already is gone from the stream. (Sending a live phone back to importing
// for every late answer stalled it, and made more answers late: a cascade of
// rechecks that gave the saturated cross-node run its seconds-long tail.)
// The stream is read on the worker; the decision is made back here, in the
// order of the notices.
void MessagingService::recheckArrived(cluster::NoticeBatch batch) {
  using Doubts = std::vector<std::pair<std::string, std::vector<std::uint64_t>>>;
  std::unordered_map<std::string, std::vector<std::uint64_t>> byPhone;
  for (const cluster::QueuedEnvelope& queued : batch.items) {
    byPhone[queued.envelope.recipient].push_back(queued.serverId);
  }
  Doubts doubts;
  for (auto& [phone, ids] : byPhone) {
    std::vector<std::uint64_t> unaccounted = intake_->unaccounted(phone, ids);
    if (unaccounted.empty()) {
      spdlog::debug("cluster: recheck for {}: nothing lost ({} in memory, kept or imported)", phone,
                    ids.size());
      continue;
    }
    doubts.emplace_back(phone, std::move(unaccounted));
  }
  if (doubts.empty()) {
    cluster_->transport().answerNotices(batch.replyTo);
    return;
  }
  cluster_->link().post([this, doubts = std::move(doubts), replyTo = batch.replyTo]() mutable {
    for (auto& [phone, ids] : doubts) {
      try {
        ids = cluster_->transport().stillStored(phone, std::move(ids));
      } catch (const std::exception& e) {
        // Cannot tell: taken to be lost (an import finds what is there).
        spdlog::debug("cluster: recheck for {}: reading the stream: {}", phone, e.what());
      }
    }
    threads_.front()->post([this, doubts = std::move(doubts), replyTo]() {
      for (auto& [phone, stored] : doubts) {
        if (stored.empty()) {
          spdlog::debug("cluster: recheck for {}: nothing lost (taken already)", phone);
          continue;
        }
        importIfUnaccounted(phone, stored, "");
      }
      cluster_->transport().answerNotices(replyTo);
    });
  });
}

void MessagingService::importIfUnaccounted(const std::string& phone,
                                           const std::vector<std::uint64_t>& stored,
                                           const std::string& why) {
  if (!intake_->recheck(phone, stored, cluster_->link().disconnects())) return;
  spdlog::info("cluster: notices for {} may be lost{}; it imports from the stream", phone,
               why.empty() ? "" : " (" + why + ")");
  cluster_->link().post([this, phone]() {
    try {
      importFromStream(phone);
    } catch (const std::exception& e) {
      spdlog::debug("cluster: import for {}: {}", phone, e.what());
    }
  });
}

// A node left: notices it sent may be lost with it, and no outbox is left to
// recheck them. Each phone live here looks in the stream past what its imports
// read for an envelope it cannot account for (StreamIntake::unaccounted: not
// in memory, not kept), stepping over at most kLostNoticeLook it holds; one
// found sends it to import, as a recheck would. An envelope whose notice
// from a live node is still on its way looks the same: that phone imports for
// nothing (it is skipped in memory, or read by the import). Worker thread.
void MessagingService::recheckLivePhones(const std::string& why) {
  auto live = intake_->liveNow(cluster_->link().disconnects());
  spdlog::info("cluster: {}; {} live phones look in the stream for lost notices", why, live.size());
  for (const auto& [phone, readUpTo] : live) {
    std::optional<std::uint64_t> unaccounted;
    try {
      std::uint64_t after = readUpTo;
      for (std::size_t looked = 0; !unaccounted && looked < kLostNoticeLook;) {
        auto page = cluster_->transport().pending(phone, after, 16);
        if (page.empty()) break;
        for (const cluster::QueuedEnvelope& queued : page) {
          ++looked;
          after = queued.serverId;
          // A copy of a row written here (StreamCopy, or a spill) is accounted for.
          if (copies_->holds(phone, queued.serverId)) continue;
          if (!intake_->unaccounted(phone, {queued.serverId}).empty()) {
            unaccounted = queued.serverId;
            break;
          }
        }
      }
    } catch (const std::exception& e) {
      spdlog::debug("cluster: looking for lost notices of {}: {}", phone, e.what());
      continue;
    }
    if (!unaccounted) continue;
    threads_.front()->post(
        [this, phone = phone, id = *unaccounted, why]() { importIfUnaccounted(phone, {id}, why); });
  }
}

void MessagingService::goLive(const std::string& phone, StreamIntake::Clock::time_point startedAt,
                              std::uint64_t epoch) {
  auto offers = intake_->goLive(phone, startedAt, epoch, cluster_->link().disconnects());
  if (!offers) return;
  spdlog::debug("cluster: {} takes notices in memory ({} kept ones first)", phone, offers->size());
  auto address = sessions_.locate(phone);
  for (StreamIntake::Kept& kept : *offers) {
    if (address) {
      offerFromStream(*address, std::move(kept.queued), kept.token);
    } else {
      intake_->settled(phone, kept.queued.serverId);
    }
  }
}

void MessagingService::offerFromStream(const session::SessionAddress& address,
                                       cluster::QueuedEnvelope queued,
                                       std::shared_ptr<void> batchToken) {
  net::NetworkThread& here = *threads_.front();
  std::string phone = queued.envelope.recipient;
  std::uint64_t serverId = queued.serverId;
  // Settled once the phone returned it or the store has it: then it leaves the
  // stream. Dropped unsettled (the session ended with it): it stays there.
  auto [promise, ack] = session::DeliveryAck::make(here, 1);
  here.addTask(promise.then(
      [this, phone, serverId, batchToken]() {
        if (copies_->holds(phone, serverId)) {
          // Written here (a spill): it leaves the stream once the row is taken.
          intake_->settled(phone, serverId);
          return;
        }
        cluster_->transport().removeLater(
            serverId, [this, phone, serverId](bool) { intake_->settled(phone, serverId); });
      },
      [this, phone, serverId, batchToken](kj::Exception&&) { intake_->settled(phone, serverId); }));
  cluster::Envelope& e = queued.envelope;
  if (e.kind != cluster::Envelope::Kind::message) {
    OutboundReceipt receipt;
    receipt.messageId = e.receiptOf;
    receipt.by = e.sender;
    receipt.kind =
        e.kind == cluster::Envelope::Kind::read ? ReceiptKind::read : ReceiptKind::delivered;
    receipt.timestamp = e.sentAtMs;
    receipt.streamId = serverId;
    receipt.ack = std::move(ack);
    offerOrStore(address, std::move(phone), std::move(receipt));
    return;
  }
  // A read receipt from the phone must find the sender by the number in the
  // id, as after an import: the store learns the sender once.
  std::uint64_t number = MessageIds::senderOf(e.messageId);
  if (e.sender != MessageIds::kSystemName && !knownUsers_.numberOf(e.sender)) {
    store_.write(
        [sender = e.sender, number, at = e.sentAtMs](store::Connection& db) {
          db.prepare("INSERT OR IGNORE INTO users(phone, created_ms, number) VALUES (?, ?, ?)")
              .bind(1, sender)
              .bind(2, at)
              .bind(3, static_cast<std::int64_t>(number))
              .run();
        },
        [this, sender = e.sender, number](std::optional<std::string> error) {
          if (!error) knownUsers_.remember(sender, number);
        });
  }
  OutboundMessage message;
  message.id = e.messageId;
  message.from = std::move(e.sender);
  message.group = e.group.empty() ? 0 : std::stoull(e.group);
  message.clientMsgId = std::move(e.clientMsgId);
  message.body = std::move(e.body);
  message.timestamp = e.sentAtMs;
  message.streamId = serverId;
  message.ack = std::move(ack);
  offerOrStore(address, std::move(phone), std::move(message));
}

}  // namespace switchboard::messaging
