// Cluster mode, the receiving side: which phones with a session on this node
// take envelopes from the cluster's stream (SB_INBOX) in memory, straight from
// the live notices, and which envelopes are in memory now (docs/cluster.md,
// "Cross-node delivery").
//
// A phone is *importing* or *live*:
// - importing (from its login, and again after the link lost NATS): notices
//   for it are kept here in arrival order and ask for an import (the stream
//   into the store, host/messaging/cluster_import.cpp). Imports put what
//   they read in sending order; what they read leaves this buffer.
// - live: a notice's envelope is offered to the phone's session in memory, as
//   a message from a phone on this node would be. It is removed from the
//   stream once the phone has it or the store does; a session that ends with
//   it leaves it in the stream for the next import, wherever that is.
// A phone goes live when an import that started no earlier than its `liveAt`
// and in the link's current epoch (after its last disconnect, so it read what
// was stored while notices could be lost) has finished, with no other import
// running: the envelopes kept meanwhile and not read by that import are then
// offered first, in arrival order. After a reconnect that needs no wait: the
// other nodes move what they kept for the phone meanwhile into the stream in
// sending order, ahead of anything sent to it later (DeliveryTransport::setHold),
// so taking them from memory in arrival order keeps the order. That is state
// (the epoch, the senders' holds), not a delay. From then on no import runs for it (one
// could read envelopes whose notices are still on their way, and they would
// overtake or repeat what memory delivers).
//
// A notice missing from a node's chain (QueuedEnvelope::prevServerId: the
// envelope that node noticed before for the same recipient, not seen here,
// and not read by an import) was lost: the envelope behind it must not be
// taken from memory ahead of it. A live phone goes back to importing at such
// a notice (Verdict::gap), as a recheck would send it; a phone about to go
// live whose kept notices have such a gap not covered by its import imports
// once more first. So order per (sender, recipient) holds across a lost
// notice when a later one arrives, rather than waiting for the sender's
// recheck, which would bring the lost one after it.
//
// Why `liveAt`: a sender's node names the recipient's node from a location
// cache (kLocationCacheTtl); a login elsewhere cannot be seen there for that
// long, so notices for messages stored meanwhile may go to the old node. An
// import that starts after that window reads them all.
//
// The order of offers and goLive() is the order of the listener thread's
// turns: notice() and goLive() run there only. The rest is thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

#include "cluster/delivery_transport.h"
#include "session/delivery_ack.h"
#include "session/outbound.h"

namespace switchboard::messaging {

class StreamIntake {
 public:
  using Clock = std::chrono::steady_clock;
  // Held by whatever still has to do with a notice batch; the last one
  // answers the batch's sender (its window).
  using BatchToken = std::shared_ptr<void>;

  struct Kept {
    cluster::QueuedEnvelope queued;
    BatchToken token;
    bool gapBefore = false;  // its chain's previous notice had not come when it came
  };

  enum class Verdict {
    notHere,  // no session here: it waits in the stream for the phone's next login
    skip,     // imported already, or in memory already
    offer,    // live: offer it in memory (it is counted as in memory now)
    kept,     // importing: kept here, an import is already asked for
    import,   // importing: kept here; ask for an import
    gap,      // was live, but a notice before it from the same node is missing:
              // importing again, kept here; ask for an import
  };

  // A login here, before its import: the phone imports until `liveAt`.
  void loggedIn(const std::string& phone, std::uint64_t sessionId, Clock::time_point liveAt);
  // Its session ended: forget the phone (envelopes it held in memory are
  // still in the stream, unless removed already).
  void ended(const std::string& phone, std::uint64_t sessionId);

  // Listener thread. `epoch` counts the link's disconnects: a phone live in
  // an older one imports again. `node` sent the notice (its chain).
  Verdict notice(const cluster::QueuedEnvelope& queued, const std::string& node,
                 std::uint64_t epoch, const BatchToken& token);
  // Listener thread, after an import that started at `startedAt` in `epoch`:
  // nullopt if the phone does not go live now; else it is live, and these
  // kept envelopes (now counted as in memory) are to be offered first. A
  // kept one whose chain has a gap the import did not read keeps the phone
  // importing: `due` asks for another import at once.
  std::optional<std::vector<Kept>> goLive(const std::string& phone, Clock::time_point startedAt,
                                          std::uint64_t epoch, std::uint64_t epochNow);

