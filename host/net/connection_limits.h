#pragma once
// What one RPC connection may cost its end (the server's, or a client's), and the stream that
// enforces it.

#include "net/immediate_io_stream.h"
#include "net/two_party_connection.h"

#include <capnp/serialize-async.h>
#include <kj/async-io.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace switchboard::net {

// Limits an RpcListener applies to every connection it serves. The defaults are the phone
// port's: far above what a well-behaved client does (a message carries at most a 64 KiB body,
// a phone has a handful of calls in flight), far below what would hurt the host.
struct ConnectionLimits {
  // Largest incoming message (segment table excluded), and the words a message may be
  // traversed for: a peer announcing a bigger one (say a 4 GiB segment) is disconnected
  // before anything is allocated for it.
  size_t maxMessageBytes = 1024 * 1024;
  // Deepest pointer nesting read in an incoming message.
  int nestingLimit = 16;
  // Calls (and bootstraps) the peer made that the server has not yet answered, replies
  // waiting to be written counted as unanswered. One more disconnects: this is what a peer
  // that pipelines calls without reading the replies runs into.
  size_t maxCallsInFlight = 4096;
  // Words of unanswered calls past which the server stops reading from the peer until some
  // are answered (capnp's RpcSystem::setFlowLimit): back-pressure, not a disconnect.
  size_t callFlowLimitBytes = 8 * 1024 * 1024;
  // A connection whose login was not reported (RpcListener::markLoggedIn) within this time
  // is closed. Zero: no deadline (the admin socket).
  std::chrono::milliseconds loginDeadline{0};
  // Connections one peer address (IP, any port) may hold open; more are refused at accept.
  // Zero: no bound. Unix sockets are never bounded.
  size_t maxConnectionsPerPeer = 0;
  // True: a connection holds its bootstrap capability (and so the server object behind it)
  // for its whole life. False: only until the peer's first Bootstrap hands it to the RPC
  // system, which keeps it while the peer holds it; a later Bootstrap gets a new one from the
  // listener's factory. The phone port: a phone releases its Gateway in its login's first
  // write, so an idle session keeps no Gateway.
  bool holdBootstrap = true;
};

// What a client connection (ClientVatNetwork: the client library, the Python module, sbctl,
// sbbench's full phones) accepts from its server. Of the fields above a client applies the
// stream's (message size, nesting, calls in flight) and the flow limit; the listener's
// (login deadline, connections per peer, the bootstrap) are not a client's.
// - maxMessageBytes 64 MiB and nestingLimit 64: capnp's own ReaderOptions defaults, what the
//   client read with before it had a LimitedMessageStream, so no reply that worked is refused.
//   The host's largest message to a phone is an Inbox.deliver of maxDeliverBatch (64) bodies of
//   maxBodyBytes (64 KiB), about 4.2 MiB; an admin reply (sbctl, Python) lists what it was
//   asked for and may be larger. A message announced larger fails the connection before
//   anything is allocated for it; one within the limit costs its size once its segment table
//   is in (its words are allocated then), until it is read or the connection ends.
// - maxCallsInFlight 4096: the server's calls (Inbox.deliver, receipts, presence, kicked) not
//   yet answered. The host keeps at most SessionLimits::deliverWindow (4) per feed in flight.
// - callFlowLimitBytes 64 MiB: past this many words of unanswered calls the client stops
//   reading until some are answered (capnp's RpcSystem::setFlowLimit), so a server that
//   pushes calls faster than the client answers them makes it hold at most this plus one
//   message. A host's deliveries stay far below it (4 in flight per feed of 4.2 MiB at most).
// A violation fails the connection: calls in flight and capabilities fail with DISCONNECTED
// and the violation's reason ("unreadable message: Message is too large (N bytes; the limit
// is 67108864)", "more than 4096 calls in flight (replies not read?)"), and onDisconnect()
// resolves.
inline constexpr ConnectionLimits kClientConnectionLimits{
    .maxMessageBytes = 64 * 1024 * 1024,
    .nestingLimit = 64,
    .maxCallsInFlight = 4096,
    .callFlowLimitBytes = 64 * 1024 * 1024,
};

