// Writing what waits: messages and receipts that cannot be handed over in
// memory go to the store's `queue` and `receipts_queue` (group commit), and
// their acks settle once the rows are durable (in a cluster with the link up,
// once the stream also holds a copy: StreamCopy); rows the phones have taken
// are deleted.
//
// Writes of rows join (Store::joinLast): the items of every storeMessages,
// storeReceipts and forgetRows call made while an earlier write of rows still
// waits last in the store's queue are written by that write. A burst of sends
// to phones that are away, and the deletes and receipts of a drain, therefore
// cost one savepoint per write and one count update per recipient, not one of
// each per item; and since only the queue's last write is joined, every item
// commits where a write of its own would have. Within a write, rows are
// inserted and deleted a chunk per statement (store/multi_row.h). One item
// failing still fails it alone (store::writeEachAlone).

#include <spdlog/spdlog.h>

#include <span>
#include <string_view>
#include <unordered_map>
#include <unordered_set>

#include "cluster/cluster_node.h"
#include "messaging/messaging_service.h"
#include "messaging/stream_intake.h"
#include "notify/push_sink.h"
#include "plugin/plugin_manager.h"
#include "store/multi_row.h"
#include "store/store.h"
#include "switchboard/plugin_api.h"

namespace switchboard::messaging {

using plugin::OfflinePlugin;
using session::Durability;
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
  // Filled on the writer thread: each item's row (0: not written), which
  // names its copy in the stream (StreamCopy).
  std::vector<std::int64_t> rowids;

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

// Rows the phones have taken, to delete: each call's rows with its phone.
struct MessagingService::ForgetWrite {
  struct Part {
    std::string phone;
    bool messages = true;  // rows of `queue`; else of `receipts_queue`
    std::vector<Durability> rows;
  };
  std::vector<Part> parts;
  std::size_t count = 0;  // rows in all parts
  // Filled on the writer thread by the write: the rows each phone lost.
  std::unordered_map<std::string, std::uint64_t> erased;
};

// One store write of rows: what its calls asked to insert and to delete.
// The inserts run first: a delete may be for a row this same write inserts
// (an item a session wrote, then delivered before the write ran).
struct MessagingService::RowsWrite {
  QueueWrite<OutboundMessage> messages;
  QueueWrite<OutboundReceipt> receipts;
  ForgetWrite forgets;

