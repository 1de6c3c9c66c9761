// Writing what waits: messages and receipts that cannot be handed over in
// memory go to the store's `queue` and `receipts_queue` (group commit), and
// their acks settle once the rows are durable.
//
// Writes of queued items join (Store::joinLast): the items of every
// storeMessages call made while an earlier write of messages still waits last
// in the store's queue are written by that write. A burst of sends to phones
// that are away therefore costs one savepoint per write and one count update
// per recipient, not one of each per message; and since only the queue's last
// write is joined, every item commits where a write of its own would have.
// One item failing still fails it alone (store::writeEachAlone).

#include <spdlog/spdlog.h>

#include <span>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "messaging/messaging_service.h"
#include "notify/push_sink.h"
#include "plugin/plugin_manager.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::messaging {

using plugin::OfflinePlugin;
using session::OutboundMessage;
using session::OutboundReceipt;

namespace {

// A write takes at most this many items from joining calls (a call with more
// gets a write of its own): enough to share the per-write work, small enough
// that the rare retry of every item alone stays short.
constexpr std::size_t kMaxJoinedItems = 1024;

}  // namespace

// The items of one store write: those of the call that queued it and of every
// call that joined it, each call's items with its origin, in call order.
template <class Item>
struct MessagingService::QueueWrite {
  struct Part {
    std::vector<Addressed<Item>> items;
    WriteOrigin origin;
  };
  // A push the offline plugin asked for when a message was queued; sent only
  // if that message's row commits.
  struct Push {
    std::size_t item = 0;  // index in items()
    std::string phone;
    std::string text;
    std::uint64_t queued = 0;
  };

  std::vector<Part> parts;
  std::size_t count = 0;  // items in all parts
  // Filled on the writer thread by the write: each item's own failure, if it
  // failed alone, and the pushes asked for.
  std::vector<std::optional<std::string>> failures;
  std::vector<Push> pushes;

  // An item and the session holding its row (0: none), in a flat list.
  struct Row {
    Addressed<Item>* entry;
    std::uint64_t holder;
  };
  // Every item, in order; pointers into `parts`.
  std::vector<Row> rows() {
    std::vector<Row> all;
    all.reserve(count);
    for (Part& part : parts) {
      for (Addressed<Item>& entry : part.items) all.push_back({&entry, part.origin.holder});
    }
    return all;
  }
};

namespace {

// Binds a row's holder: the session holding it, or NULL.
void bindHolder(store::Statement& statement, int index, std::uint64_t holder) {
  if (holder == 0) {
    statement.bindNull(index);
  } else {
    statement.bind(index, static_cast<std::int64_t>(holder));
  }
}

}  // namespace

// ---------------------------------------------------------------- queueing

void MessagingService::storeMessages(std::vector<AddressedMessage> items, WriteOrigin origin) {
  if (items.empty()) return;
  counters_.messagesStored += items.size();
  queueForWrite(std::move(items), std::move(origin));
}

void MessagingService::storeReceipts(std::vector<AddressedReceipt> items, WriteOrigin origin) {
  if (items.empty()) return;
  queueForWrite(std::move(items), std::move(origin));
}

template <class Item>
void MessagingService::queueForWrite(std::vector<Addressed<Item>> items, WriteOrigin origin) {
  std::size_t count = items.size();
  bool joined = store_.joinLast<QueueWrite<Item>>([&](QueueWrite<Item>& write) {
    if (write.count + count > kMaxJoinedItems) return false;
    write.count += count;
    write.parts.push_back({std::move(items), std::move(origin)});
    return true;
  });
  if (joined) return;
  auto write = std::make_shared<QueueWrite<Item>>();
  write->count = count;
  write->parts.push_back({std::move(items), std::move(origin)});
  store_.writeJoinable(
      write, [this, write](store::Connection& db) { writeRows(db, *write); },
      [this, write](std::optional<std::string> error) { written(*write, error); });
}

// ---------------------------------------------------------------- the rows

void MessagingService::writeRows(store::Connection& db, QueueWrite<OutboundMessage>& write) {
  auto rows = write.rows();
  std::int64_t now = nowMs();
  std::int64_t fallbackExpiry = now + options_.fallbackExpirySeconds * 1000;

  // Rows [first, last): each recipient's count moves once for all its rows,
  // and the offline plugin is told each row's place in its recipient's queue.
  // The plugin is asked once per message (its expiry is set then): a second
  // run of a message asks nothing again.
  auto insert = [&](std::size_t first, std::size_t last) {
    struct Count {
      std::uint64_t added = 0;
      std::uint64_t before = 0;  // rows that waited before these
      std::uint64_t placed = 0;  // of `added`, rows inserted so far
    };
    std::unordered_map<std::string_view, Count> counts;
    for (std::size_t i = first; i < last; ++i) ++counts[rows[i].entry->recipient].added;
    auto count =
        db.prepare("UPDATE users SET queued = queued + ? WHERE phone = ? RETURNING queued");
    for (auto& [phone, c] : counts) {
      count.reset();
      count.bind(1, static_cast<std::int64_t>(c.added)).bind(2, phone);
      if (count.step()) c.before = static_cast<std::uint64_t>(count.columnInt(0)) - c.added;
      while (count.step()) {
      }
    }

    auto insertRow = db.prepare(
        "INSERT INTO queue(recipient, id, sender, group_id, client_msg_id, body, sent_ms, "
        "expires_ms, holder) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)");
    auto dedup = db.prepare(
        "INSERT OR IGNORE INTO dedup(sender, client_msg_id, server_id, sent_ms) "
        "VALUES (?, ?, ?, ?)");
    for (std::size_t i = first; i < last; ++i) {
      AddressedMessage& entry = *rows[i].entry;
      OutboundMessage& m = entry.item;
      Count& c = counts[entry.recipient];
      std::uint64_t queued = c.before + ++c.placed;
      if (m.expiresAt == 0) {
        OfflinePlugin::QueuePolicy policy;
        policy.expiresAtMs = fallbackExpiry;
        auto asked = plugins_.call<OfflinePlugin>([&](OfflinePlugin& offline) {
          return offline.onQueued(entry.recipient, m.from, queued);
        });
        if (asked.ok()) policy = std::move(*asked.value);
        if (policy.expiresAtMs <= now) policy.expiresAtMs = fallbackExpiry;
        m.expiresAt = policy.expiresAtMs;
        if (policy.push) write.pushes.push_back({i, entry.recipient, policy.pushText, queued});
      }
      insertRow.reset();
      insertRow.bind(1, entry.recipient)
          .bind(2, static_cast<std::int64_t>(m.id))
          .bind(3, m.from)
          .bind(4, static_cast<std::int64_t>(m.group))
          .bind(5, m.clientMsgId)
          .bindBlob(6, m.body)
          .bind(7, m.timestamp)
          .bind(8, m.expiresAt);
      bindHolder(insertRow, 9, rows[i].holder);
      insertRow.run();
      if (m.durability.spilledRow) *m.durability.spilledRow = db.lastInsertRowid();
      if (m.from != MessageIds::kSystemName) {
        dedup.reset();
        dedup.bind(1, m.from)
            .bind(2, m.clientMsgId)
            .bind(3, static_cast<std::int64_t>(m.id))
            .bind(4, m.timestamp)
            .run();
      }
    }
  };
  write.failures = store::writeEachAlone(db, rows.size(), insert);
}