  // Around an import (worker). beginImport is false when the phone is live in
  // `epochNow` (then nothing is imported); endImport records what was read.
  // While an import runs that may make the phone live (it started at or after
  // liveAt), notices are kept without asking for another: the phone goes live
  // after it and takes them from memory. (Asking again each time would start
  // a new import before goLive could run, and under a steady flood the phone
  // would import for as long as the flood lasts.)
  bool beginImport(const std::string& phone, std::uint64_t epochNow, Clock::time_point startedAt);
  void endImport(const std::string& phone, std::optional<std::uint64_t> readUpTo);
  // Where an import of the phone starts reading (what earlier ones read).
  std::uint64_t readUpTo(const std::string& phone);
  // An import skips envelopes in memory.
  bool inMemory(const std::string& phone, std::uint64_t serverId);
  // Whether any envelope of the phone is in memory now (an import whose
  // phone holds none may remove what it read with one purge).
  bool holdsAny(const std::string& phone);
  // The envelope left memory: removed from the stream, or let go.
  void settled(const std::string& phone, std::uint64_t serverId);
  // A sender got no answer for notices of these envelopes of the phone (a
  // recheck). Those this node cannot account for: neither in memory, nor kept
  // (its notice came while the phone imports: the batch waits for that
  // import, which may take longer than the sender waits), nor read by an
  // import. Empty when the phone has no session here (its next login imports
  // what waits). One not accounted for was either taken and removed already
  // (its batch's answer was late, not lost: a batch is answered once every
  // envelope in it is, and another phone's may have been kept) or its notice
  // is lost; only the stream tells the two apart (the caller asks it).
  std::vector<std::uint64_t> unaccounted(const std::string& phone,
                                         const std::vector<std::uint64_t>& serverIds);
  // The phones live here now (in `epochNow`), each with where its imports
  // stopped: what a check of the stream for lost notices starts from.
  std::vector<std::pair<std::string, std::uint64_t>> liveNow(std::uint64_t epochNow);
  // Listener thread, with envelopes of the phone a recheck named that are
  // still in the stream: if one of them is still not accounted for, its
  // notice may be lost. The phone then imports again (live or not) and goes
  // live only after an import that starts from now, which reads the stream
  // from where its imports stopped; true when an import is to be asked now
  // (the caller imports it).
  bool recheck(const std::string& phone, const std::vector<std::uint64_t>& stillStored,
               std::uint64_t epochNow);
  // Importing phones that nothing asked to import and whose liveAt passed:
  // each is now asked for (the caller imports them).
  std::vector<std::string> due(Clock::time_point now, std::uint64_t epochNow);

  // Envelopes kept per importing phone before they are dropped (an import
  // started later reads them from the stream).
  static constexpr std::size_t kMaxKept = 20000;

 private:
  struct Phone {
    std::uint64_t sessionId = 0;
    Clock::time_point liveAt{};
    std::optional<std::uint64_t> liveEpoch;  // set: live in that epoch
    std::uint64_t readUpTo = 0;              // imports read every envelope up to here
    bool importing = false;                  // an import is running
    bool importMayGoLive = false;            // ... one that started at or after liveAt
    bool importAsked = false;                // an import is asked for and not begun
    std::unordered_set<std::uint64_t> held;  // in memory (offered, not yet removed)
    std::deque<Kept> kept;
    // Node -> the last server id noticed from it (its chain, in order).
    std::unordered_map<std::string, std::uint64_t> lastFrom;
  };

  static void forgetStaleLive(Phone& p, std::uint64_t epochNow);
  static std::vector<std::uint64_t> unaccountedIn(const Phone& p,
                                                  const std::vector<std::uint64_t>& serverIds);