  std::size_t count() const { return messages.count + receipts.count + forgets.count; }
  template <class Item>
  QueueWrite<Item>& of() {
    if constexpr (std::is_same_v<Item, OutboundMessage>) {
      return messages;
    } else {
      return receipts;
    }
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

// The row of a stored item: the one it was paged from, or the one its
// session's write made (0: that write failed, there is none).
std::int64_t rowOf(const Durability& durability) {
  return durability.spilledRow ? durability.spilledRow->row
                               : static_cast<std::int64_t>(durability.seq);
}

// Inserts a write's rows [first, last) of `rows`: `bindItem(statement, at,
// entry)` binds an item's columns from `at` on; its holder goes last. Each
// item learns its row in `rowids` (indexed as `rows`), and each item a
// session wrote in its spilledRow too.
template <class Row, class BindItem>
void insertQueued(store::Connection& db, std::string_view head, int columns,
                  const std::vector<Row>& rows, std::size_t first, std::size_t last,
                  std::vector<std::int64_t>& rowids, const BindItem& bindItem) {
  rowids.resize(rows.size());
  store::insertRows(
      db, head, columns, last - first,
      [&](store::Statement& insert, int at, std::size_t row) {
        const Row& r = rows[first + row];
        bindItem(insert, at, *r.entry);
        bindHolder(insert, at + columns - 1, r.holder);
      },
      [&](std::size_t row, std::int64_t rowid) {
        rowids[first + row] = rowid;
        const auto& spilled = rows[first + row].entry->item.durability.spilledRow;
        if (spilled) spilled->row = rowid;
      });
}

// A row that failed is not there: a delete later in the same write (or any
// other) must not take its rowid, which another row may have been given.
template <class Write>
void forgetFailedRows(Write& write) {
  std::size_t i = 0;
  for (auto& part : write.parts) {
    for (auto& entry : part.items) {
      const auto& spilled = entry.item.durability.spilledRow;
      if (i < write.failures.size() && write.failures[i] && spilled) spilled->row = 0;
      ++i;
    }
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
  // Counted before the write is queued, so before it commits (stored_rows.h).
  for (std::size_t i = 0; i < count;) {
    std::size_t run = i + 1;
    while (run < count && items[run].recipient == items[i].recipient) ++run;
    storedRows_.adding(items[i].recipient, run - i);
    i = run;
  }
  joinOrWrite(count, [&](RowsWrite& write) {
    QueueWrite<Item>& queued = write.of<Item>();
    queued.count += count;
    queued.parts.push_back({std::move(items), std::move(origin)});
  });
}

void MessagingService::forgetRows(const std::string& phone, const char* table,
                                  std::vector<Durability> rows) {
  if (rows.empty()) return;
  {
    std::lock_guard lock(deletesMutex_);
    ++deletesInFlight_[phone];
  }
  bool messages = std::string_view(table) == "queue";
  std::size_t count = rows.size();
  joinOrWrite(count, [&](RowsWrite& write) {
    write.forgets.count += count;
    write.forgets.parts.push_back({phone, messages, std::move(rows)});
  });
}

void MessagingService::joinOrWrite(std::size_t count, const std::function<void(RowsWrite&)>& add) {
  bool joined = store_.joinLast<RowsWrite>([&](RowsWrite& write) {
    if (write.count() + count > kMaxJoinedItems) return false;
    add(write);
    return true;
  });
  if (joined) return;
  auto write = std::make_shared<RowsWrite>();
  add(*write);
  store_.writeJoinable(
      write, [this, write](store::Connection& db) { writeRows(db, *write); },
      [this, write](std::optional<std::string> error) { written(*write, error); });
}

// ---------------------------------------------------------------- the rows

void MessagingService::writeRows(store::Connection& db, RowsWrite& write) {
  if (write.messages.count > 0) writeRows(db, write.messages);
  if (write.receipts.count > 0) writeRows(db, write.receipts);
  if (write.forgets.count > 0) eraseRows(db, write.forgets);
}

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

    // The plugin first, for every row: its expiry goes into the row.
    for (std::size_t i = first; i < last; ++i) {
      AddressedMessage& entry = *rows[i].entry;
      OutboundMessage& m = entry.item;
      Count& c = counts[entry.recipient];
      std::uint64_t queued = c.before + ++c.placed;
      if (m.expiresAt != 0) continue;
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

    insertQueued(db,
                 "INSERT INTO queue(recipient, id, sender, group_id, client_msg_id, body, sent_ms, "
                 "expires_ms, holder)",
                 9, rows, first, last, write.rowids,
                 [](store::Statement& insert, int at, const AddressedMessage& entry) {
                   const OutboundMessage& m = entry.item;
                   insert.bind(at, entry.recipient)
                       .bind(at + 1, static_cast<std::int64_t>(m.id))
                       .bind(at + 2, m.from)
                       .bind(at + 3, static_cast<std::int64_t>(m.group))
                       .bind(at + 4, m.clientMsgId)
                       .bindBlob(at + 5, m.body)
                       .bind(at + 6, m.timestamp)
                       .bind(at + 7, m.expiresAt);
                 });

    // A dedup row per message a phone sent (not the operator's).
    std::vector<const OutboundMessage*> sent;
    sent.reserve(last - first);
    for (std::size_t i = first; i < last; ++i) {
      const OutboundMessage& m = rows[i].entry->item;
      if (m.from != MessageIds::kSystemName) sent.push_back(&m);
    }
    store::insertRows(db, "INSERT OR IGNORE INTO dedup(sender, client_msg_id, server_id, sent_ms)",
                      4, sent.size(), [&](store::Statement& insert, int at, std::size_t row) {
                        const OutboundMessage& m = *sent[row];
                        insert.bind(at, m.from)
                            .bind(at + 1, m.clientMsgId)
                            .bind(at + 2, static_cast<std::int64_t>(m.id))
                            .bind(at + 3, m.timestamp);
                      });
  };
  write.failures = store::writeEachAlone(db, rows.size(), insert);
  forgetFailedRows(write);
}

void MessagingService::writeRows(store::Connection& db, QueueWrite<OutboundReceipt>& write) {
  auto rows = write.rows();
  auto insert = [&](std::size_t first, std::size_t last) {
    insertQueued(db,
                 "INSERT INTO receipts_queue(recipient, server_id, reader, kind, at_ms, holder)", 6,
                 rows, first, last, write.rowids,
                 [](store::Statement& insert, int at, const AddressedReceipt& entry) {
                   const OutboundReceipt& tick = entry.item;
                   insert.bind(at, entry.recipient)
                       .bind(at + 1, static_cast<std::int64_t>(tick.messageId))
                       .bind(at + 2, tick.by)
                       .bind(at + 3, static_cast<std::int64_t>(tick.kind))
                       .bind(at + 4, tick.timestamp);
                 });
  };
  write.failures = store::writeEachAlone(db, rows.size(), insert);
  forgetFailedRows(write);
}

void MessagingService::eraseRows(store::Connection& db, ForgetWrite& write) {
  // Each phone's rows of `queue` (its count moves once), then its rows of
  // `receipts_queue`: what each phone lost is known exactly (stored_rows.h).
  std::unordered_map<std::string_view, std::vector<std::int64_t>> messages;
  std::unordered_map<std::string_view, std::vector<std::int64_t>> receipts;
  for (const ForgetWrite::Part& part : write.parts) {
    std::vector<std::int64_t>& keys = (part.messages ? messages : receipts)[part.phone];
    for (const Durability& row : part.rows) {
      if (std::int64_t key = rowOf(row); key != 0) keys.push_back(key);
    }
  }
  write.erased.clear();
  for (const auto& [phone, keys] : messages) {
    std::int64_t erased = store::deleteRows(db, "queue", "seq", keys);
    if (erased == 0) continue;
    write.erased[std::string(phone)] += static_cast<std::uint64_t>(erased);
    db.prepare("UPDATE users SET queued = max(queued - ?, 0) WHERE phone = ?")
        .bind(1, erased)
        .bind(2, phone)
        .run();
  }
  for (const auto& [phone, keys] : receipts) {
    std::int64_t erased = store::deleteRows(db, "receipts_queue", "id", keys);
    if (erased > 0) write.erased[std::string(phone)] += static_cast<std::uint64_t>(erased);
  }
}

// ---------------------------------------------------------------- after the commit

void MessagingService::written(RowsWrite& write, const std::optional<std::string>& error) {
  if (write.messages.count > 0) written(write.messages, error);
  if (write.receipts.count > 0) written(write.receipts, error);
  if (write.forgets.count > 0) forgotten(write.forgets, error);
}

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
  // find the first id; a row that did not commit is not there to delete, nor
  // to count (stored_rows.h).
  std::size_t i = 0;
  for (auto& part : write.parts) {
    for (Addressed<Item>& entry : part.items) {
      const Item& item = entry.item;
      if (outcomes[i]) storedRows_.gone(entry.recipient, 1);
      if (outcomes[i] && item.durability.spilledRow) item.durability.spilledRow->row = 0;
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
  // In a cluster, with the link up, a committed item that has no copy in the
  // stream gets one before its ack settles (StreamCopy): the stream, not only
  // this node's disk, holds what was acknowledged. Items that came from the
  // stream have their copy there already (StreamCopies); items kept for the
  // stream are moved there by their export, in order. One a phone took before
  // its row committed (its ack claimed by the delivery) needs none.
  // With the link away, such a row is acknowledged on the commit and owed a
  // copy (StreamCopies::owe): the worker copies it once the link is back,
  // ahead of any later copy (copyOwed). The link is read once per write, so
  // no part of it is copied ahead of another that is owed.
  std::vector<StreamCopy> copies;
  std::vector<StreamCopies::Owed> owed;
  bool connected = copies_ != nullptr && cluster_->link().isConnected();
  i = 0;
  for (auto& part : write.parts) {
    bool own = copies_ != nullptr && !part.origin.keptForStream;
    for (Addressed<Item>& entry : part.items) {
      auto ack = std::exchange(entry.item.ack, nullptr);
      bool mine = ack && entry.item.durability.claimAck();
      bool copy = own && !outcomes[i] && entry.item.streamId == 0 && (mine || !ack) &&
                  i < write.rowids.size() && write.rowids[i] != 0;
      if (copy && !connected) {
        owed.push_back(
            {entry.recipient, kMessages, write.rowids[i], StreamCopies::keyOf(entry.item)});
        copy = false;
      }
      if (copy) {
        copies.push_back({copyOf(entry.recipient, entry.item, write.rowids[i]),
                          mine ? std::move(ack) : nullptr, write.rowids[i]});
      } else if (mine) {
        if (outcomes[i]) {
          ack->fail(std::string(kWhat) + " could not be stored: " + *outcomes[i]);
        } else {
          ack->settle();
        }
      }
      ++i;
    }
  }
  if (!owed.empty()) {
    spdlog::debug("cluster: {} items written here while NATS is away are owed a copy in the stream",
                  owed.size());
    copies_->owe(std::move(owed));
  }
  if (!copies.empty()) copyToStream(std::move(copies));

  if constexpr (kMessages) {
    if (error) return;
    for (auto& push : write.pushes) {
      if (outcomes[push.item] || sessions_.isOnline(push.phone)) continue;
      ++counters_.pushes;
      push_.notify(std::move(push.phone), std::move(push.text), push.queued);
    }
  }
}

void MessagingService::forgotten(ForgetWrite& write, const std::optional<std::string>& error) {
  if (!error) {
    for (const auto& [phone, rows] : write.erased) storedRows_.gone(phone, rows);
    // Rows the phones took are owed no copy (a copy made meanwhile leaves the
    // stream with the sweep, as any other).
    if (copies_ != nullptr && copies_->owing() > 0) {
      for (const ForgetWrite::Part& part : write.parts) {
        std::vector<std::int64_t> rows;
        rows.reserve(part.rows.size());
        for (const Durability& row : part.rows) rows.push_back(rowOf(row));
        copies_->forgive(part.messages, rows);
      }
    }
  }
  std::lock_guard lock(deletesMutex_);
  for (const ForgetWrite::Part& part : write.parts) {
    if (error) spdlog::error("forgetting rows {} has taken failed: {}", part.phone, *error);
    auto it = deletesInFlight_.find(part.phone);
    if (it != deletesInFlight_.end() && --it->second == 0) deletesInFlight_.erase(it);
  }
}

}  // namespace switchboard::messaging
