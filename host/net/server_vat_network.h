#pragma once
// The server end of one Cap'n Proto RPC connection, as the VatNetwork its RpcSystem runs on.

#include <capnp/message.h>
#include <capnp/rpc-twoparty.h>
#include <capnp/serialize-async.h>
#include <kj/async-io.h>
#include <kj/vector.h>

#include <functional>

namespace switchboard::net {

// A capnp VatNetwork holding exactly one connection, the server side of a two-party RPC
// connection: what capnp::TwoPartyVatNetwork(stream, Side::SERVER) is, with the same bytes on
// the wire (the peer is the CLIENT vat; a bootstrap is answered with the RpcSystem's
// bootstrap capability), built for what an idle connection holds. TwoPartyVatNetwork 0.9.2
// keeps, per connection, a kj::Maybe<kj::Exception> for a failed write, a forked disconnect
// promise and its fulfiller, a never-fulfilled second accept(), a canceler node around every
// pending read and the resolved node of the last write: five of them with room for a
// kj::Exception (~400 bytes each). This one keeps none of them.
//
// Reading: one message at a time from `messages` (a LimitedMessageStream on the phone port),
// as the RPC system asks; the end of the stream ends the connection.
// Writing: a message sent while a write is in flight waits in a queue, and the queue goes out
// in one writeMessages() once that write completes, so the stream never sees overlapping writes
// (a TLS stream must not) and nothing is held once the queue is empty. A failed write shuts the
// reading side of `transport` (abortRead), so the RPC system's pending read ends and the
// connection with it (TwoPartyVatNetwork cancels the read for the same reason).
// The end: accept() hands the RPC system the connection once (later calls never resolve);
// when the RPC system lets go of it, after disconnecting and shutting down, `onEnded` runs,
// once. The owner then destroys the RpcSystem and this network, but not from inside onEnded:
// that runs inside the RPC system's own code.
//
// Created, used and destroyed on the connection's loop thread; `messages` and `transport`
// must outlive it.
class ServerVatNetwork final : public capnp::TwoPartyVatNetworkBase,
                               private capnp::TwoPartyVatNetworkBase::Connection,
                               private capnp::RpcFlowController::WindowGetter,
                               private kj::TaskSet::ErrorHandler {
 public:
  ServerVatNetwork(capnp::MessageStream& messages, kj::AsyncIoStream& transport,
                   std::function<void()> onEnded);
  ~ServerVatNetwork() noexcept(false);
  ServerVatNetwork(const ServerVatNetwork&) = delete;
  ServerVatNetwork& operator=(const ServerVatNetwork&) = delete;

  // TwoPartyVatNetworkBase (the VatNetwork).
  kj::Maybe<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> connect(
      capnp::rpc::twoparty::VatId::Reader hostId) override;
  kj::Promise<kj::Own<capnp::TwoPartyVatNetworkBase::Connection>> accept() override;

 private:
  class OutgoingMessage;
  class IncomingMessage;
  class EndedDisposer final : public kj::Disposer {
   public:
    explicit EndedDisposer(ServerVatNetwork& network) : network_(network) {}
    void disposeImpl(void* pointer) const override;

   private:
    ServerVatNetwork& network_;
  };

  // TwoPartyVatNetworkBase::Connection.
  kj::Own<capnp::RpcFlowController> newStream() override;
  capnp::rpc::twoparty::VatId::Reader getPeerVatId() override;
  kj::Own<capnp::OutgoingRpcMessage> newOutgoingMessage(uint firstSegmentWordSize) override;
  kj::Promise<kj::Maybe<kj::Own<capnp::IncomingRpcMessage>>> receiveIncomingMessage() override;
  kj::Promise<void> shutdown() override;
  // RpcFlowController::WindowGetter: the socket's send buffer, as TwoPartyVatNetwork does.
  size_t getWindow() override;
  // kj::TaskSet::ErrorHandler, for the writes.
  void taskFailed(kj::Exception&& exception) override;

  void send(kj::Own<OutgoingMessage> message);
  void writeQueued();

  capnp::MessageStream& messages_;
  kj::AsyncIoStream& transport_;
  std::function<void()> onEnded_;
  EndedDisposer endedDisposer_{*this};
  bool accepted_ = false;
  bool ended_ = false;
  bool writing_ = false;                         // a writeMessages() is in flight
  bool writeFailed_ = false;                     // later messages are dropped
  bool shuttingDown_ = false;                    // end the stream once the queue is written
  kj::Vector<kj::Own<OutgoingMessage>> outbox_;  // sent while writing_
  kj::Maybe<kj::Own<kj::PromiseFulfiller<void>>> written_;  // shutdown() waits for the queue
  kj::TaskSet writes_{*this};
};

}  // namespace switchboard::net