void MessagingService::writeRows(store::Connection& db, QueueWrite<OutboundReceipt>& write) {
  auto rows = write.rows();
  auto insert = [&](std::size_t first, std::size_t last) {
    auto insertRow = db.prepare(
        "INSERT INTO receipts_queue(recipient, server_id, reader, kind, at_ms, holder) "
        "VALUES (?, ?, ?, ?, ?, ?)");
    for (std::size_t i = first; i < last; ++i) {
      AddressedReceipt& entry = *rows[i].entry;
      OutboundReceipt& r = entry.item;
      insertRow.reset();
      insertRow.bind(1, entry.recipient)
          .bind(2, static_cast<std::int64_t>(r.messageId))
          .bind(3, r.by)
          .bind(4, static_cast<std::int64_t>(r.kind))
          .bind(5, r.timestamp);
      bindHolder(insertRow, 6, rows[i].holder);
      insertRow.run();
      if (r.durability.spilledRow) *r.durability.spilledRow = db.lastInsertRowid();
    }
  };
  write.failures = store::writeEachAlone(db, rows.size(), insert);
}

// ---------------------------------------------------------------- after the commit

template <class Item>
void MessagingService::written(QueueWrite<Item>& write, const std::optional<std::string>& error) {
  constexpr bool kMessages = std::is_same_v<Item, OutboundMessage>;
  constexpr const char* kWhat = kMessages ? "the message" : "the receipt";
  if (error) {
    spdlog::error("storing {} {} failed: {}", write.count, kMessages ? "messages" : "receipts",
                  *error);
  }
  // Each item's outcome: the write's error, else its own failure.
  std::vector<std::optional<std::string>> outcomes(write.count, error);
  for (std::size_t i = 0; !error && i < write.failures.size() && i < write.count; ++i) {
    outcomes[i] = write.failures[i];
    if (outcomes[i]) spdlog::error("storing {} failed: {}", kWhat, *outcomes[i]);
  }

  // What the rows mean in memory, before any ack: a re-send after one must
  // find the first id; a row that did not commit is not there to delete.
  std::size_t i = 0;
  for (auto& part : write.parts) {
    for (Addressed<Item>& entry : part.items) {
      const Item& item = entry.item;
      if (outcomes[i] && item.durability.spilledRow) *item.durability.spilledRow = 0;
      if constexpr (kMessages) {
        if (!outcomes[i] && item.from != MessageIds::kSystemName) {
          dedup_.rememberStored(item.from, item.clientMsgId, SentMessage{item.id, item.timestamp});
        }
      }
      ++i;
    }
  }

  // Sessions first, acks second: a sender's next item, posted after its ack,
  // must find the recipient's session already paging. Parts no session wrote
  // tell each recipient once.
  // (Rows a session keeps are its own to deliver: nobody is told of them.)
  std::unordered_set<std::string_view> told;
  for (auto& part : write.parts) {
    if (part.origin.kind == session::SpillKind::keep) continue;
    bool spilled = !part.origin.session.expired();
    std::string_view last;
    for (const Addressed<Item>& entry : part.items) {
      if (spilled ? entry.recipient == last : !told.insert(entry.recipient).second) continue;
      last = entry.recipient;
      rowsCommitted(entry.recipient, part.origin);
    }
  }
  i = 0;
  for (auto& part : write.parts) {
    for (Addressed<Item>& entry : part.items) {
      if (auto ack = std::exchange(entry.item.ack, nullptr)) {
        if (outcomes[i]) {
          ack->fail(std::string(kWhat) + " could not be stored: " + *outcomes[i]);
        } else {
          ack->settle();
        }
      }
      ++i;
    }
  }

  if constexpr (kMessages) {
    if (error) return;
    for (auto& push : write.pushes) {
      if (outcomes[push.item] || sessions_.isOnline(push.phone)) continue;
      ++counters_.pushes;
      push_.notify(std::move(push.phone), std::move(push.text), push.queued);
    }
  }
}

}  // namespace switchboard::messaging
