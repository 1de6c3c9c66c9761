#pragma once
// One two-party Cap'n Proto RPC connection's messages over a capnp::MessageStream, for both
// ends: the host's (ServedConnection, server_vat_network.h) and the client library's
// (ClientVatNetwork, client_vat_network.h). Its write queue holds Finish messages back, like
// TCP's delayed ACK, through a FinishFlush.

#include <capnp/rpc-twoparty.h>
#include <capnp/rpc.capnp.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>
#include <kj/timer.h>
#include <kj/vector.h>

#include <cstdint>
#include <vector>

namespace switchboard::net {

class FinishFlush;

// The kind of an rpc::Message whose root is a struct pointer within `segment`, its first (what
// capnp's builder writes), read from the words: capnp's reader or builder spends ~100
// instructions on the same (its arena, the pointer's checks, the traversal count). Null for
// anything else (a far pointer, a pointer out of the segment): capnp's reader then reads it,
// or refuses it with its own words.
kj::Maybe<capnp::rpc::Message::Which> plainMessageKind(kj::ArrayPtr<const capnp::word> segment);

// What a capnp::MessageStream may offer a TwoPartyConnection besides its promises: reading and
// writing at once, where that needs no waiting (LimitedMessageStream over an ImmediateIoStream
// does, on the host's connections and on a client's).
// Each message then costs no read or write promise, no task and no KJ turn of its own.
class ImmediateMessageStream {
 public:
  // A whole message already read (or readable now without waiting) taken at once: a ready
  // promise of it, or of the failure tryReadMessage() would have given it (a message over the
  // limits). Null when no whole message is there now: then whenNothingToRead(), else
  // tryReadMessage().
  virtual kj::Maybe<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>>
  takeWholeMessage() = 0;
  // Nothing read ahead and nothing to read now: the next message, taken as takeWholeMessage()
  // takes it, right at the socket's next readability edge (no KJ turn between the two); when it
  // is not whole then, `connection.receiveIncomingMessage()` gives it. Null otherwise (part of
  // a message is in, or the stream ended or failed: tryReadMessage() says which).
  virtual kj::Maybe<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>>
  nextMessageWhenReadable(capnp::_::VatNetworkBase::Connection& connection) = 0;
  // Writes `messages` at once (copied before it returns, counted as writeMessages() counts
  // them) and returns true; or takes nothing and returns false, and writeMessages() is the way.
  virtual bool writeMessagesNow(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) = 0;