// A capnp::MessageStream over a kj::AsyncIoStream that reads with the limits' ReaderOptions
// and counts the peer's calls in flight: +1 for each incoming Call or Bootstrap, -1 for each
// Return handed to the stream for writing. Both ends use it: the host's connections
// (RpcListener, with the listener's limits) and a client's (ClientVatNetwork, with
// kClientConnectionLimits). Used and destroyed on the stream's thread.
// It reads capnp's framing itself: an idle connection's pending read holds the 8 bytes of the
// next message's first word and no MessageReader until a whole message is in. A message of one
// segment (nearly every RPC message) is read into one allocation, its reader and its words.
//
// Over an ImmediateIoStream (immediate_io_stream.h: an AsioStream over plain TCP or Unix, not
// TLS; sbbench's StampedStream) it also reads what the socket already has and takes what the
// stream has read ahead at once (readAheadNow, takeBuffered), without a read promise per
// part, so a message that is there when asked for (the Bootstrap, login and Finish a phone
// pipelines in one write) is read with no promise but the one returned; and it writes a batch
// of messages with its segment tables and pieces on the stack (the stream copies them before
// write() returns) instead of capnp's two allocations per batch. For its TwoPartyConnection it
// is an ImmediateMessageStream: a whole message of one segment that is there is taken with no
// promise at all (as one allocation: the IncomingRpcMessage, its reader and its words), an
// idle connection waits for the socket's readability alone, and a batch the stream can take
// without waiting (below its high-water mark) is written with no promise.
//
// A violation (a message too large or too deep to read, a malformed segment table, one call
// too many in flight) fails the read with a FAILED kj::Exception carrying the reason and
// calls `onViolation(reason)` once, so the owner can log it and drop the connection. A peer
// that simply goes away is not a violation.
class LimitedMessageStream final : public capnp::MessageStream, public ImmediateMessageStream {
 public:
  using ViolationHandler = std::function<void(const std::string& reason)>;

  LimitedMessageStream(kj::AsyncIoStream& stream, const ConnectionLimits& limits,
                       ViolationHandler onViolation);

  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> tryReadMessage(
      kj::ArrayPtr<kj::AutoCloseFd> fdSpace, capnp::ReaderOptions options,
      kj::ArrayPtr<capnp::word> scratchSpace) override;
  kj::Promise<void> writeMessage(
      kj::ArrayPtr<const int> fds,
      kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments) override;
  kj::Promise<void> writeMessages(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override;
  kj::Maybe<int> getSendBufferSize() override { return inner_.getSendBufferSize(); }
  kj::Promise<void> end() override { return inner_.end(); }

  // ImmediateMessageStream: only over an ImmediateIoStream (null / false otherwise).
  kj::Maybe<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>> takeWholeMessage() override;
  kj::Maybe<kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>>> nextMessageWhenReadable(
      capnp::_::VatNetworkBase::Connection& connection) override;
  // Nothing read ahead and nothing to read now: resolves once there may be (what
  // nextMessageWhenReadable() waits for). Null otherwise.
  kj::Maybe<kj::Promise<void>> whenNothingToRead();
  bool writeMessagesNow(
      kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages) override;

  size_t callsInFlight() const { return callsInFlight_; }

 private:
  // capnp's own bound on the segments of one message (serialize.c++).
  static constexpr uint32_t kMaxSegments = 512;

  friend class NextMessage;
  // takeWholeMessage()'s work: a whole message (`message` set), its failure (`failure` set), or
  // nothing taken (neither).
  void takeWhole(kj::Own<capnp::IncomingRpcMessage>& message, kj::Maybe<kj::Exception>& failure);
  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> readAfterFirstWord();
  // The one segment of `words` words, into one allocation with its reader.
  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> readOneSegment(uint32_t words);
  // Reads segments of these sizes (in words) into one array; `sizes` is copied at once.
  kj::Promise<kj::Maybe<capnp::MessageReaderAndFds>> readSegments(
      kj::ArrayPtr<const uint32_t> sizes);
  // A whole message is in: counted, and handed out.
  kj::Maybe<capnp::MessageReaderAndFds> received(kj::Own<capnp::MessageReader> message);
  kj::Exception tooLarge(uint64_t words);
  kj::Exception unreadable(kj::Exception&& exception);
  void countIncoming(capnp::MessageReader& reader);
  // countIncoming's check, with the violation returned instead of thrown.
  kj::Maybe<kj::Exception> checkIncoming(capnp::MessageReader& reader);
  // writeMessages() over the ImmediateIoStream: `write` gets the batch framed on the stack; false
  // when it does not fit there (or holds an empty message), with `write` not called.
  template <typename Write>
  bool framedOnStack(kj::ArrayPtr<kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>>> messages,
                     Write&& write);
  void countOutgoing(kj::ArrayPtr<const kj::ArrayPtr<const capnp::word>> segments);
  kj::Exception violation(std::string reason);

  kj::AsyncIoStream& stream_;
  ImmediateIoStream* const direct_;    // `stream_` when it is an ImmediateIoStream, else null
  capnp::AsyncIoMessageStream inner_;  // writes, when the fast path does not apply
  // The first word of the message being read: its segment count and first segment's size.
  capnp::_::WireValue<uint32_t> firstWord_[2];
  capnp::ReaderOptions readerOptions_;
  size_t maxCallsInFlight_;
  ViolationHandler onViolation_;
  size_t callsInFlight_ = 0;
  bool violated_ = false;
};

}  // namespace switchboard::net