  std::mutex mutex_;
  std::unordered_map<std::string, Phone> phones_;
};

// Cluster mode: an item this node made durable in its store that has no copy
// in the stream (sent on this node to a phone on this node, or a tick for a
// sender here, written by a spill or for a session that had ended): copied
// into the stream once its row committed, while the link is up
// (MessagingService::copyToStream), so a node killed for good strands none of
// it. The envelope is the one its row's export would publish (exactlyOnceKey
// x/<row>/<id> or xr/<row>/<receiptOf>): an export of the row, before or after,
// is the same envelope in the stream. Its ack, when it waits for the copy,
// settles once the stream has it, or once the publish failed (the row is
// durable here, as while NATS is away).
struct StreamCopy {
  cluster::Envelope envelope;
  std::shared_ptr<session::DeliveryAck> ack;  // null: nothing waits for it
  std::int64_t row = 0;                       // its row (queue.seq or receipts_queue.id)
};

// Envelopes this node took from the stream into its store (an import, or a
// session writing down what it held in memory), or published as the copy of
// a row it wrote (StreamCopy), whose row is their only other copy. They stay
// in the stream until that row is gone (the phone took it), then are
// removed: a node killed for good strands nothing it took, as the phone's
// next login elsewhere imports them (docs/cluster.md, "What happens on each
// failure"). A row moved back into the stream (a handover, a sweep) is not
// published again: its copy is there already, in its place. Kept in memory:
// a restarted node forgets them, and the phone's next import reads their
// copies again (skipped when the row is still there; a row taken meanwhile
// arrives twice with one id, and the client library drops the repeat).
//
// It also keeps the rows *owed* a copy: items of this node's own (those a
// StreamCopy is for) whose row committed while the link was away, or whose
// copy's publish failed. Once the link is back the worker copies those still
// in the store (MessagingService::copyOwed), under the same key, and records
// the copies here; a row the phone took (forgive) is owed nothing. In memory
// too: a node restarted on its data directory owes nothing (its catch-up
// moves rows for phones not on it into the stream; rows for phones that log
// in on it again before that stay its only copy).
// Thread-safe.
class StreamCopies {
 public:
  // A row owed a copy.
  struct Owed {
    std::string phone;
    bool message = true;  // a row of `queue` (its seq); else of `receipts_queue` (its id)
    std::int64_t row = 0;
    std::string key;  // what the row holds (messageKey, receiptKey)
  };

  // What names a row: a message by its id, a receipt by what it is about.
  static std::string messageKey(std::uint64_t messageId);
  static std::string receiptKey(std::uint64_t receiptOf, int kind, const std::string& reader);
  // The same for an item held in memory (the row it becomes).
  static std::string keyOf(const session::OutboundMessage& message);
  static std::string keyOf(const session::OutboundReceipt& receipt);

  void add(const std::string& phone, const std::string& key, std::uint64_t serverId);
  // Whether the envelope is one of the phone's copies.
  bool holds(const std::string& phone, std::uint64_t serverId);
  std::vector<std::string> phones();
  // The phone's copies whose row is not among `stored` (taken): forgotten
  // here and returned, to be removed from the stream.
  std::vector<std::uint64_t> taken(const std::string& phone,
                                   const std::unordered_set<std::string>& stored);
  // The copies of the row `key` (one, unless it was imported twice), which
  // is being moved into the stream: forgotten here.
  std::vector<std::uint64_t> take(const std::string& phone, const std::string& key);
  // Whether the row `key` of the phone has a copy recorded here.
  bool has(const std::string& phone, const std::string& key);

  // Rows owed a copy, in the order they committed.
  void owe(std::vector<Owed> rows);
  // Rows gone from the store (the phone took them): owed nothing.
  void forgive(bool message, const std::vector<std::int64_t>& rows);
  // The first `limit` rows owed (messages first, each table in row order,
  // which is commit order): still owed until paid.
  std::vector<Owed> owed(std::size_t limit);
  // The row is copied, or gone: owed nothing.
  void paid(const Owed& row);
  // How many rows are owed (no store read: the sweep asks it every time).
  std::size_t owing();

 private:
  struct Copies {
    std::unordered_map<std::string, std::vector<std::uint64_t>> byKey;
    std::unordered_set<std::uint64_t> ids;
  };
  std::mutex mutex_;
  std::unordered_map<std::string, Copies> phones_;
  // Rows owed, by table, by row (AUTOINCREMENT: row order is commit order).
  std::map<std::int64_t, Owed> owedMessages_;
  std::map<std::int64_t, Owed> owedReceipts_;
};

}  // namespace switchboard::messaging