 protected:
  ~ImmediateMessageStream() = default;
};

// What capnp::TwoPartyVatNetwork 0.9.2 is to its RpcSystem as a Connection, with the same
// bytes on the wire, but for the peer's VatId (the subclass says who the peer is) and for how
// its messages are written.
//
// Reading: one message at a time from `messages`, as the RPC system asks; the end of the
// stream ends the connection. When `messages` is also an ImmediateMessageStream, a message it
// has whole is taken at once, and an idle connection waits for readability alone.
// Writing: a message sent while a write is in flight waits in a queue, and the queue goes out
// in one writeMessages() once that write completes, so the stream never sees overlapping
// writes (a TLS stream must not) and nothing is held once the queue is empty. Order is kept:
// messages go out in the order the RPC system sent them. When `messages` is an
// ImmediateMessageStream that takes them at once, the queue goes out as it is made, with no
// write in flight (nothing to wait for).
// Held Finishes: once holdFinishesIn(flush) was called, a Finish ("done with the answer to my
// call") is not urgent: it waits in the queue for the connection's next message, which takes
// it along in the same write, or for `flush` (within its delay). So a call answered costs its
// caller one write (the Call) instead of two (Call, then Finish). A queue that holds only
// Finishes when a write completes waits the same way. Capnp reuses a question id once it has
// sent that question's Finish; the held Finish still goes out before any later message, so the
// peer always sees the Finish before the id's reuse.
// A failed write shuts the reading side of `transport` (abortRead), so the RPC system's
// pending read ends and the connection with it (TwoPartyVatNetwork cancels the read for the
// same reason); later messages are dropped.
// Shutting down: shutdown() (the RPC system's, after its Abort) writes what is queued, held
// Finishes included, and then ends the sending side (messages.end()); later messages are
// dropped. stopWriting() (the socket was cut) drops what is queued, lets a shutdown() that
// waits on the queue go on and makes a later one skip it.
//
// Created, used and destroyed on one KJ loop's thread; `messages` and `transport` must outlive
// it. Destroying it (or its FinishFlush) with Finishes held drops them: nothing leaks, and the
// peer learns of it when the connection closes.
class TwoPartyConnection : public capnp::TwoPartyVatNetworkBase::Connection,
                           private capnp::RpcFlowController::WindowGetter,
                           private kj::TaskSet::ErrorHandler {
 public:
  TwoPartyConnection(capnp::MessageStream& messages, kj::AsyncIoStream& transport);
  ~TwoPartyConnection() noexcept(false);
  TwoPartyConnection(const TwoPartyConnection&) = delete;
  TwoPartyConnection& operator=(const TwoPartyConnection&) = delete;

  // From now on a Finish waits for the next message or for `flush`. `flush` must outlive the
  // RPC system's sending on this connection (the RPC system goes before its network); if it is
  // destroyed first, the Finishes held at that moment stay queued (see FinishFlush).
  void holdFinishesIn(FinishFlush& flush);

  // TwoPartyVatNetworkBase::Connection (getPeerVatId is the subclass's).
  kj::Own<capnp::RpcFlowController> newStream() override;
  kj::Own<capnp::OutgoingRpcMessage> newOutgoingMessage(capnp::uint firstSegmentWordSize) override;
  kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>> receiveIncomingMessage() override;
  kj::Promise<void> shutdown() override;

 protected:
  // The VatId of the vat on `side`, for getPeerVatId(): built once per process, only ever read.
  static capnp::rpc::twoparty::VatId::Reader vatIdOf(capnp::rpc::twoparty::Side side);
  // Nothing more goes out (the socket is gone both ways).
  void stopWriting();
  capnp::MessageStream& messages() { return messages_; }

 private:
  friend class FinishFlush;
  class OutgoingMessage;
  class IncomingMessage;

  // RpcFlowController::WindowGetter: the socket's send buffer, as TwoPartyVatNetwork does.
  size_t getWindow() override;
  // kj::TaskSet::ErrorHandler, for the writes.
  void taskFailed(kj::Exception&& exception) override;

  void send(kj::Own<OutgoingMessage> message);
  // After a write, or when a message is queued while idle: out now, held, or nothing to do.
  void writeOrHold();
  void writeQueued();
  void queueWritten();
  // The flush came: what is queued goes out now (after the write in flight, if any).
  void flushHeld();

  capnp::MessageStream& messages_;
  ImmediateMessageStream* const immediate_;  // `messages_`, when it is one; else null
  kj::AsyncIoStream& transport_;
  FinishFlush* flush_ = nullptr;  // set: Finishes are held
  bool writing_ = false;          // a writeMessages() is in flight
  bool urgent_ = false;           // the queue holds more than Finishes (or a flush came)
  // FinishFlush's generations (0: none): when the Finishes now queued began to wait (reset
  // when a write takes them), and when the connection was last put in flush_'s list.
  std::uint64_t heldIn_ = 0;
  std::uint64_t listedIn_ = 0;
  bool writeFailed_ = false;   // later messages are dropped
  bool shuttingDown_ = false;  // nothing more is queued
  bool stopped_ = false;
  kj::Vector<kj::Own<OutgoingMessage>> outbox_;             // waiting to be written
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> written_;  // shutdown() waits for the queue
  kj::TaskSet writes_{*this};
};

// The delayed flush of held Finishes for a set of connections (a network thread's, or one
// client connection's): one timer for all of them, ticking every `delay`/2 while any holds a
// Finish. A tick writes the queues whose Finishes began to wait before the previous tick and
// were not taken by a later message since, so a Finish goes out alone only after it waited at
// least delay/2 and at most `delay`: a connection with a message every 50 ms or more often
// never writes a Finish alone (with a single deadline per batch, a Finish held just before it
// would go alone at once). The lists are one entry per connection and hold; a connection's
// entry whose Finishes were taken is skipped.
//
// Created, used and destroyed on the loop thread `timer` belongs to. May be destroyed before
// its connections: they then stop holding (a later Finish goes out as any message), and the
// Finishes held at that moment stay queued for the next message or shutdown().
class FinishFlush final : private kj::TaskSet::ErrorHandler {
 public:
  // The longest a Finish waits for its connection's next message.
  static constexpr kj::Duration kDelay = 100 * kj::MILLISECONDS;

  explicit FinishFlush(kj::Timer& timer, kj::Duration delay = kDelay)
      : timer_(timer), tick_(delay / 2) {}
  ~FinishFlush() noexcept(false);
  FinishFlush(const FinishFlush&) = delete;
  FinishFlush& operator=(const FinishFlush&) = delete;

 private:
  friend class TwoPartyConnection;

  void hold(TwoPartyConnection& connection);
  // Takes `connection` out of the lists (it is being destroyed).
  void forget(TwoPartyConnection& connection);
  void tick();
  void taskFailed(kj::Exception&& exception) override;

  kj::Timer& timer_;
  const kj::Duration tick_;
  std::uint64_t generation_ = 1;               // ticks so far, plus 1
  std::vector<TwoPartyConnection*> current_;   // listed in this generation
  std::vector<TwoPartyConnection*> previous_;  // listed in the one before: due at the next tick
  bool armed_ = false;
  kj::TaskSet flushes_{*this};
};

}  // namespace switchboard::net
